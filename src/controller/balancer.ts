/**
 * The load-balancing unit (DESIGN §8). It watches every instance's load reports; when one stays
 * overloaded it moves that instance's heaviest flows away until its predicted load is under the low
 * watermark: to the least-loaded member of the same cluster that has room (a cheap move: only the changes
 * since the last batch travel), else to another cluster (the full state travels), else it reports that the
 * deployment needs another instance.
 *
 *   const lb = new Balancer(DEFAULT_BALANCER, env, logger, clock);
 *   lb.observe('nf-3', report);     // every load report
 *   await lb.tick();                // every report interval
 *
 * An instance's load (1 = fully used) is the largest of: its busiest thread's event-loop utilisation, its
 * packet rate over the rate it is provisioned for (`capacityPps`, when configured) and its queue of
 * received but unprocessed packets over `queueLimit`. A flow's weight is its packet rate, read from the
 * switch's per-flow counters, so a flow's share of its instance's load is predicted as rate × load / rate.
 *
 * Flows do not flap: an instance is overloaded only after `sustainMs` above `high` and normal again only
 * below `low` (hysteresis); a destination is filled only up to `low`, counting what was just sent its way
 * before its reports can show it, so a move never makes the next overloaded instance; an instance the unit
 * acted on is left alone for `settleMs` while its reports catch up; and a flow that moved stays put for
 * `cooldownMs`.
 */
import type { Clock, Logger, MetricSample, MetricSource } from '../types.js';
import type { LoadReport } from './load-report.js';

export interface BalancerOptions {
  enabled: boolean;
  /** Overloaded above this load (held for `sustainMs`); normal again below `low`. */
  high: number;
  low: number;
  sustainMs: number;
  /** After moving flows off or onto an instance, how long its reports get to show the effect. */
  settleMs: number;
  /** A flow that was moved is not moved again for this long. */
  cooldownMs: number;
  /** Packets/s an instance is provisioned for (`nfstate bench dataplane` measures it); 0 = not a signal. */
  capacityPps: number;
  /** Received but not yet processed packets that count as full load. */
  queueLimit: number;
  /** Flows moved off one instance in one round. */
  maxMovesPerRound: number;
}

export const DEFAULT_BALANCER: Readonly<BalancerOptions> = Object.freeze({
  enabled: true,
  high: 0.85,
  low: 0.6,
  sustainMs: 300,
  settleMs: 500,
  cooldownMs: 5000,
  capacityPps: 0,
  queueLimit: 4096,
  maxMovesPerRound: 32,
});

/** What the unit needs from the controller. */
export interface BalancerEnv {
  /** Instances that may take flows now (not draining), with their clusters. */
  instances(): readonly { id: string; cluster: string | undefined }[];
  /** The switch's packet counter of every flow the instance owns, by flow key string. */
  flowPackets(id: string): Promise<Map<string, number>>;
  /** Moves flows to `to`; one result per flow. */
  move(
    flows: string[],
    to: string,
  ): Promise<readonly { flow: string; aborted: boolean; duration_ms: number }[]>;
  /** No instance has room for what `from` must shed. */
  needInstance(from: string, load: number): void;
}

export interface BalancerMove {
  flow: string;
  from: string;
  to: string;
  intra: boolean;
  /** The flow's packet rate when it was picked. */
  pps: number;
  /** The source's load when it was picked. */
  load: number;
  at_ms: number;
  duration_ms: number;
  aborted: boolean;
}

/** GET /lb on the controller. */
export interface BalancerStatus {
  options: BalancerOptions;
  rounds: number;
  moves: number;
  intra: number;
  inter: number;
  aborted: number;
  scale_out_requests: number;
  instances: {
    id: string;
    load: number;
    peak: number;
    overloaded_ms: number;
    pps: number;
    busy: number;
    queue: number;
    overloaded: boolean;
  }[];
  history: BalancerMove[];
}

class Watched {
  load = 0;
  peak = 0;
  /** Time spent overloaded, summed over the reports. */
  overloadedMs = 0;
  pps = 0;
  busy = 0;
  queue = 0;
  /** The processed counter and time the packet rate is measured from. */
  processed = -1;
  processedAt = 0;
  reportedAt = 0;
  aboveSince = -1;
  overloaded = false;
  settleUntil = 0;
  /** Load sent here by recent moves, which its reports may not show yet. */
  inbound = 0;
  inboundUntil = 0;
  /** The switch's per-flow packet counters at `packetsAt`: the next read gives per-flow rates. */
  packets: Map<string, number> | undefined;
  packetsAt = 0;

