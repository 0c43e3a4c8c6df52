/**
 * An index from a pair of integers (a < 2^32, b < 2^53) to dense entry ids, with `stride` f64 values per
 * entry, all in typed arrays: finding, inserting and updating allocate nothing until the table grows.
 * Keys such as IPv4 addresses above 2^31 are not small integers, and V8 boxes those on their way into a
 * Map, so the CRDTs keep their per-key entries here instead.
 *
 *   const t = new PairTable(2);
 *   const id = t.find(key, writer) >= 0 ? … : t.insert(key, writer);
 *   t.v[id * 2 + 1] += 5;                       // re-read `v` after an insert: growing replaces it
 *
 * Layout:
 *
 *   entries (dense, ids 0 … size-1):  a[id] | b[id] | v[id·stride … id·stride + stride-1]
 *   slots (power of two, at most half full, linear probing):  slots[h] = id + 1, 0 = empty
 *
 * Removal shifts the rest of the probe run back (no tombstones) and moves the last entry into the hole,
 * so ids stay dense and lookups never slow down after churn; a caller that removes must not keep ids.
 */

/**
 * Where (a, b) starts probing. Cheaper than murmur3 (the table only needs its low bits spread, and
 * its bytecode is small enough for V8 to inline `find` into the packet path), and deterministic.
 */
function slot(a: number, b: number): number {
  const lo = b >>> 0;
  let h =
    Math.imul(a, 0x9e3779b1) ^ Math.imul(lo, 0x85ebca77) ^ Math.imul((b - lo) / 0x100000000, 0xc2b2ae3d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  return h ^ (h >>> 12);
}

const MIN_CAPACITY = 8;

export class PairTable {
  size = 0;
  a: Uint32Array;
  b: Float64Array;
  v: Float64Array;
  private slots: Int32Array;
  private mask: number;

  constructor(
    readonly stride: number,
    capacity = MIN_CAPACITY,
  ) {
    let c = MIN_CAPACITY;
    while (c < capacity) c *= 2;
    this.a = new Uint32Array(c);
    this.b = new Float64Array(c);
    this.v = new Float64Array(c * stride);
    this.slots = new Int32Array(c * 2);
    this.mask = c * 2 - 1;
  }

  /** The entry id of (a, b), or -1. */
  find(a: number, b: number): number {
    const slots = this.slots;
    const mask = this.mask;
    for (let h = slot(a, b) & mask; ; h = (h + 1) & mask) {
      const s = slots[h]!;
      if (s === 0) return -1;
      if (this.a[s - 1] === a && this.b[s - 1] === b) return s - 1;
    }
  }

  /** A new entry for a pair that is not in the table; its values start at 0. */
  insert(a: number, b: number): number {
    if (this.size === this.a.length) this.grow();
    const id = this.size++;
    this.a[id] = a;
    this.b[id] = b;
    for (let i = id * this.stride, end = i + this.stride; i < end; i++) this.v[i] = 0;
    this.place(id);
    return id;
  }

  /** Removes entry `id`; the entry that was last takes its id. */
  remove(id: number): void {
    const slots = this.slots;
    const mask = this.mask;
    let hole = this.slotOf(id);
    for (let j = (hole + 1) & mask; slots[j] !== 0; j = (j + 1) & mask) {
      const s = slots[j]!;
      const home = slot(this.a[s - 1]!, this.b[s - 1]!) & mask;
      // The entry at j may move back into the hole only if its home is not cyclically in (hole, j].
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      slots[hole] = s;
      hole = j;
    }
    slots[hole] = 0;
    const last = --this.size;
    if (id === last) return;
    slots[this.slotOf(last)] = id + 1;
    this.a[id] = this.a[last]!;
    this.b[id] = this.b[last]!;
    const st = this.stride;
    this.v.copyWithin(id * st, last * st, (last + 1) * st);
  }

  /** Entry ids ordered by (a, b): for encodings and snapshots that must not depend on history. */
  ordered(): number[] {
    const ids = Array.from({ length: this.size }, (_, i) => i);
    return ids.sort((x, y) => this.a[x]! - this.a[y]! || this.b[x]! - this.b[y]!);
  }

  private slotOf(id: number): number {
    const mask = this.mask;
    let h = slot(this.a[id]!, this.b[id]!) & mask;
    while (this.slots[h] !== id + 1) h = (h + 1) & mask;
    return h;
  }

  private place(id: number): void {
    const mask = this.mask;
    let h = slot(this.a[id]!, this.b[id]!) & mask;
    while (this.slots[h] !== 0) h = (h + 1) & mask;
    this.slots[h] = id + 1;
  }

  private grow(): void {
    const c = this.a.length * 2;
    const a = new Uint32Array(c);
    a.set(this.a);
    const b = new Float64Array(c);
    b.set(this.b);
    const v = new Float64Array(c * this.stride);
    v.set(this.v);
    this.a = a;
    this.b = b;
    this.v = v;
    this.slots = new Int32Array(c * 2);
    this.mask = c * 2 - 1;
    for (let id = 0; id < this.size; id++) this.place(id);
  }
}

/**
 * A growable list of ids: what changed since the last delta was taken. The caller keeps a flag per id
 * so that each is listed once, which bounds the list by the number of ids.
 */
export class IdList {
  ids = new Int32Array(16);
  length = 0;

  push(id: number): void {
    if (this.length === this.ids.length) {
      const next = new Int32Array(this.ids.length * 2);
      next.set(this.ids);
      this.ids = next;
    }
    this.ids[this.length++] = id;
  }
}
