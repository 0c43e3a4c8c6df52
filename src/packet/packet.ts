/**
 * A reusable, zero-copy IPv4 packet view: `parse` validates the IPv4 header and the TCP, UDP or ICMP
 * header in place and returns a DropReason instead of throwing; getters read fields straight from the
 * buffer; setters rewrite addresses and ports in place and patch every checksum that covers them
 * incrementally (RFC 1624). One view per worker is re-pointed at each packet, so nothing is allocated
 * per packet.
 *
 *   const pkt = new Packet();
 *   if (pkt.parse(frame, 14, frameLength - 14) === DropReason.NONE) { // after an Ethernet header
 *     pkt.setSrcIp(natIp);
 *     pkt.setSrcPort(natPort);
 *   }
 *
 * What parse accepts: IPv4 with or without options, not fragmented, header checksum valid, total length
 * within the given bytes (trailing bytes such as Ethernet padding are ignored, and `length` reports the
 * IPv4 total length). TCP, UDP and ICMP must be complete with valid checksums (a UDP checksum of 0 means
 * "none"). Other protocols pass with ports 0 and their bytes as payload.
 */
import { DropReason, IpProto, type PacketView } from '../types.js';
import { checksumUpdate16, checksumUpdate32, onesSum, pseudoHeaderSum } from './checksum.js';
import {
  ICMP_CHECKSUM,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_HEADER,
  ICMP_ID,
  IP_CHECKSUM,
  IP_DST,
  IP_FLAG_MF,
  IP_FRAG,
  IP_FRAG_OFFSET_MASK,
  IP_PROTO,
  IP_SRC,
  IP_TOTAL_LENGTH,
  IP_TTL,
  IP_VER_IHL,
  IPV4_MIN_HEADER,
  read16,
  read32,
  TCP_ACK,
  TCP_CHECKSUM,
  TCP_DATA_OFFSET,
  TCP_FLAGS,
  TCP_MIN_HEADER,
  TCP_SEQ,
  UDP_CHECKSUM,
  UDP_HEADER,
  UDP_LENGTH,
  write16,
  write32,
} from './layout.js';

const EMPTY = new Uint8Array(0);

export class Packet implements PacketView {
  private b: Uint8Array = EMPTY;
  private off = 0;
  private total = 0;
  private hdrLen = 0;
  /** Absolute offset of the L4 header, and the bytes from there to the end of the IPv4 datagram. */
  private l4 = 0;
  private l4Len = 0;
  private payOff = 0;
  private payLen = 0;
  /** Absolute offsets of the fields behind srcPort/dstPort; -1 when the protocol has none. */
  private srcPortAt = -1;
  private dstPortAt = -1;
  /** Absolute offset of the L4 checksum that covers the ports; -1 when there is none to patch. */
  private l4CsumAt = -1;
  /** Whether that checksum also covers the addresses, through the pseudo header (TCP, UDP). */
  private l4CoversIps = false;
  /** UDP: a stored 0 means "no checksum", so a computed 0 must be stored as 0xffff. */
  private l4ZeroIsNone = false;

  get buf(): Uint8Array {
    return this.b;
  }
  get offset(): number {
    return this.off;
  }
  /** The IPv4 total length (bytes after it in the parsed range are not part of the packet). */
  get length(): number {
    return this.total;
  }
  get ipHeaderLength(): number {
    return this.hdrLen;
  }
  /** Absolute offset of the L4 header in buf, and the length of the L4 segment (header and payload). */
  get l4Offset(): number {
    return this.l4;
  }
  get l4Length(): number {
    return this.l4Len;
  }

