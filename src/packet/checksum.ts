/**
 * The internet checksum (RFC 1071) and its incremental update (RFC 1624), used by the IPv4 header and
 * by TCP, UDP and ICMP. Nothing allocates per call: onesSum keeps one view over the last buffer it read.
 *
 *   const c = checksum(buf, 0, 20);                       // IPv4 header with its checksum field zeroed
 *   const c2 = checksumUpdate32(c, oldSrcIp, newSrcIp);   // after rewriting the source address
 *
 * Ones-complement arithmetic has two zeros, 0x0000 and 0xffff. A full computation over data that is not
 * all zeros never yields the checksum 0xffff, and the incremental update agrees with it exactly as long
 * as the covered data stays not all zeros, which always holds for IPv4 (the version nibble) and for TCP
 * and UDP (the protocol number in the pseudo header).
 */

/** Adds end-around carries until the value fits in 16 bits. */
function fold(sum: number): number {
  // Division rather than >>> because a long buffer's sum can exceed 32 bits.
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return sum;
}

/**
 * Ones-complement sum of buf[offset, offset+length) read as big-endian 16-bit words, plus `initial` (a
 * partial sum such as `pseudoHeaderSum`), folded to 16 bits. An odd trailing byte is padded with zero.
 * Data whose checksum is valid sums (checksum field included) to 0xffff.
 *
 * Every TCP or UDP packet is verified whole at each hop, so a long range is summed four bytes at a time:
 * through a Uint32Array over the buffer, in native (little-endian) order. Mod 0xffff, 65536 is 1, so a
 * word's bytes at even addresses count once and those at odd addresses 256 times: that is the sum of the
 * byte-swapped 16-bit words when the words begin at an even position of the range, which RFC 1071 §2(B)
 * turns back by swapping the folded sum. The view is made once per ArrayBuffer (the receive slab is
 * reused, so packets from a socket allocate nothing).
 */
export function onesSum(buf: Uint8Array, offset: number, length: number, initial = 0): number {
  const end = offset + length;
  let i = offset;
  if (length < WORDS_FROM || length > MAX_WORDS_RANGE || !LITTLE_ENDIAN) {
    let sum = initial;
    for (; i + 1 < end; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
    if (i < end) sum += buf[i]! << 8;
    return fold(sum);
  }
  // Bytes at even positions of the range are high bytes (x256), those at odd positions low bytes.
  let high = 0;
  let low = 0;
  const base = buf.byteOffset;
  for (; ((base + i) & 3) !== 0; i++) {
    if (((i - offset) & 1) === 0) high += buf[i]!;
    else low += buf[i]!;
  }
  const words = wordsOf(buf.buffer);
  const first = (base + i) >>> 2;
  const last = (base + end) >>> 2;
  // Four int32 sums of 16-bit halves, which a range of at most MAX_WORDS_RANGE bytes cannot overflow.
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  let k = first;
  for (; k + 3 < last; k += 4) {
    const w = words[k]!;
    const x = words[k + 1]!;
    const y = words[k + 2]!;
    const z = words[k + 3]!;
    a = (a + (w & 0xffff) + (w >>> 16)) | 0;
    b = (b + (x & 0xffff) + (x >>> 16)) | 0;
    c = (c + (y & 0xffff) + (y >>> 16)) | 0;
    d = (d + (z & 0xffff) + (z >>> 16)) | 0;
  }
  for (; k < last; k++) {
    const w = words[k]!;
    a = (a + (w & 0xffff) + (w >>> 16)) | 0;
  }
  let wordSum = fold(a + b + c + d);
  if (((i - offset) & 1) === 0) wordSum = ((wordSum & 0xff) << 8) | (wordSum >>> 8);
  for (i = (last << 2) - base; i < end; i++) {
    if (((i - offset) & 1) === 0) high += buf[i]!;
    else low += buf[i]!;
  }
  return fold(initial + high * 256 + low + wordSum);
}

/** Shorter ranges (an IPv4 header) are summed a byte pair at a time: the word path's set-up costs more. */
const WORDS_FROM = 64;
/** The longest IPv4 packet; longer ranges (none on the packet path) take the byte-pair loop. */
const MAX_WORDS_RANGE = 0xffff;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
let wordsBuffer: ArrayBufferLike | undefined;
let words: Uint32Array = new Uint32Array(0);

function wordsOf(buffer: ArrayBufferLike): Uint32Array {
  if (buffer !== wordsBuffer) {
    wordsBuffer = buffer;
    words = new Uint32Array(buffer, 0, buffer.byteLength >>> 2);
  }
  return words;
}

/** The checksum to store for buf[offset, offset+length) (its checksum field zeroed), given `initial`. */
export function checksum(buf: Uint8Array, offset: number, length: number, initial = 0): number {
  return ~onesSum(buf, offset, length, initial) & 0xffff;
}

/** The TCP/UDP pseudo header (source, destination, zero, protocol, L4 length) as a partial sum. */
export function pseudoHeaderSum(srcIp: number, dstIp: number, proto: number, l4Length: number): number {
  return fold(
    (srcIp >>> 16) + (srcIp & 0xffff) + (dstIp >>> 16) + (dstIp & 0xffff) + (proto & 0xff) + l4Length,
  );
}

/**
 * RFC 1624 eqn 3: the new checksum after one covered 16-bit word changes from `oldWord` to `newWord`,
 * HC' = ~(~HC + ~m + m'). Eqn 3 rather than eqn 2 because eqn 2 can produce 0xffff where a full
 * recomputation gives 0x0000.
 */
export function checksumUpdate16(oldChecksum: number, oldWord: number, newWord: number): number {
  const sum = (~oldChecksum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff);
  return ~fold(sum) & 0xffff;
}

/** `checksumUpdate16` for a covered 32-bit field (an IPv4 address), as its two 16-bit halves. */
export function checksumUpdate32(oldChecksum: number, oldValue: number, newValue: number): number {
  const sum =
    (~oldChecksum & 0xffff) +
    (~(oldValue >>> 16) & 0xffff) +
    (~oldValue & 0xffff) +
    (newValue >>> 16) +
    (newValue & 0xffff);
  return ~fold(sum) & 0xffff;
}
