/**
 * The controller: the registry of NF instances and their clusters. Instances register over HTTP when they
 * start and report their load over UDP every 100 ms; the controller places each new instance in a cluster
 * (locality first, see clusters.ts), picks its secondary, and tells every member of the changed cluster who
 * its peers now are (POST /cluster on each member's admin port), so they replicate to each other.
 *
 *   const c = new Controller({ clusterSize: 4, host: '127.0.0.1' }, logger);
 *   await c.start(admin);          // routes on an AdminServer; returns the UDP report port
 *
 * HTTP API: POST /register (answers with the instance's cluster, its secondary and the UDP port for load
 * reports), GET /instances, GET /clusters, plus /metrics and /healthz.
 *
 * Load report (UDP, one JSON object): { "id": "nf-3", "received": n, "processed": n, "flows": n, "busy": 0..1 }.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import { ErrorCode, NfsError } from '../errors.js';
import { canonicalKey, flowKeyString, parseFlowKeyString } from '../packet/flow-key.js';
import type { AdminServer } from '../metrics.js';
import { adminCall } from '../metrics.js';
import type { Clock, Logger, MetricSample, MetricSource } from '../types.js';
import { ClusterMap } from './clusters.js';

export interface InstanceInfo {
  id: string;
  host: string;
  /** Data port (stamped packets). */
  port: number;
  /** Replication port (peers' batches). */
  replication: number;
  /** Admin HTTP port. */
  admin: number;
}

export interface LoadReport {
  received: number;
  processed: number;
  flows: number;
  busy: number;
}

interface Registered extends InstanceInfo {
  load: LoadReport | undefined;
  reportedAt: number;
  /** The cluster configuration this instance has acknowledged. */
  configured: boolean;
}

const MAX_REPORT_BYTES = 1024;

export class Controller implements MetricSource {
  private readonly map: ClusterMap;
  private readonly instances = new Map<string, Registered>();
  private readonly socket = dgram.createSocket('udp4');
  private configVersion = 0;
  private ingress: { host: string; admin: number } | undefined;
  private epoch = 0;
  private readonly moving = new Set<string>();
  private readonly draining = new Set<string>();
  /** Recent moves, oldest first (bounded). */
  readonly moves: MoveRecord[] = [];
  reports = 0;
  badReports = 0;

  constructor(
    private readonly options: { clusterSize: number; host: string; reportPort?: number },
    private readonly logger: Logger,
    private readonly clock: Clock,
  ) {
    this.map = new ClusterMap(options.clusterSize);
  }

  /** Adds the API to `admin` and opens the UDP report port; returns that port. */
  async start(admin: AdminServer): Promise<number> {
    admin.registry.add(this);
    admin.route('POST', '/register', (body) => this.register(body));
    admin.route('GET', '/instances', () => this.list());
    admin.route('POST', '/ingress', (body) => {
      const b = (body ?? {}) as Record<string, unknown>;
      if (typeof b.host !== 'string' || typeof b.admin !== 'number') {
        throw new NfsError(ErrorCode.CONFIG, 'ingress: must be { host, admin }');
      }
      this.ingress = { host: b.host, admin: b.admin };
      return { ok: true };
    });
    admin.route('POST', '/move', (body) => this.move(body));
    admin.route('POST', '/drain', (body) => this.drain(body));
    admin.route('GET', '/moves', () => this.moves);
    admin.route('GET', '/clusters', () =>
      this.map.clusters().map((c) => ({ id: c.id, members: c.members.map((m) => m.id) })),
    );
    this.socket.on('message', (msg) => {
      this.onReport(msg);
    });
    this.socket.bind(this.options.reportPort ?? 0, this.options.host);
    await once(this.socket, 'listening');
    return this.socket.address().port;
  }

  stop(): void {
    this.socket.close();
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_controller_instances', {}, this.instances.size]);
    out.push(['nfstate_controller_clusters', {}, this.map.clusters().length]);
    out.push(['nfstate_controller_load_reports_total', {}, this.reports]);
    out.push(['nfstate_controller_bad_load_reports_total', {}, this.badReports]);
  }

  private async register(
    body: unknown,
  ): Promise<{ cluster: string; secondary: string | null; report: number }> {
    const info = parseInstance(body);
    this.instances.set(info.id, { ...info, load: undefined, reportedAt: 0, configured: false });
    const cluster = this.map.join({ id: info.id, host: info.host });
    this.logger.info('instance registered', { id: info.id, host: info.host, cluster });
    await this.configure(cluster);
    return { cluster, secondary: this.map.secondaryOf(info.id) ?? null, report: this.socket.address().port };
  }

