/**
 * The internet checksum (RFC 1071) and its incremental update (RFC 1624), used by the IPv4 header and
 * by TCP, UDP and ICMP. Everything here is arithmetic on numbers: nothing allocates.
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
 */
export function onesSum(buf: Uint8Array, offset: number, length: number, initial = 0): number {
  let sum = initial;
  const end = offset + length;
  let i = offset;
  for (; i + 1 < end; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8;
  return fold(sum);
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
