#!/usr/bin/env node
/**
 * The `nfstate` command. Process globals (argv, stdout, signals, exit codes) are read here and nowhere
 * else; everything below takes its collaborators as arguments.
 *
 *   nfstate demo --nf nat --json          a local deployment with traffic, checked against the oracle
 *   nfstate up -c topology.yaml           run a topology until interrupted
 *   nfstate scale add --controller H:P    add an instance to a running deployment
 *   nfstate gen / sink / oracle / bench   the parts on their own
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ErrorCode, NfsError } from '../errors.js';
import { createLogger } from '../log.js';
import { adminCall } from '../admin-call.js';
import {
  DEFAULT_TOPOLOGY,
  GLOBAL_STORES,
  machineShape,
  THESIS_SHAPE,
  parseTopology,
  loadTopology,
} from '../launcher/config.js';
import { parseHostPort } from '../launcher/config-fields.js';
import type { Topology } from '../launcher/config.js';
import { DEMO_NF_CONFIG, runDemo } from '../launcher/demo.js';
import { summaryFailures } from '../launcher/demo-report.js';
import { isNfModule, loadNfModules } from '../nfs/index.js';
import { GUARANTEES, type Guarantee } from '../nf/guarantee.js';
import { ROLE_SPEC_ENV } from '../launcher/role-process.js';
import { runChaos, type ChaosOptions } from '../chaos/chaos.js';
import { DEFAULT_KINDS, FAULT_KINDS, type FaultKind } from '../chaos/schedule.js';
import { runController } from '../launcher/run-controller.js';
import { runIngress } from '../launcher/run-ingress.js';
import { runNf } from '../launcher/run-nf.js';
import { runSink } from '../launcher/run-sink.js';
import type { ControllerSpec, IngressSpec, NfSpec, SinkSpec } from '../launcher/roles.js';
import { runUp } from '../launcher/up.js';
import type { BalancerOptions } from '../controller/balancer.js';
import { DEFAULT_WINDOW, Generator, PcapSource } from '../traffic/generator.js';
import { OVS_WINDOW } from '../switch/ovs.js';
import { readTrace, runDigestHash, runOracle } from '../traffic/oracle.js';
import { DEFAULT_TRACE, SyntheticTrace } from '../traffic/trace.js';
import type { TraceOptions } from '../traffic/trace.js';
import {
  int,
  keyFlag,
  lbFlags,
  lbOption,
  NF_HELP,
  nfArg,
  readJson,
  signalled,
  switchOption,
} from './args.js';
import { addBenchCommand } from './bench.js';
import { addLabCommands } from './lab.js';
import { addRoleCommands } from './role-commands.js';
import { endWith } from './exit.js';

/** A comma-separated list of NFs (built-in types or module paths), each once: a service chain. */
function chainList(v: string): string[] {
  const types = v.split(',').map((x) => nfArg('--chain')(x.trim()));
  if (new Set(types).size !== types.length)
    throw new InvalidArgumentError('--chain: each NF may appear once');
  return types;
}

/** An NF of a topology being written: a module's by its path, a built-in's by its type. */
function nfEntry(type: string, config: Record<string, unknown>): Record<string, unknown> {
  return isNfModule(type) ? { module: type, config } : { type, config };
}

