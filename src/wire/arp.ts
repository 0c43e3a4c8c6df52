/**
 * ARP (RFC 826) for Ethernet and IPv4, as the hosts at the edge speak it: the ingress answers their
 * requests for the gateway, and the egress asks for the hosts it delivers to.
 *
 *   const arp = new ArpView();
 *   if (arp.parse(frame, payloadOffset, payloadLength) === DropReason.NONE && arp.op === ArpOp.REQUEST)
 *     answer(arp.senderMac, arp.senderIp, arp.targetIp);
 *   writeArp(out, at, { op: ArpOp.REPLY, senderMac, senderIp, targetMac, targetIp });
 *
 * Layout (28 bytes, big endian):
 *
 *    0: hardware type = 1 (Ethernet)      2: protocol type = 0x0800 (IPv4)
 *    4: hardware length = 6  5: protocol length = 4      6: operation (1 request, 2 reply)
 *    8: sender MAC (6)   14: sender IPv4 (4)   18: target MAC (6)   24: target IPv4 (4)
 *
 * Anything else (another hardware or protocol, other lengths, another operation) is BAD_HEADER; a
 * message shorter than 28 bytes is TRUNCATED. Bytes after it (Ethernet padding) are ignored.
 */
import { read16, read32, write16, write32 } from '../packet/layout.js';
import { DropReason } from '../types.js';
import { readMac, writeMac } from './vxlan.js';

export const ARP_LENGTH = 28;
export const ArpOp = { REQUEST: 1, REPLY: 2 } as const;
export type ArpOp = (typeof ArpOp)[keyof typeof ArpOp];

export interface ArpFields {
  op: ArpOp;
  senderMac: number;
  senderIp: number;
  targetMac: number;
  targetIp: number;
}

export class ArpView {
  private buf: Uint8Array = new Uint8Array(0);
  private at = 0;

  parse(buf: Uint8Array, offset: number, length: number): DropReason {
    this.buf = buf;
    this.at = offset;
    if (length < ARP_LENGTH || offset + length > buf.length) return DropReason.TRUNCATED;
    const op = read16(buf, offset + 6);
    if (
      read16(buf, offset) !== 1 ||
      read16(buf, offset + 2) !== 0x0800 ||
      buf[offset + 4] !== 6 ||
      buf[offset + 5] !== 4 ||
      (op !== ArpOp.REQUEST && op !== ArpOp.REPLY)
    )
      return DropReason.BAD_HEADER;
    return DropReason.NONE;
  }

  get op(): ArpOp {
    return read16(this.buf, this.at + 6) as ArpOp;
  }
  get senderMac(): number {
    return readMac(this.buf, this.at + 8);
  }
  get senderIp(): number {
    return read32(this.buf, this.at + 14);
  }
  get targetMac(): number {
    return readMac(this.buf, this.at + 18);
  }
  get targetIp(): number {
    return read32(this.buf, this.at + 24);
  }
}

/** Writes a 28-byte ARP message at buf[offset]; returns its length. */
export function writeArp(buf: Uint8Array, offset: number, f: ArpFields): number {
  write16(buf, offset, 1);
  write16(buf, offset + 2, 0x0800);
  buf[offset + 4] = 6;
  buf[offset + 5] = 4;
  write16(buf, offset + 6, f.op);
  writeMac(buf, offset + 8, f.senderMac);
  write32(buf, offset + 14, f.senderIp);
  writeMac(buf, offset + 18, f.targetMac);
  write32(buf, offset + 24, f.targetIp);
  return ARP_LENGTH;
}
