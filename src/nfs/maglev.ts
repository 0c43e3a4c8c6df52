/**
 * Maglev consistent hashing (Eisenbud et al., NSDI'16) for the load balancer's backend choice: a
 * lookup table of prime size M where each backend owns about M/N entries, so a flow's backend is one
 * array read, and adding or removing a backend moves only a small share of flows.
 *
 *   const table = buildMaglevTable(['10.1.0.1:8080', '10.1.0.2:8080'], 65537);
 *   const backend = table[hash % table.length];
 */
import { ErrorCode, NfsError } from '../errors.js';

/** 32-bit FNV-1a over the UTF-16 code units of `s`, starting from `seed`. */
function fnv1a(s: string, seed: number): number {
  let h = seed >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // A final avalanche, because FNV's low bits are weak and the table index is taken modulo M.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

/**
 * The lookup table: entry i holds the index (into `names`) of the backend that owns slot i. Each
 * backend walks its own permutation of the slots (offset + j·skip mod M, a permutation because M is
 * prime) and the backends take turns claiming their next unclaimed slot, which is what keeps the
 * shares equal to within one slot and the table stable under membership changes.
 */
export function buildMaglevTable(names: readonly string[], size: number): Uint16Array {
  const n = names.length;
  if (n === 0 || n > 0xffff)
    throw new NfsError(ErrorCode.CONFIG, `maglev: needs 1 to 65535 backends, got ${n}`);
  if (!isPrime(size) || size < n) {
    throw new NfsError(
      ErrorCode.CONFIG,
      `maglev: table size ${size} must be a prime >= the backend count ${n}`,
    );
  }
  const offset = new Uint32Array(n);
  const skip = new Uint32Array(n);
  for (let b = 0; b < n; b++) {
    const name = names[b]!;
    offset[b] = fnv1a(name, 0x811c9dc5) % size;
    skip[b] = size === 1 ? 1 : (fnv1a(name, 0x9747b28c) % (size - 1)) + 1;
  }
  const next = new Uint32Array(n);
  const table = new Uint16Array(size);
  const claimed = new Uint8Array(size);
  let filled = 0;
  for (;;) {
    for (let b = 0; b < n; b++) {
      let slot = (offset[b]! + next[b]! * skip[b]!) % size;
      while (claimed[slot] === 1) {
        next[b]!++;
        slot = (offset[b]! + next[b]! * skip[b]!) % size;
      }
      claimed[slot] = 1;
      table[slot] = b;
      next[b]!++;
      if (++filled === size) return table;
    }
  }
}
