/**
 * Each role (ingress, NF instance, sink) as a process: builds the component from a JSON spec, serves
 * its admin port (/metrics, /healthz and the role's own routes), and, when a launcher forked it, talks
 * to the launcher over the IPC channel:
 *
 *   child → launcher   { type: 'ready', ports }   once listening
 *   launcher → child   { type: 'digest' } | { type: 'report' } | { type: 'stop' }
 *   child → launcher   { type: 'digest', digest } | { type: 'report', report } | { type: 'stopped' }
 *
 * and the controller, the other way round, asks the launcher for more NF instances (POST /instances):
 *
 *   controller → launcher   { type: 'provision', id, count, host? }
 *   launcher → controller   { type: 'provisioned', id, instances } | { type: 'provisioned', id, error }
 *
 * SIGINT and SIGTERM stop the role in order (sockets, workers, admin port) before the process exits.
 */
import { ErrorCode, NfsError } from '../errors.js';
import { wallClock } from '../clock.js';
import type { FlowOwner } from '../controller/records.js';
import type { BalancerOptions } from '../controller/balancer.js';
import { Controller } from '../controller/controller.js';
import type { FailureOptions } from '../controller/detector.js';
import { DEFAULT_FAILURE } from '../controller/detector.js';
import type { Provisioner } from '../controller/records.js';
import { createLogger } from '../log.js';
import { adminKeys, type AdminKeys } from '../auth.js';
import { AdminServer, MetricsRegistry } from '../metrics.js';
import { adminCall } from '../admin-call.js';
import { NfInstance } from '../nf/instance.js';
import { EXIT_FENCED, keepLiveness, reportToController } from '../nf/liveness.js';
export { EXIT_FENCED };
import type { ProcessorOptions } from '../nf/processor.js';
import { parseGuarantee } from '../nf/processor.js';
import { canonicalKey, flowKeyString, parseFlowKeyString } from '../packet/flow-key.js';
import type { Peer } from '../nf/replication.js';
import type { FlowDigest, RunDigest } from '../state/digest.js';
import type { Endpoint } from '../switch/ingress.js';
import { Ingress } from '../switch/ingress.js';
import { LinkType, PcapWriter } from '../traffic/pcap.js';
import type { SinkReport } from '../traffic/sink.js';
import { Sink } from '../traffic/sink.js';
import type { FlowKey, Logger, MetricSource } from '../types.js';
import type { GlobalStore } from '../global/store.js';
import type { LeaderElection } from '../controller/election.js';
import type { EtcdJournal, Restored } from '../controller/journal.js';
import { SequencerClient, SequencerServer } from '../global/sequencer.js';
import { StrongPools } from '../global/strong-pool.js';
import { HostTable, type EdgeConfig } from '../edge/hosts.js';
import { createNf } from '../nfs/index.js';
import { LocalGlobalState } from '../state/global-local.js';
import { StrongGlobalState } from '../state/global-strong.js';
import { ReplyMap } from '../switch/replies.js';

/**
 * What every role's spec has for its admin API: the deployment key (hex), from which the admin keys are
 * derived (auth.ts), and where the API listens: by default the role's host when it has the key, loopback
 * when it has none (an unauthenticated API serves loopback only). The controller calls a role's API at
 * the role's host.
 */
export interface AdminSpec {
  host: string;
  adminPort: number;
  adminHost?: string;
  key?: string;
}

export interface NfSpec extends AdminSpec {
  id: string;
  port: number;
  threads: number;
  nf: { type: string; config: Record<string, unknown> };
  processor: ProcessorOptions;
  egress: { host: string; port: number };
  partition: { index: number; count: number };
  cluster?: { members: string[]; key: string; port?: number };
  /** Cluster peers to replicate to from the start (standalone use; a controller sends them later). */
  peers?: Peer[];
  /** The controller to register with and report load to. */
  controller?: { host: string; admin: number };
  /** The deployment's log for strong global state (absent: each worker has its share of each pool). */
  global?: StrongStoreSpec;
}

/** Where an instance finds the log: the controller's sequencer, or an etcd cluster under a key prefix. */
export type StrongStoreSpec =
  | { store: 'local'; host: string; port: number; key: string }
  | { store: 'etcd'; endpoints: string[]; prefix: string };

async function openStore(spec: StrongStoreSpec, logger: Logger): Promise<GlobalStore> {
  if (spec.store === 'local')
    return new SequencerClient({
      host: spec.host,
      port: spec.port,
      key: Buffer.from(spec.key, 'hex'),
      logger,
    });
  // Loaded only where used: the etcd client (gRPC) adds to every process's start otherwise.
  const { EtcdGlobalStore } = await import('../global/etcd.js');
  return new EtcdGlobalStore({ hosts: spec.endpoints, prefix: spec.prefix, logger });
}