  /**
   * Re-points the view at buf[offset, offset+length) and validates it. When the result is not NONE the
   * getters' values are unspecified (they still never throw) and the setters must not be called.
   */
  parse(buf: Uint8Array, offset: number, length: number): DropReason {
    this.b = buf;
    this.off = offset;
    this.total = 0;
    this.hdrLen = 0;
    this.l4 = 0;
    this.l4Len = 0;
    this.payOff = 0;
    this.payLen = 0;
    this.srcPortAt = -1;
    this.dstPortAt = -1;
    this.l4CsumAt = -1;
    this.l4CoversIps = false;
    this.l4ZeroIsNone = false;

    // Indexing past the buffer yields undefined, not an exception, so a bad range must be caught here.
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0) {
      return DropReason.TRUNCATED;
    }
    if (offset + length > buf.length || length < IPV4_MIN_HEADER) return DropReason.TRUNCATED;

    const verIhl = buf[offset + IP_VER_IHL]!;
    if (verIhl >>> 4 !== 4) return DropReason.BAD_VERSION;
    const hdrLen = (verIhl & 0x0f) * 4;
    if (hdrLen < IPV4_MIN_HEADER || hdrLen > length) return DropReason.BAD_HEADER;
    const total = read16(buf, offset + IP_TOTAL_LENGTH);
    if (total < hdrLen || total > length) return DropReason.BAD_LENGTH;
    if (onesSum(buf, offset, hdrLen) !== 0xffff) return DropReason.BAD_CHECKSUM;
    const frag = read16(buf, offset + IP_FRAG);
    if ((frag & (IP_FLAG_MF | IP_FRAG_OFFSET_MASK)) !== 0) return DropReason.UNSUPPORTED;

    const l4 = offset + hdrLen;
    const l4Len = total - hdrLen;
    const proto = buf[offset + IP_PROTO]!;
    let payOff = l4;
    let payLen = l4Len;

    if (proto === IpProto.UDP) {
      if (l4Len < UDP_HEADER) return DropReason.TRUNCATED;
      const udpLen = read16(buf, l4 + UDP_LENGTH);
      if (udpLen < UDP_HEADER || udpLen > l4Len) return DropReason.BAD_LENGTH;
      if (read16(buf, l4 + UDP_CHECKSUM) !== 0) {
        const pseudo = pseudoHeaderSum(
          read32(buf, offset + IP_SRC),
          read32(buf, offset + IP_DST),
          proto,
          udpLen,
        );
        if (onesSum(buf, l4, udpLen, pseudo) !== 0xffff) return DropReason.BAD_CHECKSUM;
      }
      payOff = l4 + UDP_HEADER;
      payLen = udpLen - UDP_HEADER;
      this.srcPortAt = l4;
      this.dstPortAt = l4 + 2;
      this.l4CsumAt = l4 + UDP_CHECKSUM;
      this.l4CoversIps = true;
      this.l4ZeroIsNone = true;
    } else if (proto === IpProto.TCP) {
      if (l4Len < TCP_MIN_HEADER) return DropReason.TRUNCATED;
      const tcpHdr = (buf[l4 + TCP_DATA_OFFSET]! >>> 4) * 4;
      if (tcpHdr < TCP_MIN_HEADER || tcpHdr > l4Len) return DropReason.BAD_HEADER;
      const pseudo = pseudoHeaderSum(
        read32(buf, offset + IP_SRC),
        read32(buf, offset + IP_DST),
        proto,
        l4Len,
      );
      if (onesSum(buf, l4, l4Len, pseudo) !== 0xffff) return DropReason.BAD_CHECKSUM;
      payOff = l4 + tcpHdr;
      payLen = l4Len - tcpHdr;
      this.srcPortAt = l4;
      this.dstPortAt = l4 + 2;
      this.l4CsumAt = l4 + TCP_CHECKSUM;
      this.l4CoversIps = true;
    } else if (proto === IpProto.ICMP) {
      if (l4Len < ICMP_HEADER) return DropReason.TRUNCATED;
      if (onesSum(buf, l4, l4Len) !== 0xffff) return DropReason.BAD_CHECKSUM;
      payOff = l4 + ICMP_HEADER;
      payLen = l4Len - ICMP_HEADER;
      const type = buf[l4]!;
      // The echo identifier plays the role of a port in both directions, so NAT can rewrite it and a
      // request and its reply share a flow.
      if (type === ICMP_ECHO_REQUEST || type === ICMP_ECHO_REPLY) {
        this.srcPortAt = l4 + ICMP_ID;
        this.dstPortAt = l4 + ICMP_ID;
        this.l4CsumAt = l4 + ICMP_CHECKSUM;
      }
    }

