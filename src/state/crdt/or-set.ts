/**
 * A map from u32 keys to add-wins observed-remove sets of u32 members (the destination ports one source
 * reached). Every add tags its member with a dot (replica, counter), unique deployment-wide; a remove
 * deletes the dots it has seen, so an add that the remove had not seen survives it. The dots a replica
 * has seen form its causal context: per replica every counter up to vv[r], plus a cloud of dots beyond
 * (deltas arrive out of order). A dot in the context without an element has been removed, so no
 * tombstones are kept: the optimized OR-set of Bieniusa et al. (2012) in the delta-state form of
 * Almeida, Shoker and Baquero (2018), where a delta is a small state.
 *
 * Membership is idempotent, so a replayed add needs no id: it tags a member that is already there with
 * a new dot, and the member still counts once.
 *
 *   const ports = new OrSetMap({ replica: 3 });
 *   ports.add(srcIp, 22);                        // the set's size afterwards
 *   ports.remove(srcIp, 22);
 *   peer.merge(ports.takeDelta());
 *
 * Tables (pair-table.ts):
 *
 *   byDot    (replica, counter) → [key, member, next replica, next counter]
 *            every dot held; a member's dots are a list through `next` (next replica -1 ends it)
 *   members  (key, member) → [dot count, first replica, first counter]
 *   sizes    (key, 0) → [member count]
 *
 * Encoding, after the header (codec.ts), each list sorted:
 *
 *   u16 r | r × ( u16 replica | u53 counter )           context: the replica's counters 1 … counter
 *   u32 c | c × ( u16 replica | u53 counter )           context: single dots beyond those
 *   u32 d | d × ( u16 replica | u53 counter | u32 key | u32 member )        elements
 */
import type { ByteReader, ByteWriter } from '../bytes.js';
import {
  checkReplica,
  CrdtKind,
  decodeWith,
  isU32,
  malformed,
  MAX_REPLICAS,
  readCount,
  readInt,
  readReplica,
  usage,
  writeHeader,
} from './codec.js';
import { PairTable } from './pair-table.js';

// byDot values
const KEY = 0;
const MEMBER = 1;
const NEXT_R = 2;
const NEXT_N = 3;
const DOT_STRIDE = 4;
// members values
const COUNT = 0;
const HEAD_R = 1;
const HEAD_N = 2;
const MEMBER_STRIDE = 3;

const CLOUD_BYTES = 2 + 8;
const ELEMENT_BYTES = 2 + 8 + 4 + 4;

/** The dots a replica has seen: vv[r] covers (r, 1 … vv[r]); `cloud` holds the ones beyond. */
class CausalContext {
  vv = new Float64Array(0);
  readonly cloud = new PairTable(0);

  covers(r: number, n: number): boolean {
    return n <= (this.vv[r] ?? 0) || this.cloud.find(r, n) >= 0;
  }

  /** A new dot of replica `r`, which only `r` makes: its own dots are always contiguous. */
  next(r: number): number {
    this.ensure(r);
    const n = this.vv[r]! + 1;
    this.vv[r] = n;
    return n;
  }

  add(r: number, n: number): void {
    this.ensure(r);
    const top = this.vv[r]!;
    if (n <= top) return;
    if (n === top + 1) {
      this.vv[r] = n;
      this.absorb(r);
    } else if (this.cloud.find(r, n) < 0) {
      this.cloud.insert(r, n);
    }
  }

  /** Covers every dot of replica `r` up to `top`. */
  raise(r: number, top: number): void {
    this.ensure(r);
    if (top <= this.vv[r]!) return;
    this.vv[r] = top;
    const c = this.cloud;
    // Backwards, because a removal moves the last entry (already looked at) into the hole.
    for (let id = c.size - 1; id >= 0; id--) if (c.a[id] === r && c.b[id]! <= top) c.remove(id);
    this.absorb(r);
  }

  join(o: CausalContext): void {
    for (let r = 0; r < o.vv.length; r++) this.raise(r, o.vv[r]!);
    for (let id = 0; id < o.cloud.size; id++) this.add(o.cloud.a[id]!, o.cloud.b[id]!);
  }

  /** How many dots the context covers. */
  dotCount(): number {
    let n = this.cloud.size;
    for (const top of this.vv) n += top;
    return n;
  }

  private absorb(r: number): void {
    for (;;) {
      const id = this.cloud.find(r, this.vv[r]! + 1);
      if (id < 0) return;
      this.cloud.remove(id);
      this.vv[r] = this.vv[r]! + 1;
    }
  }

  private ensure(r: number): void {
    if (r < this.vv.length) return;
    const vv = new Float64Array(r + 1);
    vv.set(this.vv);
    this.vv = vv;
  }
}

export class OrSetMap {
  readonly replica: number;
  private readonly ctx = new CausalContext();
  private readonly byDot = new PairTable(DOT_STRIDE);
  private readonly members = new PairTable(MEMBER_STRIDE);
  private readonly sizes = new PairTable(1);
  /** This replica's changes since the last takeDelta, as a state; made at the first change. */
  private pending: OrSetMap | undefined;

