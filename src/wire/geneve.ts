/**
 * The dataplane encapsulation between nfstate's components: Geneve (RFC 8926) over UDP, carrying the
 * inner IPv4 packet, with one nfstate option TLV that stamps the packet with its flow's sequence number,
 * ingress time and rule epoch. The stamp is what gives every stage after the stamper a total order per
 * flow, so it travels unchanged through switch, NF instances, moves, replays and chains.
 *
 *   const n = writeStampHeader(out, 0, { vni: 1, flags: 0, epoch: 3, seq: 1, timeMs: clock.now() });
 *   out.set(ipv4, n);
 *   const view = new StampView(); // one per worker, re-pointed for every packet
 *   if (view.parse(out, 0, n + ipv4.length) === DropReason.NONE && view.hasStamp) order(view.seq);
 *
 * The header nfstate writes (36 bytes, all fields big endian):
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  0|Ver|OptLen = 7 |O|C|   Rsvd.   |  Protocol Type = 0x0800       |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *  4|        Virtual Network Identifier (VNI)       |   Reserved    |
 *   +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
 *  8|   Option Class = 0xFFF0       |  Type = 0x01  |R R R|Len = 6  |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * 12|  version = 1  |     flags     |        emitter                |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * 16|                         rule epoch                            |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * 20|                 flow sequence number (u64) ...                |
 * 24|                            ... low 32 bits                    |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * 28|        ingress time, ns since the Unix epoch (u64) ...        |
 * 32|                            ... low 32 bits                    |
 *   +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
 * 36|                 inner IPv4 packet ...                         |
 *
 * A packet that belongs to a connection other than its own 5-tuple says so (52 bytes, OptLen = 11): a
 * reply addressed to a NAT's public port is part of the connection the NAT translated, and the switch,
 * which resolved that, names the connection in a second option right after the stamp, so that every
 * later stage (worker choice, flow lookup, secondary copies) finds the same flow without resolving it
 * again. The protocol is the inner packet's.
 *
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * 36|   Option Class = 0xFFF0       |  Type = 0x02  |R R R|Len = 3  |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * 40|              connection: canonical source address             |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * 44|            connection: canonical destination address          |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * 48|       source port             |       destination port        |
 *   +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
 * 52|                 inner IPv4 packet ...                         |
 *
 * An Ethernet frame carried across unstamped (ARP from the hosts at the edge, for the egress) has the
 * bare 8-byte base header with Protocol Type 0x6558 (transparent Ethernet bridging) and no option.
 *
 * Reading accepts any well-formed Geneve header and finds the nfstate option among others, so a header
 * that another Geneve speaker extended (or one without a stamp at all) still parses.
 */
import { read16, read32, write16, write32 } from '../packet/layout.js';
import { DropReason } from '../types.js';

/** The IANA-assigned Geneve UDP port. */
export const GENEVE_PORT = 6081;
/** Bytes of the header `writeStampHeader` writes: Geneve base header plus the nfstate option. */
export const STAMP_HEADER_LENGTH = 36;
/** The same with the flow option after the stamp. */
export const FLOW_HEADER_LENGTH = 52;
/** Version byte of the nfstate option body; bumped on any incompatible layout change. */
export const STAMP_VERSION = 1;
/** Geneve protocol type for an inner IPv4 packet (an EtherType). */
export const GENEVE_PROTO_IPV4 = 0x0800;
/** The nfstate option's class, from the experimental range 0xFFF0-0xFFFF. */
export const STAMP_OPTION_CLASS = 0xfff0;
/** The nfstate option's type; the high (critical) bit is clear, so other Geneve speakers may ignore it. */
export const STAMP_OPTION_TYPE = 0x01;
/** Length of the nfstate option body in 4-byte words, as carried in the option header. */
export const STAMP_OPTION_WORDS = 6;
/** The flow option's type (same class): the connection a packet belongs to, when not its own 5-tuple. */
export const FLOW_OPTION_TYPE = 0x02;
export const FLOW_OPTION_WORDS = 3;
/** Geneve protocol type of a whole Ethernet frame (transparent Ethernet bridging). */
export const GENEVE_PROTO_ETHERNET = 0x6558;
/** Bytes of the Geneve base header, which is all a carried Ethernet frame has in front. */
export const GENEVE_BASE_LENGTH = 8;

/** The stamp's time (ns) must stay below 2^53 µs: its high 32 bits below 2^53 · 1000 / 2^32. */
const MAX_TIME_HIGH_WORD = 2 ** 21 * 1000;

