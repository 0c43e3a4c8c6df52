/**
 * Field offsets of the headers nfstate reads, and big-endian byte access that allocates nothing (plain
 * indexing, so no DataView has to be made per buffer). Shared by the parser and the builders.
 *
 * IPv4 (RFC 791), offsets from the start of the header:
 *
 *    0               1               2               3
 *   +-------+-------+---------------+-------------------------------+
 *   |version|  IHL  |      TOS      |         total length          |  0
 *   +-------+-------+---------------+-----+-------------------------+
 *   |        identification         |flags|    fragment offset      |  4
 *   +---------------+---------------+-----+-------------------------+
 *   |      TTL      |   protocol    |        header checksum        |  8
 *   +---------------+---------------+-------------------------------+
 *   |                        source address                         | 12
 *   +---------------------------------------------------------------+
 *   |                      destination address                      | 16
 *   +---------------------------------------------------------------+
 *   |            options (IHL > 5), IHL * 4 bytes in all            | 20
 *
 * UDP (RFC 768):  0 src port | 2 dst port | 4 length | 6 checksum                        (8 bytes)
 * TCP (RFC 9293): 0 src port | 2 dst port | 4 seq | 8 ack | 12 data offset (high nibble)
 *                 | 13 flags | 14 window | 16 checksum | 18 urgent | 20 options          (20+ bytes)
 * ICMP (RFC 792): 0 type | 1 code | 2 checksum | 4 identifier | 6 sequence (echo)        (8 bytes)
 */

export const IPV4_MIN_HEADER = 20;
export const IPV4_MAX_HEADER = 60;
export const IPV4_MAX_TOTAL = 0xffff;
export const IP_VER_IHL = 0;
export const IP_TOTAL_LENGTH = 2;
export const IP_ID = 4;
export const IP_FRAG = 6;
export const IP_TTL = 8;
export const IP_PROTO = 9;
export const IP_CHECKSUM = 10;
export const IP_SRC = 12;
export const IP_DST = 16;
/** Don't-fragment, more-fragments, and the fragment-offset mask within the 16-bit flags field. */
export const IP_FLAG_DF = 0x4000;
export const IP_FLAG_MF = 0x2000;
export const IP_FRAG_OFFSET_MASK = 0x1fff;

export const UDP_HEADER = 8;
export const UDP_LENGTH = 4;
export const UDP_CHECKSUM = 6;

export const TCP_MIN_HEADER = 20;
export const TCP_SEQ = 4;
export const TCP_ACK = 8;
export const TCP_DATA_OFFSET = 12;
export const TCP_FLAGS = 13;
export const TCP_WINDOW = 14;
export const TCP_CHECKSUM = 16;

export const ICMP_HEADER = 8;
export const ICMP_CHECKSUM = 2;
export const ICMP_ID = 4;
export const ICMP_SEQ = 6;
export const ICMP_ECHO_REPLY = 0;
export const ICMP_ECHO_REQUEST = 8;

export function read16(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

export function read32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

/** Writes the low 16 bits of `v`; Uint8Array stores keep only each byte's low 8 bits. */
export function write16(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 8;
  b[at + 1] = v;
}

export function write32(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 24;
  b[at + 1] = v >>> 16;
  b[at + 2] = v >>> 8;
  b[at + 3] = v;
}