export interface ControllerSpec extends AdminSpec {
  clusterSize: number;
  lb: BalancerOptions;
  /** A move's deadline up to the re-point; the controller's default when absent. */
  moveTimeoutMs?: number;
  /** False when the instances keep no replicas (replication off): moves ship full states. */
  replicas?: boolean;
  /** Heartbeat interval and miss count of the failure detection unit; the defaults when absent. */
  failure?: FailureOptions;
  /** The egress's admin API, told to fence a failed instance's output (absent: no egress to tell). */
  egress?: { host: string; admin: number };
  /** Keep the deployment's log of strong global state (`local`), its clients authenticated by `key`. */
  sequencer?: { key: string };
  /**
   * One of several controllers, of which the one that leads (an etcd election) acts: the others stand by,
   * and the next to lead carries on from the journal the leader saves in etcd, at the same ports.
   */
  ha?: { endpoints: string[]; prefix: string; id: string; reportPort: number; livenessPort: number };
}

export interface IngressSpec extends AdminSpec {
  port: number;
  servicePort: number;
  instances: Endpoint[];
  vni: number;
  flowIdleMs: number;
  stampLog: string | null;
  /** The controller to tell where this ingress's rule API is (it re-points flows when it moves them). */
  controller?: { host: string; admin: number };
  /**
   * The deployment's NF and its log of strong global state: with both, and an NF that translates
   * addresses, replies to a translated address are stamped as part of their connection (switch/replies.ts).
   */
  nf?: { type: string; config: Record<string, unknown> };
  global?: StrongStoreSpec;
  /** The VXLAN door for real hosts, and the egress that ARP is carried to. */
  edge?: (EdgeConfig & { egress?: { host: string; port: number } }) | null;
}

export interface SinkSpec extends AdminSpec {
  port: number;
  ackTo: { host: string; port: number } | null;
  deliver: { host: string; port: number } | null;
  pcap: string | null;
  /** Deliver to the real hosts at the edge, in VXLAN. */
  edge?: EdgeConfig | null;
}

export type RoleCommand =
  | { type: 'digest' }
  | { type: 'report' }
  | { type: 'stop' }
  | { type: 'replicas' }
  | { type: 'provisioned'; id: number; instances?: string[]; error?: string };
/** A request a role makes of the launcher, answered by a `provisioned` command with the same id. */
export interface ProvisionRequest {
  type: 'provision';
  id: number;
  count: number;
  host?: string;
}
export type RoleReply =
  | { type: 'ready'; ports: Record<string, number> }
  | { type: 'digest'; digest: RunDigest }
  | { type: 'report'; report: SinkReport }
  | { type: 'stopped' }
  | { type: 'replicas'; replicas: Record<string, FlowDigest[]> }
  | { type: 'error'; error: string };

interface Role extends MetricSource {
  stop(): Promise<void>;
  digest?(): Promise<RunDigest>;
  report?(): SinkReport;
  readonly replicas?: { digests(): Record<string, FlowDigest[]> } | undefined;
}

export async function runNf(spec: NfSpec): Promise<void> {
  const logger = createLogger('nf', { fields: { instance: spec.id } });
  const nf = new NfInstance({
    ...spec,
    ...(spec.global === undefined ? {} : { strong: await openStore(spec.global, logger) }),
    logger,
  });
  nf.onFatal = () => {
    process.exitCode = 1;
    void nf.stop().finally(() => process.exit(1));
  };
  const { port, replication } = await nf.start();
  if (spec.peers !== undefined) await nf.replicateTo(spec.peers);
  const { admin, sign } = await serveAdmin(spec, nf);
  admin.route('GET', '/digest', () => nf.digest());
  admin.route('POST', '/cluster', async (body) => {
    const { version, members, peers } = parseClusterConfig(body);
    await nf.setCluster(version, members, peers);
    return { ok: true };
  });
  admin.route('POST', '/gossip', async (body) => {
    const b = (body ?? {}) as Record<string, unknown>;
    const version = b.version;
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1)
      throw new NfsError(ErrorCode.CONFIG, 'gossip.version: must be an integer >= 1');
    await nf.setGossip(version, peerList(b.gossip, 'gossip.peers') ?? []);
    return { ok: true };
  });
  addMoveRoutes(admin, nf);
  const origin = (body: unknown): string => {
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof b.origin !== 'string' || b.origin === '')
      throw new NfsError(ErrorCode.CONFIG, 'takeover.origin: must be an instance id');
    return b.origin;
  };
  admin.route('POST', '/takeover/fence', (body) => {
    nf.fenceOrigin(origin(body));
    return { ok: true };
  });
  admin.route('POST', '/takeover', (body) => {
    const b = (body ?? {}) as Record<string, unknown>;
    const from = origin(b);
    // An instance that held no flows yet (a replacement killed at once) leaves nothing to take over.
    const none = b.flows === undefined || (Array.isArray(b.flows) && b.flows.length === 0);
    return nf.takeOver(from, none ? [] : flowList(b.flows, 'takeover.flows'));
  });
  admin.route('POST', '/flush', () => {
    nf.flushBatches();
    return { ok: true };
  });
  let stopReports: (() => void) | undefined;
  if (spec.controller !== undefined) {
    const c = spec.controller;
    const answer = await adminCall(
      c.host,
      c.admin,
      '/register',
      { id: spec.id, host: spec.host, port, replication, admin: admin.port },
      sign,
    );
    if (typeof answer.emitter === 'number') nf.setEmitter(answer.emitter);
    const hb = answer.heartbeat_ms;
    if (typeof answer.token !== 'string')
      throw new NfsError(ErrorCode.PROCESS, 'register: the controller gave no token');
    const stopBeats = reportToController(
      spec.id,
      Buffer.from(answer.token, 'hex'),
      { host: c.host, report: answer.report as number },
      typeof hb === 'number' && hb > 0 ? hb : DEFAULT_FAILURE.heartbeatMs,
      () => nf.load(),
    );
    const stopLiveness =
      typeof answer.liveness === 'number'
        ? keepLiveness(spec.id, answer.token, { host: c.host, port: answer.liveness }, logger)
        : () => undefined;
    stopReports = () => {
      stopLiveness();
      stopBeats();
    };
  }
  attach(
    {
      collect: (out) => {
        nf.collect(out);
      },
      stop: async () => {
        stopReports?.();
        await nf.stop();
      },
      digest: () => nf.digest(),
      replicas: nf.replicas,
    },
    admin,
    { port, replication, admin: admin.port },
  );
}