  /** Tells every member of a cluster its peers; the members then replicate to each other. */
  private async configure(clusterId: string): Promise<void> {
    const cluster = this.map.clusters().find((c) => c.id === clusterId);
    if (cluster === undefined) return;
    // Pushes for concurrent joins may arrive in any order; the version lets a member keep the newest.
    const version = ++this.configVersion;
    const members = cluster.members.map((m) => this.instances.get(m.id)!);
    await Promise.all(
      members.map(async (m) => {
        const peers = members
          .filter((p) => p.id !== m.id)
          .map((p) => ({ id: p.id, host: p.host, port: p.replication }));
        await adminCall(m.host, m.admin, '/cluster', {
          version,
          cluster: clusterId,
          members: members.map((p) => p.id),
          peers,
        });
        m.configured = true;
      }),
    );
  }

  /**
   * Moves a flow (DESIGN §5): the destination holds the flow's packets; the source parks them and hands
   * over its state — only the changes since the last replicated batch when both are in one cluster, the
   * full state otherwise; the switch is re-pointed and sends the source an end-of-move marker; the source
   * forwards what it parked. Any failure before the switch changes undoes both sides: the flow stays with
   * its source and nothing is lost.
   */
  private async move(body: unknown): Promise<MoveRecord> {
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof b.flow !== 'string')
      throw new NfsError(ErrorCode.CONFIG, 'move.flow: must be a flow key string');
    if (typeof b.to !== 'string') throw new NfsError(ErrorCode.CONFIG, 'move.to: must be an instance id');
    const ingress = this.ingress;
    if (ingress === undefined) throw new NfsError(ErrorCode.STATE, 'move: no ingress has registered');
    const flow = canonicalString(b.flow);
    // One move of a flow at a time: a second one would find it half-way and could undo the first's steps.
    if (this.moving.has(flow))
      throw new NfsError(ErrorCode.STATE, `move: ${flow} is already moving`, { retriable: true });
    this.moving.add(flow);
    try {
      return await this.moveOne(flow, ingress, b.to);
    } finally {
      this.moving.delete(flow);
    }
  }

  private async moveOne(
    flow: string,
    ingress: { host: string; admin: number },
    to: string,
  ): Promise<MoveRecord> {
    const owner = await adminCall(ingress.host, ingress.admin, `/owner?flow=${encodeURIComponent(flow)}`);
    const src = this.instances.get(owner.owner as string);
    const dst = this.instances.get(to);
    if (src === undefined || dst === undefined)
      throw new NfsError(ErrorCode.CONFIG, `move: unknown instance`);
    if (src.id === dst.id) throw new NfsError(ErrorCode.CONFIG, `move: ${flow} is already on ${dst.id}`);
    let intra = this.map.clusterOf(src.id)?.id === this.map.clusterOf(dst.id)?.id;
    const started = this.clock.now();
    const record = (r: Partial<MoveRecord>): MoveRecord => {
      const m: MoveRecord = {
        flow,
        from: src.id,
        to: dst.id,
        intra,
        state_bytes: 0,
        buffered: 0,
        duration_ms: this.clock.now() - started,
        aborted: false,
        ...r,
      };
      this.moves.push(m);
      if (this.moves.length > MAX_MOVES_KEPT) this.moves.shift();
      return m;
    };
    let frozen: Record<string, unknown> | undefined;
    let stateBytes = 0;
    try {
      await adminCall(dst.host, dst.admin, '/move/expect', { flow });
      frozen = await adminCall(src.host, src.admin, '/move/freeze', {
        flow,
        to: { host: dst.host, port: dst.port },
        intra,
      });
      const resume = { flow, expected: frozen.expected, version: frozen.version, from: src.id };
      if (intra) {
        try {
          await adminCall(dst.host, dst.admin, '/move/install', resume);
          stateBytes = frozen.last_delta_bytes as number;
        } catch {
          // The destination's replica is not current (it joined late, or missed a batch): ship it all.
          intra = false;
        }
      }
      if (!intra) {
        const state = frozen.state ?? (await adminCall(src.host, src.admin, '/move/state', { flow })).state;
        await adminCall(dst.host, dst.admin, '/move/install', { ...resume, state });
        stateBytes = frozen.full_bytes as number;
      }
      const rule = await adminCall(ingress.host, ingress.admin, '/rules', {
        flow,
        primary: dst.id,
        epoch: ++this.epoch,
        move: true,
      });
      if (rule.installed !== true) throw new NfsError(ErrorCode.STATE, 'move: the switch kept a newer rule');
    } catch (err) {
      await Promise.allSettled([
        adminCall(dst.host, dst.admin, '/move/abort', { flow, side: 'destination' }),
        frozen === undefined
          ? Promise.resolve({})
          : adminCall(src.host, src.admin, '/move/abort', { flow, side: 'source' }),
      ]);
      this.logger.warn('move aborted', { flow, from: src.id, to: dst.id, error: String(err) });
      return record({ aborted: true, error: String(err) });
    }
    const { forwarded } = await adminCall(src.host, src.admin, '/move/finish', { flow });
    return record({ state_bytes: stateBytes, buffered: forwarded as number });
  }

  /**
   * Drains an instance and lets it leave: new flows stop going to it (running flows are pinned where they
   * are), each of its flows moves to another member of its cluster (another cluster if it is alone), then it
   * leaves its cluster and the remaining members are told their new peers.
   */
  private async drain(
    body: unknown,
  ): Promise<{ id: string; moved: number; aborted: number; duration_ms: number }> {
    const b = (body ?? {}) as Record<string, unknown>;
    const inst = typeof b.id === 'string' ? this.instances.get(b.id) : undefined;
    if (inst === undefined)
      throw new NfsError(ErrorCode.CONFIG, `drain.id: no instance ${JSON.stringify(b.id)}`);
    const ingress = this.ingress;
    if (ingress === undefined) throw new NfsError(ErrorCode.STATE, 'drain: no ingress has registered');
    const started = this.clock.now();
    this.draining.add(inst.id);
    const live = [...this.instances.keys()].filter((id) => !this.draining.has(id));
    if (live.length === 0) throw new NfsError(ErrorCode.STATE, 'drain: it is the last instance');
    await adminCall(ingress.host, ingress.admin, '/live', { instances: live });
    const { flows } = (await adminCall(
      ingress.host,
      ingress.admin,
      `/flows?owner=${encodeURIComponent(inst.id)}`,
    )) as {
      flows: string[];
    };
    const cluster = this.map.clusterOf(inst.id);
    const mates = (cluster?.members ?? []).map((m) => m.id).filter((id) => live.includes(id));
    const targets = mates.length > 0 ? mates : live;
    let moved = 0;
    let aborted = 0;
    // A few moves at a time: enough to overlap round trips, few enough to keep each move short.
    const queue = [...flows];
    await Promise.all(
      Array.from({ length: Math.min(DRAIN_PARALLEL, queue.length) }, async (_, lane) => {
        for (let i = lane; i < queue.length; i += DRAIN_PARALLEL) {
          const r = await this.move({ flow: queue[i], to: targets[i % targets.length] }).catch(
            () => undefined,
          );
          if (r !== undefined && !r.aborted) moved++;
          else aborted++;
        }
      }),
    );
    if (aborted === 0) {
      const left = this.map.leave(inst.id);
      this.instances.delete(inst.id);
      this.draining.delete(inst.id);
      if (left !== undefined) await this.configure(left);
    }
    this.logger.info('instance drained', { id: inst.id, moved, aborted });
    return { id: inst.id, moved, aborted, duration_ms: this.clock.now() - started };
  }

  private list(): unknown[] {
    const now = this.clock.now();
    return [...this.instances.values()].map((i) => ({
      id: i.id,
      host: i.host,
      port: i.port,
      admin: i.admin,
      replication: i.replication,
      cluster: this.map.clusterOf(i.id)?.id ?? null,
      secondary: this.map.secondaryOf(i.id) ?? null,
      configured: i.configured,
      load: i.load ?? null,
      reported_ms_ago: i.reportedAt === 0 ? null : Math.round(now - i.reportedAt),
    }));
  }

  private onReport(msg: Buffer): void {
    if (msg.length > MAX_REPORT_BYTES) {
      this.badReports++;
      return;
    }
    let r: unknown;
    try {
      r = JSON.parse(msg.toString('utf8'));
    } catch {
      this.badReports++;
      return;
    }
    const o = (r ?? {}) as Record<string, unknown>;
    const inst = typeof o.id === 'string' ? this.instances.get(o.id) : undefined;
    const nums = [o.received, o.processed, o.flows, o.busy];
    if (inst === undefined || !nums.every((n) => typeof n === 'number' && Number.isFinite(n) && n >= 0)) {
      this.badReports++;
      return;
    }
    this.reports++;
    inst.reportedAt = this.clock.now();
    inst.load = {
      received: o.received as number,
      processed: o.processed as number,
      flows: o.flows as number,
      busy: o.busy as number,
    };
  }
}

