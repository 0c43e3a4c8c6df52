/**
 * The roles run one by one, as on separate hosts (docs/deploy.md): `nfstate nf`, `nfstate controller`,
 * `nfstate ingress` and `nfstate sink`, each wired to the others by flags. Each prints its ports as one JSON
 * line when it is up and stops in order on SIGINT or SIGTERM.
 *
 *   nfstate controller --host 10.0.0.1 --port 9400 --key-file key --egress 10.0.0.4:9403
 *   nfstate nf --nf nat --id nf-0 --host 10.0.0.2 --controller 10.0.0.1:9400 --egress 10.0.0.4:6002 --key-file key
 *   nfstate ingress --host 10.0.0.3 --controller 10.0.0.1:9400 --key-file key
 *   nfstate sink --host 10.0.0.4 --port 6002 --admin-port 9403 --key-file key
 */
import { lookup } from 'node:dns/promises';
import { isIPv4 } from 'node:net';
import type { Command } from 'commander';
import { InvalidArgumentError, Option } from 'commander';
import { DEFAULT_BALANCER } from '../controller/balancer.js';
import { DEFAULT_TOPOLOGY } from '../launcher/config.js';
import { parseHostPort } from '../launcher/config-fields.js';
import type { ControllerSpec, NfSpec, StrongStoreSpec } from '../launcher/roles.js';
import { runController } from '../launcher/run-controller.js';
import { runIngress } from '../launcher/run-ingress.js';
import { runNf } from '../launcher/run-nf.js';
import { runSink } from '../launcher/run-sink.js';
import { int, keyFlag, lbFlags, lbOption, NF_HELP, nfArg, readJson } from './args.js';

const KEY_FILE_HELP =
  'a file holding the deployment key (at least 16 bytes of hex, the same for every role): it authenticates replication, the log of strong global state and the admin API (kept off the command line, where any local user could read it)';
const ADMIN_HOST_HELP =
  'where the admin API listens (default: --host with --key-file; 127.0.0.1 without, since the API is then unauthenticated)';