/** Bits of the stamp's flags byte. */
export const StampFlag = {
  /** A copy sent to the flow's secondary, which keeps it until the batch is replicated. */
  COPY: 1,
  /** Forwarded from a move's source to its destination; the stamp is the switch's original. */
  FORWARDED: 2,
  /** Re-emitted during failover replay; the sink may drop it as a duplicate by stamp. */
  REPLAY: 4,
  /** The switch's marker closing a move; it carries no packet of the flow's own. */
  END_OF_MOVE: 8,
} as const;
export type StampFlag = (typeof StampFlag)[keyof typeof StampFlag];

/** A connection's 5-tuple as the flow option carries it, filled in place (see StampView.flowInto). */
export interface FlowFields {
  srcIp: number;
  dstIp: number;
  srcPort: number;
  dstPort: number;
  proto: number;
}

/** The values of one stamp. `seq` is a safe integer; `timeMs` is fractional milliseconds. */
export interface StampFields {
  vni: number;
  flags: number;
  epoch: number;
  seq: number;
  timeMs: number;
}

const BASE_LENGTH = GENEVE_BASE_LENGTH;
const OPTION_HEADER_LENGTH = 4;
const CRITICAL_TYPE_BIT = 0x80;
const CONTROL_BIT = 0x80;
const TWO_32 = 0x1_0000_0000;
// The largest double below 2^64; anything above would overflow the high word.
const MAX_U64 = 18446744073709549568;
const EMPTY = new Uint8Array(0);

/** Writes a non-negative integer as u64, clamping what a u64 cannot hold (NaN and negatives to 0). */
function put64(b: Uint8Array, at: number, v: number): void {
  let n = Math.floor(v);
  if (!(n >= 0)) n = 0;
  else if (n > MAX_U64) n = MAX_U64;
  const hi = Math.floor(n / TWO_32);
  write32(b, at, hi);
  write32(b, at + 4, n - hi * TWO_32);
}

function put24(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 16;
  b[at + 1] = v >>> 8;
  b[at + 2] = v;
}

/**
 * Writes the 36-byte Geneve header with the nfstate option at buf[offset] — 52 bytes with the flow option
 * when `flow` names the connection — and the inner IPv4 packet goes right after it. Returns the bytes
 * written. The caller guarantees room: typed arrays silently ignore stores past their end, so a short
 * buffer yields a short header rather than an exception.
 */
export function writeStampHeader(buf: Uint8Array, offset: number, f: StampFields, flow?: FlowFields): number {
  const o = offset;
  const length = flow === undefined ? STAMP_HEADER_LENGTH : FLOW_HEADER_LENGTH;
  buf[o] = (length - BASE_LENGTH) / 4; // Ver 0, OptLen in words
  buf[o + 1] = 0; // O, C, reserved: a data packet with no critical option
  buf[o + 2] = GENEVE_PROTO_IPV4 >>> 8;
  buf[o + 3] = GENEVE_PROTO_IPV4 & 0xff;
  put24(buf, o + 4, f.vni);
  buf[o + 7] = 0;
  buf[o + 8] = STAMP_OPTION_CLASS >>> 8;
  buf[o + 9] = STAMP_OPTION_CLASS & 0xff;
  buf[o + 10] = STAMP_OPTION_TYPE;
  buf[o + 11] = STAMP_OPTION_WORDS;
  buf[o + 12] = STAMP_VERSION;
  buf[o + 13] = f.flags;
  buf[o + 14] = 0;
  buf[o + 15] = 0;
  write32(buf, o + 16, f.epoch);
  put64(buf, o + 20, f.seq);
  put64(buf, o + 28, Math.round(f.timeMs * 1e6));
  if (flow === undefined) return STAMP_HEADER_LENGTH;
  buf[o + 36] = STAMP_OPTION_CLASS >>> 8;
  buf[o + 37] = STAMP_OPTION_CLASS & 0xff;
  buf[o + 38] = FLOW_OPTION_TYPE;
  buf[o + 39] = FLOW_OPTION_WORDS;
  write32(buf, o + 40, flow.srcIp);
  write32(buf, o + 44, flow.dstIp);
  write16(buf, o + 48, flow.srcPort);
  write16(buf, o + 50, flow.dstPort);
  return FLOW_HEADER_LENGTH;
}

