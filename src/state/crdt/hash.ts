/**
 * Seeded murmur3_32 for the sketches and for writer ids: replicas must agree on every bucket, so a hash
 * depends on its input and seed only. Nothing here allocates.
 */
import { mix } from '../../packet/flow-key.js';

const TWO_32 = 0x100000000;

/**
 * murmur3's finalizer, signed: an int32 stays a small integer in V8 where a u32 above 2^31 would be
 * boxed on its way out of a call that is not inlined.
 */
export function spread(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/**
 * A 32-bit hash, as an int32, of a non-negative integer below 2^53 given as its low 32 bits (`item | 0`)
 * and its high bits (`high(item)`): halves that V8 keeps as small integers, so that nothing is boxed on
 * the way in either.
 */
export function hashItem(lo: number, hi: number, seed: number): number {
  return spread(mix(mix(seed, lo), hi) ^ 8);
}

/** The bits of a non-negative integer below 2^53 above its low 32. */
export function high(item: number): number {
  return (item - (item >>> 0)) / TWO_32;
}

/**
 * A 53-bit hash of a flow's canonical 5-tuple and a non-negative integer below 2^53 (its incarnation):
 * two independent 32-bit murmur3 hashes of the same words, 32 + 21 bits of them.
 */
export function hashFlow53(
  srcIp: number,
  dstIp: number,
  srcPort: number,
  dstPort: number,
  proto: number,
  incarnation: number,
): number {
  const ports = ((srcPort & 0xffff) << 16) | (dstPort & 0xffff);
  const lo = incarnation >>> 0;
  const hi = (incarnation - lo) / TWO_32;
  let h = mix(mix(mix(mix(0x5bd1e995, srcIp), dstIp), ports), proto);
  let g = mix(mix(mix(mix(0x27d4eb2f, srcIp), dstIp), ports), proto);
  h = spread(mix(mix(h, lo), hi) ^ 24) >>> 0;
  g = spread(mix(mix(g, lo), hi) ^ 24) >>> 0;
  return h * 0x200000 + (g >>> 11);
}
