/**
 * The controller's live dashboard: `GET /dashboard` is a page (dashboard-page.ts) that follows the
 * deployment through `GET /dashboard/events`, a stream of server-sent events — the clusters and their
 * instances, each move and failover the moment the controller records it, instances joining, failing and
 * leaving, and every `statsMs` the figures of every live instance.
 *
 *   // In the controller: its registry as GET /instances lists it, and the load-balancing unit's loads.
 *   const deps = { instances: () => this.list(), loads: () => this.balancer.status().instances };
 *   const dashboard = new Dashboard(deps, logger, clock);
 *   dashboard.attach(admin);          // GET /dashboard, GET /dashboard/events
 *   mover.onRecorded = (records) => dashboard.moved(records);
 *   dashboard.stop();                 // ends every stream
 *
 * Events (`event:` line, then one JSON object on the `data:` line; docs/metrics.md, "The live dashboard"):
 *
 *   snapshot  on connect: { at, stats_ms, moves, failovers, clusters: ClusterRow[], events: { event, data }[] }
 *   stats     every stats_ms: { at, clusters: ClusterRow[] }
 *   move      { at, ...MoveRecord }       one per flow, as GET /moves lists it
 *   failover  { at, ...FailoverRecord }   as GET /failovers lists it
 *   instance  { at, change: 'joined' | 'failed' | 'left', id, instance: InstanceRow | null }
 *
 * `at` is the controller's clock (ms since the epoch) when it recorded the event, so a page on the same
 * clock can tell how long the event took to reach it.
 *
 * The figures that instances do not report with their load (replication, replay log, strong global state)
 * are scraped from each live instance's `/metrics`, all at once, each with a deadline, the next round
 * `statsMs` after the last one ended — and only while someone watches: with no stream open, nothing is
 * polled. A client that falls `MAX_BEHIND_BYTES` behind is dropped (its browser reconnects and starts over
 * from a snapshot), so a slow or stuck one holds no more than that of the controller's memory.
 */
import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AdminServer } from '../admin-server.js';
import type { Clock, Logger } from '../types.js';
import type { BalancerStatus } from './balancer.js';
import { DASHBOARD_PAGE } from './dashboard-page.js';
import type { LoadReport } from './load-report.js';
import type { FailoverRecord, MoveRecord } from './records.js';

/** An instance as GET /instances lists it. */
export interface InstanceView {
  id: string;
  host: string;
  port: number;
  /** Each worker's own data port. */
  workers: number[];
  admin: number;
  replication: number;
  cluster: string | null;
  secondary: string | null;
  configured: boolean;
  live: boolean;
  failed: boolean;
  load: LoadReport | null;
  reported_ms_ago: number | null;
}

/** What the dashboard reads of the controller, when it needs it. */
export interface DashboardDeps {
  instances(): InstanceView[];
  /** The load-balancing unit's view of each instance (GET /lb). */
  loads(): BalancerStatus['instances'];
}

/**
 * Strong global state as one instance sees it. `health`: `ok`; `stalled` when claims waited through a
 * whole round with no decision read back (the log — the controller's sequencer or etcd — is not
 * answering); `failing` when claims failed for good during the last round.
 */
export interface StrongFigures {
  claims: number;
  pending: number;
  conflicts: number;
  failed: number;
  health: 'ok' | 'stalled' | 'failing';
}

/** What the controller scraped of one instance's `/metrics`; the rates and the lag cover the last round. */
export interface InstanceFigures {
  at: number;
  /**
   * Replication lag: the mean time from a replication send to its acknowledgement by a cluster peer, over
   * the acknowledgements of the last round (`nfstate_replication_ack_seconds`, its sum and count, all peers).
   * null when none came in it: no traffic, or no peer.
   */
  replication_lag_ms: number | null;
  /** Acknowledgements in the last round. */
  replication_acks: number;
  replication_bytes_per_s: number | null;
  /** Flows held as replicas of cluster peers. */
  replicas: number;
  /** Buffers: copies of packets kept for a failover's replay. */
  replay_log_bytes: number;
  replay_log_flows: number;
  /** null: the instance's NFs keep no strong global state. */
  strong: StrongFigures | null;
}

