/**
 * What every role process shares; each role runs from a file of its own (run-nf.ts, run-controller.ts,
 * run-ingress.ts, run-sink.ts). A role builds its component from a JSON spec (the specs are here), serves
 * its admin port (/metrics, /healthz and the role's own routes), and, when a launcher forked it, talks
 * to the launcher over the IPC channel:
 *
 *   child → launcher   { type: 'ready', ports, workers? }   once listening (workers: an NF's worker ports)
 *   launcher → child   { type: 'digest' } | { type: 'report' } | { type: 'stop' }
 *   child → launcher   { type: 'digest', digest } | { type: 'report', report } | { type: 'stopped' }
 *
 * and the controller, the other way round, asks the launcher for more NF instances (POST /instances):
 *
 *   controller → launcher   { type: 'provision', id, count, host? }
 *   launcher → controller   { type: 'provisioned', id, instances } | { type: 'provisioned', id, error, code? }
 *
 * SIGINT and SIGTERM stop the role in order (sockets, workers, admin port) before the process exits.
 */
import { ErrorCode, NfsError } from '../errors.js';
import type { BalancerOptions } from '../controller/balancer.js';
import type { FailureOptions } from '../controller/detector.js';
import { adminKeys, type AdminKeys } from '../auth.js';
import { AdminServer } from '../admin-server.js';
import { MetricsRegistry } from '../metrics.js';
import { ProcessMetrics } from '../process-metrics.js';
import { EXIT_FENCED } from '../nf/liveness.js';
import type { ProcessorOptions } from '../nf/processor.js';
import { canonicalKey, parseFlowKeyString } from '../packet/flow-key.js';
import type { Peer } from '../nf/replication.js';
import type { FlowDigest, RunDigest } from '../state/digest.js';
import type { Endpoint } from '../switch/ingress.js';
import type { SinkReport } from '../traffic/sink.js';
import type { FlowKey, Logger, MetricSource } from '../types.js';
import type { GlobalStore } from '../global/store.js';
import { SequencerClient } from '../global/sequencer-client.js';
import type { EdgeConfig } from '../edge/hosts.js';
export { EXIT_FENCED };

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
  /** The first worker thread's port (0 or absent: any), see NfInstanceOptions. */
  workerPort?: number;
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
  /**
   * When it stops (SIGTERM, SIGINT), ask the controller to move its flows to the others first and leave
   * (a scale-down); if that fails, exit without a goodbye, so that it is failed over instead.
   */
  leaveOnStop?: boolean;
  /** The deployment's log for strong global state (absent: each worker has its share of each pool). */
  global?: StrongStoreSpec;
}

/** Where an instance finds the log: the controller's sequencer, or an etcd cluster under a key prefix. */
export type StrongStoreSpec =
  | { store: 'local'; host: string; port: number; key: string }
  | { store: 'etcd'; endpoints: string[]; prefix: string };

export async function openStore(spec: StrongStoreSpec, logger: Logger): Promise<GlobalStore> {
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
  /**
   * An OVS bridge routes the traffic (switch/ovs.ts): its OpenFlow management socket, and the address the
   * bridge sends the frames it routed to.
   */
  ovs?: { mgmt: string; host: string };
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
  | { type: 'provisioned'; id: number; instances?: string[]; error?: string; code?: ErrorCode };

/** A request a role makes of the launcher, answered by a `provisioned` command with the same id. */
export interface ProvisionRequest {
  type: 'provision';
  id: number;
  count: number;
  host?: string;
}

export type RoleReply =
  | { type: 'ready'; ports: Record<string, number>; workers?: number[] }
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

/** A non-empty list of flow key strings, in canonical form. */
export function flowList(v: unknown, field: string): FlowKey[] {
  if (!Array.isArray(v) || v.length === 0)
    throw new NfsError(ErrorCode.CONFIG, `${field}: must be a non-empty list of flow key strings`);
  return v.map((f: unknown, i) => {
    if (typeof f !== 'string')
      throw new NfsError(ErrorCode.CONFIG, `${field}[${i}]: must be a flow key string`);
    return canonical(parseFlowKeyString(f));
  });
}

export function canonical(k: FlowKey): FlowKey {
  return canonicalKey(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto);
}

/** The role's admin keys, when its spec has the deployment key. */
function keysOf(spec: AdminSpec): AdminKeys | undefined {
  return spec.key === undefined ? undefined : adminKeys(Buffer.from(spec.key, 'hex'));
}

/** The role's admin API, not yet started, and the key that signs what the role asks of the others. */
export function adminServer(spec: AdminSpec): { admin: AdminServer; sign: { key?: Buffer } } {
  const keys = keysOf(spec);
  const registry = new MetricsRegistry();
  registry.add(new ProcessMetrics());
  const admin = new AdminServer({
    host: spec.adminHost ?? (keys === undefined ? '127.0.0.1' : spec.host),
    port: spec.adminPort,
    registry,
    ...(keys === undefined ? {} : { keys }),
  });
  return { admin, sign: keys === undefined ? {} : { key: keys.internal } };
}

export async function serveAdmin(
  spec: AdminSpec,
  source: MetricSource,
): Promise<{ admin: AdminServer; sign: { key?: Buffer } }> {
  const served = adminServer(spec);
  served.admin.registry.add(source);
  await served.admin.start();
  return served;
}

/** Wires a started role to the launcher's IPC channel (if any) and to the process's signals. */
export function attach(
  role: Role,
  admin: AdminServer,
  ports: Record<string, number>,
  workers?: number[],
): void {
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
  const each = workers === undefined ? {} : { workers };
  if (process.connected) send({ type: 'ready', ports, ...each });
  else process.stdout.write(JSON.stringify({ ...ports, ...each }) + '\n');
}
