/**
 * A map from u32 keys to PN-counters whose entries belong to writers rather than replicas (index.ts says
 * why): entry (key, writer) = (seq, pos, neg), where seq is the writer's last update id counted and pos
 * and neg are its running sums of increments and decrements. All three only grow, so merge is a
 * componentwise max. A key's value, Σ pos − Σ neg over its writers, is kept as a running total that
 * each entry points at, so `add` and `get` cost one lookup each.
 *
 *   const bytes = new PnCounterMap();
 *   const w = writerOf(flowKey, firstPacketMicros);
 *   bytes.add(srcIp, length, w, seq);            // the source's total
 *   bytes.add(srcIp, length, w, seq);            // the same packet again: counted once
 *   peer.merge(bytes.takeDelta());
 *
 * Encoding, after the header (codec.ts), sorted by key then writer so that equal states encode equally:
 *
 *   u32 n | n × ( u32 key | u53 writer | u53 seq | u53 pos | u53 neg )
 */
import type { ByteReader, ByteWriter } from '../bytes.js';
import type { FlowKey } from '../../types.js';
import { CrdtKind, decodeWith, isCount, isU32, readCount, readInt, usage, writeHeader } from './codec.js';
import { hashFlow53 } from './hash.js';
import { IdList, PairTable } from './pair-table.js';

// Entry values: seq, pos, neg, whether the entry changed since the last takeDelta, and the id of its
// key's total (totals are never removed, so their ids hold).
const SEQ = 0;
const POS = 1;
const NEG = 2;
const DIRTY = 3;
const TOTAL = 4;
const STRIDE = 5;
const ENTRY_BYTES = 4 + 8 * 4;

/**
 * A flow's writer id: a 53-bit hash of its canonical key and `incarnation`, a number that differs between
 * two flows with the same 5-tuple (sequence numbers restart at 1 when a flow comes back), for instance
 * its first packet's ingress time in whole microseconds. Two writers collide with probability about
 * n²/2^54 for n flows updating one key.
 */
export function writerOf(key: FlowKey, incarnation: number): number {
  if (!isCount(incarnation)) throw usage(`crdt: incarnation must be a safe integer ≥ 0 (got ${incarnation})`);
  return hashFlow53(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto, incarnation);
}

export class PnCounterMap {
  private readonly entries: PairTable;
  /** (key, 0) → the key's value. */
  private readonly totals: PairTable;
  private readonly dirty = new IdList();

  /** `capacity`: the entries to make room for at once (the table grows past it as needed). */
  constructor(options: { capacity?: number } = {}) {
    this.entries = new PairTable(STRIDE, options.capacity);
    this.totals = new PairTable(1, options.capacity);
  }

  /**
   * Adds `delta` to `key` as update `seq` of `writer`, unless that writer's update `seq` or a later one
   * is already counted here; returns the key's value. A writer's ids must grow from one update of a key
   * to the next, so a packet adds to a key at most once (its flow's sequence number is the id).
   */
  add(key: number, delta: number, writer: number, seq: number): number {
    if (!isU32(key) || !Number.isSafeInteger(delta) || !isCount(writer) || !isCount(seq) || seq === 0) {
      return badAdd(key, delta, writer, seq);
    }
    let id = this.entries.find(key, writer);
    if (id < 0) id = this.insert(key, writer);
    const v = this.entries.v;
    const at = id * STRIDE;
    const totals = this.totals.v;
    const total = v[at + TOTAL]!;
    if (seq <= v[at + SEQ]!) return totals[total]!;
    const side = delta >= 0 ? POS : NEG;
    const sum = v[at + side]! + Math.abs(delta);
    if (sum > Number.MAX_SAFE_INTEGER) return badAdd(key, delta, writer, seq);
    v[at + SEQ] = seq;
    v[at + side] = sum;
    if (v[at + DIRTY] === 0) {
      v[at + DIRTY] = 1;
      this.dirty.push(id);
    }
    return (totals[total] = totals[total]! + delta);
  }

