/**
 * Fuzzing the edge's readers (src/wire/vxlan.ts, src/wire/arp.ts): VXLAN frames from hosts and the ARP
 * messages inside them, checked against RFC 7348 and RFC 826 as docs/wire-format.md states them, on
 * structured, mutated and random input. Nothing may throw.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { NfsError } from '../../src/errors.js';
import { Packet } from '../../src/packet/packet.js';
import { DropReason, dropReasonName } from '../../src/types.js';
import { ArpView, writeArp, type ArpOp } from '../../src/wire/arp.js';
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  macToString,
  parseMac,
  VXLAN_FRAME_HEADER,
  VxlanView,
  writeVxlanFrame,
} from '../../src/wire/vxlan.js';
import { mutate, report, Rng, vxlanSeeds, withByte } from './corpus.js';

const BULK = 15_000;

function u16(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

/** RFC 7348 as the ingress applies it: two whole headers and the I flag. */
function vxlanVerdict(b: Uint8Array): DropReason {
  if (b.length < 22) return DropReason.TRUNCATED;
  return (b[0]! & 0x08) === 0 ? DropReason.BAD_HEADER : DropReason.NONE;
}

/** RFC 826 for Ethernet and IPv4: 28 bytes, the fixed types and lengths, request or reply. */
function arpVerdict(b: Uint8Array, at: number, length: number): DropReason {
  if (length < 28) return DropReason.TRUNCATED;
  const op = u16(b, at + 6);
  const ok =
    u16(b, at) === 1 &&
    u16(b, at + 2) === 0x0800 &&
    b[at + 4] === 6 &&
    b[at + 5] === 4 &&
    (op === 1 || op === 2);
  return ok ? DropReason.NONE : DropReason.BAD_HEADER;
}

const mac = fc.integer({ min: 0, max: 0xffff_ffff_ffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const frameArb = fc.record({
  vni: fc.integer({ min: 0, max: 0xffffff }),
  dst: mac,
  src: mac,
  etherType: fc.integer({ min: 0, max: 0xffff }),
});
const arpArb = fc.record({
  op: fc.constantFrom<ArpOp>(1, 2),
  senderMac: mac,
  senderIp: u32,
  targetMac: mac,
  targetIp: u32,
});

const FC = { seed: 0x5eed_0201, numRuns: 1500, interruptAfterTimeLimit: 10_000 };

describe('fuzz: VXLAN and ARP', { timeout: 60_000 }, () => {
  it('reads back every frame and ARP message the writers make, behind any padding', () => {
    const v = new VxlanView();
    const arp = new ArpView();
    fc.assert(
      fc.property(frameArb, arpArb, fc.uint8Array({ maxLength: 32 }), (f, a, pad) => {
        const buf = new Uint8Array(VXLAN_FRAME_HEADER + 28 + pad.length);
        const h = writeVxlanFrame(buf, 0, f);
        writeArp(buf, h, a);
        buf.set(pad, h + 28);
        assert.equal(v.parse(buf, 0, buf.length), DropReason.NONE);
        assert.deepEqual([v.vni, v.dstMac, v.srcMac, v.etherType], [f.vni, f.dst, f.src, f.etherType]);
        assert.equal(v.payloadLength, 28 + pad.length);
        assert.equal(arp.parse(buf, v.payloadOffset, v.payloadLength), DropReason.NONE);
        assert.deepEqual(
          [arp.op, arp.senderMac, arp.senderIp, arp.targetMac, arp.targetIp],
          [a.op, a.senderMac, a.senderIp, a.targetMac, a.targetIp],
        );
        assert.equal(parseMac(macToString(f.src)), f.src);
      }),
      FC,
    );
  });

  it('agrees with the RFCs on any one-byte change or truncation', () => {
    const v = new VxlanView();
    const arp = new ArpView();
    fc.assert(
      fc.property(
        frameArb,
        arpArb,
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        fc.nat(),
        (f, a, at, value, cut) => {
          const buf = new Uint8Array(VXLAN_FRAME_HEADER + 28);
          writeArp(buf, writeVxlanFrame(buf, 0, { ...f, etherType: ETHERTYPE_ARP }), a);
          for (const b of [withByte(buf, at, value), buf.subarray(0, cut % buf.length)]) {
            assert.equal(v.parse(b, 0, b.length), vxlanVerdict(b));
            const n = Math.max(0, b.length - VXLAN_FRAME_HEADER);
            assert.equal(arp.parse(b, VXLAN_FRAME_HEADER, n), arpVerdict(b, VXLAN_FRAME_HEADER, n));
          }
        },
      ),
      FC,
    );
  });

  it('reads a MAC address from any text or refuses it with NFS_ERR_CONFIG', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          mac.map(macToString),
          mac.map((m) => macToString(m).toUpperCase()),
        ),
        (s) => {
          try {
            const m = parseMac(s);
            assert.ok(Number.isSafeInteger(m) && m >= 0 && m <= 0xffff_ffff_ffff);
            assert.equal(macToString(m), s.toLowerCase());
          } catch (err) {
            assert.ok(err instanceof NfsError && err.code === 'NFS_ERR_CONFIG', String(err));
          }
        },
      ),
      FC,
    );
  });

  it(`agrees with the RFCs on ${BULK} random and mutated frames, and parses what they carry`, (t) => {
    const rng = new Rng(0x5eed_0202);
    const seeds = vxlanSeeds();
    const v = new VxlanView();
    const arp = new ArpView();
    const pkt = new Packet();
    const counts: Record<string, number> = {};
    const count = (k: string): void => {
      counts[k] = (counts[k] ?? 0) + 1;
    };
    for (let i = 0; i < BULK; i++) {
      const b = i % 4 === 3 ? randomFrame(rng) : mutate(rng.pick(seeds), rng);
      const r = v.parse(b, 0, b.length);
      assert.equal(r, vxlanVerdict(b));
      count(`vxlan_${dropReasonName[r]!}`);
      if (r !== DropReason.NONE) continue;
      assert.equal(typeof (v.vni + v.dstMac + v.srcMac + v.frameOffset + v.frameLength), 'number');
      if (v.etherType === ETHERTYPE_IPV4)
        count(`ipv4_${dropReasonName[pkt.parse(b, v.payloadOffset, v.payloadLength)]!}`);
      else if (v.etherType === ETHERTYPE_ARP) {
        const ar = arp.parse(b, v.payloadOffset, v.payloadLength);
        assert.equal(ar, arpVerdict(b, v.payloadOffset, v.payloadLength));
        count(`arp_${dropReasonName[ar]!}`);
      } else count('other_ethertype');
    }
    const frames = Object.entries(counts)
      .filter(([k]) => k.startsWith('vxlan_'))
      .reduce((a, [, n]) => a + n, 0);
    assert.equal(frames, BULK);
    assert.ok((counts.ipv4_none ?? 0) > 0 && (counts.arp_none ?? 0) > 0);
    report(t, 'vxlan', { properties: 3 * FC.numRuns, frames: BULK, ...counts });
  });
});

/** VXLAN with the I flag set and a random Ethernet frame, now and then IPv4 or ARP by EtherType. */
function randomFrame(rng: Rng): Uint8Array {
  const b = rng.bytes(rng.int(100));
  if (b.length > 0) b[0]! |= 0x08;
  if (b.length >= 22) {
    const type = rng.pick([ETHERTYPE_IPV4, ETHERTYPE_ARP, 0x86dd, 0x8100]);
    b[20] = type >>> 8;
    b[21] = type;
  }
  return b;
}
