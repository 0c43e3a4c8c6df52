/**
 * Classic pcap capture files (not pcapng): the generator replays them, the sink writes them, and
 * tshark or Wireshark reads what nfstate wrote.
 *
 *   const w = new PcapWriter('out.pcap', LinkType.ETHERNET);
 *   w.write(ethernetFrame(ipv4), clock.now());
 *   w.close();
 *   const { linkType, records } = readPcap('in.pcap');
 *   for (const r of records) { const ip = ipv4Payload(linkType, r.data); if (ip) send(ip, r.timeMs); }
 *
 * File layout (each field in the byte order given by the magic):
 *
 *   global header, 24 bytes            record header, 16 bytes, then incl_len bytes of packet
 *   +--------------------+             +--------------------------------+
 *   |  0 magic       u32 |             |  0 ts_sec                  u32 |
 *   |  4 version 2   u16 |             |  4 ts_usec (or ts_nsec)    u32 |
 *   |  6 version 4   u16 |             |  8 incl_len (bytes stored) u32 |
 *   |  8 thiszone    i32 |             | 12 orig_len (on the wire)  u32 |
 *   | 12 sigfigs     u32 |             +--------------------------------+
 *   | 16 snaplen     u32 |
 *   | 20 linktype    u32 |
 *   +--------------------+
 *
 * magic 0xa1b2c3d4 means microsecond timestamps, 0xa1b23c4d nanoseconds; reading it byte-swapped means
 * the file was written on a machine of the other endianness.
 */
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { ErrorCode, NfsError } from '../errors.js';

/** The link-layer header types (LINKTYPE_*) nfstate reads; it writes ETHERNET or RAW. */
export const LinkType = {
  ETHERNET: 1,
  /** Raw IP: the record starts at the IP header. */
  RAW: 101,
  /** Linux "cooked" capture v1, what `tcpdump -i any` wrote before libpcap 1.10. */
  LINUX_SLL: 113,
  /** Linux "cooked" capture v2, what `tcpdump -i any` writes since libpcap 1.10. */
  LINUX_SLL2: 276,
  /** Raw IPv4 only. */
  IPV4: 228,
} as const;
export type LinkType = (typeof LinkType)[keyof typeof LinkType];

export interface PcapRecord {
  /** Capture time in fractional milliseconds since the Unix epoch. */
  timeMs: number;
  /** The captured bytes (at most the file's snaplen): a view into the file's contents. */
  data: Uint8Array;
}

export interface PcapFile {
  linkType: number;
  /** Iterable any number of times; records were validated when the file was read. */
  records: Iterable<PcapRecord>;
}

const MAGIC_USEC = 0xa1b2c3d4;
const MAGIC_NSEC = 0xa1b23c4d;
const MAGIC_PCAPNG = 0x0a0d0d0a;
const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;
const WRITE_BUFFER = 1 << 16;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_VLAN = 0x8100;
const ETHERNET_HEADER = 14;
const VLAN_TAG = 4;
const SLL_HEADER = 16;
/** SLL2 puts the protocol first, then the interface index, ARPHRD type, packet type and address. */
const SLL2_HEADER = 20;

/**
 * Writes a microsecond-precision, little-endian pcap file. Records are gathered in a buffer and written
 * with one writeSync per 64 KiB, so capturing at packet rate costs no syscall per packet; `close` flushes.
 * Packets longer than `snaplen` are stored truncated, with their original length recorded.
 */
export class PcapWriter {
  private fd: number | undefined;
  private readonly path: string;
  private readonly snaplen: number;
  private readonly buf = new Uint8Array(WRITE_BUFFER);
  private readonly dv = new DataView(this.buf.buffer);
  private used = 0;