  constructor(readonly id: string) {}
}

const MAX_HISTORY = 10_000;
/** Rates need two counter reads at least this far apart (and per-flow ones no further apart than the max). */
const MIN_RATE_WINDOW_MS = 50;
const MAX_RATE_WINDOW_MS = 2000;
/** After asking for an instance, how long to wait for one before asking again. */
const SCALE_OUT_WAIT_MS = 5000;

export class Balancer implements MetricSource {
  private readonly watched = new Map<string, Watched>();
  private readonly movedAt = new Map<string, number>();
  private running = false;
  private scaleOutAt = -Infinity;
  /** Recent moves, oldest first (bounded). */
  readonly history: BalancerMove[] = [];
  rounds = 0;
  scaleOutRequests = 0;

  constructor(
    readonly options: BalancerOptions,
    private readonly env: BalancerEnv,
    private readonly logger: Logger,
    private readonly clock: Clock,
  ) {}

  observe(id: string, r: LoadReport): void {
    const now = this.clock.now();
    let w = this.watched.get(id);
    if (w === undefined) this.watched.set(id, (w = new Watched(id)));
    if (w.overloaded && w.reportedAt > 0) w.overloadedMs += now - w.reportedAt;
    w.reportedAt = now;
    // Reports can arrive bunched after a stall: a rate over a few milliseconds would be wild.
    if (w.processed < 0 || now - w.processedAt >= MIN_RATE_WINDOW_MS) {
      if (w.processed >= 0) w.pps = (Math.max(0, r.processed - w.processed) * 1000) / (now - w.processedAt);
      w.processed = r.processed;
      w.processedAt = now;
    }
    w.busy = r.busy;
    w.queue = r.queue;
    const o = this.options;
    w.load = Math.max(r.busy, o.capacityPps > 0 ? w.pps / o.capacityPps : 0, r.queue / o.queueLimit);
    w.peak = Math.max(w.peak, w.load);
    if (w.load > o.high) {
      if (w.aboveSince < 0) w.aboveSince = now;
      if (now - w.aboveSince >= o.sustainMs) w.overloaded = true;
    } else {
      w.aboveSince = -1;
      if (w.load < o.low) w.overloaded = false;
    }
  }

  forget(id: string): void {
    this.watched.delete(id);
  }

  /** One round: relieves every overloaded instance that is not settling. Rounds never overlap. */
  async tick(): Promise<void> {
    if (!this.options.enabled || this.running) return;
    const now = this.clock.now();
    for (const [flow, at] of this.movedAt) if (now - at >= this.options.cooldownMs) this.movedAt.delete(flow);
    const live = new Set(this.env.instances().map((i) => i.id));
    const sources = [...this.watched.values()]
      .filter((w) => w.overloaded && now >= w.settleUntil && live.has(w.id))
      .sort((a, b) => b.load - a.load);
    if (sources.length === 0) return;
    this.running = true;
    this.rounds++;
    try {
      for (const src of sources) await this.relieve(src);
    } catch (err) {
      this.logger.warn('load balancing round failed', { error: String(err) });
    } finally {
      this.running = false;
    }
  }