export async function runController(spec: ControllerSpec): Promise<void> {
  const logger = createLogger(
    'controller',
    spec.ha === undefined ? {} : { fields: { controller: spec.ha.id } },
  );
  const ha = spec.ha === undefined ? undefined : await lead(spec.ha, logger);
  const { admin, sign } = adminServer(spec);
  const controller = new Controller(
    {
      clusterSize: spec.clusterSize,
      host: spec.host,
      lb: spec.lb,
      ...(sign.key === undefined ? {} : { adminKey: sign.key }),
      ...(process.connected ? { provisioner: launcherProvisioner() } : {}),
      ...(spec.moveTimeoutMs === undefined ? {} : { moveTimeoutMs: spec.moveTimeoutMs }),
      ...(spec.replicas === undefined ? {} : { replicas: spec.replicas }),
      ...(spec.failure === undefined ? {} : { failure: spec.failure }),
      ...(spec.egress === undefined ? {} : { egress: spec.egress }),
      ...(spec.ha === undefined
        ? {}
        : { reportPort: spec.ha.reportPort, livenessPort: spec.ha.livenessPort }),
      ...(ha === undefined
        ? {}
        : { journal: ha.journal, ...(ha.restore === undefined ? {} : { restore: ha.restore }) }),
    },
    logger,
    wallClock,
  );
  if (ha !== undefined) admin.registry.add(ha.election);
  const report = await controller.start(admin);
  const sequencer =
    spec.sequencer === undefined
      ? undefined
      : new SequencerServer({ key: Buffer.from(spec.sequencer.key, 'hex'), logger });
  await sequencer?.listen(spec.host, 0);
  await admin.start();
  attach(
    {
      collect: () => undefined,
      stop: async () => {
        controller.stop();
        await sequencer?.stop();
        await ha?.election.stop();
        ha?.journal.close();
      },
    },
    admin,
    { admin: admin.port, report, ...(sequencer === undefined ? {} : { sequencer: sequencer.port }) },
  );
}

/**
 * Waits to lead the deployment's controllers (election.ts), then loads what the previous leader saved
 * (journal.ts). Until it leads, a `stop` from the launcher ends it. Once it leads and loses the lease, it
 * exits at once: another controller may lead from then on, and two must never act together.
 */
async function lead(
  ha: NonNullable<ControllerSpec['ha']>,
  logger: Logger,
): Promise<{ election: LeaderElection; journal: EtcdJournal; restore: Restored | undefined }> {
  // Loaded only here: the etcd client (gRPC) adds to every process's start otherwise.
  const [{ LeaderElection }, { EtcdJournal }] = await Promise.all([
    import('../controller/election.js'),
    import('../controller/journal.js'),
  ]);
  const election = new LeaderElection({
    hosts: ha.endpoints,
    prefix: ha.prefix,
    id: ha.id,
    ttlSeconds: CONTROLLER_TTL_S,
    logger,
  });
  await election.start();
  const standing = (msg: RoleCommand): void => {
    if (msg.type === 'stop') void election.stop().finally(() => process.exit(0));
  };
  process.on('message', standing);
  logger.info('controller stands by for leadership', { id: ha.id });
  await election.campaign();
  process.off('message', standing);
  election.onDemoted = (why) => {
    logger.error('controller lost its leadership; exiting so that it never acts beside the new leader', {
      why,
    });
    process.exit(EXIT_DEMOTED);
  };
  const journal = new EtcdJournal({ hosts: ha.endpoints, prefix: ha.prefix });
  const restore = await journal.load();
  logger.info('controller leads', { id: ha.id, term: election.term, carries_on: restore !== undefined });
  return { election, journal, restore };
}

