/**
 * Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
 * Balancer", NSDI'16, §3.4): the switch's default owner for a flow that has no exact rule. Every backend
 * gets an almost equal share of a prime-sized lookup table, and when a backend leaves, only about its own
 * share of flows moves, which keeps default placement stable while instances come and go.
 *
 *   const m = new Maglev(['nf-0', 'nf-1', 'nf-2']);
 *   const owner = m.backends[m.lookup(flowHash)];   // lookup: one array read
 *
 * Each backend i has a permutation of the table's slots, permutation[i][j] = (offset + j·skip) mod M,
 * with offset and skip from two independent hashes of its name. Because M is prime and 1 <= skip < M,
 * each permutation visits every slot. Backends take turns claiming their next unclaimed preferred slot
 * until the table is full, so shares differ by at most one slot.
 */
import { ErrorCode, NfsError } from '../errors.js';
import { fmix32 } from '../packet/flow-key.js';

/** The paper's small table size: a prime comfortably above 100 × the backends nfstate runs. */
export const DEFAULT_TABLE_SIZE = 65537;

export class Maglev {
  readonly backends: readonly string[];
  readonly tableSize: number;
  private readonly table: Int32Array;

  constructor(backends: readonly string[], tableSize = DEFAULT_TABLE_SIZE) {
    if (!Number.isInteger(tableSize) || tableSize < 2 || !isPrime(tableSize)) {
      throw new NfsError(ErrorCode.USAGE, `maglev: table size must be a prime >= 2 (got ${tableSize})`);
    }
    if (backends.length > tableSize) {
      throw new NfsError(
        ErrorCode.USAGE,
        `maglev: ${backends.length} backends do not fit a table of ${tableSize} slots`,
      );
    }
    this.backends = Object.freeze([...backends]);
    this.tableSize = tableSize;
    this.table = populate(this.backends, tableSize);
  }

  /** Index into `backends` of the owner of `hash` (any 32-bit value), or -1 when there are no backends. */
  lookup(hash: number): number {
    return this.table[(hash >>> 0) % this.tableSize]!;
  }

  /** How many table slots each backend owns, by index; for tests and the controller's balance report. */
  shares(): number[] {
    const counts = new Array<number>(this.backends.length).fill(0);
    for (const owner of this.table) if (owner >= 0) counts[owner]!++;
    return counts;
  }
}

function populate(backends: readonly string[], m: number): Int32Array {
  const table = new Int32Array(m).fill(-1);
  const n = backends.length;
  if (n === 0) return table;
  // `pos[i]` is permutation[i][next[i]], advanced by `skip[i]` instead of multiplied, so it stays < m.
  const pos = new Float64Array(n);
  const skip = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const name = backends[i]!;
    pos[i] = fnv1a32(name) % m;
    skip[i] = (murmur3_32(name, 0x9747b28c) % (m - 1)) + 1;
  }
  let filled = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      let c = pos[i]!;
      while (table[c] !== -1) {
        c += skip[i]!;
        if (c >= m) c -= m;
      }
      table[c] = i;
      c += skip[i]!;
      if (c >= m) c -= m;
      pos[i] = c;
      if (++filled === m) return table;
    }
  }
}

export function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

const encoder = new TextEncoder();

/** 32-bit FNV-1a over the UTF-8 bytes of `s`. */
export function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (const b of encoder.encode(s)) {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** MurmurHash3 x86 32-bit over the UTF-8 bytes of `s`; independent of FNV-1a, as the skip must be. */
export function murmur3_32(s: string, seed = 0): number {
  const data = encoder.encode(s);
  const len = data.length;
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  let h = seed >>> 0;
  const blocks = len & ~3;
  for (let i = 0; i < blocks; i += 4) {
    let k = data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = len & 3;
  if (tail !== 0) {
    let k = 0;
    if (tail === 3) k ^= data[blocks + 2]! << 16;
    if (tail >= 2) k ^= data[blocks + 1]! << 8;
    k ^= data[blocks]!;
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
  }
  return fmix32(h ^ len);
}