/** Writes the base header of a carried Ethernet frame (no option); the frame goes right after it. */
export function writeFrameHeader(buf: Uint8Array, offset: number, vni: number): number {
  buf[offset] = 0;
  buf[offset + 1] = 0;
  buf[offset + 2] = GENEVE_PROTO_ETHERNET >>> 8;
  buf[offset + 3] = GENEVE_PROTO_ETHERNET & 0xff;
  put24(buf, offset + 4, vni);
  buf[offset + 7] = 0;
  return BASE_LENGTH;
}

/** Whether the datagram is a carried Ethernet frame (version 0, no options, Protocol Type 0x6558). */
export function isCarriedFrame(buf: Uint8Array): boolean {
  return (
    buf.length > BASE_LENGTH &&
    buf[0] === 0 &&
    ((buf[2]! << 8) | buf[3]!) === GENEVE_PROTO_ETHERNET &&
    (buf[1]! & CONTROL_BIT) === 0
  );
}

/**
 * A reusable, zero-copy view of one Geneve packet. `parse` re-points it and validates; getters and
 * setters work in place at offsets found by `parse`. Nothing here allocates or throws, so one view per
 * worker serves every packet. Stamp getters return 0 and stamp setters do nothing when `hasStamp` is
 * false; everything is undefined after a `parse` that did not return NONE.
 */
export class StampView {
  buf: Uint8Array = EMPTY;
  offset = 0;
  length = 0;
  private hdrLength = 0;
  // Absolute offset of the nfstate option body, or -1 when the packet has none.
  private stamp = -1;
  // Absolute offset of the flow option body, or -1.
  private flow = -1;

  /**
   * Re-points the view at buf[offset, offset+length) and validates the Geneve header and options.
   * Drops: TRUNCATED (shorter than its header), BAD_VERSION (Geneve version not 0, or an nfstate option
   * of another version), BAD_HEADER (protocol type not IPv4, options overrunning OptLen, two stamp or two
   * flow options), BAD_LENGTH (offset/length outside buf, a stamp or flow option of the wrong size),
   * UNSUPPORTED (an
   * OAM packet with the O bit set, or a critical option nfstate does not know, which RFC 8926 §3.5
   * requires an endpoint to drop).
   */
  parse(buf: Uint8Array, offset: number, length: number): DropReason {
    this.buf = buf;
    this.offset = offset;
    this.length = length;
    this.hdrLength = 0;
    this.stamp = -1;
    this.flow = -1;
    if (
      !(Number.isInteger(offset) && Number.isInteger(length)) ||
      offset < 0 ||
      length < 0 ||
      offset + length > buf.length
    ) {
      return DropReason.BAD_LENGTH;
    }
    if (length < BASE_LENGTH) return DropReason.TRUNCATED;
    const b0 = buf[offset]!;
    if (b0 >>> 6 !== 0) return DropReason.BAD_VERSION;
    if (((buf[offset + 2]! << 8) | buf[offset + 3]!) !== GENEVE_PROTO_IPV4) return DropReason.BAD_HEADER;
    if ((buf[offset + 1]! & CONTROL_BIT) !== 0) return DropReason.UNSUPPORTED;
    const hdrLength = BASE_LENGTH + (b0 & 0x3f) * 4;
    if (length < hdrLength) return DropReason.TRUNCATED;

    // Options are word-aligned and OptLen counts words, so every step lands on a whole option header.
    const end = offset + hdrLength;
    let at = offset + BASE_LENGTH;
    let stamp = -1;
    let flow = -1;
    while (at < end) {
      const cls = (buf[at]! << 8) | buf[at + 1]!;
      const type = buf[at + 2]!;
      const words = buf[at + 3]! & 0x1f;
      const next = at + OPTION_HEADER_LENGTH + words * 4;
      if (next > end) return DropReason.BAD_HEADER;
      if (cls === STAMP_OPTION_CLASS && type === STAMP_OPTION_TYPE) {
        if (stamp !== -1) return DropReason.BAD_HEADER;
        if (words === 0) return DropReason.BAD_LENGTH;
        if (buf[at + OPTION_HEADER_LENGTH] !== STAMP_VERSION) return DropReason.BAD_VERSION;
        if (words !== STAMP_OPTION_WORDS) return DropReason.BAD_LENGTH;
        stamp = at + OPTION_HEADER_LENGTH;
        // A time past the year 2255 has more microseconds than a double holds exactly: a flow's
        // incarnation, made from it, would be no safe integer. No clock stamps that; a forged stamp might.
        if (read32(buf, stamp + 16) >= MAX_TIME_HIGH_WORD) return DropReason.BAD_HEADER;
      } else if (cls === STAMP_OPTION_CLASS && type === FLOW_OPTION_TYPE) {
        if (flow !== -1) return DropReason.BAD_HEADER;
        if (words !== FLOW_OPTION_WORDS) return DropReason.BAD_LENGTH;
        flow = at + OPTION_HEADER_LENGTH;
      } else if ((type & CRITICAL_TYPE_BIT) !== 0) {
        return DropReason.UNSUPPORTED;
      }
      at = next;
    }
    this.hdrLength = hdrLength;
    this.stamp = stamp;
    this.flow = flow;
    return DropReason.NONE;
  }