/**
 * How long a dead leading controller's lease lives, which is how long the deployment goes without one
 * (the dataplane forwards meanwhile). Shorter makes takeover quicker, and an etcd stall more likely to
 * demote a healthy leader (election.ts): with 2 s, a leader on a loaded 2-core machine, its etcd members on
 * the same cores, was demoted now and then within a second of leading.
 */
const CONTROLLER_TTL_S = 4;

/** The launcher that forked this process starts instances for the controller (LocalDeployment.add). */
function launcherProvisioner(): Provisioner {
  let ids = 0;
  const waiting = new Map<number, (reply: Extract<RoleCommand, { type: 'provisioned' }>) => void>();
  process.on('message', (msg: RoleCommand) => {
    if (msg.type === 'provisioned') waiting.get(msg.id)?.(msg);
  });
  return {
    add: (count, host) =>
      new Promise((resolve, reject) => {
        const id = ++ids;
        waiting.set(id, (reply) => {
          waiting.delete(id);
          if (reply.instances !== undefined) resolve(reply.instances);
          else reject(new NfsError(ErrorCode.PROCESS, `instances: ${reply.error ?? 'the launcher failed'}`));
        });
        const req: ProvisionRequest = {
          type: 'provision',
          id,
          count,
          ...(host === undefined ? {} : { host }),
        };
        process.send?.(req);
      }),
  };
}

/**
 * The steps of a move of one or more flows on an NF instance, driven by the controller. Each step names its
 * flows in a list and answers per flow, in the same order:
 *   POST /move/expect  { flows, guarantee }           destination: hold the flows' packets
 *   POST /move/freeze  { flows, to: {host, port}, intra, guarantee, settle_ms, deadline_ms }
 *                                                     source: park each flow and close its batch (resuming it
 *                                                     if no commit comes within `deadline_ms`); answers
 *                                                     { flows: [{ version, expected, last_delta_bytes, full_bytes,
 *                                                     state? } | null] } — the full state when `intra` is false,
 *                                                     null for a flow that is not here to move
 *   POST /move/state   { flows }                      source: the frozen flows' full states
 *   POST /move/install { from, flows: [{ flow, expected, version, state? }], wait_ms }
 *                                                     destination: take each state (from its own replica of
 *                                                     `from` when none is given) and resume, waiting up to
 *                                                     `wait_ms` for the source's packets; { ok: [bool] },
 *                                                     false for a flow not expected here (any more)
 *   POST /move/commit  { flows }                      source: the re-point comes; { ok: [bool] }, false for a
 *                                                     flow it took back because its parked packets hit the bound
 *   POST /move/finish  { flows, wait_ms }             source: wait for the end-of-move markers, hand over;
 *                                                     { parked: [n] }
 *   POST /move/abort   { flows, side }                undo: the source resumes, the destination forgets
 */