/** One instance, as the page shows it. */
export interface InstanceRow {
  id: string;
  cluster: string | null;
  secondary: string | null;
  /** `joining`: registered, not yet live for new flows. */
  state: 'joining' | 'live' | 'failed';
  /** From its load reports (every 100 ms): load (1 = its capacity), packets per second, busiest thread. */
  load: number | null;
  pps: number | null;
  busy: number | null;
  overloaded: boolean;
  flows: number | null;
  /** Buffers: packets received, not yet processed. */
  queue: number | null;
  reported_ms_ago: number | null;
  /** null until the first scrape while someone watches, or when the last one failed (`metrics_error`). */
  metrics: InstanceFigures | null;
  metrics_error: string | null;
}

export interface ClusterRow {
  /** null for instances in no cluster (none, but for a moment during a registration that fails). */
  id: string | null;
  instances: InstanceRow[];
}

export type DashboardEvent =
  | { event: 'move'; data: MoveRecord & { at: number } }
  | { event: 'failover'; data: FailoverRecord & { at: number } }
  | {
      event: 'instance';
      data: { at: number; change: 'joined' | 'failed' | 'left'; id: string; instance: InstanceRow | null };
    };

/** The first event of every stream. */
export interface DashboardSnapshot {
  at: number;
  stats_ms: number;
  /** Moves done (not aborted) and failovers since the controller started. */
  moves: number;
  failovers: number;
  clusters: ClusterRow[];
  /** The latest events, oldest first, as they went out. */
  events: DashboardEvent[];
}

export interface DashboardOptions {
  /** How often `stats` goes out while someone watches (default 500 ms). */
  statsMs: number;
  /** Each scrape's deadline (default 1000 ms): past it the instance's figures say why they are missing. */
  scrapeTimeoutMs: number;
}

export const DEFAULT_DASHBOARD: DashboardOptions = { statsMs: 500, scrapeTimeoutMs: 1000 };

/** Events kept for the snapshot a newcomer starts from. */
const KEPT_EVENTS = 200;
/** Streams open at once; one more is refused (503). */
const MAX_WATCHERS = 64;
/** Bytes written to a client and not yet taken by it, past which it is dropped. */
const MAX_BEHIND_BYTES = 1 << 20;
/** How soon a browser's EventSource comes back after its stream ended. */
const RETRY_MS = 1000;

const ACK = 'nfstate_replication_ack_seconds';
const ACK_SUM = `${ACK}_sum` as const;
const ACK_COUNT = `${ACK}_count` as const;
/** Sums of the samples the dashboard reads (every label set of a name added up). */
const SCRAPED = [
  ACK_SUM,
  ACK_COUNT,
  'nfstate_replication_sent_bytes_total',
  'nfstate_replication_replicas',
  'nfstate_replay_log_bytes',
  'nfstate_replay_log_flows',
  'nfstate_strong_pool_claims_total',
  'nfstate_strong_pool_decisions_total',
  'nfstate_strong_pool_pending',
  'nfstate_strong_pool_conflicts_total',
  'nfstate_strong_pool_failed_total',
] as const;
type Scraped = Partial<Record<(typeof SCRAPED)[number], number>>;

export class Dashboard {
  private readonly options: DashboardOptions;
  private readonly clients = new Set<ServerResponse>();
  private readonly events: DashboardEvent[] = [];
  /** Each instance's last scrape: its figures, and the sums they were computed from (for the next deltas). */
  private readonly scraped = new Map<string, { at: number; sums: Scraped; figures: InstanceFigures }>();
  private readonly errors = new Map<string, string>();
  /** Moves done (not aborted) and failovers since the controller started. */
  private moves = 0;
  private failovers = 0;
  private polling = false;
  private stopped = false;
  private readonly abort = new AbortController();
  /** Clients dropped for falling behind. */
  dropped = 0;

  constructor(
    private readonly deps: DashboardDeps,
    private readonly logger: Logger,
    private readonly clock: Clock,
    options: Partial<DashboardOptions> = {},
  ) {
    this.options = { ...DEFAULT_DASHBOARD, ...options };
  }

  /** Streams open now. */
  get watchers(): number {
    return this.clients.size;
  }

