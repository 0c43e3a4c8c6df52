/**
 * A whole deployment on one machine, each role its own process on loopback: a sink, a controller, C
 * clusters × K NF instances with W worker threads each (they register with the controller, which forms the
 * clusters), and an ingress (stamper + switch) in front of them. `nfstate up`
 * and `nfstate demo` are built on it.
 *
 *   const d = new LocalDeployment(topology, { logDir, stampLog, ackTo });
 *   const ends = await d.start();   // ends.ingress.port, ends.ingress.servicePort, admin ports …
 *   const own = await d.digests(); await d.checkReplicas(own); await d.stop();
 *
 * Start order is sink, controller, instances, ingress, so nothing sends to a port that is not yet open; stop order
 * is the reverse. Each child writes its JSON log lines to `<logDir>/<role>.log`.
 */
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { adminKeys } from '../auth.js';
import { ErrorCode, NfsError } from '../errors.js';
import { silentLogger } from '../log.js';
import type { Logger } from '../types.js';
import { adminCall } from '../admin-call.js';
import { createNf, loadNfModules } from '../nfs/index.js';
import { LocalGlobalState } from '../state/global-local.js';
import type { FlowDigest, RunDigest } from '../state/digest.js';
import type { Endpoint } from '../switch/ingress.js';
import type { SinkReport } from '../traffic/sink.js';
import type { Topology } from './config.js';
import { parseHostPort } from './config-fields.js';
import { freePort } from './free-port.js';
import { ROLE_SPEC_ENV, RoleProcess } from './role-process.js';
import type {
  AdminSpec,
  ControllerSpec,
  IngressSpec,
  NfSpec,
  ProvisionRequest,
  RoleCommand,
  SinkSpec,
  StrongStoreSpec,
} from './roles.js';

const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));
/** A controller that exits is started again after this long (superviseController)… */
const RESTART_DELAY_MS = 500;
/** …unless more than this many exited within RESTART_WINDOW_MS (a crash loop). */
const RESTART_BURST = 5;
const RESTART_WINDOW_MS = 60_000;

/**
 * Where each role runs: its address and, optionally, the network namespace it starts in (`nfstate lab` puts
 * every role in a namespace of its own). Asked once per process, by its name (`sink`, `controller`,
 * `ingress`, `nf-3`, …), also for instances started while the deployment runs.
 */
export interface Placement {
  place(name: string): Promise<{ host: string; netns?: string }>;
}

export interface DeploymentOptions {
  logDir: string;
  /** Absent: every role on the topology's `host`, in this namespace. */
  placement?: Placement;
  /** Ingress records every stamped packet here (the oracle's input). */
  stampLog?: string;
  /** Where the sink acknowledges deliveries (a closed-loop generator). */
  ackTo?: { host: string; port: number };
  /** Where the launcher says what it does on its own (a controller started again). */
  logger?: Logger;
  /**
   * An OVS bridge routes the traffic (switch/ovs.ts): the ingress's VXLAN door is at `host`, this
   * namespace's end of the bridge's veth, and the ingress writes its rules through `mgmt`.
   */
  ovs?: { mgmt: string; host: string };
}

/** A call to a role's admin API on the deployment's host, signed with its internal key. */
export type Api = (
  port: number,
  path: string,
  body?: unknown,
  timeoutMs?: number,
) => Promise<Record<string, unknown>>;

export interface Endpoints {
  ingress: { host: string; port: number; servicePort: number; vxlanPort: number; admin: number };
  sink: { host: string; port: number; admin: number };
  controller: { host: string; admin: number; report: number };
  instances: (Endpoint & { admin: number; replication: number; cluster: string; secondary: string | null })[];
}

/**
 * The log every instance of the deployment decides strong global state in: the controller's sequencer,
 * or etcd under a prefix of this deployment's own, so that runs sharing an etcd cluster never meet.
 */
function strongStore(
  t: Topology,
  sequencer: { host: string; port: number | undefined },
  key: string,
  prefix: string,
): StrongStoreSpec | undefined {
  if (t.global.store === 'local') return { store: 'local', host: sequencer.host, port: sequencer.port!, key };
  if (t.global.store === 'etcd') return { store: 'etcd', endpoints: [...t.global.endpoints], prefix };
  return undefined;
}