function addMoveRoutes(admin: AdminServer, nf: NfInstance): void {
  const frozen = new Map<string, Uint8Array>();
  const read = (body: unknown): { b: Record<string, unknown>; keys: FlowKey[] } => {
    const b = (body ?? {}) as Record<string, unknown>;
    return { b, keys: flowList(b.flows, 'move.flows') };
  };
  admin.route('POST', '/move/expect', async (body) => {
    const { b, keys } = read(body);
    const guarantee = parseGuarantee(b.guarantee, 'move.guarantee');
    await nf.moveStep(
      'expect',
      keys.map((key) => ({ key })),
      { guarantee },
    );
    return { ok: true };
  });
  admin.route('POST', '/move/freeze', async (body) => {
    const { b, keys } = read(body);
    const to = b.to as { host?: unknown; port?: unknown } | undefined;
    if (typeof to?.host !== 'string' || typeof to.port !== 'number') {
      throw new NfsError(ErrorCode.CONFIG, 'move.to: must be { host, port }');
    }
    const results = await nf.moveStep(
      'freeze',
      keys.map((key) => ({ key })),
      {
        to: { host: to.host, port: to.port },
        guarantee: parseGuarantee(b.guarantee, 'move.guarantee'),
        // Only a destination in the cluster installs from its replicas, which must be current first.
        settleMs: b.intra === true ? millis(b.settle_ms, 'move.settle_ms', 2000) : 0,
        deadlineMs: millis(b.deadline_ms, 'move.deadline_ms', 60_000),
      },
    );
    return {
      flows: results.map((r, i) => {
        if (r.frozen === undefined) return null;
        frozen.set(flowKeyString(keys[i]!), r.frozen.state);
        const { version, expected, lastDelta, state } = r.frozen;
        return {
          version,
          expected,
          last_delta_bytes: lastDelta,
          full_bytes: state.length,
          ...(b.intra === true ? {} : { state: Buffer.from(state).toString('base64') }),
        };
      }),
    };
  });
  admin.route('POST', '/move/state', (body) => {
    const { keys } = read(body);
    return {
      states: keys.map((key) => {
        const state = frozen.get(flowKeyString(key));
        return state === undefined ? null : Buffer.from(state).toString('base64');
      }),
    };
  });
  admin.route('POST', '/move/install', async (body) => {
    const b = (body ?? {}) as Record<string, unknown>;
    if (!Array.isArray(b.flows) || b.flows.length === 0)
      throw new NfsError(ErrorCode.CONFIG, 'move.flows: must be a non-empty list');
    const from = b.from;
    const wanted = b.flows.map((f: unknown, i) => {
      const o = (f ?? {}) as Record<string, unknown>;
      if (typeof o.flow !== 'string')
        throw new NfsError(ErrorCode.CONFIG, `move.flows[${i}].flow: must be a flow key string`);
      if (typeof o.expected !== 'number' || !Number.isSafeInteger(o.expected) || o.expected < 1)
        throw new NfsError(ErrorCode.CONFIG, `move.flows[${i}].expected: must be an integer >= 1`);
      const key = canonical(parseFlowKeyString(o.flow));
      let state: Uint8Array | undefined;
      if (typeof o.state === 'string') state = Buffer.from(o.state, 'base64');
      else if (typeof from === 'string' && typeof o.version === 'number')
        state = nf.replicas?.stateOf(from, key, o.version);
      return { key, expected: o.expected, state };
    });
    // A flow whose replica here is not at the source's version cannot be installed from it.
    const ready = wanted.flatMap(({ key, expected, state }) =>
      state === undefined ? [] : [{ key, expected, state }],
    );
    const installed =
      ready.length === 0
        ? []
        : await nf.moveStep('install', ready, { waitMs: millis(b.wait_ms, 'move.wait_ms', 5000) });
    // Not installed either: a flow no longer expected here (its move was called off meanwhile).
    let next = 0;
    return { ok: wanted.map((w) => w.state !== undefined && installed[next++]!.ok) };
  });
  admin.route('POST', '/move/commit', async (body) => {
    const { keys } = read(body);
    const results = await nf.moveStep(
      'commit',
      keys.map((key) => ({ key })),
    );
    return { ok: results.map((r) => r.ok) };
  });
  admin.route('POST', '/move/finish', async (body) => {
    const { b, keys } = read(body);
    const parked = await nf.finishMoves(keys, millis(b.wait_ms, 'move.wait_ms', 5000));
    for (const key of keys) frozen.delete(flowKeyString(key));
    return { parked };
  });
  admin.route('POST', '/move/abort', async (body) => {
    const { b, keys } = read(body);
    for (const key of keys) frozen.delete(flowKeyString(key));
    await nf.moveStep(
      b.side === 'destination' ? 'forget' : 'abort',
      keys.map((key) => ({ key })),
    );
    return { ok: true };
  });
}

/** A non-empty list of flow key strings, in canonical form. */
function flowList(v: unknown, field: string): FlowKey[] {
  if (!Array.isArray(v) || v.length === 0)
    throw new NfsError(ErrorCode.CONFIG, `${field}: must be a non-empty list of flow key strings`);
  return v.map((f: unknown, i) => {
    if (typeof f !== 'string')
      throw new NfsError(ErrorCode.CONFIG, `${field}[${i}]: must be a flow key string`);
    return canonical(parseFlowKeyString(f));
  });
}

/** A duration in milliseconds, 1..60000; `def` when absent. */
function millis(v: unknown, field: string, def: number): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > 60_000)
    throw new NfsError(ErrorCode.CONFIG, `${field}: must be a number of milliseconds in 1..60000`);
  return v;
}

function canonical(k: FlowKey): FlowKey {
  return canonicalKey(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto);
}

/** The exit status of a controller that lost its leadership (another may lead now). */
export const EXIT_DEMOTED = 4;

/** POST /cluster { version, members, peers? }: without `peers`, only whom to accept frames from changes. */
function parseClusterConfig(body: unknown): { version: number; members: string[]; peers?: Peer[] } {
  const b = (body ?? {}) as Record<string, unknown>;
  const version = b.version;
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
    throw new NfsError(ErrorCode.CONFIG, 'cluster.version: must be an integer >= 1');
  }
  const members = b.members;
  if (!Array.isArray(members) || !members.every((m) => typeof m === 'string')) {
    throw new NfsError(ErrorCode.CONFIG, 'cluster.members: must be a list of instance ids');
  }
  const peers = peerList(b.peers, 'cluster.peers');
  return { version, members, ...(peers === undefined ? {} : { peers }) };
}

function peerList(v: unknown, field: string): Peer[] | undefined {
  if (v === undefined) return undefined;
  if (
    !Array.isArray(v) ||
    !v.every((p: unknown) => {
      const o = (p ?? {}) as Record<string, unknown>;
      return typeof o.id === 'string' && typeof o.host === 'string' && typeof o.port === 'number';
    })
  ) {
    throw new NfsError(ErrorCode.CONFIG, `${field}: must be a list of { id, host, port }`);
  }
  return v as Peer[];
}

