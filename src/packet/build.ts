/**
 * Builders that write a complete, valid IPv4 packet (UDP, TCP or ICMP) into a buffer, every checksum
 * computed, and return its length. They serve the traffic generator and tests; they validate their
 * input and throw NfsError CONFIG on bad specs, so they are not for the per-packet path of an NF.
 *
 *   const buf = new Uint8Array(1500);
 *   const n = buildUdp(buf, 0, { srcIp: parseIpv4('10.0.0.1'), dstIp: parseIpv4('10.0.0.2'),
 *                                srcPort: 1234, dstPort: 53, payload: query });
 *   pkt.parse(buf, 0, n); // DropReason.NONE
 */
import { ErrorCode, NfsError } from '../errors.js';
import { IpProto } from '../types.js';
import type { FlowKey } from '../types.js';
import { checksum, pseudoHeaderSum } from './checksum.js';
import {
  ICMP_CHECKSUM,
  ICMP_HEADER,
  IP_CHECKSUM,
  IP_DST,
  IP_FLAG_DF,
  IP_FRAG,
  IP_ID,
  IP_PROTO,
  IP_SRC,
  IP_TOTAL_LENGTH,
  IP_TTL,
  IP_VER_IHL,
  IPV4_MAX_HEADER,
  IPV4_MAX_TOTAL,
  IPV4_MIN_HEADER,
  TCP_CHECKSUM,
  TCP_MIN_HEADER,
  UDP_CHECKSUM,
  UDP_HEADER,
  write16,
  write32,
} from './layout.js';

/** TCP flag bits as they appear in the flags byte. */
export const TcpFlag = { FIN: 1, SYN: 2, RST: 4, PSH: 8, ACK: 16, URG: 32 } as const;
export type TcpFlag = (typeof TcpFlag)[keyof typeof TcpFlag];

/** IPv4 fields every builder accepts. `id` defaults to 0, `ttl` to 64; `ipOptions` is padded already. */
export interface IpSpec {
  srcIp: number;
  dstIp: number;
  ttl?: number;
  id?: number;
  /** Raw option bytes, a multiple of 4 and at most 40 bytes long. */
  ipOptions?: Uint8Array;
}

export interface UdpSpec extends IpSpec {
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
}

export interface TcpSpec extends IpSpec {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  /** A combination of TcpFlag bits. */
  flags: number;
  /** Defaults to 65535. */
  window?: number;
  payload: Uint8Array;
}

export interface IcmpSpec {
  srcIp: number;
  dstIp: number;
  type: number;
  code: number;
  /** Echo identifier and sequence number (the "rest of header" words for other types). */
  id: number;
  seq: number;
  payload: Uint8Array;
  ttl?: number;
}

const DEFAULT_TTL = 64;

/** Writes the IPv4 header for an L4 segment of `l4Length` bytes; returns the header length. */
function writeIpv4(
  buf: Uint8Array,
  offset: number,
  proto: number,
  l4Length: number,
  srcIp: number,
  dstIp: number,
  ttl: number,
  id: number,
  ipOptions: Uint8Array | undefined,
): number {
  const optLen = ipOptions?.length ?? 0;
  if (optLen % 4 !== 0 || IPV4_MIN_HEADER + optLen > IPV4_MAX_HEADER) {
    throw new NfsError(
      ErrorCode.CONFIG,
      `ipOptions: length ${optLen} must be a multiple of 4 and at most ${IPV4_MAX_HEADER - IPV4_MIN_HEADER}`,
    );
  }
  const hdrLen = IPV4_MIN_HEADER + optLen;
  const total = hdrLen + l4Length;
  if (total > IPV4_MAX_TOTAL) {
    throw new NfsError(ErrorCode.CONFIG, `packet: total length ${total} exceeds ${IPV4_MAX_TOTAL}`);
  }
  if (!Number.isInteger(offset) || offset < 0 || offset + total > buf.length) {
    throw new NfsError(
      ErrorCode.CONFIG,
      `packet: ${total} bytes at offset ${offset} do not fit a ${buf.length}-byte buffer`,
    );
  }
  buf[offset + IP_VER_IHL] = 0x40 | (hdrLen >>> 2);
  buf[offset + 1] = 0;
  write16(buf, offset + IP_TOTAL_LENGTH, total);
  write16(buf, offset + IP_ID, id);
  write16(buf, offset + IP_FRAG, IP_FLAG_DF);
  buf[offset + IP_TTL] = ttl;
  buf[offset + IP_PROTO] = proto;
  write16(buf, offset + IP_CHECKSUM, 0);
  write32(buf, offset + IP_SRC, srcIp);
  write32(buf, offset + IP_DST, dstIp);
  if (ipOptions !== undefined) buf.set(ipOptions, offset + IPV4_MIN_HEADER);
  write16(buf, offset + IP_CHECKSUM, checksum(buf, offset, hdrLen));
  return hdrLen;
}