export function addRoleCommands(program: Command): void {
  program
    .command('sink')
    .description(
      'count what arrives per flow by stamp, serve /metrics and the fence a failover sets; print a report on SIGINT',
    )
    .option('--host <ip>', 'bind address', '127.0.0.1')
    .option('--port <n>', 'port (0: any)', int('--port', 0, 65535), 0)
    .option('--admin-port <n>', 'metrics and admin HTTP port (0: any)', int('--admin-port', 0, 65535), 0)
    .option('--ack-to <host:port>', 'acknowledge deliveries to a generator')
    .option('--deliver <host:port>', 'forward UDP payloads to this destination')
    .option('--pcap <file>', 'write what arrives to pcap')
    .option('--key-file <file>', KEY_FILE_HELP)
    .option('--admin-host <ip>', ADMIN_HOST_HELP)
    .action(async (o: Record<string, unknown>) => {
      await runSink({
        ...adminFlags(o, keyFlag(o)),
        host: o.host as string,
        port: o.port as number,
        adminPort: o.adminPort as number,
        ackTo: await optionalAddress(o.ackTo, '--ack-to'),
        deliver: await optionalAddress(o.deliver, '--deliver'),
        pcap: typeof o.pcap === 'string' ? o.pcap : null,
      });
    });

  program
    .command('nf')
    .description('run one NF instance (prints its ports as JSON; SIGINT stops it)')
    .addOption(new Option('--nf <type>', NF_HELP).argParser(nfArg('--nf')).makeOptionMandatory())
    .option('--config <json>', 'NF config as JSON', '{}')
    .option('--id <name>', 'instance name in logs and metrics', 'nf-0')
    .option('--host <ip>', 'bind address', '127.0.0.1')
    .option('--port <n>', 'port for stamped packets (0: any)', int('--port', 0, 65535), 0)
    .option(
      '--worker-port <n>',
      "first of the worker threads' own ports, one per thread from there up: the switch sends each flow's packets to its worker (0: any)",
      int('--worker-port', 0, 65535),
      0,
    )
    .option('--admin-port <n>', 'metrics and admin HTTP port (0: any)', int('--admin-port', 0, 65535), 0)
    .option('--threads <n>', 'worker threads', int('--threads', 1, 64), 2)
    .option('--batch <n>', 'packets per batch', int('--batch', 1, 100000), 30)
    .option('--batch-timeout-ms <ms>', 'longest a batch stays open', int('--batch-timeout-ms', 1, 60000), 50)
    .requiredOption('--egress <host:port>', 'where processed packets go (a sink, an egress, the next hop)')
    .option('--partition <i/n>', 'this instance is slice i of n of every shared pool', '0/1')
    .option(
      '--replicate-to <list>',
      'cluster peers to send batches to, as id=host:port,… (their replication ports)',
    )
    .option(
      '--replication-port <n>',
      "port for peers' batches (0: any)",
      int('--replication-port', 0, 65535),
      0,
    )
    .option(
      '--accept <ids>',
      'peers whose batches this instance accepts, as id,id,… (default: those of --replicate-to)',
    )
    .option('--key-file <file>', KEY_FILE_HELP)
    .option('--admin-host <ip>', ADMIN_HOST_HELP)
    .option(
      '--controller <host:port>',
      'register with this controller, which forms clusters and sets the peers',
    )
    .option(
      '--leave-on-stop',
      "on SIGTERM or SIGINT, have the controller move this instance's flows to the others before it stops (a scale-down); if it cannot, exit without a goodbye, so that the controller fails it over",
      false,
    )
    .option(
      '--global <store>',
      "where strong global state (pools) is decided: local=HOST:PORT (a controller's sequencer; authenticated by --key-file) or etcd=URL,URL,… (default: each worker its --partition share)",
    )
    .option('--global-prefix <prefix>', 'with etcd: the key prefix of this deployment', 'nfstate/')
    .action(async (o: Record<string, unknown>) => {
      const part = /^(\d+)\/(\d+)$/.exec(o.partition as string);
      if (part === null) throw new InvalidArgumentError('--partition must look like 2/12');
      const key = keyFlag(o);
      await runNf({
        id: o.id as string,
        host: o.host as string,
        port: o.port as number,
        workerPort: o.workerPort as number,
        adminPort: o.adminPort as number,
        ...adminFlags(o, key),
        threads: o.threads as number,
        nf: {
          type: o.nf as string,
          config: readJson(o.config as string, '--config') as Record<string, unknown>,
        },
        processor: {
          batchSize: o.batch as number,
          batchTimeoutMs: o.batchTimeoutMs as number,
          maxHeld: DEFAULT_TOPOLOGY.reorder.maxHeld,
          gapTimeoutMs: DEFAULT_TOPOLOGY.reorder.gapTimeoutMs,
          flowIdleMs: DEFAULT_TOPOLOGY.flowIdleMs * 2,
        },
        egress: await address(o.egress as string, '--egress'),
        partition: { index: Number(part[1]), count: Number(part[2]) },
        ...(await replicationFlags(o, key)),
        ...(typeof o.global === 'string' ? { global: await globalFlag(o, key) } : {}),
        ...(await controllerFlag(o)),
        ...(o.leaveOnStop === true ? { leaveOnStop: true } : {}),
      });
    });

  program
    .command('controller')
    .description(
      'run the controller: instances register with it; it forms clusters and collects load reports',
    )
    .option('--host <ip>', 'bind address', '127.0.0.1')
    .option('--port <n>', 'HTTP API port (0: any)', int('--port', 0, 65535), 0)
    .option('--cluster-size <k>', 'instances per cluster', int('--cluster-size', 1, 1024), 4)
    .addOption(lbOption())
    .option(
      '--capacity <pps>',
      'packets/s each instance is provisioned for (0: not a load signal)',
      int('--capacity', 0),
    )
    .option(
      '--cooldown <ms>',
      'a flow the load-balancing unit moved stays put this long',
      int('--cooldown', 0),
    )
    .option(
      '--move-timeout <ms>',
      'a move not re-pointed within this deadline aborts: the flow stays with its source',
      int('--move-timeout', 1, 60_000),
      DEFAULT_TOPOLOGY.move.timeoutMs,
    )
    .option(
      '--heartbeat-ms <ms>',
      'how often each instance sends a heartbeat (the controller tells it when it registers)',
      int('--heartbeat-ms', 1, 60_000),
      DEFAULT_TOPOLOGY.failure.heartbeatMs,
    )
    .option(
      '--miss-count <n>',
      'heartbeat intervals of silence after which an instance is suspected and probed, at the least',
      int('--miss-count', 2, 1000),
      DEFAULT_TOPOLOGY.failure.missCount,
    )
    .option(
      '--probe-ms <ms>',
      'how long a suspected instance has to answer a probe before it is declared failed (0: no probe)',
      int('--probe-ms', 0, 60_000),
      DEFAULT_TOPOLOGY.failure.probeMs,
    )
    .option('--key-file <file>', KEY_FILE_HELP)
    .option('--admin-host <ip>', ADMIN_HOST_HELP)
    .option(
      '--sequencer',
      'keep the log of strong global state (`nfstate nf --global local=…`), for instances with the same --key-file; its port is printed with the others',
      false,
    )
    .option(
      '--egress <host:port>',
      "the sink's or egress's admin API, told to drop a failed instance's output (its fence)",
    )
    .option(
      '--etcd <urls>',
      'one of several controllers, which elect a leader through this etcd cluster (client URLs, comma-separated): the others stand by and carry on from the journal the leader saves there',
    )
    .option('--id <name>', 'with --etcd: this controller among the others (unique)')
    .option('--etcd-prefix <prefix>', "with --etcd: the deployment's key prefix", 'nfstate/')
    .option(
      '--report-port <n>',
      "with --etcd: the UDP port of instances' load reports and heartbeats, the same on every controller",
      int('--report-port', 1, 65535),
    )
    .option(
      '--liveness-port <n>',
      "with --etcd: the TCP port of instances' liveness connections, the same on every controller",
      int('--liveness-port', 1, 65535),
    )
    .action(async (o: { host: string; port: number; clusterSize: number } & Record<string, unknown>) => {
      const key = keyFlag(o);
      if (o.sequencer === true && key === undefined)
        throw new InvalidArgumentError('--sequencer needs --key-file');
      const egress = typeof o.egress === 'string' ? await address(o.egress, '--egress') : undefined;
      await runController({
        host: o.host,
        adminPort: o.port,
        ...adminFlags(o, key),
        clusterSize: o.clusterSize,
        moveTimeoutMs: o.moveTimeout as number,
        failure: {
          heartbeatMs: o.heartbeatMs as number,
          missCount: o.missCount as number,
          probeMs: o.probeMs as number,
        },
        lb: lbFlags({ ...DEFAULT_BALANCER }, o),
        ...(o.sequencer === true && key !== undefined ? { sequencer: { key } } : {}),
        ...(egress === undefined ? {} : { egress: { host: egress.host, admin: egress.port } }),
        ...haFlags(o),
      });
    });

  program
    .command('ingress')
    .description('run the stamper and switch in front of NF instances (prints its ports as JSON)')
    .option(
      '--instances <list>',
      'NF instances as id=host:port,id=host:port (with --controller: learned from it, as they register)',
    )
    .option(
      '--controller <host:port>',
      "register with this controller: it tells the ingress the instances, the live set, each flow's secondary and the rules of moves",
    )
    .option('--host <ip>', 'bind address, and the address the controller calls this ingress at', '127.0.0.1')
    .option('--port <n>', 'Geneve data port (0: any)', int('--port', 0, 65535), 0)
    .option(
      '--service-port <n>',
      'plain-UDP front door (0: any, -1: off)',
      int('--service-port', -1, 65535),
      0,
    )
    .option('--admin-port <n>', 'metrics and rule API port (0: any)', int('--admin-port', 0, 65535), 0)
    .option('--vni <n>', 'Geneve VNI', int('--vni', 0, 0xffffff), 1)
    .option('--stamp-log <file>', 'record every stamped packet to pcap (input for nfstate oracle)')
    .option('--key-file <file>', KEY_FILE_HELP)
    .option('--admin-host <ip>', ADMIN_HOST_HELP)
    .action(async (o: Record<string, unknown>) => {
      if (typeof o.instances !== 'string' && typeof o.controller !== 'string')
        throw new InvalidArgumentError('give --instances, --controller, or both');
      const instances = typeof o.instances === 'string' ? await endpointList(o.instances, '--instances') : [];
      await runIngress({
        ...(await controllerFlag(o)),
        ...adminFlags(o, keyFlag(o)),
        host: o.host as string,
        port: o.port as number,
        servicePort: o.servicePort as number,
        adminPort: o.adminPort as number,
        instances,
        vni: o.vni as number,
        flowIdleMs: DEFAULT_TOPOLOGY.flowIdleMs,
        stampLog: typeof o.stampLog === 'string' ? o.stampLog : null,
      });
    });
}

