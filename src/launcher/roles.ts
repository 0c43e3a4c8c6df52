/**
 * Each role (ingress, NF instance, sink) as a process: builds the component from a JSON spec, serves
 * its admin port (/metrics, /healthz and the role's own routes), and, when a launcher forked it, talks
 * to the launcher over the IPC channel:
 *
 *   child → launcher   { type: 'ready', ports }   once listening
 *   launcher → child   { type: 'digest' } | { type: 'report' } | { type: 'stop' }
 *   child → launcher   { type: 'digest', digest } | { type: 'report', report } | { type: 'stopped' }
 *
 * SIGINT and SIGTERM stop the role in order (sockets, workers, admin port) before the process exits.
 */
import { ErrorCode, NfsError } from '../errors.js';
import dgram from 'node:dgram';
import { wallClock } from '../clock.js';
import type { LoadReport } from '../controller/controller.js';
import { Controller } from '../controller/controller.js';
import { createLogger } from '../log.js';
import { AdminServer, adminCall, MetricsRegistry } from '../metrics.js';
import { NfInstance } from '../nf/instance.js';
import type { ProcessorOptions } from '../nf/processor.js';
import { canonicalKey, flowKeyString, parseFlowKeyString } from '../packet/flow-key.js';
import type { Peer } from '../nf/replication.js';
import type { FlowDigest, RunDigest } from '../state/digest.js';
import type { Endpoint } from '../switch/ingress.js';
import { Ingress } from '../switch/ingress.js';
import { LinkType, PcapWriter } from '../traffic/pcap.js';
import type { SinkReport } from '../traffic/sink.js';
import { Sink } from '../traffic/sink.js';
import type { FlowKey, MetricSource } from '../types.js';

export interface NfSpec {
  id: string;
  host: string;
  port: number;
  adminPort: number;
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
}

export interface ControllerSpec {
  host: string;
  adminPort: number;
  clusterSize: number;
}

export interface IngressSpec {
  host: string;
  port: number;
  servicePort: number;
  adminPort: number;
  instances: Endpoint[];
  vni: number;
  flowIdleMs: number;
  stampLog: string | null;
  /** The controller to tell where this ingress's rule API is (it re-points flows when it moves them). */
  controller?: { host: string; admin: number };
}

export interface SinkSpec {
  host: string;
  port: number;
  adminPort: number;
  ackTo: { host: string; port: number } | null;
  deliver: { host: string; port: number } | null;
  pcap: string | null;
}