/** Writes an IPv4/UDP packet at buf[offset]; returns its total length. */
export function buildUdp(buf: Uint8Array, offset: number, p: UdpSpec): number {
  const udpLen = UDP_HEADER + p.payload.length;
  const l4 =
    offset +
    writeIpv4(
      buf,
      offset,
      IpProto.UDP,
      udpLen,
      p.srcIp,
      p.dstIp,
      p.ttl ?? DEFAULT_TTL,
      p.id ?? 0,
      p.ipOptions,
    );
  write16(buf, l4, p.srcPort);
  write16(buf, l4 + 2, p.dstPort);
  write16(buf, l4 + 4, udpLen);
  write16(buf, l4 + UDP_CHECKSUM, 0);
  buf.set(p.payload, l4 + UDP_HEADER);
  const c = checksum(buf, l4, udpLen, pseudoHeaderSum(p.srcIp >>> 0, p.dstIp >>> 0, IpProto.UDP, udpLen));
  // A stored 0 would mean "no checksum"; 0xffff is the other ones-complement zero.
  write16(buf, l4 + UDP_CHECKSUM, c === 0 ? 0xffff : c);
  return l4 + udpLen - offset;
}

/** Writes an IPv4/TCP packet (no TCP options) at buf[offset]; returns its total length. */
export function buildTcp(buf: Uint8Array, offset: number, p: TcpSpec): number {
  const tcpLen = TCP_MIN_HEADER + p.payload.length;
  const l4 =
    offset +
    writeIpv4(
      buf,
      offset,
      IpProto.TCP,
      tcpLen,
      p.srcIp,
      p.dstIp,
      p.ttl ?? DEFAULT_TTL,
      p.id ?? 0,
      p.ipOptions,
    );
  write16(buf, l4, p.srcPort);
  write16(buf, l4 + 2, p.dstPort);
  write32(buf, l4 + 4, p.seq);
  write32(buf, l4 + 8, p.ack);
  buf[l4 + 12] = (TCP_MIN_HEADER / 4) << 4;
  buf[l4 + 13] = p.flags;
  write16(buf, l4 + 14, p.window ?? 0xffff);
  write16(buf, l4 + TCP_CHECKSUM, 0);
  write16(buf, l4 + 18, 0);
  buf.set(p.payload, l4 + TCP_MIN_HEADER);
  const pseudo = pseudoHeaderSum(p.srcIp >>> 0, p.dstIp >>> 0, IpProto.TCP, tcpLen);
  write16(buf, l4 + TCP_CHECKSUM, checksum(buf, l4, tcpLen, pseudo));
  return l4 + tcpLen - offset;
}

/** Writes an IPv4/ICMP packet at buf[offset]; returns its total length. */
export function buildIcmp(buf: Uint8Array, offset: number, p: IcmpSpec): number {
  const icmpLen = ICMP_HEADER + p.payload.length;
  const l4 =
    offset +
    writeIpv4(buf, offset, IpProto.ICMP, icmpLen, p.srcIp, p.dstIp, p.ttl ?? DEFAULT_TTL, 0, undefined);
  buf[l4] = p.type;
  buf[l4 + 1] = p.code;
  write16(buf, l4 + ICMP_CHECKSUM, 0);
  write16(buf, l4 + 4, p.id);
  write16(buf, l4 + 6, p.seq);
  buf.set(p.payload, l4 + ICMP_HEADER);
  write16(buf, l4 + ICMP_CHECKSUM, checksum(buf, l4, icmpLen));
  return l4 + icmpLen - offset;
}

/**
 * A packet of flow `key` with no payload (for ICMP, an echo request whose id is the key's source port, as
 * flow keys read it): what stands for the flow where no packet of its own will do, such as an end-of-move
 * marker.
 */
export function buildEmpty(buf: Uint8Array, offset: number, key: FlowKey): number {
  const payload = buf.subarray(0, 0);
  const ends = { srcIp: key.srcIp, dstIp: key.dstIp };
  if (key.proto === IpProto.TCP)
    return buildTcp(buf, offset, {
      ...ends,
      srcPort: key.srcPort,
      dstPort: key.dstPort,
      seq: 0,
      ack: 0,
      flags: 0,
      payload,
    });
  if (key.proto === IpProto.ICMP)
    return buildIcmp(buf, offset, { ...ends, type: 8, code: 0, id: key.srcPort, seq: 0, payload });
  return buildUdp(buf, offset, { ...ends, srcPort: key.srcPort, dstPort: key.dstPort, payload });
}