export async function runIngress(spec: IngressSpec): Promise<void> {
  const logger = createLogger('ingress');
  const replies = await followReplies(spec, logger);
  const edge = spec.edge ?? undefined;
  const ingress = new Ingress(
    {
      host: spec.host,
      port: spec.port,
      servicePort: spec.servicePort,
      instances: spec.instances,
      vni: spec.vni,
      flowIdleMs: spec.flowIdleMs,
      ...(spec.stampLog === null ? {} : { stampLog: new PcapWriter(spec.stampLog, LinkType.RAW) }),
      ...(edge === undefined
        ? {}
        : {
            edge: {
              port: edge.vxlanPort,
              hosts: new HostTable(edge),
              ...(edge.egress === undefined ? {} : { egress: edge.egress }),
            },
          }),
      ...(replies === undefined ? {} : { replies: replies.map }),
    },
    logger,
  );
  const ports = await ingress.start();
  const { admin, sign } = await serveAdmin(spec, ingress);
  admin.route('GET', '/rules', () => ingress.switch.listRules());
  // Instances can join while it runs: the routes read the ingress's own, growing list.
  const instances = ingress.endpoints;
  admin.route('POST', '/rules', (body) => installRule(ingress, instances, body));
  admin.route('POST', '/live', (body) => setLive(ingress, instances, body));
  admin.route('GET', '/owner', (query) => ownerOf(ingress, instances, query));
  admin.route('POST', '/owner', (body) => ownersOf(ingress, instances, body));
  admin.route('GET', '/flows', (query) => flowsOf(ingress, instances, query));
  admin.route('POST', '/instances', (body) => addInstance(ingress, body));
  admin.route('POST', '/secondaries', (body) => setSecondaries(ingress, instances, body));
  if (spec.controller !== undefined) {
    // The answer names each instance's secondary: copies flow from the first packet on.
    const answer = await adminCall(
      spec.controller.host,
      spec.controller.admin,
      '/ingress',
      { host: spec.host, admin: admin.port, instances: instances.map((i) => i.id) },
      sign,
    );
    // Instances that registered after the launcher listed them for this ingress (a replacement, one added).
    if (Array.isArray(answer.instances))
      for (const missed of answer.instances) await addInstance(ingress, missed);
    setSecondaries(ingress, instances, answer);
  }
  attach(
    {
      collect: (out) => {
        ingress.collect(out);
      },
      stop: async () => {
        await ingress.stop();
        await replies?.stop();
      },
    },
    admin,
    { ...ports, admin: admin.port },
  );
}

/**
 * Follows the deployment's log as every instance does, for the NF's pools alone (the ingress claims
 * nothing), so that the NF can tell whose connection a reply to a translated address belongs to. Undefined
 * when there is no log, or the NF translates no address.
 */
async function followReplies(
  spec: IngressSpec,
  logger: Logger,
): Promise<{ map: ReplyMap; stop: () => Promise<void> } | undefined> {
  if (spec.nf === undefined || spec.global === undefined) return undefined;
  const mirror = new StrongGlobalState(new LocalGlobalState());
  const nf = createNf(spec.nf.type, spec.nf.config, mirror);
  const replyOwner = nf.replyOwner?.bind(nf);
  if (replyOwner === undefined) return undefined;
  const store = await openStore(spec.global, logger);
  const pools = new StrongPools(store, { self: 'ingress' }, logger);
  for (const p of mirror.declared()) pools.define(p.name, p.first, p.last);
  const map = new ReplyMap(replyOwner);
  pools.onApplied = (data) => {
    mirror.applyLog([data]);
    map.changed();
  };
  await store.start();
  await pools.start();
  return {
    map,
    stop: async () => {
      await pools.stop();
      await store.stop();
    },
  };
}

export async function runSink(spec: SinkSpec): Promise<void> {
  const logger = createLogger('sink');
  const sink = new Sink(
    {
      host: spec.host,
      port: spec.port,
      ...(spec.ackTo === null ? {} : { ackTo: spec.ackTo }),
      ...(spec.deliver === null ? {} : { deliver: spec.deliver }),
      ...(spec.pcap === null ? {} : { pcap: new PcapWriter(spec.pcap, LinkType.RAW) }),
      ...(spec.edge === undefined || spec.edge === null ? {} : { edge: new HostTable(spec.edge) }),
    },
    logger,
  );
  const { port } = await sink.start();
  const { admin } = await serveAdmin(spec, sink);
  admin.route('GET', '/report', () => sink.report());
  admin.route('POST', '/fence', (body) => {
    const b = (body ?? {}) as Record<string, unknown>;
    sink.fence(b.emitter as number, b.since_ms === undefined ? 0 : (b.since_ms as number));
    return { ok: true };
  });
  attach(sink, admin, { port, admin: admin.port });
}

