/**
 * Fuzzing the Geneve reader and the nfstate stamp and flow options (src/wire/geneve.ts) against the
 * receiving rules of docs/wire-format.md, read afresh: the verdict and the option offsets must agree with
 * that reading for every input, accepted headers must read back what was written, and nothing may throw.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Packet } from '../../src/packet/packet.js';
import { DropReason, dropReasonName } from '../../src/types.js';
import {
  FLOW_HEADER_LENGTH,
  isCarriedFrame,
  STAMP_HEADER_LENGTH,
  StampView,
  writeStampHeader,
} from '../../src/wire/geneve.js';
import { byReason as named, geneveSeeds, mutate, packetSeeds, report, Rng, withByte } from './corpus.js';

const BULK = 25_000;

const GENEVE_REASONS: readonly DropReason[] = [
  DropReason.NONE,
  DropReason.TRUNCATED,
  DropReason.BAD_LENGTH,
  DropReason.BAD_VERSION,
  DropReason.BAD_HEADER,
  DropReason.UNSUPPORTED,
];

interface Expected {
  header: number;
  stamp: number;
  flow: number;
}

/** The table "Receiving" of docs/wire-format.md: where the options are, or undefined for a drop. */
function reference(b: Uint8Array): Expected | undefined {
  if (b.length < 8 || b[0]! >>> 6 !== 0) return undefined;
  if (((b[2]! << 8) | b[3]!) !== 0x0800 || (b[1]! & 0x80) !== 0) return undefined;
  const header = 8 + (b[0]! & 0x3f) * 4;
  if (b.length < header) return undefined;
  let stamp = -1;
  let flow = -1;
  for (let at = 8; at < header;) {
    const cls = (b[at]! << 8) | b[at + 1]!;
    const type = b[at + 2]!;
    const words = b[at + 3]! & 0x1f;
    const next = at + 4 + words * 4;
    if (next > header) return undefined;
    if (cls === 0xfff0 && type === 1) {
      if (stamp >= 0 || words !== 6 || b[at + 4] !== 1) return undefined;
      stamp = at + 4;
      // An ingress time of 2^53 µs or more (its top word from 2^21 · 1000 on).
      if (u32(b, stamp + 16) >= 2 ** 21 * 1000) return undefined;
    } else if (cls === 0xfff0 && type === 2) {
      if (flow >= 0 || words !== 3) return undefined;
      flow = at + 4;
    } else if ((type & 0x80) !== 0) {
      return undefined;
    }
    at = next;
  }
  return { header, stamp, flow };
}

function u32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