  /** Whether the packet carries the nfstate option. */
  get hasStamp(): boolean {
    return this.stamp >= 0;
  }
  /** Whether the packet names its connection in a flow option (a reply to a translated address). */
  get hasFlow(): boolean {
    return this.flow >= 0;
  }
  /**
   * Fills `into` with the connection the flow option names (with `proto`, the inner packet's) and returns
   * it; without a flow option, leaves `into` as it was.
   */
  flowInto<T extends FlowFields>(into: T, proto: number): T {
    const f = this.flow;
    if (f < 0) return into;
    const b = this.buf;
    into.srcIp = read32(b, f);
    into.dstIp = read32(b, f + 4);
    into.srcPort = read16(b, f + 8);
    into.dstPort = read16(b, f + 10);
    into.proto = proto;
    return into;
  }
  /** Geneve header length including all options. */
  get headerLength(): number {
    return this.hdrLength;
  }
  /** Absolute offset of the inner IPv4 packet in buf. */
  get innerOffset(): number {
    return this.offset + this.hdrLength;
  }
  get innerLength(): number {
    return this.length - this.hdrLength;
  }
  /** Absolute offset of the nfstate option body (its version byte), or -1. */
  get stampOffset(): number {
    return this.stamp;
  }
  get vni(): number {
    const b = this.buf;
    const o = this.offset;
    return (b[o + 4]! << 16) | (b[o + 5]! << 8) | b[o + 6]!;
  }
  get flags(): number {
    return this.stamp < 0 ? 0 : this.buf[this.stamp + 1]!;
  }
  get epoch(): number {
    return this.stamp < 0 ? 0 : read32(this.buf, this.stamp + 4);
  }
  /**
   * On an NF instance's output: the fencing token of the instance that emitted it (0 before any NF). The
   * egress drops output of an instance the controller has fenced after failing it over.
   */
  get emitter(): number {
    const s = this.stamp;
    return s < 0 ? 0 : (this.buf[s + 2]! << 8) | this.buf[s + 3]!;
  }
  /** The flow sequence number; exact up to 2^53, which a per-flow counter never reaches. */
  get seq(): number {
    const s = this.stamp;
    return s < 0 ? 0 : read32(this.buf, s + 8) * TWO_32 + read32(this.buf, s + 12);
  }
  /**
   * Ingress time in fractional milliseconds. Present-day nanosecond counts exceed 2^53, so this rounds
   * to about 0.25 µs, but always the same way for the same bytes, which is what replay needs. Writing
   * the value read back with setTimeMs reproduces the same bytes for times from mid-2006 to 2039
   * (2^40 × [1.048576, 2) ms); outside that range it may move the stored time by one unit in the last
   * place, so a stage that forwards a stamp keeps its bytes rather than re-writing a read value.
   */
  get timeMs(): number {
    const s = this.stamp;
    return s < 0 ? 0 : (read32(this.buf, s + 16) * TWO_32 + read32(this.buf, s + 20)) / 1e6;
  }

  setVni(vni: number): void {
    if (this.hdrLength !== 0) put24(this.buf, this.offset + 4, vni);
  }
  setFlags(flags: number): void {
    if (this.stamp >= 0) this.buf[this.stamp + 1] = flags;
  }
  setEmitter(token: number): void {
    const s = this.stamp;
    if (s < 0) return;
    this.buf[s + 2] = token >>> 8;
    this.buf[s + 3] = token;
  }
  setEpoch(epoch: number): void {
    if (this.stamp >= 0) write32(this.buf, this.stamp + 4, epoch);
  }
  setSeq(seq: number): void {
    if (this.stamp >= 0) put64(this.buf, this.stamp + 8, seq);
  }
  setTimeMs(ms: number): void {
    if (this.stamp >= 0) put64(this.buf, this.stamp + 16, Math.round(ms * 1e6));
  }
}