    this.total = total;
    this.hdrLen = hdrLen;
    this.l4 = l4;
    this.l4Len = l4Len;
    this.payOff = payOff;
    this.payLen = payLen;
    return DropReason.NONE;
  }

  get proto(): number {
    return this.b[this.off + IP_PROTO] ?? 0;
  }
  get srcIp(): number {
    return read32(this.b, this.off + IP_SRC);
  }
  get dstIp(): number {
    return read32(this.b, this.off + IP_DST);
  }
  get ttl(): number {
    return this.b[this.off + IP_TTL] ?? 0;
  }
  get srcPort(): number {
    return this.srcPortAt < 0 ? 0 : read16(this.b, this.srcPortAt);
  }
  get dstPort(): number {
    return this.dstPortAt < 0 ? 0 : read16(this.b, this.dstPortAt);
  }
  get tcpFlags(): number {
    return this.proto === IpProto.TCP && this.total !== 0 ? this.b[this.l4 + TCP_FLAGS]! : 0;
  }
  /** TCP sequence and acknowledgement numbers (0 for other protocols). */
  get tcpSeq(): number {
    return this.proto === IpProto.TCP && this.total !== 0 ? read32(this.b, this.l4 + TCP_SEQ) : 0;
  }
  get tcpAck(): number {
    return this.proto === IpProto.TCP && this.total !== 0 ? read32(this.b, this.l4 + TCP_ACK) : 0;
  }
  get payloadOffset(): number {
    return this.payOff;
  }
  get payloadLength(): number {
    return this.payLen;
  }
  get icmpType(): number {
    return this.proto === IpProto.ICMP && this.total !== 0 ? this.b[this.l4]! : 0;
  }
  get icmpCode(): number {
    return this.proto === IpProto.ICMP && this.total !== 0 ? this.b[this.l4 + 1]! : 0;
  }

  setSrcIp(ip: number): void {
    this.rewriteIp(this.off + IP_SRC, ip >>> 0);
  }
  setDstIp(ip: number): void {
    this.rewriteIp(this.off + IP_DST, ip >>> 0);
  }
  /** For ICMP echo this rewrites the identifier (shared by srcPort and dstPort); otherwise a no-op. */
  setSrcPort(port: number): void {
    if (this.srcPortAt >= 0) this.rewritePort(this.srcPortAt, port & 0xffff);
  }
  setDstPort(port: number): void {
    if (this.dstPortAt >= 0) this.rewritePort(this.dstPortAt, port & 0xffff);
  }

  private rewriteIp(at: number, ip: number): void {
    const b = this.b;
    const old = read32(b, at);
    if (old === ip) return;
    write32(b, at, ip);
    const ipCsumAt = this.off + IP_CHECKSUM;
    write16(b, ipCsumAt, checksumUpdate32(read16(b, ipCsumAt), old, ip));
    if (!this.l4CoversIps) return;
    const c = read16(b, this.l4CsumAt);
    if (c === 0 && this.l4ZeroIsNone) return;
    const next = checksumUpdate32(c, old, ip);
    write16(b, this.l4CsumAt, next === 0 && this.l4ZeroIsNone ? 0xffff : next);
  }

  private rewritePort(at: number, port: number): void {
    const b = this.b;
    const old = read16(b, at);
    if (old === port) return;
    write16(b, at, port);
    const c = read16(b, this.l4CsumAt);
    if (c === 0 && this.l4ZeroIsNone) return;
    const next = checksumUpdate16(c, old, port);
    write16(b, this.l4CsumAt, next === 0 && this.l4ZeroIsNone ? 0xffff : next);
  }
}