export type RoleCommand = { type: 'digest' } | { type: 'report' } | { type: 'stop' } | { type: 'replicas' };
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
  const nf = new NfInstance({ ...spec, logger });
  nf.onFatal = () => {
    process.exitCode = 1;
    void nf.stop().finally(() => process.exit(1));
  };
  const { port, replication } = await nf.start();
  if (spec.peers !== undefined) await nf.replicateTo(spec.peers);
  const admin = await serveAdmin(spec.host, spec.adminPort, nf);
  admin.route('GET', '/digest', () => nf.digest());
  admin.route('POST', '/cluster', async (body) => {
    const { version, members, peers } = parseClusterConfig(body);
    await nf.setCluster(version, members, peers);
    return { ok: true };
  });
  addMoveRoutes(admin, nf);
  let reporter: NodeJS.Timeout | undefined;
  if (spec.controller !== undefined) {
    const c = spec.controller;
    const { report } = await adminCall(c.host, c.admin, '/register', {
      id: spec.id,
      host: spec.host,
      port,
      replication,
      admin: admin.port,
    });
    reporter = reportLoad(spec.id, { host: c.host, report: report as number }, () => nf.load());
  }
  attach(
    {
      collect: (out) => {
        nf.collect(out);
      },
      stop: async () => {
        clearInterval(reporter);
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
  const logger = createLogger('controller');
  const controller = new Controller({ clusterSize: spec.clusterSize, host: spec.host }, logger, wallClock);
  const admin = new AdminServer({ host: spec.host, port: spec.adminPort, registry: new MetricsRegistry() });
  const report = await controller.start(admin);
  await admin.start();
  attach(
    {
      collect: () => undefined,
      stop: async () => {
        controller.stop();
        await Promise.resolve();
      },
    },
    admin,
    { admin: admin.port, report },
  );
}

/**
 * The steps of a flow move on an NF instance, driven by the controller:
 *   POST /move/expect  { flow }                          destination: hold the flow's packets
 *   POST /move/freeze  { flow, to: {host, port}, intra } source: park the flow, close its batch, hand back its
 *                                                        version and next sequence number (and its full state
 *                                                        when the destination is in another cluster)
 *   POST /move/install { flow, expected, version, from, state? } destination: take the state (from its own
 *                                                        replica of `from` when no state is given) and resume
 *   POST /move/finish  { flow }                          source: wait for the end-of-move marker, forward
 *   POST /move/abort   { flow, side }                    undo: the source resumes, the destination forgets
 */
function addMoveRoutes(admin: AdminServer, nf: NfInstance): void {
  const frozen = new Map<string, Uint8Array>();
  const flowOf = (body: unknown): { b: Record<string, unknown>; key: FlowKey } => {
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof b.flow !== 'string')
      throw new NfsError(ErrorCode.CONFIG, 'move.flow: must be a flow key string');
    return { b, key: canonical(parseFlowKeyString(b.flow)) };
  };
  admin.route('POST', '/move/expect', async (body) => {
    const { key } = flowOf(body);
    return nf.moveStep('expect', key);
  });
  admin.route('POST', '/move/freeze', async (body) => {
    const { b, key } = flowOf(body);
    const to = b.to as { host?: unknown; port?: unknown } | undefined;
    if (typeof to?.host !== 'string' || typeof to.port !== 'number') {
      throw new NfsError(ErrorCode.CONFIG, 'move.to: must be { host, port }');
    }
    const r = await nf.moveStep('freeze', key, { to: { host: to.host, port: to.port } });
    if (r.frozen === undefined)
      throw new NfsError(ErrorCode.STATE, `move: ${b.flow as string} is not here to move`);
    frozen.set(flowKeyString(key), r.frozen.state);
    const { version, expected, lastDelta } = r.frozen;
    return {
      version,
      expected,
      last_delta_bytes: lastDelta,
      full_bytes: r.frozen.state.length,
      ...(b.intra === true ? {} : { state: Buffer.from(r.frozen.state).toString('base64') }),
    };
  });
  admin.route('POST', '/move/state', (body) => {
    const { key } = flowOf(body);
    const state = frozen.get(flowKeyString(key));
    if (state === undefined) throw new NfsError(ErrorCode.STATE, 'move: no frozen state for that flow');
    return { state: Buffer.from(state).toString('base64') };
  });
  admin.route('POST', '/move/install', async (body) => {
    const { b, key } = flowOf(body);
    const expected = b.expected;
    if (typeof expected !== 'number') throw new NfsError(ErrorCode.CONFIG, 'move.expected: must be a number');
    let state: Uint8Array | undefined;
    if (typeof b.state === 'string') state = Buffer.from(b.state, 'base64');
    else if (typeof b.from === 'string' && typeof b.version === 'number') {
      state = nf.replicas?.stateOf(b.from, key, b.version);
    }
    if (state === undefined)
      throw new NfsError(ErrorCode.STATE, 'move: no replica of that flow at that version');
    return nf.moveStep('install', key, { state, expected });
  });
  admin.route('POST', '/move/finish', async (body) => {
    const { key } = flowOf(body);
    const forwarded = await nf.waitHandOver(key, 5000);
    frozen.delete(flowKeyString(key));
    if (forwarded === undefined)
      throw new NfsError(ErrorCode.TIMEOUT, 'move: no end-of-move marker within 5 s');
    return { forwarded };
  });
  admin.route('POST', '/move/abort', async (body) => {
    const { b, key } = flowOf(body);
    frozen.delete(flowKeyString(key));
    return nf.moveStep(b.side === 'destination' ? 'forget' : 'abort', key);
  });
}

function canonical(k: FlowKey): FlowKey {
  return canonicalKey(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto);
}

/** Load reports to the controller every 100 ms, over UDP (they double as heartbeats). */
function reportLoad(
  id: string,
  to: { host: string; report: number },
  load: () => LoadReport,
): NodeJS.Timeout {
  const socket = dgram.createSocket('udp4');
  socket.on('error', () => undefined);
  socket.unref();
  const timer = setInterval(() => {
    socket.send(JSON.stringify({ id, ...load() }), to.report, to.host);
  }, LOAD_REPORT_MS);
  timer.unref();
  return timer;
}

const LOAD_REPORT_MS = 100;

function parseClusterConfig(body: unknown): { version: number; members: string[]; peers: Peer[] } {
  const b = (body ?? {}) as Record<string, unknown>;
  const version = b.version;
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
    throw new NfsError(ErrorCode.CONFIG, 'cluster.version: must be an integer >= 1');
  }
  const members = b.members;
  const peers = b.peers;
  if (!Array.isArray(members) || !members.every((m) => typeof m === 'string')) {
    throw new NfsError(ErrorCode.CONFIG, 'cluster.members: must be a list of instance ids');
  }
  if (
    !Array.isArray(peers) ||
    !peers.every((p: unknown) => {
      const o = (p ?? {}) as Record<string, unknown>;
      return typeof o.id === 'string' && typeof o.host === 'string' && typeof o.port === 'number';
    })
  ) {
    throw new NfsError(ErrorCode.CONFIG, 'cluster.peers: must be a list of { id, host, port }');
  }
  return { version, members, peers: peers as Peer[] };
}