export interface MoveRecord {
  flow: string;
  from: string;
  to: string;
  /** Inside one cluster: only the changes since the last replicated batch travel. */
  intra: boolean;
  state_bytes: number;
  /** Packets the source parked and forwarded to the destination. */
  buffered: number;
  duration_ms: number;
  aborted: boolean;
  error?: string;
}

const MAX_MOVES_KEPT = 10_000;
const DRAIN_PARALLEL = 8;

/** The flow's key string in canonical form, so that both spellings of a connection are one flow. */
function canonicalString(flow: string): string {
  const k = parseFlowKeyString(flow);
  return flowKeyString(canonicalKey(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto));
}

function parseInstance(body: unknown): InstanceInfo {
  const b = (body ?? {}) as Record<string, unknown>;
  const str = (k: string): string => {
    const v = b[k];
    if (typeof v !== 'string' || v === '')
      throw new NfsError(ErrorCode.CONFIG, `register.${k}: must be a non-empty string`);
    return v;
  };
  const port = (k: string): number => {
    const v = b[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) {
      throw new NfsError(ErrorCode.CONFIG, `register.${k}: must be a port number`);
    }
    return v;
  };
  return {
    id: str('id'),
    host: str('host'),
    port: port('port'),
    replication: port('replication'),
    admin: port('admin'),
  };
}