  attach(admin: AdminServer): void {
    admin.raw('/dashboard', (_req, res) => {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-length': Buffer.byteLength(DASHBOARD_PAGE),
        'cache-control': 'no-store',
      });
      res.end(DASHBOARD_PAGE);
    });
    admin.raw('/dashboard/events', (_req, res) => {
      this.connect(res);
    });
  }

  /** The records of one move exchange, as the mover keeps them. */
  moved(records: readonly MoveRecord[]): void {
    const at = this.clock.now();
    this.moves += records.filter((r) => !r.aborted).length;
    for (const r of records) this.record({ event: 'move', data: { at, ...r } });
  }

  failedOver(record: FailoverRecord): void {
    this.failovers++;
    this.record({ event: 'failover', data: { at: this.clock.now(), ...record } });
  }

  instance(change: 'joined' | 'failed' | 'left', id: string): void {
    const view = change === 'left' ? undefined : this.deps.instances().find((i) => i.id === id);
    const instance =
      view === undefined ? null : this.row(view, new Map(this.deps.loads().map((l) => [l.id, l])));
    this.record({ event: 'instance', data: { at: this.clock.now(), change, id, instance } });
  }

  /** Ends every stream and stops polling. Safe to call twice. */
  stop(): void {
    this.stopped = true;
    this.abort.abort();
    for (const res of this.clients) res.end();
    this.clients.clear();
  }

  private record(e: DashboardEvent): void {
    this.events.push(e);
    if (this.events.length > KEPT_EVENTS) this.events.shift();
    this.broadcast(e.event, e.data);
  }

  private connect(res: ServerResponse): void {
    if (this.stopped || this.clients.size >= MAX_WATCHERS) {
      const body = JSON.stringify({
        error: this.stopped
          ? 'dashboard: the controller is stopping'
          : `dashboard: ${MAX_WATCHERS} streams open already`,
      });
      res.writeHead(503, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-store',
      connection: 'keep-alive',
    });
    this.clients.add(res);
    // The client went away, the server closed the connection (AdminServer.stop), or it was dropped.
    res.on('close', () => this.clients.delete(res));
    // A write that meets a connection being torn down: 'close' follows, and removes it.
    res.on('error', () => undefined);
    res.write(`retry: ${RETRY_MS}\n\n`);
    this.send(res, frame('snapshot', this.snapshot()));
    if (!this.polling) void this.poll();
  }

  private snapshot(): DashboardSnapshot {
    return {
      at: this.clock.now(),
      stats_ms: this.options.statsMs,
      moves: this.moves,
      failovers: this.failovers,
      clusters: this.clusters(),
      events: this.events,
    };
  }

  private broadcast(event: string, data: unknown): void {
    if (this.clients.size === 0) return;
    const text = frame(event, data);
    for (const res of this.clients) this.send(res, text);
  }

  private send(res: ServerResponse, text: string): void {
    if (res.destroyed || res.writableEnded) {
      this.clients.delete(res);
      return;
    }
    if (res.writableLength > MAX_BEHIND_BYTES) {
      this.dropped++;
      this.logger.warn('dashboard: a client fell behind and was dropped', {
        behind_bytes: res.writableLength,
      });
      this.clients.delete(res);
      res.destroy();
      return;
    }
    res.write(text);
  }

  /** Scrapes and sends `stats`, round after round, until nobody watches. Never two rounds at once. */
  private async poll(): Promise<void> {
    this.polling = true;
    try {
      while (this.clients.size > 0 && !this.stopped) {
        await this.scrapeAll();
        this.broadcast('stats', { at: this.clock.now(), clusters: this.clusters() });
        await sleep(this.options.statsMs, undefined, { signal: this.abort.signal });
      }
    } catch (err) {
      if (!this.abort.signal.aborted) this.logger.error('dashboard: polling stopped', { error: String(err) });
    } finally {
      this.polling = false;
      // Rates and lag over the gap until someone watches again would cover minutes as if they were a round.
      this.scraped.clear();
      this.errors.clear();
    }
  }

  private async scrapeAll(): Promise<void> {
    const instances = this.deps.instances().filter((i) => !i.failed);
    const ids = new Set(instances.map((i) => i.id));
    for (const id of this.scraped.keys()) if (!ids.has(id)) this.scraped.delete(id);
    for (const id of this.errors.keys()) if (!ids.has(id)) this.errors.delete(id);
    await Promise.all(instances.map((i) => this.scrape(i)));
  }

  private async scrape(i: InstanceView): Promise<void> {
    const host = i.host.includes(':') ? `[${i.host}]` : i.host;
    try {
      const res = await fetch(`http://${host}:${i.admin}/metrics`, {
        signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.options.scrapeTimeoutMs)]),
      });
      if (res.status !== 200) {
        await res.body?.cancel();
        throw new Error(`HTTP ${res.status}`);
      }
      const text = await res.text();
      const at = this.clock.now();
      const sums = sumSamples(text);
      const prev = this.scraped.get(i.id);
      this.scraped.set(i.id, { at, sums, figures: figures(at, sums, prev) });
      this.errors.delete(i.id);
    } catch (err) {
      this.errors.set(
        i.id,
        err instanceof Error && err.name === 'TimeoutError' ? 'no answer in time' : String(err),
      );
    }
  }

  private clusters(): ClusterRow[] {
    const loads = new Map(this.deps.loads().map((l) => [l.id, l]));
    const byCluster = new Map<string | null, InstanceRow[]>();
    for (const i of this.deps.instances()) {
      const rows = byCluster.get(i.cluster);
      if (rows === undefined) byCluster.set(i.cluster, [this.row(i, loads)]);
      else rows.push(this.row(i, loads));
    }
    return [...byCluster]
      .map(([id, instances]) => ({ id, instances }))
      .sort((a, b) => clusterOrder(a.id) - clusterOrder(b.id));
  }

  private row(i: InstanceView, loads: Map<string, BalancerStatus['instances'][number]>): InstanceRow {
    const lb = loads.get(i.id);
    return {
      id: i.id,
      cluster: i.cluster,
      secondary: i.secondary,
      state: i.failed ? 'failed' : i.live ? 'live' : 'joining',
      load: lb?.load ?? null,
      pps: lb?.pps ?? null,
      busy: lb?.busy ?? null,
      overloaded: lb?.overloaded ?? false,
      flows: i.load?.flows ?? null,
      queue: i.load?.queue ?? null,
      reported_ms_ago: i.reported_ms_ago,
      metrics: this.errors.has(i.id) ? null : (this.scraped.get(i.id)?.figures ?? null),
      metrics_error: this.errors.get(i.id) ?? null,
    };
  }
}