export async function runIngress(spec: IngressSpec): Promise<void> {
  const logger = createLogger('ingress');
  const ingress = new Ingress(
    {
      host: spec.host,
      port: spec.port,
      servicePort: spec.servicePort,
      instances: spec.instances,
      vni: spec.vni,
      flowIdleMs: spec.flowIdleMs,
      ...(spec.stampLog === null ? {} : { stampLog: new PcapWriter(spec.stampLog, LinkType.RAW) }),
    },
    logger,
  );
  const ports = await ingress.start();
  const admin = await serveAdmin(spec.host, spec.adminPort, ingress);
  admin.route('GET', '/rules', () => ingress.switch.listRules());
  admin.route('POST', '/rules', (body) => installRule(ingress, spec.instances, body));
  admin.route('POST', '/live', (body) => setLive(ingress, spec.instances, body));
  admin.route('GET', '/owner', (query) => ownerOf(ingress, spec.instances, query));
  admin.route('GET', '/flows', (query) => flowsOf(ingress, spec.instances, query));
  if (spec.controller !== undefined) {
    await adminCall(spec.controller.host, spec.controller.admin, '/ingress', {
      host: spec.host,
      admin: admin.port,
    });
  }
  attach(ingress, admin, { ...ports, admin: admin.port });
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
    },
    logger,
  );
  const { port } = await sink.start();
  const admin = await serveAdmin(spec.host, spec.adminPort, sink);
  admin.route('GET', '/report', () => sink.report());
  attach(sink, admin, { port, admin: admin.port });
}

async function serveAdmin(host: string, port: number, source: MetricSource): Promise<AdminServer> {
  const registry = new MetricsRegistry();
  registry.add(source);
  const admin = new AdminServer({ host, port, registry });
  await admin.start();
  return admin;
}

/** POST /rules { flow: "udp 10.0.0.1:5000 198.51.100.10:80", primary: "nf-3", secondary?: "nf-4", epoch } */
function installRule(
  ingress: Ingress,
  instances: readonly Endpoint[],
  body: unknown,
): { installed: boolean } {
  const b = (body ?? {}) as Record<string, unknown>;
  const index = (field: string): number | undefined => {
    const v = b[field];
    if (v === undefined || v === null) return undefined;
    const i = instances.findIndex((e) => e.id === v);
    if (i < 0) throw new NfsError(ErrorCode.CONFIG, `rule.${field}: no instance ${JSON.stringify(v)}`);
    return i;
  };
  if (typeof b.flow !== 'string')
    throw new NfsError(ErrorCode.CONFIG, 'rule.flow: must be a flow key string');
  const primary = index('primary');
  if (primary === undefined) throw new NfsError(ErrorCode.CONFIG, 'rule.primary: required');
  const epoch = b.epoch;
  if (typeof epoch !== 'number' || !Number.isInteger(epoch) || epoch < 0) {
    throw new NfsError(ErrorCode.CONFIG, 'rule.epoch: must be an integer >= 0');
  }
  const secondary = index('secondary');
  const key = parseFlowKeyString(b.flow);
  const spec = { primary, epoch, ...(secondary === undefined ? {} : { secondary }) };
  // A move also tells the old owner, with an end-of-move marker, that nothing more will come its way.
  return { installed: b.move === true ? ingress.repoint(key, spec) : ingress.switch.installRule(key, spec) };
}

/** GET /owner?flow=…: the instance that owns a flow now. */
function ownerOf(ingress: Ingress, instances: readonly Endpoint[], query: unknown): { owner: string | null } {
  const flow = (query ?? {}) as Record<string, unknown>;
  if (typeof flow.flow !== 'string')
    throw new NfsError(ErrorCode.CONFIG, 'owner.flow: must be a flow key string');
  const at = ingress.switch.owner(parseFlowKeyString(flow.flow));
  return { owner: at < 0 ? null : instances[at]!.id };
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

/** GET /flows?owner=nf-3: the flows running through an instance now. */
function flowsOf(ingress: Ingress, instances: readonly Endpoint[], query: unknown): { flows: string[] } {
  const q = (query ?? {}) as Record<string, unknown>;
  const at = instances.findIndex((e) => e.id === q.owner);
  if (at < 0) throw new NfsError(ErrorCode.CONFIG, `flows.owner: no instance ${JSON.stringify(q.owner)}`);
  return { flows: ingress.flowsOf(at).map(flowKeyString) };
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