  constructor(options: { replica: number }) {
    this.replica = checkReplica(options.replica);
  }

  /** Adds `member` to the set at `key`; returns the set's size afterwards. */
  add(key: number, member: number): number {
    if (!isU32(key) || !isU32(member)) throw usage(`crdt or-set: bad add(key ${key}, member ${member})`);
    const d = this.delta();
    const n = this.ctx.next(this.replica);
    // The new dot supersedes every dot of the member seen so far: the delta records them as seen, and
    // drops its own (they are among them, or gone from this state already).
    d.clearDots(key, member, undefined);
    this.clearDots(key, member, d.ctx);
    this.insertDot(key, member, this.replica, n);
    d.insertDot(key, member, this.replica, n);
    d.ctx.add(this.replica, n);
    return this.size(key);
  }

  /** Removes `member` from the set at `key` (adds this replica has not seen yet survive); returns the size. */
  remove(key: number, member: number): number {
    if (!isU32(key) || !isU32(member)) throw usage(`crdt or-set: bad remove(key ${key}, member ${member})`);
    if (this.members.find(key, member) < 0) return this.size(key);
    const d = this.delta();
    d.dropMember(key, member, undefined);
    this.dropMember(key, member, d.ctx);
    return this.size(key);
  }

  has(key: number, member: number): boolean {
    return this.members.find(key, member) >= 0;
  }

  size(key: number): number {
    const id = this.sizes.find(key, 0);
    return id < 0 ? 0 : this.sizes.v[id]!;
  }

  merge(other: OrSetMap): void {
    if (other === this) return;
    const oc = other.ctx;
    // Dots held here that the other has seen and no longer holds: removed there. Walk whichever side is
    // smaller: the other's context (a delta's is a few dots) or the dots held here.
    const gone: number[] = [];
    if (oc.dotCount() <= this.byDot.size) {
      for (let r = 0; r < oc.vv.length; r++) {
        for (let n = 1; n <= oc.vv[r]!; n++) this.collectGone(r, n, other, gone);
      }
      for (let id = 0; id < oc.cloud.size; id++)
        this.collectGone(oc.cloud.a[id]!, oc.cloud.b[id]!, other, gone);
    } else {
      const t = this.byDot;
      for (let id = 0; id < t.size; id++) {
        const r = t.a[id]!;
        const n = t.b[id]!;
        if (oc.covers(r, n) && other.byDot.find(r, n) < 0) gone.push(r, n);
      }
    }
    for (let i = 0; i < gone.length; i += 2) this.removeDot(gone[i]!, gone[i + 1]!);
    // Dots the other holds that this replica has not seen: added there.
    const ob = other.byDot;
    for (let id = 0; id < ob.size; id++) {
      const r = ob.a[id]!;
      const n = ob.b[id]!;
      if (this.byDot.find(r, n) < 0 && !this.ctx.covers(r, n)) {
        this.insertDot(ob.v[id * DOT_STRIDE + KEY]!, ob.v[id * DOT_STRIDE + MEMBER]!, r, n);
      }
    }
    this.ctx.join(oc);
  }

  /** This replica's adds and removes since the last call, as a state of their own. */
  takeDelta(): OrSetMap {
    const d = this.pending ?? new OrSetMap({ replica: this.replica });
    this.pending = undefined;
    return d;
  }

  encode(w: ByteWriter): void {
    writeHeader(w, CrdtKind.OR_SET);
    const vv = this.ctx.vv;
    let used = 0;
    for (const top of vv) if (top > 0) used++;
    w.u16(used);
    for (let r = 0; r < vv.length; r++) {
      if (vv[r] === 0) continue;
      w.u16(r);
      w.u53(vv[r]!);
    }
    const c = this.ctx.cloud;
    w.u32(c.size);
    for (const id of c.ordered()) {
      w.u16(c.a[id]!);
      w.u53(c.b[id]!);
    }
    const t = this.byDot;
    w.u32(t.size);
    for (const id of t.ordered()) {
      w.u16(t.a[id]!);
      w.u53(t.b[id]!);
      w.u32(t.v[id * DOT_STRIDE + KEY]!);
      w.u32(t.v[id * DOT_STRIDE + MEMBER]!);
    }
  }

  /**
   * A new map from an encoded state or delta, updating as `replica`; throws NFS_ERR_STATE on bad bytes.
   * A replica id may be reused only by a state that holds every dot the id ever made (decoded from
   * that replica's own latest state): new dots would otherwise repeat old ones.
   */
  static decode(r: ByteReader, options: { replica: number }): OrSetMap {
    const m = new OrSetMap(options);
    return decodeWith(r, CrdtKind.OR_SET, () => {
      const used = r.u16();
      if (used > MAX_REPLICAS) throw malformed(`context of ${used} replicas (at most ${MAX_REPLICAS})`);
      for (let i = 0; i < used; i++) {
        const replica = readReplica(r);
        m.ctx.raise(replica, readInt(r, 'context counter'));
      }
      const c = readCount(r, CLOUD_BYTES, 'context dots');
      for (let i = 0; i < c; i++) {
        const replica = readReplica(r);
        m.ctx.add(replica, readInt(r, 'dot counter', 1));
      }
      const d = readCount(r, ELEMENT_BYTES, 'elements');
      for (let i = 0; i < d; i++) {
        const replica = readReplica(r);
        const n = readInt(r, 'dot counter', 1);
        const key = r.u32();
        const member = r.u32();
        if (!m.ctx.covers(replica, n)) throw malformed(`dot (${replica}, ${n}) is outside the context`);
        if (m.byDot.find(replica, n) >= 0) throw malformed(`dot (${replica}, ${n}) tags two elements`);
        m.insertDot(key, member, replica, n);
      }
      return m;
    });
  }

