/**
 * Both directions of a connection at the switch. The flow key is direction-independent (both directions
 * of one 5-tuple share it), but a NAT rewrites the 5-tuple: the reply to a translated connection comes
 * back addressed to the NAT's public address and port, another 5-tuple altogether. The NF knows whose
 * that port is (`NetworkFunction.replyOwner`: the holder of the port in the deployment's strong log,
 * which the ingress follows as every instance does), and the switch stamps such a reply as part of the
 * connection it answers: one sequence, one owner, one state, through moves and failovers alike.
 *
 *   const replies = new ReplyMap((pkt) => nf.replyOwner!(pkt), { waitMs: 100, maxParked: 1024 });
 *   const owner = replies.ownerOf(pkt);   // the connection; null: a translated port nobody holds (yet)
 *   if (owner === null && replies.park(pkt, vni, now)) return;   // the log may not have reached us yet
 *   pools.onApplied = () => replies.changed();                   // parked replies try again
 *
 * A reply can outrun the log: its connection's claim of the port is decided before the connection's
 * first packet leaves, but this ingress applies the log in its own time. So a packet addressed to a
 * translated port that nobody holds here waits (a copy, at most `maxParked` of them, at most `waitMs`)
 * and tries again whenever the log applies; past the wait it goes on as a flow of its own, as unsolicited
 * traffic to a public address does.
 */
import { wallClock } from '../clock.js';
import type { Clock, FlowKey, MetricSample, MetricSource, PacketView } from '../types.js';

export interface ReplyOptions {
  waitMs: number;
  maxParked: number;
}

export const DEFAULT_REPLY_OPTIONS: ReplyOptions = { waitMs: 100, maxParked: 1024 };

interface Parked {
  data: Uint8Array;
  vni: number;
  until: number;
}

export class ReplyMap implements MetricSource {
  /** Replies stamped as part of their connection. */
  resolved = 0;
  parked = 0;
  /** Parked replies whose port nobody held by the end of the wait: forwarded as flows of their own. */
  unmatched = 0;
  /** Replies that found the parking full. */
  overflow = 0;
  /**
   * Sends a parked packet on again (its inner IPv4 bytes and VNI): the ingress resolves it once more, and
   * parks it again until `until` if its port is still nobody's.
   */
  onRetry: (data: Uint8Array, vni: number, until: number) => void = () => undefined;
  private waiting: Parked[] = [];
  private retryScheduled = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly owner: (pkt: PacketView) => FlowKey | null | undefined,
    private readonly options: ReplyOptions = DEFAULT_REPLY_OPTIONS,
    private readonly clock: Clock = wallClock,
  ) {}

  /** The connection `pkt` answers; null: a translated port nobody holds; undefined: not a reply. */
  ownerOf(pkt: PacketView): FlowKey | null | undefined {
    const owner = this.owner(pkt);
    if (owner !== null && owner !== undefined) this.resolved++;
    return owner;
  }

  /**
   * Keeps a copy of `pkt` until the log may know its port, at most until `until` (a retry's own deadline;
   * absent: `waitMs` from now). False when it must go on now: its wait is over, or the parking is full.
   */
  park(pkt: PacketView, vni: number, now: number, until = now + this.options.waitMs): boolean {
    if (now >= until) {
      this.unmatched++;
      return false;
    }
    if (this.waiting.length >= this.options.maxParked) {
      this.overflow++;
      return false;
    }
    this.parked++;
    this.waiting.push({ data: pkt.buf.slice(pkt.offset, pkt.offset + pkt.length), vni, until });
    this.timer ??= setTimeout(this.expire, Math.max(1, until - now));
    return true;
  }

  /** The log applied updates: every parked reply tries again, soon (once per turn of the event loop). */
  changed(): void {
    if (this.waiting.length === 0 || this.retryScheduled) return;
    this.retryScheduled = true;
    setImmediate(() => {
      this.retryScheduled = false;
      this.retry(false);
    });
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.waiting = [];
  }

  private readonly expire = (): void => {
    this.timer = undefined;
    this.retry(true);
  };

  /** Sends every parked packet on again; `expired`: those whose wait is over go on as they are. */
  private retry(expired: boolean): void {
    const all = this.waiting;
    this.waiting = [];
    clearTimeout(this.timer);
    this.timer = undefined;
    const now = this.clock.now();
    for (const p of all) this.onRetry(p.data, p.vni, expired && p.until <= now ? 0 : p.until);
    const next = this.waiting.reduce((m, p) => Math.min(m, p.until), Infinity);
    if (next !== Infinity) this.timer = setTimeout(this.expire, Math.max(1, next - now));
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_ingress_replies_resolved_total', {}, this.resolved]);
    out.push(['nfstate_ingress_replies_parked_total', {}, this.parked]);
    out.push(['nfstate_ingress_replies_unmatched_total', {}, this.unmatched]);
    out.push(['nfstate_ingress_replies_overflow_total', {}, this.overflow]);
  }
}