  private async relieve(src: Watched): Promise<void> {
    const packets = await this.env.flowPackets(src.id);
    const now = this.clock.now();
    const prev = src.packets;
    const window = now - src.packetsAt;
    src.packets = packets;
    src.packetsAt = now;
    if (prev === undefined || window < MIN_RATE_WINDOW_MS || window > MAX_RATE_WINDOW_MS) return;
    const rates: [string, number][] = [];
    let total = 0;
    for (const [flow, n] of packets) {
      // A flow the last read did not see may have arrived by a move with its whole count: no rate yet.
      const rate = ((n - (prev.get(flow) ?? n)) * 1000) / window;
      total += rate;
      if (rate > 0 && !this.movedAt.has(flow)) rates.push([flow, rate]);
    }
    rates.sort((a, b) => b[1] - a[1]);
    const perPps = src.load / Math.max(1, src.pps > 0 ? src.pps : total);
    const o = this.options;
    const added = new Map<string, number>();
    const plan = new Map<string, BalancerMove[]>();
    let predicted = src.load;
    let moves = 0;
    const clusters = new Map(this.env.instances().map((i) => [i.id, i.cluster]));
    for (const [flow, rate] of rates) {
      if (predicted <= o.low || moves >= o.maxMovesPerRound) break;
      const share = rate * perPps;
      const to = this.target(src.id, share, clusters, added, now);
      // Too heavy for any instance's room: a smaller flow may still fit.
      if (to === undefined) continue;
      added.set(to, (added.get(to) ?? 0) + share);
      const m: BalancerMove = {
        flow,
        from: src.id,
        to,
        intra: clusters.get(to) === clusters.get(src.id),
        pps: Math.round(rate),
        load: round(src.load),
        at_ms: now,
        duration_ms: 0,
        aborted: false,
      };
      const picked = plan.get(to);
      if (picked === undefined) plan.set(to, [m]);
      else picked.push(m);
      predicted -= share;
      moves++;
    }
    if (predicted > o.high && now - this.scaleOutAt >= SCALE_OUT_WAIT_MS) {
      this.scaleOutAt = now;
      this.scaleOutRequests++;
      this.logger.warn('no instance has room: the deployment needs another one', {
        from: src.id,
        load: round(src.load),
        predicted: round(predicted),
      });
      this.env.needInstance(src.id, src.load);
    }
    if (moves === 0) return;
    this.logger.info('load balancing', { from: src.id, load: round(src.load), flows: moves });
    await Promise.all(
      [...plan].map(async ([to, picked]) => {
        const results = await this.env.move(
          picked.map((m) => m.flow),
          to,
        );
        const byFlow = new Map(results.map((r) => [r.flow, r]));
        for (const m of picked) {
          const r = byFlow.get(m.flow);
          m.aborted = r === undefined || r.aborted;
          m.duration_ms = r?.duration_ms ?? 0;
          if (!m.aborted) this.movedAt.set(m.flow, this.clock.now());
          this.history.push(m);
        }
      }),
    );
    if (this.history.length > MAX_HISTORY) this.history.splice(0, this.history.length - MAX_HISTORY);
    const until = this.clock.now() + o.settleMs;
    src.settleUntil = until;
    for (const [to, share] of added) {
      const w = this.watched.get(to)!;
      w.inbound = (w.inboundUntil > now ? w.inbound : 0) + share;
      w.inboundUntil = until;
    }
  }

  /** The least-loaded instance with room for `share`, in `from`'s cluster first. */
  private target(
    from: string,
    share: number,
    clusters: Map<string, string | undefined>,
    added: Map<string, number>,
    now: number,
  ): string | undefined {
    const home = clusters.get(from);
    let best: string | undefined;
    let bestLoad = Infinity;
    let bestHome = false;
    for (const [id, cluster] of clusters) {
      const w = this.watched.get(id);
      if (id === from || w === undefined || w.overloaded) continue;
      const load = w.load + (w.inboundUntil > now ? w.inbound : 0) + (added.get(id) ?? 0);
      if (load + share > this.options.low) continue;
      const isHome = cluster === home;
      if ((isHome && !bestHome) || (isHome === bestHome && load < bestLoad)) {
        best = id;
        bestLoad = load;
        bestHome = isHome;
      }
    }
    return best;
  }

  status(): BalancerStatus {
    const moved = this.history.filter((m) => !m.aborted);
    return {
      options: this.options,
      rounds: this.rounds,
      moves: moved.length,
      intra: moved.filter((m) => m.intra).length,
      inter: moved.filter((m) => !m.intra).length,
      aborted: this.history.length - moved.length,
      scale_out_requests: this.scaleOutRequests,
      instances: [...this.watched.values()].map((w) => ({
        id: w.id,
        load: round(w.load),
        peak: round(w.peak),
        overloaded_ms: Math.round(w.overloadedMs),
        pps: Math.round(w.pps),
        busy: round(w.busy),
        queue: w.queue,
        overloaded: w.overloaded,
      })),
      history: this.history,
    };
  }

  collect(out: MetricSample[]): void {
    const moved = this.history.filter((m) => !m.aborted);
    out.push(['nfstate_lb_rounds_total', {}, this.rounds]);
    out.push(['nfstate_lb_moves_total', { kind: 'intra' }, moved.filter((m) => m.intra).length]);
    out.push(['nfstate_lb_moves_total', { kind: 'inter' }, moved.filter((m) => !m.intra).length]);
    out.push(['nfstate_lb_aborted_moves_total', {}, this.history.length - moved.length]);
    out.push(['nfstate_lb_scale_out_requests_total', {}, this.scaleOutRequests]);
    let overloaded = 0;
    for (const w of this.watched.values()) {
      if (w.overloaded) overloaded++;
      out.push(['nfstate_lb_load', { nf: w.id }, round(w.load)]);
    }
    out.push(['nfstate_lb_overloaded_instances', {}, overloaded]);
  }
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
