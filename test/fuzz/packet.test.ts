/**
 * Fuzzing the IPv4/TCP/UDP/ICMP parser (src/packet/packet.ts) against an independent reading of the rules
 * it enforces: for every input the parser's verdict (accepted or dropped) must equal the reference's, an
 * accepted packet's fields must be the bytes the reference reads, and nothing may throw.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { buildIcmp, buildTcp, buildUdp } from '../../src/packet/build.js';
import { Packet } from '../../src/packet/packet.js';
import { DropReason, dropReasonName, IpProto } from '../../src/types.js';
import { onesSum } from '../wire/packets.js';
import { byReason as named, mutate, packetSeeds, report, Rng, withByte } from './corpus.js';

const BULK = 40_000;

/** Why a parse may drop a packet; anything else from it is a bug. */
const PARSE_REASONS: readonly DropReason[] = [
  DropReason.NONE,
  DropReason.TRUNCATED,
  DropReason.BAD_LENGTH,
  DropReason.BAD_VERSION,
  DropReason.BAD_CHECKSUM,
  DropReason.BAD_HEADER,
  DropReason.UNSUPPORTED,
];

function u16(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

interface Expected {
  proto: number;
  total: number;
  srcPort: number;
  dstPort: number;
  payloadOffset: number;
  payloadLength: number;
}

/**
 * The rules of the parser's header comment, written out afresh: IPv4 with a valid header checksum, not a
 * fragment, total length within the bytes; UDP, TCP and ICMP complete with valid checksums (UDP 0: none).
 * Returns what an accepted packet must read as, or undefined for a packet that must be dropped.
 */
function reference(b: Uint8Array): Expected | undefined {
  if (b.length < 20 || b[0]! >>> 4 !== 4) return undefined;
  const ihl = (b[0]! & 0x0f) * 4;
  const total = u16(b, 2);
  if (ihl < 20 || ihl > b.length || total < ihl || total > b.length) return undefined;
  if (onesSum(b, 0, ihl) !== 0xffff) return undefined;
  if ((u16(b, 6) & 0x3fff) !== 0) return undefined;
  const proto = b[9]!;
  const l4 = ihl;
  const l4Len = total - ihl;
  const pseudo = (len: number): number => onesSum(b, 12, 20) + proto + len; // source and destination, protocol, L4 length
  if (proto === IpProto.UDP) {
    if (l4Len < 8) return undefined;
    const udpLen = u16(b, l4 + 4);
    if (udpLen < 8 || udpLen > l4Len) return undefined;
    if (u16(b, l4 + 6) !== 0 && onesSum(b, l4, l4 + udpLen, pseudo(udpLen)) !== 0xffff) return undefined;
    return {
      proto,
      total,
      srcPort: u16(b, l4),
      dstPort: u16(b, l4 + 2),
      payloadOffset: l4 + 8,
      payloadLength: udpLen - 8,
    };
  }
  if (proto === IpProto.TCP) {
    if (l4Len < 20) return undefined;
    const off = (b[l4 + 12]! >>> 4) * 4;
    if (off < 20 || off > l4Len) return undefined;
    if (onesSum(b, l4, total, pseudo(l4Len)) !== 0xffff) return undefined;
    return {
      proto,
      total,
      srcPort: u16(b, l4),
      dstPort: u16(b, l4 + 2),
      payloadOffset: l4 + off,
      payloadLength: l4Len - off,
    };
  }
  if (proto === IpProto.ICMP) {
    if (l4Len < 8 || onesSum(b, l4, total) !== 0xffff) return undefined;
    const echo = b[l4] === 0 || b[l4] === 8;
    const id = echo ? u16(b, l4 + 4) : 0;
    return { proto, total, srcPort: id, dstPort: id, payloadOffset: l4 + 8, payloadLength: l4Len - 8 };
  }
  return { proto, total, srcPort: 0, dstPort: 0, payloadOffset: l4, payloadLength: l4Len };
}

/** Every getter, so that reading a view after any parse is exercised too (they must never throw). */
function readAll(p: Packet): number {
  return (
    p.proto +
    p.srcIp +
    p.dstIp +
    p.ttl +
    p.srcPort +
    p.dstPort +
    p.tcpFlags +
    p.tcpSeq +
    p.tcpAck +
    p.payloadOffset +
    p.payloadLength +
    p.icmpType +
    p.icmpCode +
    p.length +
    p.ipHeaderLength +
    p.l4Offset +
    p.l4Length
  );
}

/**
 * Parses `b` placed at an offset inside a larger buffer, with bytes on both sides, and checks the verdict
 * and the fields against the reference. Returns the parser's reason.
 */
function check(pkt: Packet, b: Uint8Array, lead = 3): DropReason {
  const buf = new Uint8Array(lead + b.length + 5).fill(0xee);
  buf.set(b, lead);
  const r = pkt.parse(buf, lead, b.length);
  assert.ok(PARSE_REASONS.includes(r), `unexpected reason ${r}`);
  assert.equal(typeof readAll(pkt), 'number');
  const want = reference(b);
  assert.equal(r === DropReason.NONE, want !== undefined, `verdict ${dropReasonName[r]} on ${hex(b)}`);
  if (want !== undefined) {
    assert.equal(pkt.proto, want.proto);
    assert.equal(pkt.length, want.total);
    assert.equal(pkt.srcPort, want.srcPort);
    assert.equal(pkt.dstPort, want.dstPort);
    assert.equal(pkt.payloadOffset, lead + want.payloadOffset);
    assert.equal(pkt.payloadLength, want.payloadLength);
    assert.ok(pkt.payloadOffset + pkt.payloadLength <= lead + b.length);
  }
  return r;
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

const ip = fc.integer({ min: 0, max: 0xffffffff });
const port = fc.integer({ min: 0, max: 0xffff });
const payload = fc.uint8Array({ maxLength: 64 });
const ipOptions = fc
  .integer({ min: 0, max: 10 })
  .chain((words) => fc.uint8Array({ minLength: words * 4, maxLength: words * 4 }));

/** Any packet the builders make: UDP, TCP or ICMP with arbitrary fields. */
const built = fc.oneof(
  fc
    .record({ srcIp: ip, dstIp: ip, srcPort: port, dstPort: port, payload, ipOptions })
    .map((s) => build((buf) => buildUdp(buf, 0, s))),
  fc
    .record({
      srcIp: ip,
      dstIp: ip,
      srcPort: port,
      dstPort: port,
      seq: ip,
      ack: ip,
      flags: fc.integer({ min: 0, max: 0x3f }),
      payload,
      ipOptions,
    })
    .map((s) => build((buf) => buildTcp(buf, 0, s))),
  fc
    .record({
      srcIp: ip,
      dstIp: ip,
      type: fc.integer({ min: 0, max: 255 }),
      code: fc.integer({ min: 0, max: 255 }),
      id: port,
      seq: port,
      payload,
    })
    .map((s) => build((buf) => buildIcmp(buf, 0, s))),
);

function build(write: (buf: Uint8Array) => number): Uint8Array {
  const buf = new Uint8Array(256);
  return buf.slice(0, write(buf));
}

const FC = { seed: 0x5eed_0001, numRuns: 1500, interruptAfterTimeLimit: 10_000 };

describe('fuzz: IPv4/TCP/UDP/ICMP parser', { timeout: 60_000 }, () => {
  it('accepts every packet the builders make, with the fields they wrote', () => {
    const pkt = new Packet();
    fc.assert(
      fc.property(built, (b) => {
        assert.equal(check(pkt, b), DropReason.NONE);
        assert.equal(pkt.srcIp, ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) >>> 0);
      }),
      FC,
    );
  });

  it('drops every proper prefix of a valid packet, and agrees with the reference on any one-byte change', () => {
    const pkt = new Packet();
    fc.assert(
      fc.property(built, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(), (b, at, value, cut) => {
        assert.notEqual(check(pkt, b.subarray(0, cut % b.length)), DropReason.NONE);
        check(pkt, withByte(b, at, value));
      }),
      FC,
    );
  });

  it('keeps a packet valid through every address and port rewrite', () => {
    const pkt = new Packet();
    fc.assert(
      fc.property(built, ip, ip, port, port, (b, src, dst, sport, dport) => {
        const buf = Uint8Array.from(b);
        assert.equal(pkt.parse(buf, 0, buf.length), DropReason.NONE);
        pkt.setSrcIp(src);
        pkt.setDstIp(dst);
        pkt.setSrcPort(sport);
        pkt.setDstPort(dport);
        assert.equal(check(pkt, buf, 0), DropReason.NONE);
        assert.equal(pkt.srcIp, src);
        assert.equal(pkt.dstIp, dst);
      }),
      FC,
    );
  });

  it('refuses a range outside the buffer without reading past it', () => {
    const pkt = new Packet();
    const odd = fc.oneof(
      fc.integer({ min: -10, max: 300 }),
      fc.constantFrom(NaN, Infinity, -Infinity, 0.5, 2 ** 53, -0),
    );
    fc.assert(
      fc.property(built, odd, odd, (b, offset, length) => {
        const r = pkt.parse(b, offset, length);
        assert.ok(PARSE_REASONS.includes(r));
        readAll(pkt);
        const inside = Number.isInteger(offset) && Number.isInteger(length) && offset >= 0 && length >= 0;
        if (!inside || offset + length > b.length) assert.equal(r, DropReason.TRUNCATED);
      }),
      FC,
    );
  });

  it(`agrees with the reference on ${BULK} random and mutated packets`, (t) => {
    const rng = new Rng(0x5eed_0002);
    const seeds = packetSeeds();
    const pkt = new Packet();
    const byReason = new Array<number>(dropReasonName.length).fill(0);
    let mutated = 0;
    let random = 0;
    let plausible = 0;
    for (let i = 0; i < BULK; i++) {
      let b: Uint8Array;
      const kind = i % 4;
      if (kind < 2) {
        b = mutate(rng.pick(seeds), rng);
        mutated++;
      } else if (kind === 2) {
        b = rng.bytes(rng.int(120));
        random++;
      } else {
        b = plausibleHeader(rng);
        plausible++;
      }
      byReason[check(pkt, b)]!++;
    }
    const counted = byReason.reduce((a, n) => a + n, 0);
    assert.equal(counted, BULK, 'every packet is accepted or dropped for one reason');
    assert.ok(byReason[DropReason.NONE]! > 0 && byReason[DropReason.BAD_CHECKSUM]! > 0);
    report(t, 'ipv4', {
      properties: 4 * FC.numRuns,
      packets: BULK,
      mutated,
      random,
      plausible,
      ...named(byReason),
    });
  });
});

/**
 * Random bytes behind an IPv4 header that passes its own checks (version, lengths, checksum, no
 * fragment), so that the UDP, TCP and ICMP rules see random input instead of the IPv4 checksum stopping
 * almost all of it.
 */
function plausibleHeader(rng: Rng): Uint8Array {
  const words = 5 + rng.int(3);
  const b = rng.bytes(words * 4 + rng.int(80));
  b[0] = 0x40 | words;
  const total = words * 4 + rng.int(b.length - words * 4 + 1);
  b[2] = total >>> 8;
  b[3] = total;
  b[6]! &= 0x40;
  b[7] = 0;
  b[9] = rng.pick([IpProto.UDP, IpProto.TCP, IpProto.ICMP, 47]);
  const l4 = words * 4;
  if (b[9] === IpProto.UDP && total - l4 >= 8 && rng.int(2) === 0) {
    // A UDP length that fits, and sometimes no checksum, so the checksum is not all that is tested.
    const udpLen = 8 + rng.int(total - l4 - 7);
    b[l4 + 4] = udpLen >>> 8;
    b[l4 + 5] = udpLen;
    if (rng.int(2) === 0) b[l4 + 6] = b[l4 + 7] = 0;
  }
  b[10] = b[11] = 0;
  const c = ~onesSum(b, 0, words * 4) & 0xffff;
  b[10] = c >>> 8;
  b[11] = c;
  return b;
}
