/**
 * The edge with real hosts: VXLAN (RFC 7348) over UDP, carrying an Ethernet frame, as Linux kernel
 * `vxlan` devices send and receive it. The ingress takes the frames the hosts send, the egress wraps
 * processed packets back into frames for them.
 *
 *   const v = new VxlanView();
 *   if (v.parse(datagram, 0, datagram.length) === DropReason.NONE && v.etherType === ETHERTYPE_IPV4)
 *     stamp(datagram.subarray(v.payloadOffset, v.payloadOffset + v.payloadLength));
 *   const n = writeVxlanFrame(out, 0, { vni: 1, dst: hostMac, src: gatewayMac, etherType: ETHERTYPE_IPV4 });
 *
 * Layout (big endian):
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  0|R|R|R|R|I|R|R|R|            Reserved                           |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  4|     VXLAN Network Identifier (VNI)            |   Reserved    |
 *   +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
 *  8|                destination MAC address ...                    |
 * 12|          ... (cont.)          |   source MAC address ...      |
 * 16|                         ... (cont.)                           |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * 20|           EtherType           |  payload (IPv4 packet, ARP) …
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * The I flag must be set (a frame without it carries no valid VNI and is dropped as BAD_HEADER); the
 * reserved bits are ignored on receipt and written as zero, as the RFC asks. A frame is at least its
 * two headers (22 bytes) or it is TRUNCATED. MAC addresses are handled as numbers (48 bits fit a double
 * exactly), so reading one allocates nothing.
 */
import { read16, read32, write16, write32 } from '../packet/layout.js';
import { DropReason } from '../types.js';
import { ErrorCode, NfsError } from '../errors.js';

/** The IANA-assigned VXLAN UDP port, which Linux vxlan devices use with `dstport 4789`. */
export const VXLAN_PORT = 4789;
export const VXLAN_HEADER = 8;
export const ETHERNET_HEADER = 14;
/** VXLAN and Ethernet headers: where a frame's payload starts. */
export const VXLAN_FRAME_HEADER = VXLAN_HEADER + ETHERNET_HEADER;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const BROADCAST_MAC = 0xffff_ffff_ffff;
const VXLAN_FLAG_I = 0x08;
const TWO_32 = 0x1_0000_0000;

/** A MAC address stored at buf[at], as a number. */
export function readMac(buf: Uint8Array, at: number): number {
  return read16(buf, at) * TWO_32 + read32(buf, at + 2);
}

export function writeMac(buf: Uint8Array, at: number, mac: number): void {
  const hi = Math.floor(mac / TWO_32);
  write16(buf, at, hi);
  write32(buf, at + 2, mac - hi * TWO_32);
}

/** `02:6e:66:00:00:01` as a number; throws NfsError CONFIG on anything else. */
export function parseMac(text: string): number {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text))
    throw new NfsError(ErrorCode.CONFIG, `'${text}' is not a MAC address like 02:6e:66:00:00:01`);
  return parseInt(text.replaceAll(':', ''), 16);
}

export function macToString(mac: number): string {
  return mac
    .toString(16)
    .padStart(12, '0')
    .replace(/(..)(?!$)/g, '$1:');
}

/** A reusable, zero-copy view of one VXLAN datagram and the Ethernet header inside it. */
export class VxlanView {
  buf: Uint8Array = new Uint8Array(0);
  offset = 0;
  length = 0;

  /**
   * Re-points the view at buf[offset, offset+length) and validates the two headers. Drops: TRUNCATED
   * (shorter than 22 bytes), BAD_HEADER (the I flag clear).
   */
  parse(buf: Uint8Array, offset: number, length: number): DropReason {
    this.buf = buf;
    this.offset = offset;
    this.length = length;
    if (length < VXLAN_FRAME_HEADER || offset + length > buf.length) return DropReason.TRUNCATED;
    if ((buf[offset]! & VXLAN_FLAG_I) === 0) return DropReason.BAD_HEADER;
    return DropReason.NONE;
  }

  get vni(): number {
    const b = this.buf;
    const o = this.offset + 4;
    return (b[o]! << 16) | (b[o + 1]! << 8) | b[o + 2]!;
  }
  get dstMac(): number {
    return readMac(this.buf, this.offset + VXLAN_HEADER);
  }
  get srcMac(): number {
    return readMac(this.buf, this.offset + VXLAN_HEADER + 6);
  }
  get etherType(): number {
    return read16(this.buf, this.offset + VXLAN_HEADER + 12);
  }
  /** Absolute offset of the Ethernet frame, and its length. */
  get frameOffset(): number {
    return this.offset + VXLAN_HEADER;
  }
  get frameLength(): number {
    return this.length - VXLAN_HEADER;
  }
  /** Absolute offset of the frame's payload (an IPv4 packet, an ARP message), and its length. */
  get payloadOffset(): number {
    return this.offset + VXLAN_FRAME_HEADER;
  }
  get payloadLength(): number {
    return this.length - VXLAN_FRAME_HEADER;
  }
}

export interface FrameFields {
  vni: number;
  dst: number;
  src: number;
  etherType: number;
}

/** Writes the VXLAN and Ethernet headers (22 bytes) at buf[offset]; the payload goes right after. */
export function writeVxlanFrame(buf: Uint8Array, offset: number, f: FrameFields): number {
  buf.fill(0, offset, offset + VXLAN_HEADER);
  buf[offset] = VXLAN_FLAG_I;
  buf[offset + 4] = f.vni >>> 16;
  buf[offset + 5] = f.vni >>> 8;
  buf[offset + 6] = f.vni;
  writeMac(buf, offset + VXLAN_HEADER, f.dst);
  writeMac(buf, offset + VXLAN_HEADER + 6, f.src);
  write16(buf, offset + VXLAN_HEADER + 12, f.etherType);
  return VXLAN_FRAME_HEADER;
}