export class LocalDeployment {
  sink: RoleProcess | undefined;
  /** The first controller, which leads at start. */
  controller: RoleProcess | undefined;
  /**
   * Every controller started: the first; with etcd also a standby, and one more for each that exited while
   * the deployment ran (see superviseController).
   */
  readonly controllers: RoleProcess[] = [];
  private stopping = false;
  /** When controllers exited lately, for the start limit. */
  private controllerExits: number[] = [];
  private controllerAdmin = 0;
  /** Where the sink and the controller run (placement). */
  private sinkHost: string;
  private controllerHost: string;
  ingress: RoleProcess | undefined;
  instances: RoleProcess[] = [];
  private readonly logFds: number[] = [];
  private sinkPort = 0;
  /**
   * The deployment key: authenticates replication between the instances (those added later too), the log
   * of strong global state, and the admin API (auth.ts). The roles get it in their environment, never on
   * a command line.
   */
  private readonly key = randomBytes(32).toString('hex');
  /** Signs what the launcher asks of the roles: pass it as adminCall's `key`. */
  readonly adminKey: Buffer;
  /** Signs what an operator asks of the controller: `nfstate up` writes it to a file only its user reads. */
  readonly operatorKey: Buffer;
  /** Calls to the roles' admin APIs on the topology's host, signed with the internal key. */
  readonly api: Api = (port, path, body, timeoutMs) =>
    adminCall(this.topology.host, port, path, body, {
      key: this.adminKey,
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
    });
  private readonly logger: Logger;
  /** This deployment's keys in etcd, so that deployments sharing an etcd cluster never meet. */
  private readonly prefix = `nfstate/${this.key.slice(0, 16)}/`;
  private nextIndex = 0;
  /** Where the instances find the log of strong global state. */
  private strong: StrongStoreSpec | undefined;
  /** The instances the last `digests()` answered for, in its order. */
  private digested: RoleProcess[] = [];

  constructor(
    private readonly topology: Topology,
    private readonly options: DeploymentOptions,
  ) {
    this.logger = options.logger ?? silentLogger;
    const keys = adminKeys(Buffer.from(this.key, 'hex'));
    this.adminKey = keys.internal;
    this.operatorKey = keys.operator;
    this.sinkHost = topology.host;
    this.controllerHost = topology.host;
  }

  private place(name: string): Promise<{ host: string; netns?: string }> {
    return this.options.placement?.place(name) ?? Promise.resolve({ host: this.topology.host });
  }