/**
 * A "host:port" flag, its host name looked up once, now: the data path sends to addresses, and a name that
 * does not resolve is better found at start than at the first packet.
 */
async function address(value: string, flag: string): Promise<{ host: string; port: number }> {
  const { host, port } = parseHostPort(value, flag);
  if (isIPv4(host)) return { host, port };
  try {
    return { host: (await lookup(host, { family: 4 })).address, port };
  } catch (err) {
    throw new InvalidArgumentError(
      `${flag}: cannot resolve ${host} (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
    );
  }
}

async function optionalAddress(value: unknown, flag: string): Promise<{ host: string; port: number } | null> {
  return typeof value === 'string' ? address(value, flag) : null;
}

/** `--controller host:port`: the controller's admin API, which a role registers with. */
async function controllerFlag(
  o: Record<string, unknown>,
): Promise<{ controller?: { host: string; admin: number } }> {
  if (typeof o.controller !== 'string') return {};
  const { host, port } = await address(o.controller, '--controller');
  return { controller: { host, admin: port } };
}

/** `--etcd … --id … --report-port … --liveness-port …`: a controller among several (run-controller.ts). */
function haFlags(o: Record<string, unknown>): Pick<ControllerSpec, 'ha'> {
  if (typeof o.etcd !== 'string') {
    const stray = ['id', 'reportPort', 'livenessPort'].find((k) => o[k] !== undefined);
    if (stray !== undefined) throw new InvalidArgumentError(`--${kebab(stray)} needs --etcd`);
    return {};
  }
  const endpoints = etcdUrls(o.etcd, '--etcd');
  for (const k of ['id', 'reportPort', 'livenessPort'])
    if (o[k] === undefined)
      throw new InvalidArgumentError(
        `--etcd needs --${kebab(k)}: every controller of the deployment takes the same`,
      );
  return {
    ha: {
      endpoints,
      prefix: o.etcdPrefix as string,
      id: o.id as string,
      reportPort: o.reportPort as number,
      livenessPort: o.livenessPort as number,
    },
  };
}

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
}

function etcdUrls(text: string, flag: string): string[] {
  const endpoints = text.split(',').filter((u) => u !== '');
  if (endpoints.length === 0 || !endpoints.every((u) => /^https?:\/\/[^/\s]+$/.test(u)))
    throw new InvalidArgumentError(`${flag} needs client URLs like http://127.0.0.1:2379`);
  return endpoints;
}

/** `--global local=HOST:PORT` or `--global etcd=URL,…` of `nfstate nf`. */
async function globalFlag(o: Record<string, unknown>, key: string | undefined): Promise<StrongStoreSpec> {
  const [store, at = ''] = (o.global as string).split(/=(.*)/s);
  if (store === 'local') {
    if (key === undefined) throw new InvalidArgumentError('--global local=… needs --key-file');
    const { host, port } = await address(at, '--global local');
    return { store: 'local', host, port, key };
  }
  if (store === 'etcd')
    return { store: 'etcd', endpoints: etcdUrls(at, '--global etcd=…'), prefix: o.globalPrefix as string };
  throw new InvalidArgumentError('--global must be local=HOST:PORT or etcd=URL,URL,…');
}

/** The admin part of a role's spec, from --admin-host and the key. */
function adminFlags(o: Record<string, unknown>, key: string | undefined): Pick<NfSpec, 'adminHost' | 'key'> {
  return {
    ...(typeof o.adminHost === 'string' ? { adminHost: o.adminHost } : {}),
    ...(key === undefined ? {} : { key }),
  };
}

/** The replication part of an `nfstate nf` spec, from its flags; none without --key-file. */
async function replicationFlags(
  o: Record<string, unknown>,
  key: string | undefined,
): Promise<Pick<NfSpec, 'cluster' | 'peers'>> {
  if (key === undefined) {
    if (o.replicateTo !== undefined) throw new InvalidArgumentError('--replicate-to needs --key-file');
    return {};
  }
  const peers = typeof o.replicateTo === 'string' ? await endpointList(o.replicateTo, '--replicate-to') : [];
  const accept =
    typeof o.accept === 'string' ? o.accept.split(',').filter((id) => id !== '') : peers.map((p) => p.id);
  return {
    cluster: { members: accept, key, port: o.replicationPort as number },
    peers,
  };
}

/** id=host:port,id=host:port */
async function endpointList(
  text: string,
  flag: string,
): Promise<{ id: string; host: string; port: number }[]> {
  return Promise.all(
    text.split(',').map(async (item, i) => {
      const eq = item.indexOf('=');
      if (eq <= 0)
        throw new InvalidArgumentError(`${flag} item ${i + 1}: expected id=host:port, got '${item}'`);
      return { id: item.slice(0, eq), ...(await address(item.slice(eq + 1), `${flag} item ${i + 1}`)) };
    }),
  );
}