function frame(event: string, data: unknown): string {
  // JSON.stringify escapes newlines inside strings, so the data is one line, as a `data:` field must be.
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** c0, c1, …, c10 in numeric order; others after them. */
function clusterOrder(id: string | null): number {
  const n = id === null ? NaN : Number(id.slice(1));
  return Number.isSafeInteger(n) ? n : Number.MAX_SAFE_INTEGER;
}

/** One pass over Prometheus text: the sum over every label set of each name in SCRAPED that it serves. */
export function sumSamples(text: string): Scraped {
  const wanted = new Set<string>(SCRAPED);
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const end = line.search(/[{ ]/);
    if (end < 0) continue;
    const name = line.slice(0, end);
    if (!wanted.has(name)) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) out[name] = (out[name] ?? 0) + value;
  }
  return out;
}

/**
 * The figures of a scrape at `at`; the lag, the rates and the health compare it with the previous one
 * (none on the first scrape, or when a counter went back, which only a restarted process does).
 */
export function figures(
  at: number,
  now: Scraped,
  prev: { at: number; sums: Scraped } | undefined,
): InstanceFigures {
  const v = (s: Scraped, k: (typeof SCRAPED)[number]): number => s[k] ?? 0;
  const d = (k: (typeof SCRAPED)[number]): number | undefined => {
    if (prev === undefined) return undefined;
    const delta = v(now, k) - v(prev.sums, k);
    return delta >= 0 ? delta : undefined;
  };
  const seconds = prev === undefined ? 0 : (at - prev.at) / 1000;
  const acks = d(ACK_COUNT);
  const ackSeconds = d(ACK_SUM);
  const sent = d('nfstate_replication_sent_bytes_total');
  const failed = d('nfstate_strong_pool_failed_total');
  const decided = d('nfstate_strong_pool_decisions_total');
  const pending = v(now, 'nfstate_strong_pool_pending');
  const stalled = pending > 0 && (prev?.sums.nfstate_strong_pool_pending ?? 0) > 0 && decided === 0;
  return {
    at,
    replication_lag_ms:
      acks === undefined || ackSeconds === undefined || acks === 0
        ? null
        : round3((ackSeconds / acks) * 1000),
    replication_acks: acks ?? 0,
    replication_bytes_per_s: sent === undefined || seconds <= 0 ? null : Math.round(sent / seconds),
    replicas: v(now, 'nfstate_replication_replicas'),
    replay_log_bytes: v(now, 'nfstate_replay_log_bytes'),
    replay_log_flows: v(now, 'nfstate_replay_log_flows'),
    strong:
      now.nfstate_strong_pool_pending === undefined
        ? null
        : {
            claims: v(now, 'nfstate_strong_pool_claims_total'),
            pending,
            conflicts: v(now, 'nfstate_strong_pool_conflicts_total'),
            failed: v(now, 'nfstate_strong_pool_failed_total'),
            health: failed !== undefined && failed > 0 ? 'failing' : stalled ? 'stalled' : 'ok',
          },
  };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