  constructor(path: string, linkType: number, snaplen = 65535) {
    if (!Number.isInteger(snaplen) || snaplen < 1 || snaplen > 0x7fffffff) {
      throw new NfsError(ErrorCode.PCAP, `pcap snaplen must be an integer in 1..2^31-1, got ${snaplen}`);
    }
    if (!Number.isInteger(linkType) || linkType < 0 || linkType > 0xffffffff) {
      throw new NfsError(ErrorCode.PCAP, `pcap link type must be a u32, got ${linkType}`);
    }
    this.path = path;
    this.snaplen = snaplen;
    try {
      this.fd = openSync(path, 'w');
    } catch (cause) {
      throw new NfsError(ErrorCode.PCAP, `${path}: cannot open for writing`, { cause });
    }
    const dv = this.dv;
    dv.setUint32(0, MAGIC_USEC, true);
    dv.setUint16(4, 2, true);
    dv.setUint16(6, 4, true);
    dv.setInt32(8, 0, true);
    dv.setUint32(12, 0, true);
    dv.setUint32(16, snaplen, true);
    dv.setUint32(20, linkType, true);
    this.used = GLOBAL_HEADER;
  }

  /**
   * Appends one packet captured at `timeMs` (fractional milliseconds since the Unix epoch): `length`
   * bytes of `data` from `offset`, so a caller recording packets in place allocates nothing per packet.
   */
  write(data: Uint8Array, timeMs: number, offset = 0, length = data.length - offset): void {
    if (this.fd === undefined) throw new NfsError(ErrorCode.PCAP, `${this.path}: write after close`);
    const incl = Math.min(length, this.snaplen);
    if (this.used + RECORD_HEADER + incl > this.buf.length) this.flush();
    let us = Math.round(timeMs * 1000);
    if (!(us >= 0)) us = 0;
    const sec = Math.floor(us / 1e6);
    const dv = this.dv;
    dv.setUint32(this.used, sec, true);
    dv.setUint32(this.used + 4, us - sec * 1e6, true);
    dv.setUint32(this.used + 8, incl, true);
    dv.setUint32(this.used + 12, length, true);
    this.used += RECORD_HEADER;
    if (this.used + incl > this.buf.length) {
      // Larger than the whole buffer: write it straight through.
      this.flush();
      this.writeAll(data.subarray(offset, offset + incl));
    } else {
      const buf = this.buf;
      const at = this.used;
      for (let i = 0; i < incl; i++) buf[at + i] = data[offset + i]!;
      this.used += incl;
    }
  }

  /** Flushes and closes the file; safe to repeat. */
  close(): void {
    if (this.fd === undefined) return;
    try {
      this.flush();
    } finally {
      closeSync(this.fd);
      this.fd = undefined;
    }
  }

  private flush(): void {
    if (this.used === 0) return;
    this.writeAll(this.buf.subarray(0, this.used));
    this.used = 0;
  }

  private writeAll(bytes: Uint8Array): void {
    let done = 0;
    try {
      while (done < bytes.length) done += writeSync(this.fd!, bytes, done, bytes.length - done);
    } catch (cause) {
      throw new NfsError(ErrorCode.PCAP, `${this.path}: write failed`, { cause });
    }
  }
}

/**
 * Reads a whole classic pcap file: either byte order, microsecond or nanosecond timestamps. The file is
 * validated up front, so a bad magic, an unknown version or a header or record cut short throws
 * NFS_ERR_PCAP here, never halfway through iterating.
 */
