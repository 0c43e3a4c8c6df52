/**
 * A count-min sketch (Cormode and Muthukrishnan, 2005) of non-negative counts per item: `depth` rows of
 * `width` counters, an item adding to one counter per row and estimating as the smallest of them, so an
 * estimate is never below the true count and exceeds it by at most 2.72·N/width (N the total of all
 * counts) with probability 1 − e^−depth.
 *
 * Summing two sketches is not idempotent: a delta applied twice would count twice. So each replica
 * keeps its own sketch, whose counters only grow, and merge takes the max counter by counter per
 * replica; an estimate reads the sum over replicas (kept up to date, so it costs `depth` reads).
 *
 *   const heavy = new CountMinSketch({ replica: 3 });
 *   heavy.add(srcIp, length);                    // the source's estimate afterwards
 *   peer.merge(heavy.takeDelta());
 *
 * Encoding, after the header (codec.ts), replicas in ascending order; a replica's counters are sparse
 * (form 0) or dense (form 1), whichever is shorter:
 *
 *   u8 depth | u32 width | u16 k | k × ( u16 replica | u8 form | form 0: u32 n | n × ( u32 cell | u53 count )
 *                                                              | form 1: depth·width × u53 count )
 *   cell = row · width + column
 */
import type { ByteReader, ByteWriter } from '../bytes.js';
import {
  checkReplica,
  CrdtKind,
  decodeWith,
  isCount,
  malformed,
  MAX_REPLICAS,
  mismatch,
  readCount,
  readInt,
  readReplica,
  usage,
  writeHeader,
} from './codec.js';
import { hashItem, high, spread } from './hash.js';
import { IdList } from './pair-table.js';

const MAX_DEPTH = 16;
const MAX_CELLS = 1 << 24;
const SEED = 0x3c6ef372;
const SPARSE = 0;
const DENSE = 1;

export interface CountMinOptions {
  replica: number;
  /** Rows: the chance of a bad estimate is e^−depth. Default 4. */
  depth?: number;
  /** Counters per row: the error is at most 2.72·N/width. Default 2048. */
  width?: number;
}

export class CountMinSketch {
  readonly replica: number;
  readonly depth: number;
  readonly width: number;
  /** replica → its counters. */
  private readonly parts = new Map<number, Float64Array>();
  /** The counters summed over replicas: what estimates read. */
  private readonly sum: Float64Array;
  private own: Float64Array | undefined;
  private readonly changed: Uint8Array;
  private readonly dirty = new IdList();

  constructor(options: CountMinOptions) {
    this.replica = checkReplica(options.replica);
    const depth = options.depth ?? 4;
    const width = options.width ?? 2048;
    if (!Number.isInteger(depth) || depth < 1 || depth > MAX_DEPTH) {
      throw usage(`crdt count-min: depth must be an integer 1..${MAX_DEPTH} (got ${depth})`);
    }
    if (!Number.isInteger(width) || width < 1 || depth * width > MAX_CELLS) {
      throw usage(`crdt count-min: width must be an integer ≥ 1, depth·width ≤ ${MAX_CELLS} (got ${width})`);
    }
    this.depth = depth;
    this.width = width;
    this.sum = new Float64Array(depth * width);
    this.changed = new Uint8Array(depth * width);
  }

  /** Adds `count` (default 1) to `item` (an integer 0 … 2^53−1); returns the item's estimate. */
  add(item: number, count = 1): number {
    if (!isCount(item) || !isCount(count))
      throw usage(`crdt count-min: bad add(item ${item}, count ${count})`);
    const own = (this.own ??= this.part(this.replica));
    const sum = this.sum;
    const width = this.width;
    // Each row's column is h1 + row·h2 hashed once more: without that, two items with equal h1 and h2
    // modulo the width would collide in every row, with a chance of 1/width² instead of 1/width^depth.
    const h1 = hashItem(item | 0, high(item), SEED);
    const h2 = spread(h1 ^ SEED);
    let estimate = Infinity;
    for (let row = 0; row < this.depth; row++) {
      const cell = row * width + ((spread(h1 + Math.imul(row, h2)) >>> 0) % width);
      own[cell] = own[cell]! + count;
      const s = (sum[cell] = sum[cell]! + count);
      if (s < estimate) estimate = s;
      if (this.changed[cell] === 0) {
        this.changed[cell] = 1;
        this.dirty.push(cell);
      }
    }
    return estimate;
  }

  /** The item's estimated count: never below the true count. */
  estimate(item: number): number {
    const width = this.width;
    const h1 = hashItem(item | 0, high(item), SEED);
    const h2 = spread(h1 ^ SEED);
    let estimate = Infinity;
    for (let row = 0; row < this.depth; row++) {
      const s = this.sum[row * width + ((spread(h1 + Math.imul(row, h2)) >>> 0) % width)]!;
      if (s < estimate) estimate = s;
    }
    return estimate;
  }