/** The role's admin keys, when its spec has the deployment key. */
function keysOf(spec: AdminSpec): AdminKeys | undefined {
  return spec.key === undefined ? undefined : adminKeys(Buffer.from(spec.key, 'hex'));
}

/** The role's admin API, not yet started, and the key that signs what the role asks of the others. */
function adminServer(spec: AdminSpec): { admin: AdminServer; sign: { key?: Buffer } } {
  const keys = keysOf(spec);
  const admin = new AdminServer({
    host: spec.adminHost ?? (keys === undefined ? '127.0.0.1' : spec.host),
    port: spec.adminPort,
    registry: new MetricsRegistry(),
    ...(keys === undefined ? {} : { keys }),
  });
  return { admin, sign: keys === undefined ? {} : { key: keys.internal } };
}

async function serveAdmin(
  spec: AdminSpec,
  source: MetricSource,
): Promise<{ admin: AdminServer; sign: { key?: Buffer } }> {
  const served = adminServer(spec);
  served.admin.registry.add(source);
  await served.admin.start();
  return served;
}

/**
 * POST /secondaries { secondaries: { "nf-0": "nf-1", "nf-1": null, … } }: where copies of each named
 * instance's packets go (null: nowhere). Every entry is checked before any applies.
 */
function setSecondaries(
  ingress: Ingress,
  instances: readonly Endpoint[],
  body: unknown,
): { secondaries: Record<string, string | null> } {
  const given = ((body ?? {}) as Record<string, unknown>).secondaries;
  if (given === null || typeof given !== 'object' || Array.isArray(given))
    throw new NfsError(ErrorCode.CONFIG, 'secondaries: must map instance ids to instance ids or null');
  const index = (id: unknown, field: string): number => {
    const at = instances.findIndex((e) => e.id === id);
    if (at < 0) throw new NfsError(ErrorCode.CONFIG, `${field}: no instance ${JSON.stringify(id)}`);
    return at;
  };
  const pairs = Object.entries(given as Record<string, unknown>).map(([primary, secondary]) => [
    index(primary, 'secondaries'),
    secondary === null ? -1 : index(secondary, `secondaries.${primary}`),
  ]);
  for (const [p, s] of pairs) ingress.switch.setSecondary(p!, s!);
  const out: Record<string, string | null> = {};
  instances.forEach((e, i) => (out[e.id] = instances[ingress.switch.secondaryOf(i)]?.id ?? null));
  return { secondaries: out };
}

/**
 * POST /rules { flow: "udp 10.0.0.1:5000 198.51.100.10:80", primary: "nf-3", epoch, move? }
 * → { installed }, or many at once: { rules: [ … ] } → { installed: [ … ] }. Every rule of a list is checked
 * before any is installed, so a bad one changes nothing.
 */
function installRule(
  ingress: Ingress,
  instances: readonly Endpoint[],
  body: unknown,
): { installed: boolean | boolean[] } {
  const b = (body ?? {}) as Record<string, unknown>;
  if (b.rules === undefined) {
    const rule = parseRule(instances, b, 'rule');
    return { installed: applyRule(ingress, rule) };
  }
  if (!Array.isArray(b.rules)) throw new NfsError(ErrorCode.CONFIG, 'rules: must be a list of rules');
  const rules = b.rules.map((r: unknown, i) => parseRule(instances, r, `rules[${i}]`));
  return { installed: rules.map((r) => applyRule(ingress, r)) };
}

interface RuleRequest {
  key: FlowKey;
  spec: { primary: number; epoch: number };
  move: boolean;
}

function parseRule(instances: readonly Endpoint[], rule: unknown, field: string): RuleRequest {
  const b = (rule ?? {}) as Record<string, unknown>;
  const index = (name: string): number | undefined => {
    const v = b[name];
    if (v === undefined || v === null) return undefined;
    const i = instances.findIndex((e) => e.id === v);
    if (i < 0) throw new NfsError(ErrorCode.CONFIG, `${field}.${name}: no instance ${JSON.stringify(v)}`);
    return i;
  };
  if (typeof b.flow !== 'string')
    throw new NfsError(ErrorCode.CONFIG, `${field}.flow: must be a flow key string`);
  const primary = index('primary');
  if (primary === undefined) throw new NfsError(ErrorCode.CONFIG, `${field}.primary: required`);
  const epoch = b.epoch;
  if (typeof epoch !== 'number' || !Number.isInteger(epoch) || epoch < 0) {
    throw new NfsError(ErrorCode.CONFIG, `${field}.epoch: must be an integer >= 0`);
  }
  return { key: parseFlowKeyString(b.flow), spec: { primary, epoch }, move: b.move === true };
}

function applyRule(ingress: Ingress, r: RuleRequest): boolean {
  // A move also tells the old owner, with an end-of-move marker, that nothing more will come its way.
  return r.move ? ingress.repoint(r.key, r.spec) : ingress.switch.installRule(r.key, r.spec);
}