/** The package's version, from the package.json that ships beside dist/. */
const VERSION = (
  JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

const program = new Command('nfstate')
  .description('Cluster-based distributed state management for network functions')
  .version(VERSION)
  // Every command, subcommands too, ends through endWith (exit.ts): one exit code for each kind of failure.
  .exitOverride()
  .configureOutput({ outputError: () => undefined });

program
  .command('demo')
  .description('start a local deployment, send traffic, check it against the oracle, print a summary')
  .addOption(new Option('--nf <type>', NF_HELP).argParser(nfArg('--nf')).default('nat'))
  .option(
    '--chain <types>',
    'a service chain instead of one NF: comma-separated types (or module paths) in order, e.g. firewall,nat',
    chainList,
  )
  .option('-c, --config <file>', 'topology YAML to start from (flags override it)')
  .option('--clusters <n>', 'clusters', int('--clusters', 1, 64))
  .option('--per-cluster <n>', 'NF instances per cluster', int('--per-cluster', 1, 64))
  .option('--threads <n>', 'worker threads per instance', int('--threads', 1, 64))
  .option(
    '--thesis',
    "the thesis's shape: 3 clusters x 4 instances x 2 threads (the default from 12 cores; below, 2 x 2 x 1)",
    false,
  )
  .option('--batch <n>', 'packets per batch', int('--batch', 1, 100000))
  .option('--flows <n>', 'flows', int('--flows', 1, 10_000_000), 200)
  .option('--packets <n>', 'packets per flow', int('--packets', 1, 10_000_000), 50)
  .option('--rate <pps>', 'packets per second; 0 = as fast as the deployment drains', int('--rate', 0), 5000)
  .option('--payload <bytes>', 'payload bytes per packet', int('--payload', 0, 1400), 64)
  .addOption(new Option('--proto <proto>', 'transport').choices(['udp', 'tcp']).default('udp'))
  .option('--skew <k>', 'a few heavy flows with k times the packets', int('--skew', 0, 1000), 0)
  .option('--seed <n>', 'trace seed', int('--seed', 0), 1)
  .option(
    '--window <n>',
    `packets in flight when --rate 0 (default ${DEFAULT_WINDOW}; ${OVS_WINDOW} with --switch ovs)`,
    int('--window', 1, 1_000_000),
  )
  .option('--no-cluster', 'replicate each batch to every instance, not just the cluster (the baseline)')
  .option('--no-replication', 'do not replicate batches at all')
  .addOption(
    new Option('--release <mode>', 'when packets leave: at once, or once their batch is replicated').choices([
      'immediate',
      'after-replication',
    ]),
  )
  .option(
    '--moves <n>',
    'move N random flows during the run (half inside, half across clusters)',
    int('--moves', 0, 100000),
    0,
  )
  .addOption(
    new Option(
      '--guarantee <g>',
      "what the moves guarantee: order-preserving (nothing lost or reordered), loss-free (nothing lost; the source's packets may come behind), none (the source drops what it parked)",
    )
      .choices(GUARANTEES)
      .default('order-preserving'),
  )
  .option(
    '--move-batch <n>',
    'move flows N at a time, each batch one request to one instance (1: each flow on its own)',
    int('--move-batch', 1, 100000),
    1,
  )
  .option(
    '--drain <n>',
    'drain N instances during the run: move all their flows away, then remove them',
    int('--drain', 0, 1024),
    0,
  )
  .option(
    '--add <n>',
    'add N instances during the run, one after another; each joins a cluster and takes its share of the flows',
    int('--add', 0, 64),
    0,
  )
  .option(
    '--kill <n>',
    'kill -9 N random instances at random moments during the run, one at a time; each is failed over and replaced',
    int('--kill', 0, 64),
    0,
  )
  .option(
    '--pause <n>',
    'pause N random instances (SIGSTOP) until failed over, then wake them (SIGCONT): they must exit, fenced',
    int('--pause', 0, 64),
    0,
  )
  .option(
    '--fail <n>',
    'declare N running instances failed (POST /fail on the controller), as a false alarm would: each is failed over while it works, and must exit, fenced',
    int('--fail', 0, 64),
    0,
  )
  .addOption(
    new Option(
      '--global <store>',
      'where strong global state (NAT ports) is decided: local (the controller keeps the log), etcd, or none (each worker its own share)',
    ).choices(GLOBAL_STORES),
  )
  .option(
    '--etcd <urls>',
    'with --global etcd: comma-separated client URLs (default: start a 3-member etcd for the run)',
  )
  .option(
    '--etcd-kill <n>',
    "with --global etcd and no --etcd: kill N members of the run's etcd during the run (1 keeps a quorum)",
    int('--etcd-kill', 0, 3),
    0,
  )
  .option(
    '--kill-controller',
    'with --global etcd: kill -9 the leading controller during the run; the standby takes over',
    false,
  )
  .addOption(lbOption())
  .option(
    '--capacity <pps>',
    'packets/s each instance is provisioned for (a load signal for the load-balancing unit; under --skew with a rate, default 3x the even share)',
    int('--capacity', 0),
  )
  .option('--cooldown <ms>', 'a moved flow stays put this long', int('--cooldown', 0))
  .addOption(switchOption())
  .option('--keep', 'keep the run directory (logs, stamp log)', false)
  .option('--json', 'print one JSON object', false)
  .action(async (o: Record<string, unknown>, cmd: Command) => {
    const base = typeof o.config === 'string' ? loadTopology(o.config) : undefined;
    const topology = withFlags(base, o, cmd.getOptionValueSource('nf') === 'cli');
    if (o.killController === true && o.global !== 'etcd' && topology.global.store !== 'etcd')
      throw new InvalidArgumentError('--kill-controller needs --global etcd: only then is there a standby');
    const logger = createLogger('demo', { write: () => undefined });
    const summary = await runDemo(
      topology,
      {
        trace: traceOptions(o),
        switch: o.switch as 'builtin' | 'ovs',
        rate: o.rate as number,
        window: (o.window as number | undefined) ?? (o.switch === 'ovs' ? OVS_WINDOW : DEFAULT_WINDOW),
        keep: o.keep === true,
        moves: o.moves as number,
        guarantee: o.guarantee as Guarantee,
        moveBatch: o.moveBatch as number,
        drain: o.drain as number,
        add: o.add as number,
        kill: o.kill as number,
        pause: o.pause as number,
        fail: o.fail as number,
        ownEtcd: o.global === 'etcd' && o.etcd === undefined,
        etcdKill: o.etcdKill as number,
        killController: o.killController === true,
      },
      logger,
    );
    if (o.json === true) {
      process.stdout.write(JSON.stringify(summary) + '\n');
    } else {
      const l = summary.latency_us;
      process.stdout.write(
        [
          `nf ${summary.nf}: ${summary.clusters} clusters x ${summary.per_cluster} instances x ${summary.threads} threads, batch ${summary.batch}, io ${summary.io}`,
          `sent ${summary.sent}  delivered ${summary.delivered}  lost ${summary.lost}  reordered ${summary.reordered}  duplicated ${summary.duplicated}  dropped by nf ${summary.nf_dropped}`,
          `throughput ${summary.throughput_pps} packets/s over ${summary.duration_ms} ms`,
          `latency p50 ${l.p50} us  p99 ${l.p99} us  max ${l.max} us`,
          `state matches oracle: ${summary.state_matches_oracle}  (global${
            summary.global_compared.length === 0 ? ', none kept' : ` ${summary.global_compared.join(', ')}`
          }: ${summary.global_matches_oracle}${
            summary.nf_matches_oracle === undefined
              ? ''
              : `; ${Object.entries(summary.nf_matches_oracle)
                  .map(([n, ok]) => `${n}: ${ok}`)
                  .join(', ')}`
          })`,
          ...(summary.moves.count + summary.moves.aborted + summary.moves.failed === 0
            ? []
            : [
                `moves (${summary.moves.guarantee}): ${summary.moves.count} (${summary.moves.intra} intra, ${summary.moves.inter} inter, ${summary.moves.aborted} aborted${summary.moves.failed > 0 ? `, ${summary.moves.failed} failed: ${summary.moves.errors.join('; ')}` : ''}), state bytes intra ${summary.moves.state_bytes_intra} / inter ${summary.moves.state_bytes_inter}, p50 ${summary.moves.p50_ms} ms, p99 ${summary.moves.p99_ms} ms${summary.moves.dropped > 0 ? `, ${summary.moves.dropped} packets dropped by moves` : ''}`,
              ]),
          ...(summary.lb.rounds === 0
            ? []
            : [
                `load balancing: ${summary.lb.moves} flows moved (${summary.lb.intra} intra, ${summary.lb.inter} inter, ${summary.lb.aborted} aborted) in ${summary.lb.rounds} rounds, from ${JSON.stringify(summary.lb.from)}${summary.lb.scale_out_requests > 0 ? `, asked for ${summary.lb.scale_out_requests} more instances` : ''}`,
              ]),
          ...summary.drained.map(
            (d) =>
              `drained ${d.id}: ${d.moved} flows moved, ${d.aborted} aborted, in ${Math.round(d.duration_ms)} ms`,
          ),
          ...summary.added.map(
            (a) =>
              `added ${a.id} to ${a.cluster ?? 'no cluster'} in ${Math.round(a.ms)} ms (${Math.round(a.join_ms)} ms from its registration), then ${a.flows} flows moved onto it (${a.intra} intra), ${a.state_bytes} state bytes per move`,
          ),
          ...(summary.failovers.each.length === 0
            ? []
            : [
                `failovers: ${summary.failovers.count} (detected p50 ${summary.failovers.detect_ms_p50} ms, recovered p50 ${summary.failovers.recover_ms_p50} ms, max ${summary.failovers.recover_ms_max} ms after the signal), ${summary.failovers.replayed} packets replayed${summary.failovers.woke_fenced > 0 ? `, ${summary.failovers.woke_fenced} woken instances exited fenced` : ''}`,
              ]),
          `replication (${summary.replication.mode}): ${summary.replication.bytes_sent} bytes in ${summary.replication.messages} messages, replicas match: ${summary.replication.replicas_match}`,
          ...(summary.controller.lost
            ? ['NO controller answered at the end of the run (etcd lost its quorum?)']
            : []),
          ...(summary.controller.killed
            ? [
                summary.controller.takeover_ms >= 0
                  ? `controller killed: the standby took over in ${summary.controller.takeover_ms} ms`
                  : 'controller killed: NO standby took over',
              ]
            : []),
          ...(summary.strong.store === 'none'
            ? []
            : [
                `strong global state (${summary.strong.store}${summary.strong.etcd_killed > 0 ? `, ${summary.strong.etcd_killed} etcd members killed` : ''}): ${summary.strong.claims} claims, ${summary.strong.conflicts} conflicts, ${summary.strong.flows_waited} new flows waited for the log${summary.strong.failed > 0 ? `, ${summary.strong.failed} FAILED (the log could not decide in time: lost quorum?)` : ''}`,
              ]),
          ...(summary.run_dir === null ? [] : [`run directory: ${summary.run_dir}`]),
          '',
        ].join('\n'),
      );
    }
    // Why the run failed goes to stderr, so that --json keeps stdout one JSON object.
    const failures = summaryFailures(summary);
    for (const why of failures) process.stderr.write(`demo failed: ${why}\n`);
    if (failures.length > 0) process.exitCode = 1;
  });

/** The synthetic trace the demo and gen flags describe. */
function traceOptions(o: Record<string, unknown>): TraceOptions {
  return {
    ...DEFAULT_TRACE,
    flows: o.flows as number,
    packets: o.packets as number,
    payload: o.payload as number,
    proto: o.proto as 'udp' | 'tcp',
    skew: o.skew as number,
    seed: o.seed as number,
  };
}

/**
 * The demo's topology: the file's (`base`), or the defaults sized to this machine, with the flags over it.
 * `--nf` given (`nfGiven`, even as the default's `nat`) replaces the file's NF or chain; the file's NF config
 * is kept only for the same type.
 */
function withFlags(base: Topology | undefined, o: Record<string, unknown>, nfGiven: boolean): Topology {
  const t: Record<string, unknown> =
    base === undefined ? {} : (structuredClone(base) as unknown as Record<string, unknown>);
  const nf = (t.nf ?? {}) as Record<string, unknown>;
  if (Array.isArray(o.chain)) {
    if (nfGiven) throw new InvalidArgumentError('--nf and --chain: give one or the other');
    delete t.nf;
    t.chain = (o.chain as string[]).map((type) => nfEntry(type, DEMO_NF_CONFIG[type] ?? {}));
  } else if (base === undefined || nfGiven) {
    const type = o.nf as string;
    delete t.chain;
    const own = nf.type === type ? (nf.config as Record<string, unknown> | undefined) : undefined;
    t.nf = nfEntry(type, own ?? DEMO_NF_CONFIG[type] ?? {});
  }
  // Without a file, a shape the flags leave open is sized to this machine (or the thesis's, with --thesis).
  if (base === undefined)
    Object.assign(t, o.thesis === true ? THESIS_SHAPE : machineShape(availableParallelism()));
  if (o.clusters !== undefined) t.clusters = o.clusters;
  if (o.perCluster !== undefined) t.perCluster = o.perCluster;
  if (o.threads !== undefined) t.threads = o.threads;
  if (o.batch !== undefined) t.batch = { ...(t.batch as object), size: o.batch };
  if (o.release !== undefined) t.release = o.release;
  if (o.replication === false) t.replication = 'off';
  else if (o.cluster === false) t.replication = 'all';
  // Instances added during the run and the replacements of those killed or paused need ids and slices of
  // the shared pools of their own, on top of the spares the load-balancing unit may ask for.
  const spare = (t.spareInstances as number | undefined) ?? DEFAULT_TOPOLOGY.spareInstances;
  const more = [o.add, o.kill, o.pause, o.fail].reduce<number>(
    (n, x) => n + (typeof x === 'number' ? x : 0),
    0,
  );
  t.spareInstances = spare + more;
  t.lb = lbFlags((t.lb ?? {}) as Partial<BalancerOptions>, o);
  // `--global etcd` without endpoints: the demo starts its own etcd and fills them in.
  if (o.global !== undefined && (o.global !== 'etcd' || typeof o.etcd === 'string'))
    t.global = { store: o.global, endpoints: typeof o.etcd === 'string' ? o.etcd.split(',') : [] };
  return parseTopology(t);
}

program
  .command('up')
  .description('run a topology from a YAML file until interrupted')
  .requiredOption('-c, --config <file>', 'topology YAML')
  .addOption(switchOption())
  .action(async (o: { config: string; switch: 'builtin' | 'ovs' }) => {
    const topology = loadTopology(o.config);
    await runUp(
      topology,
      createLogger('up'),
      (line) => process.stdout.write(line + '\n'),
      signalled(),
      o.switch,
    );
  });

program
  .command('scale')
  .description('change a running deployment')
  .command('add')
  .description(
    'start N more instances (the launcher of `nfstate up` does it); each joins a cluster and takes new flows',
  )
  .requiredOption('--controller <host:port>', "the controller's API (`controller.admin` in up's output)")
  .requiredOption('--key-file <file>', 'the operator key `nfstate up` wrote (`operator_key` in its output)')
  .option('--count <n>', 'instances to add', int('--count', 1, 64), 1)
  .option(
    '--host <ip>',
    "the host to start them on; `nfstate up`'s launcher runs every instance on its own host and refuses another",
  )
  .option('--json', 'print one JSON object', false)
  .action(async (o: { controller: string; count: number; host?: string; json: boolean; keyFile: string }) => {
    const c = parseHostPort(o.controller, '--controller');
    const key = Buffer.from(keyFlag(o)!, 'hex');
    const { added } = (await adminCall(
      c.host,
      c.port,
      '/instances',
      { count: o.count, ...(o.host === undefined ? {} : { host: o.host }) },
      { timeoutMs: 60_000, key },
    ).catch((err: unknown) => {
      if (err instanceof NfsError) throw err;
      throw new NfsError(ErrorCode.PROCESS, `--controller: no answer from ${o.controller} (${String(err)})`);
    })) as unknown as { added: { id: string; cluster: string | null; ms: number; join_ms: number }[] };
    process.stdout.write(
      (o.json
        ? JSON.stringify({ added })
        : added
            .map((a) => `${a.id} joined ${a.cluster ?? 'no cluster'} in ${Math.round(a.ms)} ms`)
            .join('\n')) + '\n',
    );
  });

program
  .command('gen')
  .description('send synthetic traffic or a pcap to an ingress')
  .requiredOption('--target <host:port>', 'ingress data port')
  .option('--flows <n>', 'flows', int('--flows', 1), DEFAULT_TRACE.flows)
  .option('--packets <n>', 'packets per flow', int('--packets', 1), DEFAULT_TRACE.packets)
  .option(
    '--rate <pps>',
    'packets per second (0: as fast as a sink acknowledges, to --ack-port: start the sink with --ack-to HOST:ACK_PORT)',
    int('--rate', 0),
    10000,
  )
  .option('--payload <bytes>', 'payload bytes', int('--payload', 0, 1400), DEFAULT_TRACE.payload)
  .addOption(new Option('--proto <proto>', 'transport').choices(['udp', 'tcp']).default('udp'))
  .option('--skew <k>', 'heavy flows with k times the packets', int('--skew', 0, 1000), 0)
  .option('--seed <n>', 'seed', int('--seed', 0), 1)
  .option(
    '--pcap <file>',
    'replay the IPv4 packets of this pcap instead (Ethernet, raw IP, Linux cooked v1/v2 as `tcpdump -i any` writes)',
  )
  .option('--window <n>', 'packets in flight with --rate 0', int('--window', 1), DEFAULT_WINDOW)
  .option('--host <ip>', "bind address, the sink's acknowledgements included", '127.0.0.1')
  .option(
    '--ack-port <n>',
    "the port the sink's acknowledgements come to (0: any, logged as ackPort)",
    int('--ack-port', 0, 65535),
    0,
  )
  .option('--json', 'print one JSON object', false)
  .action(async (o: Record<string, unknown>) => {
    const target = parseHostPort(o.target as string, '--target');
    const source = typeof o.pcap === 'string' ? new PcapSource(o.pcap) : new SyntheticTrace(traceOptions(o));
    const logger = createLogger('gen');
    const gen = new Generator(
      { rate: o.rate as number, window: o.window as number, vni: 1, drainTimeoutMs: 1000 },
      logger,
    );
    const ackPort = await gen.bind(o.host as string, o.ackPort as number);
    await gen.connect(target.host, target.port);
    logger.info('generator bound', { ackPort });
    const result = await gen.run(source);
    gen.close();
    process.stdout.write(
      (o.json === true
        ? JSON.stringify(result)
        : `sent ${result.sent} at ${Math.round(result.ratePps)} packets/s`) + '\n',
    );
  });

program
  .command('oracle')
  .description('run a trace through an NF in-process, sequentially, and print its state digest')
  .addOption(new Option('--nf <type>', NF_HELP).argParser(nfArg('--nf')).makeOptionMandatory())
  .requiredOption('--trace <pcap>', 'trace (pcap of IPv4 packets; capture times are the stamp times)')
  .option('--config <json>', 'NF config as JSON', '{}')
  .option('--json', 'print the whole digest as JSON', false)
  .action(async (o: { nf: string; trace: string; config: string; json: boolean }) => {
    const config = readJson(o.config, '--config') as Record<string, unknown>;
    await loadNfModules({ type: o.nf, config });
    const ref = runOracle({ type: o.nf, config }, readTrace(o.trace));
    if (o.json) {
      process.stdout.write(
        JSON.stringify({ flows: ref.flows, global: ref.global, packets: ref.packets }) + '\n',
      );
      return;
    }
    for (const f of ref.flows)
      process.stdout.write(`${f.flow}  packets ${f.packets}  forwarded ${f.forwarded}  ${f.digest}\n`);
    const g = ref.global;
    const sizes = [
      ...Object.entries(g.pools).map(([name, v]) => `${name} ${v.length} allocated`),
      ...Object.entries(g.counters).map(([name, v]) => `${name} ${Object.keys(v).length} keys`),
      ...Object.entries(g.sets).map(([name, v]) => `${name} ${Object.keys(v).length} keys`),
    ];
    process.stdout.write(
      `${ref.flows.length} flows, ${ref.packets} packets; global: ${sizes.join(', ') || 'none'}\n`,
    );
    process.stdout.write(`digest ${runDigestHash(ref)}\n`);
  });

addBenchCommand(program);

program
  .command('chaos')
  .description(
    'run a deployment under steady traffic with a seeded schedule of faults (instances, controllers, etcd, the edge, replication loss, a partition, etcd delay), then check it: exits 1 unless nothing was lost and every state matches',
  )
  .option('--duration <s>', 'seconds of traffic', int('--duration', 1, 3600), 60)
  .option('--seed <n>', 'the schedule, the victims and the trace', int('--seed', 0), 1)
  .option('--rate <pps>', 'packets per second', int('--rate', 1, 100_000), 1000)
  .addOption(
    new Option('--nf <type>', 'network function').choices(['nat', 'firewall', 'lb', 'ids']).default('nat'),
  )
  .option(
    '--faults <kinds>',
    `comma-separated, of ${FAULT_KINDS.join(', ')} (default: all but ingress-kill, which the deployment does not get over)`,
    (v: string) => {
      const kinds = v.split(',').filter((k) => k !== '');
      const bad = kinds.find((k) => !(FAULT_KINDS as readonly string[]).includes(k));
      if (bad !== undefined || kinds.length === 0)
        throw new InvalidArgumentError(
          `--faults: ${bad ?? '(none)'} is not one of ${FAULT_KINDS.join(', ')}`,
        );
      return kinds as FaultKind[];
    },
  )
  .option('--count <n>', 'faults in the run (default: one per 5 s)', int('--count', 1, 1000))
  .option('--json', 'print one JSON object', false)
  .action(async (o: Record<string, unknown>) => {
    const logger = createLogger('chaos', { write: () => undefined });
    const r = await runChaos(
      {
        durationS: o.duration as number,
        seed: o.seed as number,
        rate: o.rate as number,
        nf: o.nf as ChaosOptions['nf'],
        kinds: (o.faults as FaultKind[] | undefined) ?? DEFAULT_KINDS,
        ...(typeof o.count === 'number' ? { count: o.count } : {}),
      },
      logger,
    );
    if (o.json === true) process.stdout.write(JSON.stringify(r) + '\n');
    else
      process.stdout.write(
        [
          `chaos seed ${r.seed}: ${r.duration_s} s of ${r.nf} at ${r.rate} packets/s`,
          ...Object.entries(r.skipped).map(([k, why]) => `  skipped ${k}: ${why}`),
          ...r.faults.map(
            (f) =>
              `  ${String(f.at_ms).padStart(6)} ms  ${f.kind.padEnd(16)} ${f.target}: ${f.ok ? 'got over' : `NOT got over: ${f.error}`} (${f.took_ms} ms)`,
          ),
          `sent ${r.sent}  delivered ${r.delivered}  lost ${r.lost}  reordered ${r.reordered}  duplicated ${r.duplicated}`,
          `state matches oracle: ${r.state_matches_oracle}  global: ${r.global_matches_oracle}  replicas match: ${r.replicas_match}`,
          r.ok ? 'clean' : `NOT clean:\n${r.failures.map((f) => `  ${f}`).join('\n')}`,
        ].join('\n') + '\n',
      );
    if (!r.ok) process.exitCode = 1;
  });

addRoleCommands(program);
addLabCommands(program);

program
  .command('role', { hidden: true })
  .description(`run one role of a deployment from its JSON spec in $${ROLE_SPEC_ENV} (used by the launcher)`)
  .argument('<role>', 'nf | ingress | sink | controller')
  .argument('[name]', 'what it is called in the process list')
  .action(async (role: string) => {
    const spec = process.env[ROLE_SPEC_ENV];
    if (spec === undefined) throw new InvalidArgumentError(`role: no spec in $${ROLE_SPEC_ENV}`);
    const parsed = readJson(spec, 'spec');
    if (role === 'nf') await runNf(parsed as NfSpec);
    else if (role === 'ingress') await runIngress(parsed as IngressSpec);
    else if (role === 'sink') await runSink(parsed as SinkSpec);
    else if (role === 'controller') await runController(parsed as ControllerSpec);
    else throw new InvalidArgumentError(`unknown role '${role}'`);
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  process.exit(endWith(err, process.argv.includes('--json')));
});