  /** Key → members in ascending order, keys ascending; empty sets are left out. */
  snapshot(): Record<string, number[]> {
    const out: Record<string, number[]> = {};
    const t = this.members;
    for (const id of t.ordered()) (out[String(t.a[id])] ??= []).push(t.b[id]!);
    return out;
  }

  private delta(): OrSetMap {
    return (this.pending ??= new OrSetMap({ replica: this.replica }));
  }

  private collectGone(r: number, n: number, other: OrSetMap, gone: number[]): void {
    if (this.byDot.find(r, n) >= 0 && other.byDot.find(r, n) < 0) gone.push(r, n);
  }

  private dropMember(key: number, member: number, seen: CausalContext | undefined): void {
    const mid = this.clearDots(key, member, seen);
    if (mid < 0) return;
    this.members.remove(mid);
    this.bumpSize(key, -1);
  }

  /**
   * Drops every dot of (key, member), adding each to `seen`, but keeps the member's entry (with no dots)
   * for an insertDot to reuse; returns the entry's id, or -1 if the member is not here.
   */
  private clearDots(key: number, member: number, seen: CausalContext | undefined): number {
    const mt = this.members;
    const mid = mt.find(key, member);
    if (mid < 0) return -1;
    const m = mid * MEMBER_STRIDE;
    let r = mt.v[m + HEAD_R]!;
    let n = mt.v[m + HEAD_N]!;
    mt.v[m + COUNT] = 0;
    mt.v[m + HEAD_R] = -1;
    const t = this.byDot;
    while (r >= 0) {
      seen?.add(r, n);
      const id = t.find(r, n);
      const at = id * DOT_STRIDE;
      r = t.v[at + NEXT_R]!;
      n = t.v[at + NEXT_N]!;
      t.remove(id);
    }
    return mid;
  }

  private insertDot(key: number, member: number, r: number, n: number): void {
    const mt = this.members;
    let mid = mt.find(key, member);
    if (mid < 0) {
      mid = mt.insert(key, member);
      mt.v[mid * MEMBER_STRIDE + HEAD_R] = -1;
      this.bumpSize(key, 1);
    }
    const m = mid * MEMBER_STRIDE;
    const t = this.byDot;
    const at = t.insert(r, n) * DOT_STRIDE;
    t.v[at + KEY] = key;
    t.v[at + MEMBER] = member;
    t.v[at + NEXT_R] = mt.v[m + HEAD_R]!;
    t.v[at + NEXT_N] = mt.v[m + HEAD_N]!;
    mt.v[m + COUNT] = mt.v[m + COUNT]! + 1;
    mt.v[m + HEAD_R] = r;
    mt.v[m + HEAD_N] = n;
  }

  /** Drops one dot, unlinking it from its member's list. */
  private removeDot(r: number, n: number): void {
    const t = this.byDot;
    const id = t.find(r, n);
    const at = id * DOT_STRIDE;
    const key = t.v[at + KEY]!;
    const member = t.v[at + MEMBER]!;
    const nextR = t.v[at + NEXT_R]!;
    const nextN = t.v[at + NEXT_N]!;
    t.remove(id);
    const mt = this.members;
    const mid = mt.find(key, member);
    const m = mid * MEMBER_STRIDE;
    if (mt.v[m + COUNT] === 1) {
      mt.remove(mid);
      this.bumpSize(key, -1);
      return;
    }
    mt.v[m + COUNT] = mt.v[m + COUNT]! - 1;
    if (mt.v[m + HEAD_R] === r && mt.v[m + HEAD_N] === n) {
      mt.v[m + HEAD_R] = nextR;
      mt.v[m + HEAD_N] = nextN;
      return;
    }
    let pr = mt.v[m + HEAD_R]!;
    let pn = mt.v[m + HEAD_N]!;
    for (;;) {
      const p = t.find(pr, pn) * DOT_STRIDE;
      if (t.v[p + NEXT_R] === r && t.v[p + NEXT_N] === n) {
        t.v[p + NEXT_R] = nextR;
        t.v[p + NEXT_N] = nextN;
        return;
      }
      pr = t.v[p + NEXT_R]!;
      pn = t.v[p + NEXT_N]!;
    }
  }

  private bumpSize(key: number, delta: number): void {
    const t = this.sizes;
    let id = t.find(key, 0);
    if (id < 0) id = t.insert(key, 0);
    const v = (t.v[id] = t.v[id]! + delta);
    if (v === 0) t.remove(id);
  }
}