/** POST /instances { id, host, port }: an instance joined; it owns no flow until `/live` lists it. */
async function addInstance(ingress: Ingress, body: unknown): Promise<{ id: string; index: number }> {
  const b = (body ?? {}) as Record<string, unknown>;
  if (typeof b.id !== 'string' || b.id === '')
    throw new NfsError(ErrorCode.CONFIG, 'instance.id: must be a non-empty string');
  if (typeof b.host !== 'string' || b.host === '')
    throw new NfsError(ErrorCode.CONFIG, 'instance.host: must be a non-empty string');
  const port = b.port;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)
    throw new NfsError(ErrorCode.CONFIG, 'instance.port: must be a port number 1..65535');
  return { id: b.id, index: await ingress.addInstance({ id: b.id, host: b.host, port }) };
}

/** GET /owner?flow=…: the instance that owns a flow now. */
function ownerOf(ingress: Ingress, instances: readonly Endpoint[], query: unknown): { owner: string | null } {
  const flow = (query ?? {}) as Record<string, unknown>;
  if (typeof flow.flow !== 'string')
    throw new NfsError(ErrorCode.CONFIG, 'owner.flow: must be a flow key string');
  const at = ingress.switch.owner(parseFlowKeyString(flow.flow));
  return { owner: at < 0 ? null : instances[at]!.id };
}

/** POST /owner { flows: [ … ] }: the instance that owns each flow now (null: none is live). */
function ownersOf(
  ingress: Ingress,
  instances: readonly Endpoint[],
  body: unknown,
): { owners: (string | null)[] } {
  const keys = flowList(((body ?? {}) as Record<string, unknown>).flows, 'owner.flows');
  return {
    owners: keys.map((key) => {
      const at = ingress.switch.owner(key);
      return at < 0 ? null : (instances[at]?.id ?? null);
    }),
  };
}

/** POST /live { instances: ["nf-0", "nf-2"] }: the instances that own flows without a rule. */
function setLive(
  ingress: Ingress,
  instances: readonly Endpoint[],
  body: unknown,
): { live: string[]; pinned: number } {
  const list = (body ?? {}) as Record<string, unknown>;
  if (!Array.isArray(list.instances))
    throw new NfsError(ErrorCode.CONFIG, 'live.instances: must be a list of instance ids');
  const live = list.instances.map((id: unknown, i) => {
    const at = instances.findIndex((e) => e.id === id);
    if (at < 0)
      throw new NfsError(ErrorCode.CONFIG, `live.instances[${i}]: no instance ${JSON.stringify(id)}`);
    return at;
  });
  const pinned = ingress.setLive(live);
  return { live: live.map((i) => instances[i]!.id), pinned };
}

/**
 * GET /flows[?owner=nf-3]: the flows running now (or one instance's), with owners and packets so far, and
 * the stamp clock as the list was made (`stamp_ms`: a failover fences the egress from there on).
 */
function flowsOf(
  ingress: Ingress,
  instances: readonly Endpoint[],
  query: unknown,
): { flows: FlowOwner[]; stamp_ms: number } {
  const owner = ((query ?? {}) as Record<string, unknown>).owner;
  const at = owner === undefined ? undefined : instances.findIndex((e) => e.id === owner);
  if (at === -1) throw new NfsError(ErrorCode.CONFIG, `flows.owner: no instance ${JSON.stringify(owner)}`);
  return {
    flows: ingress.flows(at).map((f) => ({
      flow: flowKeyString(f.key),
      owner: instances[f.owner]?.id ?? null,
      packets: f.packets,
    })),
    stamp_ms: ingress.stampTime(),
  };
}

/** Wires a started role to the launcher's IPC channel (if any) and to the process's signals. */
function attach(role: Role, admin: AdminServer, ports: Record<string, number>): void {
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await role.stop();
      await admin.stop();
      send({ type: 'stopped' });
      if (process.connected) process.disconnect();
    })());
  const send = (msg: RoleReply): void => {
    if (process.connected) process.send?.(msg);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
  process.on('message', (cmd: RoleCommand) => {
    void (async () => {
      try {
        switch (cmd.type) {
          case 'digest':
            if (role.digest !== undefined) send({ type: 'digest', digest: await role.digest() });
            break;
          case 'report':
            if (role.report !== undefined) send({ type: 'report', report: role.report() });
            break;
          case 'replicas':
            send({ type: 'replicas', replicas: role.replicas?.digests() ?? {} });
            break;
          case 'stop':
            await stop();
            break;
        }
      } catch (err) {
        send({ type: 'error', error: String(err) });
      }
    })();
  });
  // The launcher going away (crash, kill -9) must not leave this role running alone.
  process.on('disconnect', () => void stop());
  // Forked by a launcher: say so over IPC. Started by hand: say where to send traffic on stdout.
  if (process.connected) send({ type: 'ready', ports });
  else process.stdout.write(JSON.stringify(ports) + '\n');
}