  async start(): Promise<Endpoints> {
    const t = this.topology;
    // A bad NF config or module is reported here, once, before any process starts.
    await loadNfModules(t.nf);
    createNf(t.nf.type, { ...t.nf.config }, new LocalGlobalState());
    mkdirSync(this.options.logDir, { recursive: true });
    try {
      const deliver = t.egress.deliver === null ? null : parseHostPort(t.egress.deliver, 'egress.deliver');
      const sinkAt = await this.place('sink');
      this.sinkHost = sinkAt.host;
      const sinkSpec: SinkSpec = {
        host: sinkAt.host,
        port: t.sink.port,
        adminPort: 0,
        ackTo: this.options.ackTo ?? null,
        deliver,
        pcap: t.sink.pcap,
        edge: t.edge,
      };
      this.sink = this.spawn('sink', 'sink', sinkSpec, sinkAt.netns);
      const sinkPorts = await this.sink.ports;
      const count = t.clusters * t.perCluster;
      const controllerAt = await this.place('controller');
      this.controllerHost = controllerAt.host;
      const controllerSpec: ControllerSpec = {
        host: controllerAt.host,
        adminPort: 0,
        // The no-cluster baseline is one cluster of everyone, instances added later included.
        clusterSize: t.replication === 'all' ? count + t.spareInstances : t.perCluster,
        lb: { ...t.lb },
        moveTimeoutMs: t.move.timeoutMs,
        replicas: t.replication !== 'off',
        failure: { ...t.failure },
        egress: { host: sinkAt.host, admin: sinkPorts.admin! },
        ...(t.global.store === 'local' ? { sequencer: { key: this.key } } : {}),
      };
      // With etcd, a standby controller waits to take over at the same ports (run-controller.ts, journal.ts).
      const ha =
        t.global.store === 'etcd'
          ? {
              admin: await freePort(t.host),
              report: await freePort(t.host),
              liveness: await freePort(t.host),
            }
          : undefined;
      const controller = (name: string): RoleProcess => {
        const spec: ControllerSpec =
          ha === undefined
            ? controllerSpec
            : {
                ...controllerSpec,
                adminPort: ha.admin,
                ha: {
                  endpoints: [...t.global.endpoints],
                  prefix: this.prefix,
                  id: name,
                  reportPort: ha.report,
                  livenessPort: ha.liveness,
                },
              };
        const p = this.spawn(name, 'controller', spec, controllerAt.netns);
        p.onProvision = (req) => void this.provision(req, p);
        this.controllers.push(p);
        if (ha !== undefined) this.superviseController(p, controller);
        return p;
      };
      this.controller = controller('controller');
      const cp = await this.controller.ports;
      // Only now: the first controller leads.
      if (ha !== undefined) controller('controller-standby');
      this.controllerAdmin = cp.admin!;
      this.strong = strongStore(t, { host: controllerAt.host, port: cp.sequencer }, this.key, this.prefix);
      this.sinkPort = sinkPorts.port!;
      for (let i = 0; i < count; i++) this.instances.push(await this.spawnNf());
      // An instance is ready once registered, and the controller configures a cluster before answering.
      await Promise.all(this.instances.map((p) => p.ports));
      const registered = (await this.controllerGet('/instances')) as Endpoints['instances'];
      const instances = registered.sort((a, b) => Number(a.id.slice(3)) - Number(b.id.slice(3)));
      const ovs = this.options.ovs;
      const ingressAt = await this.place('ingress');
      const ingressSpec: IngressSpec = {
        host: ingressAt.host,
        port: t.ingress.port,
        servicePort: t.ingress.servicePort,
        adminPort: t.ingress.adminPort,
        instances: instances.map(({ id, host, port, workers }) => ({
          id,
          host,
          port,
          workers: workers ?? [],
        })),
        vni: t.vni,
        flowIdleMs: t.flowIdleMs,
        stampLog: this.options.stampLog ?? null,
        controller: { host: controllerAt.host, admin: cp.admin! },
        nf: { type: t.nf.type, config: { ...t.nf.config } },
        ...(this.strong === undefined ? {} : { global: this.strong }),
        edge: t.edge === null ? null : { ...t.edge, egress: { host: sinkAt.host, port: sinkPorts.port! } },
        ...(ovs === undefined ? {} : { ovs: { ...ovs } }),
      };
      this.ingress = this.spawn('ingress', 'ingress', ingressSpec, ingressAt.netns);
      const ip = await this.ingress.ports;
      return {
        ingress: {
          host: ingressAt.host,
          port: ip.port!,
          servicePort: ip.servicePort!,
          vxlanPort: ip.vxlanPort!,
          admin: ip.admin!,
        },
        sink: { host: sinkAt.host, port: sinkPorts.port!, admin: sinkPorts.admin! },
        controller: { host: controllerAt.host, admin: cp.admin!, report: cp.report! },
        instances,
      };
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /**
   * Starts `count` more NF instances: the next free ids, the same NF, configuration and cluster key, each
   * with a spare slice of the shared pools. Each registers with the controller, which places it in a
   * cluster and makes it live; resolves with their ids once all have.
   */
  async add(count: number, host?: string): Promise<string[]> {
    const t = this.topology;
    if (host !== undefined && host !== t.host && this.options.placement === undefined) {
      throw new NfsError(
        ErrorCode.CONFIG,
        `add: this deployment runs every instance on ${t.host}, not ${host}`,
      );
    }
    const most = t.clusters * t.perCluster + t.spareInstances;
    if (this.nextIndex + count > most) {
      throw new NfsError(
        ErrorCode.CONFIG,
        `add ${count}: ${this.nextIndex} instances started of at most ${most}, the number the shared pools ` +
          `are split among from the start (clusters × perCluster + spareInstances); raise spareInstances ` +
          `(${t.spareInstances}) in the topology for more`,
      );
    }
    const added = await Promise.all(Array.from({ length: count }, () => this.spawnNf()));
    this.instances.push(...added);
    const started = await Promise.allSettled(added.map((p) => p.ports));
    const failed = started.findIndex((r) => r.status === 'rejected');
    if (failed >= 0) {
      // What did not start holds no flows; the rest of the deployment goes on without it.
      const gone = added.filter((_, i) => started[i]!.status === 'rejected');
      await Promise.all(gone.map((p) => p.stop()));
      this.instances = this.instances.filter((p) => !gone.includes(p));
      throw (started[failed] as PromiseRejectedResult).reason;
    }
    return added.map((p) => p.name);
  }

  /** The controller asked for instances (POST /instances): start them and answer it. */
  private async provision(req: ProvisionRequest, from: RoleProcess): Promise<void> {
    let reply: RoleCommand;
    try {
      reply = { type: 'provisioned', id: req.id, instances: await this.add(req.count, req.host) };
    } catch (err) {
      reply = {
        type: 'provisioned',
        id: req.id,
        error: err instanceof Error ? err.message : String(err),
        // The refusal keeps its kind on the way back (a full deployment is a CONFIG matter, not a crash).
        ...(err instanceof NfsError ? { code: err.code } : {}),
      };
    }
    if (from.child.connected) from.child.send(reply);
  }

  /** An NF instance with the next index: it registers with the controller, which gives it its peers. */
  private async spawnNf(): Promise<RoleProcess> {
    const t = this.topology;
    const i = this.nextIndex++;
    const at = await this.place(`nf-${i}`);
    const spec: NfSpec = {
      id: `nf-${i}`,
      host: at.host,
      port: 0,
      adminPort: 0,
      threads: t.threads,
      nf: { type: t.nf.type, config: { ...t.nf.config } },
      processor: {
        release: t.release,
        batchSize: t.batch.size,
        batchTimeoutMs: t.batch.timeoutMs,
        maxHeld: t.reorder.maxHeld,
        gapTimeoutMs: t.reorder.gapTimeoutMs,
        // Longer than the stamper's, so a flow the stamper restarts at 1 has left the instance too.
        flowIdleMs: t.flowIdleMs * 2,
      },
      egress: { host: this.sinkHost, port: this.sinkPort },
      partition: { index: i, count: t.clusters * t.perCluster + t.spareInstances },
      // Members and peers come from the controller once the instance has registered.
      ...(t.replication === 'off' ? {} : { cluster: { members: [], key: this.key } }),
      controller: { host: this.controllerHost, admin: this.controllerAdmin },
      ...(this.strong === undefined ? {} : { global: this.strong }),
    };
    return this.spawn(spec.id, 'nf', spec, at.netns);
  }

  /**
   * Sends `signal` to a role's process by its name: an NF instance (`nf-3`), `ingress`, `sink`, or a
   * controller (`controller`, `controller-standby`, …). False when none by that name runs.
   */
  signal(name: string, signal: NodeJS.Signals): boolean {
    const p = this.roles().find((r) => r.name === name);
    return p !== undefined && p.child.kill(signal);
  }

  /** Every role process that has not exited: the instances, the controllers, the ingress and the sink. */
  roles(): RoleProcess[] {
    const all = [this.ingress, this.sink, ...this.controllers, ...this.instances];
    return all.filter((p): p is RoleProcess => p !== undefined && !p.exited);
  }

  instance(id: string): RoleProcess | undefined {
    return this.instances.find((i) => i.name === id);
  }

  /** The NF instances whose processes still run: killed and fenced ones have left, their flows elsewhere. */
  running(): RoleProcess[] {
    return this.instances.filter((p) => !p.exited);
  }

  /**
   * Each running instance's flow digests and global state. One that exits meanwhile (fenced after a
   * failover) is left out: its flows are elsewhere.
   */
  async digests(): Promise<RunDigest[]> {
    const asked = this.running();
    const replies = await Promise.all(asked.map((p) => p.request({ type: 'digest' })));
    this.digested = [];
    const out: RunDigest[] = [];
    replies.forEach((r, i) => {
      if (r.type === 'digest') {
        this.digested.push(asked[i]!);
        out.push(r.digest);
      } else if (!asked[i]!.exited) {
        throw new NfsError(ErrorCode.PROCESS, `digest failed: ${JSON.stringify(r)}`);
      }
    });
    return out;
  }

  /**
   * Checks that every member of each running instance's cluster holds its flows exactly as the instance
   * does (same flows, same state digests). Call after `digests()` (nothing may exit between), which closes the open batches and waits for
   * their acknowledgements. Returns the disagreements, empty when every replica matches.
   */
  async checkReplicas(own: readonly RunDigest[]): Promise<string[]> {
    if (this.topology.replication === 'off') return [];
    const held = await this.replicaDigests();
    let clusters: { id: string; members: string[] }[];
    try {
      clusters = (await this.controllerGet('/clusters')) as typeof clusters;
    } catch (err) {
      return [`replicas not checked: no controller answered (${String(err)})`];
    }
    const running = this.digested;
    const at = new Map(running.map((p, i) => [p.name, i]));
    const problems: string[] = [];
    own.forEach((digest, i) => {
      const self = running[i]!.name;
      const want = new Map(digest.flows.map((f) => [f.flow, f.digest]));
      const members = clusters.find((c) => c.members.includes(self))?.members ?? [];
      for (const peer of members) {
        const j = at.get(peer);
        const theirs = j === undefined ? undefined : held[j];
        if (peer === self || theirs === undefined) continue;
        const got = new Map((theirs[self] ?? []).map((f) => [f.flow, f.digest]));
        for (const [flow, d] of want) {
          if (got.get(flow) !== d)
            problems.push(`${peer} holds ${flow} of ${self} ${got.has(flow) ? 'differently' : 'not at all'}`);
        }
        if (got.size !== want.size)
          problems.push(`${peer} holds ${got.size} flows of ${self}, which has ${want.size}`);
      }
    });
    return problems;
  }

  /** The controller's admin port (the standby, once it leads, serves the same). */
  get controllerAdminPort(): number {
    return this.controllerAdmin;
  }

  /** A GET on the controller's API. */
  controllerGet(path: string): Promise<unknown> {
    return adminCall(this.controllerHost, this.controllerAdmin, path);
  }

  /** Per instance of the last `digests()`: its replicas; undefined for one that exited since (fenced). */
  private async replicaDigests(): Promise<(Record<string, FlowDigest[]> | undefined)[]> {
    const replies = await Promise.all(this.digested.map((p) => p.request({ type: 'replicas' })));
    return replies.map((r, i) => {
      if (r.type === 'replicas') return r.replicas;
      if (this.digested[i]!.exited) return undefined;
      throw new NfsError(ErrorCode.PROCESS, `replicas failed: ${JSON.stringify(r)}`);
    });
  }

  async sinkReport(): Promise<SinkReport> {
    const r = await this.sink!.request({ type: 'report' });
    if (r.type !== 'report')
      throw new NfsError(ErrorCode.PROCESS, `sink report failed: ${JSON.stringify(r)}`);
    return r.report;
  }

  async stopIngress(): Promise<void> {
    await this.ingress?.stop();
  }

  /**
   * Starts a controller again when one exits while the deployment runs, as a service manager would: a
   * leader that loses its lease exits (run-controller.ts), and without a new standby the deployment would be left
   * with none once the other one goes too. The new one stands by, and carries on from the journal when it
   * leads. Like systemd's start limit, it gives up after RESTART_BURST exits within RESTART_WINDOW_MS.
   */
  private superviseController(p: RoleProcess, start: (name: string) => RoleProcess): void {
    p.child.once('exit', (code, signal) => {
      if (this.stopping) return;
      const now = Date.now();
      this.controllerExits = this.controllerExits.filter((t) => now - t < RESTART_WINDOW_MS);
      this.controllerExits.push(now);
      const name = `controller-${this.controllers.length + 1}`;
      if (this.controllerExits.length > RESTART_BURST) {
        this.logger.error('controller exited; too many did lately, none is started again', {
          name: p.name,
          code,
          signal,
          exits: this.controllerExits.length,
          window_ms: RESTART_WINDOW_MS,
        });
        return;
      }
      this.logger.warn('controller exited; another one is started', {
        name: p.name,
        code,
        signal,
        next: name,
      });
      setTimeout(() => {
        if (!this.stopping) start(name);
      }, RESTART_DELAY_MS).unref();
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.ingress?.stop();
    await Promise.all(this.instances.map((p) => p.stop()));
    await Promise.all(this.controllers.map((p) => p.stop()));
    await this.sink?.stop();
    for (const fd of this.logFds.splice(0)) closeSync(fd);
  }

  /**
   * Starts a role's process, in network namespace `netns` when one is given (`ip netns exec` execs it). Its
   * spec, with the deployment key, goes in its environment, which only its user can read.
   */
  private spawn(name: string, role: string, spec: AdminSpec, netns?: string): RoleProcess {
    const log = join(this.options.logDir, `${name}.log`);
    const fd = openSync(log, 'a');
    this.logFds.push(fd);
    const child = fork(CLI, ['role', role, name], {
      env: { ...process.env, [ROLE_SPEC_ENV]: JSON.stringify({ ...spec, key: this.key }) },
      stdio: ['ignore', fd, fd, 'ipc'],
      ...(netns === undefined
        ? {}
        : { execPath: 'ip', execArgv: ['netns', 'exec', netns, process.execPath] }),
    });
    return new RoleProcess(name, child, log);
  }
}