export function readPcap(path: string): PcapFile {
  let file: Buffer;
  try {
    file = readFileSync(path);
  } catch (cause) {
    throw new NfsError(ErrorCode.PCAP, `${path}: cannot read`, { cause });
  }
  const bytes = new Uint8Array(file.buffer, file.byteOffset, file.byteLength);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < GLOBAL_HEADER) {
    throw new NfsError(
      ErrorCode.PCAP,
      `${path}: truncated pcap file: ${bytes.length} bytes, a global header needs ${GLOBAL_HEADER}`,
    );
  }
  const magic = dv.getUint32(0, true);
  let le: boolean;
  let nano: boolean;
  if (magic === MAGIC_USEC || magic === MAGIC_NSEC) {
    le = true;
    nano = magic === MAGIC_NSEC;
  } else {
    const swapped = dv.getUint32(0, false);
    if (swapped !== MAGIC_USEC && swapped !== MAGIC_NSEC) {
      const hint = magic === MAGIC_PCAPNG ? ' (this is pcapng; convert it with `editcap -F pcap`)' : '';
      throw new NfsError(
        ErrorCode.PCAP,
        `${path}: not a pcap file: bad magic 0x${swapped.toString(16).padStart(8, '0')}${hint}`,
      );
    }
    le = false;
    nano = swapped === MAGIC_NSEC;
  }
  const major = dv.getUint16(4, le);
  if (major !== 2) throw new NfsError(ErrorCode.PCAP, `${path}: unsupported pcap version ${major}`);
  const linkType = dv.getUint32(20, le);

  let at = GLOBAL_HEADER;
  let index = 0;
  while (at < bytes.length) {
    if (bytes.length - at < RECORD_HEADER) {
      throw new NfsError(ErrorCode.PCAP, `${path}: truncated pcap file: record ${index} header cut short`);
    }
    const incl = dv.getUint32(at + 8, le);
    if (bytes.length - at - RECORD_HEADER < incl) {
      throw new NfsError(
        ErrorCode.PCAP,
        `${path}: truncated pcap file: record ${index} needs ${incl} bytes, ` +
          `${bytes.length - at - RECORD_HEADER} remain`,
      );
    }
    at += RECORD_HEADER + incl;
    index++;
  }

  const divisor = nano ? 1e6 : 1e3;
  const records: Iterable<PcapRecord> = {
    *[Symbol.iterator]() {
      let p = GLOBAL_HEADER;
      while (p < bytes.length) {
        const sec = dv.getUint32(p, le);
        const frac = dv.getUint32(p + 4, le);
        const incl = dv.getUint32(p + 8, le);
        const start = p + RECORD_HEADER;
        yield { timeMs: sec * 1000 + frac / divisor, data: bytes.subarray(start, start + incl) };
        p = start + incl;
      }
    },
  };
  return { linkType, records };
}

/**
 * The IPv4 packet inside one captured frame, or undefined when the frame carries something else (ARP,
 * IPv6) or a link type nfstate does not read. Ethernet frames may carry one 802.1Q tag. Ethernet pads
 * short frames to 60 bytes, so the result is cut to the IPv4 total length when that is shorter; a
 * packet that snaplen truncated is returned as captured, for the packet parser to reject.
 */
export function ipv4Payload(linkType: number, frame: Uint8Array): Uint8Array | undefined {
  let at: number;
  if (linkType === LinkType.ETHERNET) {
    if (frame.length < ETHERNET_HEADER) return undefined;
    at = ETHERNET_HEADER;
    let etherType = (frame[12]! << 8) | frame[13]!;
    if (etherType === ETHERTYPE_VLAN) {
      if (frame.length < ETHERNET_HEADER + VLAN_TAG) return undefined;
      etherType = (frame[16]! << 8) | frame[17]!;
      at += VLAN_TAG;
    }
    if (etherType !== ETHERTYPE_IPV4) return undefined;
  } else if (linkType === LinkType.LINUX_SLL) {
    if (frame.length < SLL_HEADER) return undefined;
    if (((frame[14]! << 8) | frame[15]!) !== ETHERTYPE_IPV4) return undefined;
    at = SLL_HEADER;
  } else if (linkType === LinkType.LINUX_SLL2) {
    if (frame.length < SLL2_HEADER) return undefined;
    if (((frame[0]! << 8) | frame[1]!) !== ETHERTYPE_IPV4) return undefined;
    at = SLL2_HEADER;
  } else if (linkType === LinkType.RAW || linkType === LinkType.IPV4) {
    at = 0;
  } else {
    return undefined;
  }
  if (frame.length <= at || frame[at]! >>> 4 !== 4) return undefined;
  let end = frame.length;
  if (end - at >= 4) {
    const total = (frame[at + 2]! << 8) | frame[at + 3]!;
    if (total >= 20 && at + total < end) end = at + total;
  }
  return frame.subarray(at, end);
}

/** Locally administered unicast MACs (the 0x02 bit of the first byte) stand in for real hosts. */
const SRC_MAC = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01] as const;
const DST_MAC = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02] as const;

/** Wraps an IPv4 packet in an Ethernet II header (fixed MACs, EtherType 0x0800) for ETHERNET captures. */
export function ethernetFrame(ipv4: Uint8Array): Uint8Array {
  const out = new Uint8Array(ETHERNET_HEADER + ipv4.length);
  out.set(DST_MAC, 0);
  out.set(SRC_MAC, 6);
  out[12] = ETHERTYPE_IPV4 >>> 8;
  out[13] = ETHERTYPE_IPV4 & 0xff;
  out.set(ipv4, ETHERNET_HEADER);
  return out;
}
