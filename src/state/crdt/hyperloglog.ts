/**
 * HyperLogLog (Flajolet et al., 2007): the number of distinct items, in 2^precision one-byte registers,
 * with a standard error of 1.04/√(2^precision) (1.6% at the default 12, in 4 KiB). An item sets one
 * register to at least the rank of its hash; merge is the register-wise max, so adding an item twice,
 * at one replica or two, changes nothing, and deltas may arrive in any order, or twice.
 *
 *   const sources = new HyperLogLog();
 *   if (sources.add(srcIp) && sources.estimate() > limit) alert();
 *   peer.merge(sources.takeDelta());
 *
 * Σ 2^−register is kept up to date, so an estimate costs O(1). It stays exact: each term is a multiple
 * of 2^−33 and the sum is below 2^16, so it needs fewer than the 53 bits of a double.
 *
 * Encoding, after the header (codec.ts); sparse (form 0, indices ascending) or dense (form 1),
 * whichever is shorter:
 *
 *   u8 precision | u8 form | form 0: u32 n | n × ( u16 index | u8 register ) | form 1: 2^precision × u8
 */
import type { ByteReader, ByteWriter } from '../bytes.js';
import {
  CrdtKind,
  decodeWith,
  isCount,
  malformed,
  mismatch,
  readCount,
  usage,
  writeHeader,
} from './codec.js';
import { hashItem, high } from './hash.js';
import { IdList } from './pair-table.js';

const MIN_PRECISION = 4;
const MAX_PRECISION = 16;
/** Ranks come from a 32-bit hash: 1 + its leading zeros. */
const MAX_RANK = 33;
const SEED_INDEX = 0x510e527f;
const SEED_RANK = 0x9b05688c;
const SPARSE = 0;
const DENSE = 1;

export class HyperLogLog {
  readonly precision: number;
  private readonly registers: Uint8Array;
  private readonly changed: Uint8Array;
  private readonly dirty = new IdList();
  private inverseSum: number;
  private zeros: number;

  constructor(options: { precision?: number } = {}) {
    const p = options.precision ?? 12;
    if (!Number.isInteger(p) || p < MIN_PRECISION || p > MAX_PRECISION) {
      throw usage(
        `crdt hyperloglog: precision must be an integer ${MIN_PRECISION}..${MAX_PRECISION} (got ${p})`,
      );
    }
    this.precision = p;
    this.registers = new Uint8Array(1 << p);
    this.changed = new Uint8Array(1 << p);
    this.inverseSum = 1 << p;
    this.zeros = 1 << p;
  }

  /**
   * Counts `item` (an integer 0 … 2^53−1, e.g. an address or a flow hash). Returns whether a register
   * rose, the only case in which the estimate can have changed: checking a threshold then, and only then,
   * keeps the packet path free of estimates.
   */
  add(item: number): boolean {
    if (!isCount(item)) throw usage(`crdt hyperloglog: bad item ${item}`);
    const lo = item | 0;
    const hi = high(item);
    const index = hashItem(lo, hi, SEED_INDEX) >>> (32 - this.precision);
    if (!this.raise(index, Math.clz32(hashItem(lo, hi, SEED_RANK)) + 1)) return false;
    if (this.changed[index] === 0) {
      this.changed[index] = 1;
      this.dirty.push(index);
    }
    return true;
  }

  /** The estimated number of distinct items added. */
  estimate(): number {
    const m = this.registers.length;
    const raw = (alpha(m) * m * m) / this.inverseSum;
    // Small cardinalities: linear counting over the empty registers is the better estimate.
    if (raw <= 2.5 * m && this.zeros > 0) return m * Math.log(m / this.zeros);
    return raw;
  }

  /** Joins another HyperLogLog of the same precision; throws NFS_ERR_STATE, changing nothing, otherwise. */
  merge(other: HyperLogLog): void {
    if (other.precision !== this.precision) {
      throw mismatch(
        CrdtKind.HYPERLOGLOG,
        `cannot merge precision ${other.precision} into precision ${this.precision}`,
      );
    }
    const theirs = other.registers;
    for (let i = 0; i < theirs.length; i++) this.raise(i, theirs[i]!);
  }

  /** The registers this replica's `add`s raised since the last call, as a HyperLogLog of their own. */
  takeDelta(): HyperLogLog {
    const d = new HyperLogLog({ precision: this.precision });
    for (let i = 0; i < this.dirty.length; i++) {
      const index = this.dirty.ids[i]!;
      this.changed[index] = 0;
      d.raise(index, this.registers[index]!);
    }
    this.dirty.length = 0;
    return d;
  }

  encode(w: ByteWriter): void {
    writeHeader(w, CrdtKind.HYPERLOGLOG);
    w.u8(this.precision);
    const regs = this.registers;
    const used = regs.length - this.zeros;
    if (4 + used * 3 < regs.length) {
      w.u8(SPARSE);
      w.u32(used);
      for (let i = 0; i < regs.length; i++) {
        if (regs[i] === 0) continue;
        w.u16(i);
        w.u8(regs[i]!);
      }
    } else {
      w.u8(DENSE);
      w.raw(regs);
    }
  }

  /** A new HyperLogLog from an encoded state or delta; throws NFS_ERR_STATE on bad bytes. */
  static decode(r: ByteReader): HyperLogLog {
    return decodeWith(r, CrdtKind.HYPERLOGLOG, () => {
      const p = r.u8();
      if (p < MIN_PRECISION || p > MAX_PRECISION) throw malformed(`precision ${p} is out of range`);
      const h = new HyperLogLog({ precision: p });
      const m = 1 << p;
      const form = r.u8();
      if (form === SPARSE) {
        const n = readCount(r, 3, 'registers');
        for (let i = 0; i < n; i++) {
          const index = r.u16();
          if (index >= m) throw malformed(`register ${index} is outside ${m}`);
          h.raise(index, rank(r.u8()));
        }
      } else if (form === DENSE) {
        if (m > r.remaining) throw malformed(`dense registers need ${m} bytes, ${r.remaining} left`);
        for (let i = 0; i < m; i++) h.raise(i, rank(r.u8()));
      } else {
        throw malformed(`unknown register form ${form}`);
      }
      return h;
    });
  }

  /** Precision, estimate and every register: a complete, comparable dump. */
  snapshot(): { precision: number; estimate: number; registers: number[] } {
    return { precision: this.precision, estimate: this.estimate(), registers: Array.from(this.registers) };
  }

  private raise(index: number, value: number): boolean {
    const old = this.registers[index]!;
    if (value <= old) return false;
    this.registers[index] = value;
    this.inverseSum += 2 ** -value - 2 ** -old;
    if (old === 0) this.zeros--;
    return true;
  }
}

function rank(v: number): number {
  if (v > MAX_RANK) throw malformed(`register value ${v} is above ${MAX_RANK}`);
  return v;
}

function alpha(m: number): number {
  if (m === 16) return 0.673;
  if (m === 32) return 0.697;
  if (m === 64) return 0.709;
  return 0.7213 / (1 + 1.079 / m);
}
