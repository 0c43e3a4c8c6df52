/**
 * What the fuzz tests feed the parsers: seeds (the frozen wire samples in test/fixtures/wire and packets
 * built the way the generator builds real traffic), a seeded random source so that every run sees the
 * same bytes, and the mutations that turn a seed into the damaged input a parser must survive.
 *
 *   const rng = new Rng(1);
 *   for (const seed of geneveSeeds()) view.parse(...spanOf(mutate(seed, rng)));
 *
 * Nothing here draws from Math.random: a failure names its seed and index, and rerunning reproduces it.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { buildIcmp, buildTcp, buildUdp, TcpFlag } from '../../src/packet/build.js';
import { dropReasonName } from '../../src/types.js';
import { FLOW_HEADER_LENGTH, STAMP_HEADER_LENGTH, writeStampHeader } from '../../src/wire/geneve.js';
import { ArpOp, writeArp } from '../../src/wire/arp.js';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, VXLAN_FRAME_HEADER, writeVxlanFrame } from '../../src/wire/vxlan.js';
import { fromHex } from '../wire/packets.js';

/** mulberry32: small, fast and good enough to pick mutations; never used for anything secret. */
export class Rng {
  private s: number;

  constructor(seed: number) {
    this.s = seed >>> 0;
  }

  u32(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in 0 … n − 1 (n ≥ 1). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}

/** Byte values that sit on the edges of fields: zero, one, signed and unsigned extremes. */
const INTERESTING_8 = [0x00, 0x01, 0x3f, 0x40, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_16 = [0x0000, 0x0001, 0x0014, 0x7fff, 0x8000, 0xfffe, 0xffff];

/**
 * One to four mutations of a copy of `seed`: a flipped bit, a random or boundary byte, a boundary
 * 16-bit word, a truncation, random bytes appended, inserted or deleted, or a block copied over another.
 * The result is at most `maxLength` bytes.
 */
export function mutate(seed: Uint8Array, rng: Rng, maxLength = 4096): Uint8Array {
  let b: Uint8Array = Uint8Array.from(seed);
  const n = 1 + rng.int(4);
  for (let i = 0; i < n; i++) {
    const at = rng.int(b.length + 1);
    switch (rng.int(9)) {
      case 0:
        if (at < b.length) b[at]! ^= 1 << rng.int(8);
        break;
      case 1:
        if (at < b.length) b[at] = rng.u32() & 0xff;
        break;
      case 2:
        if (at < b.length) b[at] = rng.pick(INTERESTING_8);
        break;
      case 3:
        if (at + 1 < b.length) {
          const v = rng.pick([...INTERESTING_16, b.length, b.length - at, rng.u32() & 0xffff]);
          b[at] = v >>> 8;
          b[at + 1] = v;
        }
        break;
      case 4:
        b = b.slice(0, at);
        break;
      case 5:
        b = concat(b, rng.bytes(1 + rng.int(64)));
        break;
      case 6:
        b = concat(b.subarray(0, at), rng.bytes(1 + rng.int(16)), b.subarray(at));
        break;
      case 7:
        b = concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + rng.int(16))));
        break;
      default: {
        const from = rng.int(b.length + 1);
        const len = rng.int(17);
        const block = b.slice(from, from + len);
        b.set(block.subarray(0, Math.max(0, b.length - at)), at);
      }
    }
  }
  return b.length > maxLength ? b.subarray(0, maxLength) : b;
}