  /** Joins another sketch of the same shape; throws NFS_ERR_STATE, changing nothing, if the shape differs. */
  merge(other: CountMinSketch): void {
    if (other.depth !== this.depth || other.width !== this.width) {
      throw mismatch(
        CrdtKind.COUNT_MIN,
        `cannot merge a ${other.depth}×${other.width} sketch into a ${this.depth}×${this.width} one`,
      );
    }
    if (other === this) return;
    for (const [replica, theirs] of other.parts) this.join(replica, theirs);
  }

  /** This replica's counters that its `add`s changed since the last call, as a sketch of their own. */
  takeDelta(): CountMinSketch {
    const d = new CountMinSketch({ replica: this.replica, depth: this.depth, width: this.width });
    const own = this.own;
    if (own !== undefined && this.dirty.length > 0) {
      const part = d.part(this.replica);
      for (let i = 0; i < this.dirty.length; i++) {
        const cell = this.dirty.ids[i]!;
        this.changed[cell] = 0;
        part[cell] = own[cell]!;
        d.sum[cell] = own[cell]!;
      }
    }
    this.dirty.length = 0;
    return d;
  }

  encode(w: ByteWriter): void {
    writeHeader(w, CrdtKind.COUNT_MIN);
    w.u8(this.depth);
    w.u32(this.width);
    // Parts that are all zero are left out: a state that never heard of a replica equals one that did.
    const replicas = this.replicaIds();
    w.u16(replicas.length);
    for (const replica of replicas) {
      const part = this.parts.get(replica)!;
      let used = 0;
      for (const c of part) if (c !== 0) used++;
      w.u16(replica);
      if (4 + used * 12 < part.length * 8) {
        w.u8(SPARSE);
        w.u32(used);
        for (let cell = 0; cell < part.length; cell++) {
          if (part[cell] === 0) continue;
          w.u32(cell);
          w.u53(part[cell]!);
        }
      } else {
        w.u8(DENSE);
        for (const c of part) w.u53(c);
      }
    }
  }

  /** A new sketch from an encoded state or delta, updating as `replica`; throws NFS_ERR_STATE on bad bytes. */
  static decode(r: ByteReader, options: { replica: number }): CountMinSketch {
    checkReplica(options.replica);
    return decodeWith(r, CrdtKind.COUNT_MIN, () => {
      const depth = r.u8();
      const width = r.u32();
      if (depth < 1 || depth > MAX_DEPTH || width < 1 || depth * width > MAX_CELLS) {
        throw malformed(`shape ${depth}×${width} is out of range`);
      }
      const s = new CountMinSketch({ replica: options.replica, depth, width });
      const cells = depth * width;
      const k = r.u16();
      if (k > MAX_REPLICAS) throw malformed(`${k} replicas (at most ${MAX_REPLICAS})`);
      for (let i = 0; i < k; i++) {
        const replica = readReplica(r);
        if (s.parts.has(replica)) throw malformed(`replica ${replica} appears twice`);
        const part = new Float64Array(cells);
        const form = r.u8();
        if (form === SPARSE) {
          const n = readCount(r, 12, 'counters');
          for (let j = 0; j < n; j++) {
            const cell = r.u32();
            if (cell >= cells) throw malformed(`cell ${cell} is outside ${depth}×${width}`);
            part[cell] = readInt(r, 'count');
          }
        } else if (form === DENSE) {
          if (cells * 8 > r.remaining)
            throw malformed(`dense counters need ${cells * 8} bytes, ${r.remaining} left`);
          for (let cell = 0; cell < cells; cell++) part[cell] = readInt(r, 'count');
        } else {
          throw malformed(`unknown counter form ${form}`);
        }
        s.join(replica, part);
      }
      return s;
    });
  }

  /** Shape and every replica's counters (ascending replica ids): a complete, comparable dump. */
  snapshot(): { depth: number; width: number; replicas: Record<string, number[]> } {
    const replicas: Record<string, number[]> = {};
    for (const replica of this.replicaIds()) replicas[String(replica)] = Array.from(this.parts.get(replica)!);
    return { depth: this.depth, width: this.width, replicas };
  }

  /** Replicas that have counted something, ascending. */
  private replicaIds(): number[] {
    const ids: number[] = [];
    for (const [replica, part] of this.parts) if (part.some((c) => c !== 0)) ids.push(replica);
    return ids.sort((a, b) => a - b);
  }

  private part(replica: number): Float64Array {
    let p = this.parts.get(replica);
    if (p === undefined) {
      p = new Float64Array(this.depth * this.width);
      this.parts.set(replica, p);
    }
    return p;
  }

  private join(replica: number, theirs: Float64Array): void {
    const mine = this.part(replica);
    const sum = this.sum;
    for (let cell = 0; cell < mine.length; cell++) {
      const t = theirs[cell]!;
      const m = mine[cell]!;
      if (t > m) {
        sum[cell] = sum[cell]! + t - m;
        mine[cell] = t;
      }
    }
  }
}