/** Parses `b` behind a few bytes of something else and checks it against the reference. */
function check(view: StampView, b: Uint8Array): DropReason {
  const lead = 5;
  const buf = new Uint8Array(lead + b.length + 3).fill(0xaa);
  buf.set(b, lead);
  const r = view.parse(buf, lead, b.length);
  assert.ok(GENEVE_REASONS.includes(r), `unexpected reason ${r}`);
  // Getters and setters after any parse: they must never throw, and do nothing without a stamp.
  const sum = view.vni + view.flags + view.epoch + view.emitter + view.seq + view.timeMs + view.innerLength;
  assert.equal(typeof sum, 'number');
  isCarriedFrame(b);
  const want = reference(b);
  assert.equal(r === DropReason.NONE, want !== undefined, `verdict ${dropReasonName[r]} on ${hex(b)}`);
  if (want === undefined) return r;
  assert.equal(view.headerLength, want.header);
  assert.equal(view.innerOffset, lead + want.header);
  assert.equal(view.innerLength, b.length - want.header);
  assert.equal(view.hasStamp, want.stamp >= 0);
  assert.equal(view.hasFlow, want.flow >= 0);
  if (want.stamp >= 0) {
    assert.equal(view.stampOffset, lead + want.stamp);
    assert.equal(view.epoch, u32(b, want.stamp + 4));
    assert.equal(view.seq, u32(b, want.stamp + 8) * 2 ** 32 + u32(b, want.stamp + 12));
  } else {
    assert.equal(view.seq, 0);
  }
  if (want.flow >= 0) {
    const f = view.flowInto({ srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 }, 6);
    assert.equal(f.srcIp, u32(b, want.flow));
    assert.equal(f.dstIp, u32(b, want.flow + 4));
  }
  // Rewriting a stamp in place keeps the header valid and reads back.
  view.setSeq(12345);
  view.setEpoch(7);
  view.setFlags(0x0f);
  view.setEmitter(0xbeef);
  view.setVni(0x123456);
  assert.equal(view.parse(buf, lead, b.length), DropReason.NONE);
  assert.equal(view.vni, 0x123456);
  if (want.stamp >= 0) assert.deepEqual([view.seq, view.epoch, view.emitter], [12345, 7, 0xbeef]);
  return r;
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

const u32Arb = fc.integer({ min: 0, max: 0xffffffff });
const stampArb = fc.record({
  vni: fc.integer({ min: 0, max: 0xffffff }),
  flags: fc.integer({ min: 0, max: 0xff }),
  epoch: u32Arb,
  seq: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  // 2006 to 2039, where a time read back writes the same bytes (docs/wire-format.md).
  timeMs: fc.integer({ min: 1_153_000_000_000, max: 2_200_000_000_000 }).map((ms) => ms + 0.123456),
});
const flowArb = fc.option(
  fc.record({
    srcIp: u32Arb,
    dstIp: u32Arb,
    srcPort: fc.integer({ min: 0, max: 0xffff }),
    dstPort: fc.integer({ min: 0, max: 0xffff }),
    proto: fc.constantFrom(6, 17, 1),
  }),
  { nil: undefined },
);
const innerArb = fc.constantFrom(...packetSeeds());

/** A stamped datagram as writeStampHeader writes it, around one of the packet seeds. */
const datagramArb = fc.tuple(stampArb, flowArb, innerArb).map(([stamp, flow, inner]) => {
  const buf = new Uint8Array(FLOW_HEADER_LENGTH + inner.length);
  const h = writeStampHeader(buf, 0, stamp, flow);
  buf.set(inner, h);
  return { stamp, flow, bytes: buf.subarray(0, h + inner.length) };
});

const FC = { seed: 0x5eed_0101, numRuns: 1500, interruptAfterTimeLimit: 10_000 };

describe('fuzz: Geneve and the stamp option', { timeout: 60_000 }, () => {
  it('reads back every header writeStampHeader writes, with or without the flow option', () => {
    const view = new StampView();
    fc.assert(
      fc.property(datagramArb, ({ stamp, flow, bytes }) => {
        assert.equal(check(view, bytes), DropReason.NONE);
        view.parse(bytes, 0, bytes.length);
        assert.equal(view.headerLength, flow === undefined ? STAMP_HEADER_LENGTH : FLOW_HEADER_LENGTH);
        assert.deepEqual(
          [view.vni, view.flags, view.epoch, view.seq, view.emitter],
          [stamp.vni, stamp.flags, stamp.epoch, stamp.seq, 0],
        );
        // The time read back writes the same eight bytes.
        const again = Uint8Array.from(bytes);
        writeStampHeader(again, 0, { ...stamp, timeMs: view.timeMs }, flow);
        assert.deepEqual(again, bytes);
        if (flow !== undefined)
          assert.deepEqual(
            view.flowInto({ srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 }, flow.proto),
            {
              ...flow,
            },
          );
      }),
      FC,
    );
  });

  it('drops every truncated header, and agrees with the rules on any one-byte change', () => {
    const view = new StampView();
    fc.assert(
      fc.property(datagramArb, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(), (d, at, value, cut) => {
        const b = d.bytes;
        const header = d.flow === undefined ? STAMP_HEADER_LENGTH : FLOW_HEADER_LENGTH;
        assert.equal(check(view, b.subarray(0, cut % header)), DropReason.TRUNCATED);
        check(view, withByte(b, at % FLOW_HEADER_LENGTH, value));
      }),
      FC,
    );
  });

  it('refuses a range outside the buffer', () => {
    const view = new StampView();
    const odd = fc.oneof(fc.integer({ min: -10, max: 200 }), fc.constantFrom(NaN, Infinity, 0.5, 2 ** 53));
    fc.assert(
      fc.property(datagramArb, odd, odd, (d, offset, length) => {
        const r = view.parse(d.bytes, offset, length);
        assert.ok(GENEVE_REASONS.includes(r));
        const inside = Number.isInteger(offset) && Number.isInteger(length) && offset >= 0 && length >= 0;
        if (!inside || offset + length > d.bytes.length) assert.equal(r, DropReason.BAD_LENGTH);
      }),
      FC,
    );
  });

  it(`agrees with the rules on ${BULK} random and mutated datagrams, and parses what they carry`, (t) => {
    const rng = new Rng(0x5eed_0102);
    const seeds = geneveSeeds();
    const view = new StampView();
    const pkt = new Packet();
    const byReason = new Array<number>(dropReasonName.length).fill(0);
    const inner = new Array<number>(dropReasonName.length).fill(0);
    for (let i = 0; i < BULK; i++) {
      const b = i % 5 === 4 ? randomGeneve(rng) : mutate(rng.pick(seeds), rng);
      const r = check(view, b);
      byReason[r]!++;
      if (r === DropReason.NONE) inner[pkt.parse(view.buf, view.innerOffset, view.innerLength)]!++;
    }
    assert.equal(
      byReason.reduce((a, n) => a + n, 0),
      BULK,
    );
    assert.equal(
      inner.reduce((a, n) => a + n, 0),
      byReason[DropReason.NONE],
    );
    assert.ok(byReason[DropReason.NONE]! > 0 && inner[DropReason.NONE]! > 0);
    report(t, 'geneve', {
      properties: 3 * FC.numRuns,
      datagrams: BULK,
      ...named(byReason, ''),
      ...named(inner, 'inner_'),
    });
  });
});

/** A Geneve base header that passes the first checks, followed by random options and bytes. */
function randomGeneve(rng: Rng): Uint8Array {
  const words = rng.int(16);
  const b = rng.bytes(8 + words * 4 + rng.int(40));
  b[0] = words;
  b[1]! &= 0x7f;
  b[2] = 0x08;
  b[3] = 0x00;
  // Now and then an option header of nfstate's class, so its rules see random lengths and versions.
  if (words > 0 && rng.int(2) === 0) {
    b[8] = 0xff;
    b[9] = 0xf0;
    b[10] = 1 + rng.int(2);
    b[11] = rng.int(8);
  }
  return b;
}