  get(key: number): number {
    const id = this.totals.find(key, 0);
    return id < 0 ? 0 : this.totals.v[id]!;
  }

  /** Joins another state or delta into this one. */
  merge(other: PnCounterMap): void {
    const t = other.entries;
    for (let id = 0; id < t.size; id++) {
      const at = id * STRIDE;
      this.join(t.a[id]!, t.b[id]!, t.v[at + SEQ]!, t.v[at + POS]!, t.v[at + NEG]!);
    }
  }

  /** The entries this replica's `add`s changed since the last call, as a state of their own. */
  takeDelta(): PnCounterMap {
    const d = new PnCounterMap({ capacity: this.dirty.length });
    const t = this.entries;
    for (let i = 0; i < this.dirty.length; i++) {
      const id = this.dirty.ids[i]!;
      const at = id * STRIDE;
      t.v[at + DIRTY] = 0;
      d.join(t.a[id]!, t.b[id]!, t.v[at + SEQ]!, t.v[at + POS]!, t.v[at + NEG]!);
    }
    this.dirty.length = 0;
    return d;
  }

  /** How many (key, writer) entries the map holds: its memory is about 60 bytes each. */
  get entryCount(): number {
    return this.entries.size;
  }

  encode(w: ByteWriter): void {
    const t = this.entries;
    writeHeader(w, CrdtKind.PN_COUNTER);
    w.u32(t.size);
    for (const id of t.ordered()) {
      const at = id * STRIDE;
      w.u32(t.a[id]!);
      w.u53(t.b[id]!);
      w.u53(t.v[at + SEQ]!);
      w.u53(t.v[at + POS]!);
      w.u53(t.v[at + NEG]!);
    }
  }

  /** A new map from an encoded state or delta; throws NFS_ERR_STATE on bad bytes. */
  static decode(r: ByteReader): PnCounterMap {
    return decodeWith(r, CrdtKind.PN_COUNTER, () => {
      const n = readCount(r, ENTRY_BYTES, 'entries');
      const m = new PnCounterMap({ capacity: n });
      for (let i = 0; i < n; i++) {
        const key = r.u32();
        const writer = readInt(r, 'writer');
        const seq = readInt(r, 'seq');
        const pos = readInt(r, 'pos');
        const neg = readInt(r, 'neg');
        m.join(key, writer, seq, pos, neg);
      }
      return m;
    });
  }

  /** Key → value, keys in ascending order; zero values are left out, as in the oracle's snapshot. */
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    const t = this.totals;
    for (const id of t.ordered()) if (t.v[id] !== 0) out[String(t.a[id])] = t.v[id]!;
    return out;
  }

  private join(key: number, writer: number, seq: number, pos: number, neg: number): void {
    let id = this.entries.find(key, writer);
    if (id < 0) id = this.insert(key, writer);
    const v = this.entries.v;
    const at = id * STRIDE;
    let change = 0;
    if (seq > v[at + SEQ]!) v[at + SEQ] = seq;
    if (pos > v[at + POS]!) {
      change += pos - v[at + POS]!;
      v[at + POS] = pos;
    }
    if (neg > v[at + NEG]!) {
      change -= neg - v[at + NEG]!;
      v[at + NEG] = neg;
    }
    const total = v[at + TOTAL]!;
    this.totals.v[total] = this.totals.v[total]! + change;
  }

  /** A new (key, writer) entry, linked to its key's total. */
  private insert(key: number, writer: number): number {
    let total = this.totals.find(key, 0);
    if (total < 0) total = this.totals.insert(key, 0);
    const id = this.entries.insert(key, writer);
    this.entries.v[id * STRIDE + TOTAL] = total;
    return id;
  }
}

/** Kept out of `add`, so that its checks stay small enough to be inlined where it is called. */
function badAdd(key: number, delta: number, writer: number, seq: number): never {
  throw usage(
    `crdt pn-counter: bad add(key ${key}, delta ${delta}, writer ${writer}, seq ${seq}), or it overflows 2^53`,
  );
}
