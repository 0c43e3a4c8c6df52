/**
 * A map from u32 keys to max-registers: each key holds the largest finite number ever written to it
 * (a last-seen time, a highest sequence number, a peak rate). Max is a join, so a replayed or
 * duplicated write changes nothing and needs no id.
 *
 *   const lastSeen = new MaxRegisterMap();
 *   lastSeen.set(srcIp, ctx.now);                // the register afterwards
 *   peer.merge(lastSeen.takeDelta());
 *
 * Encoding, after the header (codec.ts), sorted by key:
 *
 *   u32 n | n × ( u32 key | f64 value )
 */
import type { ByteReader, ByteWriter } from '../bytes.js';
import { CrdtKind, decodeWith, isU32, malformed, readCount, usage, writeHeader } from './codec.js';
import { IdList, PairTable } from './pair-table.js';

const VALUE = 0;
const DIRTY = 1;
const STRIDE = 2;
const ENTRY_BYTES = 4 + 8;

export class MaxRegisterMap {
  private readonly regs: PairTable;
  private readonly dirty = new IdList();

  /** `capacity`: the keys to make room for at once (the table grows past it as needed). */
  constructor(options: { capacity?: number } = {}) {
    this.regs = new PairTable(STRIDE, options.capacity);
  }

  /** Raises `key`'s register to `value` if that is larger; returns the register. */
  set(key: number, value: number): number {
    if (!isU32(key) || !Number.isFinite(value)) {
      throw usage(`crdt max-register: bad set(key ${key}, value ${value})`);
    }
    // -0 and 0 compare equal but encode differently: without this, replicas could disagree on bytes.
    value += 0;
    const t = this.regs;
    let id = t.find(key, 0);
    if (id < 0) {
      id = t.insert(key, 0);
    } else if (value <= t.v[id * STRIDE + VALUE]!) {
      return t.v[id * STRIDE + VALUE]!;
    }
    const at = id * STRIDE;
    t.v[at + VALUE] = value;
    if (t.v[at + DIRTY] === 0) {
      t.v[at + DIRTY] = 1;
      this.dirty.push(id);
    }
    return value;
  }

  /** The register, or undefined if nothing was ever written to `key`. */
  get(key: number): number | undefined {
    const id = this.regs.find(key, 0);
    return id < 0 ? undefined : this.regs.v[id * STRIDE + VALUE];
  }

  merge(other: MaxRegisterMap): void {
    const t = other.regs;
    for (let id = 0; id < t.size; id++) this.join(t.a[id]!, t.v[id * STRIDE + VALUE]!);
  }

  /** The registers this replica's `set`s raised since the last call, as a state of their own. */
  takeDelta(): MaxRegisterMap {
    const d = new MaxRegisterMap({ capacity: this.dirty.length });
    const t = this.regs;
    for (let i = 0; i < this.dirty.length; i++) {
      const id = this.dirty.ids[i]!;
      t.v[id * STRIDE + DIRTY] = 0;
      d.join(t.a[id]!, t.v[id * STRIDE + VALUE]!);
    }
    this.dirty.length = 0;
    return d;
  }

  encode(w: ByteWriter): void {
    const t = this.regs;
    writeHeader(w, CrdtKind.MAX_REGISTER);
    w.u32(t.size);
    for (const id of t.ordered()) {
      w.u32(t.a[id]!);
      w.f64(t.v[id * STRIDE + VALUE]!);
    }
  }

  /** A new map from an encoded state or delta; throws NFS_ERR_STATE on bad bytes. */
  static decode(r: ByteReader): MaxRegisterMap {
    return decodeWith(r, CrdtKind.MAX_REGISTER, () => {
      const n = readCount(r, ENTRY_BYTES, 'registers');
      const m = new MaxRegisterMap({ capacity: n });
      for (let i = 0; i < n; i++) {
        const key = r.u32();
        const value = r.f64();
        if (!Number.isFinite(value)) throw malformed(`key ${key} holds ${value}, not a finite number`);
        m.join(key, value + 0);
      }
      return m;
    });
  }

  /** Key → register, keys in ascending order. */
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    const t = this.regs;
    for (const id of t.ordered()) out[String(t.a[id])] = t.v[id * STRIDE + VALUE]!;
    return out;
  }

  private join(key: number, value: number): void {
    const t = this.regs;
    const id = t.find(key, 0);
    if (id < 0) t.v[t.insert(key, 0) * STRIDE + VALUE] = value;
    else if (value > t.v[id * STRIDE + VALUE]!) t.v[id * STRIDE + VALUE] = value;
  }
}
