/**
 * A secondary's copies of the packets its primaries processed since their last replicated batches
 * (DESIGN.md §6). The switch sends the secondary a copy of every packet of a flow (COPY flag); the copy
 * waits here until the replica it can resume from covers it (`trim`: the state before the flow's last
 * batch, see Replica in replica-store.ts), and if the primary fails first, the secondary replays what is
 * left, in stamp order, on top of that state (`take`).
 *
 *   const log = new ReplayLog({ maxBytes: 64 << 20 });
 *   log.keep(datagram, tuple, seq, now);   // main thread, per copy: no parse, no copy of the bytes
 *   log.trim(key, next);                    // a replica now covers every seq below next
 *   const copies = log.take(key);           // failover: the rest, in stamp order
 *
 * A copy keeps a reference to the datagram the socket handed over, so keeping costs no copy. Memory is
 * bounded by `maxBytes`: past it, copies are refused and counted, which makes the flows they belong to
 * lose those packets if their primary then fails. Flows whose copies stop being trimmed — a flow that
 * moved away, whose last record raced its last copies — are swept after `idleMs`.
 */
import type { FlowKey, MetricSample, MetricSource } from '../types.js';
import { canonicalKey } from '../packet/flow-key.js';
import { FlowTable } from '../packet/flow-table.js';
import type { Tuple } from './dispatch.js';

class Kept {
  seqs: number[] = [];
  copies: Uint8Array[] = [];
  bytes = 0;
  lastAt = 0;
  /** A replica covers every packet below: a copy that comes after its record is not kept. */
  floor = 0;
  constructor(readonly key: FlowKey) {}
}

export class ReplayLog implements MetricSource {
  private readonly flows = new FlowTable<Kept>();
  private bytes = 0;
  kept = 0;
  trimmed = 0;
  refused = 0;
  swept = 0;

  constructor(private readonly options: { maxBytes: number; idleMs: number }) {}

  keep(copy: Uint8Array, t: Tuple, seq: number, now: number): void {
    let kept = this.flows.get(t.srcIp, t.dstIp, t.srcPort, t.dstPort, t.proto);
    if (kept !== undefined && seq < kept.floor) {
      this.trimmed++;
      return;
    }
    if (this.bytes + copy.length > this.options.maxBytes) {
      this.refused++;
      return;
    }
    if (kept === undefined) {
      kept = new Kept(canonicalKey(t.srcIp, t.dstIp, t.srcPort, t.dstPort, t.proto));
      this.flows.set(kept.key, kept);
    }
    // Copies come in stamp order but for a packet the network reordered: insert from the back.
    const seqs = kept.seqs;
    let at = seqs.length;
    while (at > 0 && seqs[at - 1]! > seq) at--;
    if (at > 0 && seqs[at - 1] === seq) return;
    if (at === seqs.length) {
      seqs.push(seq);
      kept.copies.push(copy);
    } else {
      seqs.splice(at, 0, seq);
      kept.copies.splice(at, 0, copy);
    }
    kept.bytes += copy.length;
    kept.lastAt = now;
    this.bytes += copy.length;
    this.kept++;
  }

  /**
   * A replica covers every packet before `next` (Infinity: the flow ended at its owner). The flow is
   * remembered with that floor, even without copies, since a copy may come after the record that covers it.
   */
  trim(key: FlowKey, next: number, now = 0): void {
    let kept = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (next === Infinity) {
      if (kept !== undefined) {
        this.trimmed += kept.seqs.length;
        this.drop(kept);
      }
      return;
    }
    if (kept === undefined) {
      kept = new Kept(key);
      this.flows.set(key, kept);
    }
    kept.floor = Math.max(kept.floor, next);
    kept.lastAt = now;
    const seqs = kept.seqs;
    let n = 0;
    while (n < seqs.length && seqs[n]! < kept.floor) n++;
    if (n === 0) return;
    this.trimmed += n;
    let freed = 0;
    for (let i = 0; i < n; i++) freed += kept.copies[i]!.length;
    seqs.splice(0, n);
    kept.copies.splice(0, n);
    kept.bytes -= freed;
    this.bytes -= freed;
  }

  /** The flow's kept copies in stamp order, with their sequence numbers; the flow is forgotten here. */
  take(key: FlowKey): { seqs: number[]; copies: Uint8Array[] } {
    const kept = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (kept === undefined) return { seqs: [], copies: [] };
    this.flows.delete(kept.key);
    this.bytes -= kept.bytes;
    return { seqs: kept.seqs, copies: kept.copies };
  }

  /** Forgets flows with neither a copy nor a trim for `idleMs` (not hot path: once a second or so). */
  sweep(now: number): void {
    const stale: Kept[] = [];
    for (const [, kept] of this.flows.entries())
      if (now - kept.lastAt >= this.options.idleMs) stale.push(kept);
    for (const kept of stale) {
      this.swept += kept.seqs.length;
      this.drop(kept);
    }
  }

  get size(): number {
    return this.flows.size;
  }

  private drop(kept: Kept): void {
    this.bytes -= kept.bytes;
    this.flows.delete(kept.key);
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_replay_log_kept_total', {}, this.kept]);
    out.push(['nfstate_replay_log_trimmed_total', {}, this.trimmed]);
    out.push(['nfstate_replay_log_refused_total', {}, this.refused]);
    out.push(['nfstate_replay_log_swept_total', {}, this.swept]);
    out.push(['nfstate_replay_log_bytes', {}, this.bytes]);
    out.push(['nfstate_replay_log_flows', {}, this.flows.size]);
  }
}