/** A copy of `seed` with byte `index` replaced by `value` (index taken modulo the length). */
export function withByte(seed: Uint8Array, index: number, value: number): Uint8Array {
  const out = Uint8Array.from(seed);
  if (out.length > 0) out[index % out.length] = value;
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// The samples stay in test/fixtures; compiled tests run from dist/test, two levels further down.
const fixtureDir = [
  new URL('../fixtures/wire/', import.meta.url),
  new URL('../../../test/fixtures/wire/', import.meta.url),
].find((u) => existsSync(u));

/** A frozen sample from test/fixtures/wire, by file name. */
export function wireSample(name: string): Uint8Array {
  if (fixtureDir === undefined) throw new Error('test/fixtures/wire not found');
  return fromHex(readFileSync(new URL(name, fixtureDir), 'utf8'));
}

const GENEVE_SAMPLES = [
  'stamp-udp.hex',
  'stamp-copy-replay.hex',
  'stamp-foreign-option.hex',
  'stamp-flow-udp.hex',
];
const VXLAN_SAMPLES = ['vxlan-udp.hex', 'vxlan-arp-request.hex'];

/**
 * Valid IPv4 packets of every kind the parser reads: the inner packets of the frozen samples, UDP with and
 * without a checksum and with IP options, TCP with flags and payload, ICMP echo and an ICMP error, and a
 * protocol the parser passes through (GRE).
 */
export function packetSeeds(): Uint8Array[] {
  const out: Uint8Array[] = [];
  out.push(wireSample('stamp-udp.hex').subarray(STAMP_HEADER_LENGTH));
  out.push(wireSample('stamp-flow-udp.hex').subarray(FLOW_HEADER_LENGTH));
  out.push(wireSample('vxlan-udp.hex').subarray(VXLAN_FRAME_HEADER));
  const buf = new Uint8Array(2048);
  const ends = { srcIp: 0x0a010002, dstIp: 0xc633640a };
  const payload = Uint8Array.from({ length: 48 }, (_, i) => (i * 37) & 0xff);
  let n = buildUdp(buf, 0, { ...ends, srcPort: 40000, dstPort: 5001, payload });
  out.push(buf.slice(0, n));
  n = buildUdp(buf, 0, { ...ends, srcPort: 53, dstPort: 33333, payload: payload.subarray(0, 5), ttl: 1 });
  // The same with "no checksum": a UDP checksum of 0.
  const noSum = buf.slice(0, n);
  noSum[26] = 0;
  noSum[27] = 0;
  out.push(noSum);
  n = buildUdp(buf, 0, {
    ...ends,
    srcPort: 1,
    dstPort: 65535,
    payload: new Uint8Array(0),
    ipOptions: Uint8Array.of(0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00),
  });
  out.push(buf.slice(0, n));
  n = buildTcp(buf, 0, {
    ...ends,
    srcPort: 40001,
    dstPort: 80,
    seq: 0xfffffff0,
    ack: 0,
    flags: TcpFlag.SYN,
    payload: new Uint8Array(0),
  });
  out.push(buf.slice(0, n));
  n = buildTcp(buf, 0, {
    ...ends,
    srcPort: 40001,
    dstPort: 80,
    seq: 1,
    ack: 7,
    flags: TcpFlag.ACK | TcpFlag.PSH,
    payload,
  });
  out.push(buf.slice(0, n));
  n = buildIcmp(buf, 0, { ...ends, type: 8, code: 0, id: 0x1234, seq: 1, payload: payload.subarray(0, 16) });
  out.push(buf.slice(0, n));
  // Destination unreachable, quoting the start of a UDP packet.
  n = buildIcmp(buf, 0, { ...ends, type: 3, code: 3, id: 0, seq: 0, payload: out[3]!.subarray(0, 28) });
  out.push(buf.slice(0, n));
  out.push(otherProtocol(47));
  return out;
}

/** A minimal IPv4 packet of protocol `proto` with a 4-byte body; its header checksum filled in. */
function otherProtocol(proto: number): Uint8Array {
  const p = new Uint8Array(24);
  p.set([0x45, 0, 0, 24, 0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0, 0, 0x65, 0x58]);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += (p[i]! << 8) | p[i + 1]!;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const c = ~sum & 0xffff;
  p[10] = c >>> 8;
  p[11] = c;
  return p;
}

/**
 * Valid Geneve datagrams: the frozen samples and, around each packet seed, the stamp header, the stamp with
 * the flow option, a header with no option, and a carried Ethernet frame (which StampView refuses).
 */
export function geneveSeeds(): Uint8Array[] {
  const out = GENEVE_SAMPLES.map(wireSample);
  const buf = new Uint8Array(4096);
  const stamp = { vni: 0x00abcd, flags: 1, epoch: 9, seq: 2 ** 32 + 3, timeMs: 1_700_000_000_123.456 };
  const flow = { srcIp: 0x0a010002, dstIp: 0xc633640a, srcPort: 40000, dstPort: 5001, proto: 17 };
  for (const p of packetSeeds()) {
    let h = writeStampHeader(buf, 0, stamp);
    buf.set(p, h);
    out.push(buf.slice(0, h + p.length));
    h = writeStampHeader(buf, 0, stamp, flow);
    buf.set(p, h);
    out.push(buf.slice(0, h + p.length));
    const bare = Uint8Array.of(0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x07, 0x00);
    out.push(concat(bare, p));
  }
  const carried = Uint8Array.of(0x00, 0x00, 0x65, 0x58, 0x00, 0x00, 0x01, 0x00);
  out.push(concat(carried, wireSample('vxlan-arp-request.hex').subarray(8)));
  return out;
}

/** Valid VXLAN datagrams: the frozen samples, every packet seed in a frame, an ARP reply, an IPv6 frame. */
export function vxlanSeeds(): Uint8Array[] {
  const out = VXLAN_SAMPLES.map(wireSample);
  const buf = new Uint8Array(4096);
  const macs = { dst: 0x026e66000001, src: 0x92b5ca7710ad };
  for (const p of packetSeeds()) {
    const h = writeVxlanFrame(buf, 0, { vni: 5, ...macs, etherType: ETHERTYPE_IPV4 });
    buf.set(p, h);
    out.push(buf.slice(0, h + p.length));
  }
  let h = writeVxlanFrame(buf, 0, { vni: 5, ...macs, etherType: ETHERTYPE_ARP });
  h += writeArp(buf, h, {
    op: ArpOp.REPLY,
    senderMac: macs.src,
    senderIp: 0x0a010002,
    targetMac: macs.dst,
    targetIp: 0x0a010001,
  });
  out.push(buf.slice(0, h + 18)); // with Ethernet padding
  h = writeVxlanFrame(buf, 0, { vni: 5, ...macs, etherType: 0x86dd });
  buf.set([0x60, 0, 0, 0, 0, 8, 17, 64], h);
  out.push(buf.slice(0, h + 48));
  return out;
}

/** Nonzero counts by drop reason name (`none` for accepted), each name after `prefix`. */
export function byReason(counts: readonly number[], prefix = ''): Record<string, number> {
  const out: Record<string, number> = {};
  counts.forEach((n, r) => {
    if (n !== 0) out[prefix + dropReasonName[r]!] = n;
  });
  return out;
}

/** Writes one line that names the parser and what it was fed, so a CI log shows the counts. */
export function report(t: TestContext, what: string, counts: Record<string, number>): void {
  const line = `fuzz ${what}: ${Object.entries(counts)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ')}`;
  t.diagnostic(line);
}
