import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DropReason } from '../../src/types.js';
import { readTuple } from '../../src/nf/dispatch.js';
import {
  FLOW_HEADER_LENGTH,
  GENEVE_BASE_LENGTH,
  GENEVE_PORT,
  isCarriedFrame,
  STAMP_HEADER_LENGTH,
  STAMP_VERSION,
  StampFlag,
  StampView,
  writeFrameHeader,
  writeStampHeader,
  type StampFields,
} from '../../src/wire/geneve.js';
import { ipv4Udp } from './packets.js';

const inner = ipv4Udp({
  src: [10, 0, 0, 1],
  dst: [10, 0, 0, 2],
  srcPort: 40000,
  dstPort: 53,
  payload: new TextEncoder().encode('hello'),
});

const fields: StampFields = {
  vni: 0x123456,
  flags: StampFlag.COPY | StampFlag.REPLAY,
  epoch: 0xfedcba98,
  seq: 2 ** 40 + 7,
  timeMs: 1_700_000_000_123.456,
};

function stamped(f: StampFields = fields, pad = 0): Uint8Array {
  const buf = new Uint8Array(pad + STAMP_HEADER_LENGTH + inner.length);
  assert.equal(writeStampHeader(buf, pad, f), STAMP_HEADER_LENGTH);
  buf.set(inner, pad + STAMP_HEADER_LENGTH);
  return buf;
}

/** A Geneve header with the given options (each a full TLV) in front of the inner packet. */
function geneveWith(options: readonly Uint8Array[], proto = 0x0800): Uint8Array {
  const optLength = options.reduce((n, o) => n + o.length, 0);
  const buf = new Uint8Array(8 + optLength + inner.length);
  buf[0] = optLength / 4;
  buf[2] = proto >>> 8;
  buf[3] = proto & 0xff;
  buf[4] = 0x00;
  buf[5] = 0x00;
  buf[6] = 0x2a;
  let at = 8;
  for (const o of options) {
    buf.set(o, at);
    at += o.length;
  }
  buf.set(inner, at);
  return buf;
}

function option(cls: number, type: number, body: readonly number[]): Uint8Array {
  const o = new Uint8Array(4 + body.length);
  o[0] = cls >>> 8;
  o[1] = cls & 0xff;
  o[2] = type;
  o[3] = body.length / 4;
  o.set(body, 4);
  return o;
}

/** The nfstate option TLV exactly as writeStampHeader lays it out. */
function stampOption(f: StampFields = fields): Uint8Array {
  return stamped(f).subarray(8, STAMP_HEADER_LENGTH);
}

describe('geneve stamp header', { timeout: 60_000 }, () => {
  it('exports the documented constants', () => {
    assert.equal(GENEVE_PORT, 6081);
    assert.equal(STAMP_HEADER_LENGTH, 36);
    assert.equal(STAMP_VERSION, 1);
    assert.deepEqual(StampFlag, { COPY: 1, FORWARDED: 2, REPLAY: 4, END_OF_MOVE: 8 });
  });

  it('writes the fixed layout', () => {
    const buf = stamped();
    assert.deepEqual(
      [...buf.subarray(0, 16)],
      [0x07, 0x00, 0x08, 0x00, 0x12, 0x34, 0x56, 0x00, 0xff, 0xf0, 0x01, 0x06, 0x01, 0x05, 0x00, 0x00],
    );
    assert.deepEqual([...buf.subarray(16, 20)], [0xfe, 0xdc, 0xba, 0x98]);
    assert.deepEqual([...buf.subarray(20, 28)], [0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x07]);
    // 1_700_000_000_123_456_000 ns
    assert.deepEqual([...buf.subarray(28, 36)], [0x17, 0x97, 0x9c, 0xfe, 0x3d, 0x85, 0xca, 0x00]);
  });

  it('parses what it writes, at an offset inside a larger buffer', () => {
    const buf = stamped(fields, 5);
    const v = new StampView();
    assert.equal(v.parse(buf, 5, buf.length - 5), DropReason.NONE);
    assert.equal(v.hasStamp, true);
    assert.equal(v.headerLength, 36);
    assert.equal(v.innerOffset, 41);
    assert.equal(v.innerLength, inner.length);
    assert.equal(v.stampOffset, 17);
    assert.equal(v.vni, fields.vni);
    assert.equal(v.flags, fields.flags);
    assert.equal(v.epoch, fields.epoch);
    assert.equal(v.seq, fields.seq);
    assert.equal(v.timeMs, fields.timeMs);
    assert.deepEqual(buf.subarray(v.innerOffset, v.innerOffset + v.innerLength), inner);
  });

  it('rewrites fields in place and leaves the rest alone', () => {
    const buf = stamped();
    const v = new StampView();
    assert.equal(v.parse(buf, 0, buf.length), DropReason.NONE);
    v.setSeq(Number.MAX_SAFE_INTEGER);
    v.setTimeMs(1.5);
    v.setFlags(StampFlag.END_OF_MOVE);
    v.setEpoch(0xffffffff);
    v.setVni(0xabcdef);
    assert.equal(v.parse(buf, 0, buf.length), DropReason.NONE);
    assert.equal(v.seq, Number.MAX_SAFE_INTEGER);
    assert.equal(v.timeMs, 1.5);
    assert.equal(v.flags, StampFlag.END_OF_MOVE);
    assert.equal(v.epoch, 0xffffffff);
    assert.equal(v.vni, 0xabcdef);
    assert.equal(buf[7], 0);
    assert.equal(buf[12], STAMP_VERSION);
    assert.deepEqual(buf.subarray(36), inner);
  });

  it('clamps values a u64 cannot hold instead of corrupting neighbours', () => {
    const buf = stamped();
    const v = new StampView();
    v.parse(buf, 0, buf.length);
    v.setSeq(-5);
    assert.equal(v.seq, 0);
    v.setTimeMs(Number.NaN);
    assert.equal(v.timeMs, 0);
    v.setTimeMs(1e300);
    assert.equal(v.timeMs, 18446744073709549568 / 1e6);
    assert.equal(v.epoch, fields.epoch);
  });

  it('finds the stamp after options of other classes', () => {
    const foreign = option(0x0103, 0x05, [1, 2, 3, 4, 5, 6, 7, 8]);
    const buf = geneveWith([foreign, stampOption()]);
    const v = new StampView();
    assert.equal(v.parse(buf, 0, buf.length), DropReason.NONE);
    assert.equal(v.hasStamp, true);
    assert.equal(v.headerLength, 8 + 12 + 28);
    assert.equal(v.stampOffset, 8 + 12 + 4);
    assert.equal(v.seq, fields.seq);
    assert.equal(v.vni, 42);
  });

  it('accepts Geneve without the nfstate option, whose stamp reads as zero', () => {
    const buf = geneveWith([option(0x0103, 0x05, [])]);
    const v = new StampView();
    assert.equal(v.parse(buf, 0, buf.length), DropReason.NONE);
    assert.equal(v.hasStamp, false);
    assert.equal(v.stampOffset, -1);
    assert.equal(v.innerOffset, 12);
    assert.equal(v.seq, 0);
    assert.equal(v.timeMs, 0);
    v.setSeq(9);
    v.setFlags(0xff);
    assert.deepEqual(buf.subarray(12), inner);
    const bare = geneveWith([]);
    assert.equal(v.parse(bare, 0, bare.length), DropReason.NONE);
    assert.equal(v.headerLength, 8);
    assert.equal(v.innerLength, inner.length);
  });

  it('rejects bad input by reason', () => {
    const v = new StampView();
    const good = stamped();
    const cases: [string, Uint8Array, DropReason, number?][] = [
      ['shorter than the base header', good.subarray(0, 7), DropReason.TRUNCATED],
      ['shorter than OptLen', good.subarray(0, 35), DropReason.TRUNCATED],
      ['Geneve version 1', patch(good, 0, 0x47), DropReason.BAD_VERSION],
      ['stamp version 2', patch(good, 12, 2), DropReason.BAD_VERSION],
      ['protocol type IPv6', patch(good, 2, 0x86), DropReason.BAD_HEADER],
      ['option overrunning OptLen', patch(good, 11, 7), DropReason.BAD_HEADER],
      ['stamp option of 5 words', patch(patch(good, 11, 5), 0, 6), DropReason.BAD_LENGTH],
      ['empty stamp option', geneveWith([option(0xfff0, 0x01, [])]), DropReason.BAD_LENGTH],
      ['two stamp options', geneveWith([stampOption(), stampOption()]), DropReason.BAD_HEADER],
      // 0x7d000000 · 2^32 ns is 2^53 µs: a flow's incarnation, made from the time, would not be exact.
      ['a time past the year 2255', patch(good, 28, 0x7d), DropReason.BAD_HEADER],
      ['a time just before it', patch(patch(good, 28, 0x7c), 29, 0xff), DropReason.NONE],
      ['O bit set', patch(good, 1, 0x80), DropReason.UNSUPPORTED],
      ['unknown critical option', geneveWith([option(0x0103, 0x85, [])]), DropReason.UNSUPPORTED],
      ['length past the buffer', good, DropReason.BAD_LENGTH, good.length + 1],
      ['negative length', good, DropReason.BAD_LENGTH, -1],
    ];
    for (const [name, buf, want, length] of cases) {
      assert.equal(v.parse(buf, 0, length ?? buf.length), want, name);
    }
    assert.equal(v.parse(good, -1, 8), DropReason.BAD_LENGTH, 'negative offset');
    assert.equal(v.parse(good, 0.5, 8), DropReason.BAD_LENGTH, 'fractional offset');
    // A critical option of the stamp's own class but another type is unknown, not the stamp.
    const critical = geneveWith([option(0xfff0, 0x81, [0, 0, 0, 0])]);
    assert.equal(v.parse(critical, 0, critical.length), DropReason.UNSUPPORTED);
  });

  it('round-trips any fields', () => {
    const v = new StampView();
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffff }),
        fc.integer({ min: 0, max: 0xff }),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.maxSafeNat(),
        fc.integer({ min: 0, max: 4_102_444_800_000_000 }),
        (vni, flags, epoch, seq, us) => {
          const timeMs = us / 1000;
          const buf = stamped({ vni, flags, epoch, seq, timeMs });
          assert.equal(v.parse(buf, 0, buf.length), DropReason.NONE);
          assert.deepEqual([v.vni, v.flags, v.epoch, v.seq], [vni, flags, epoch, seq]);
          // Nanoseconds past 2^53 lose their lowest bits; the error stays below a microsecond.
          assert.ok(Math.abs(v.timeMs - timeMs) < 1e-3, `${v.timeMs} vs ${timeMs}`);
          // Between 2006 and 2039 a time read and written back reads the same (see StampView.timeMs).
          if (timeMs >= 1.16e12 && timeMs <= 2.19e12) {
            const again = v.timeMs;
            v.setTimeMs(again);
            assert.equal(v.timeMs, again);
          }
        },
      ),
      { numRuns: 2000, interruptAfterTimeLimit: 2000 },
    );
  });

  it('never throws on random bytes', () => {
    const v = new StampView();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 96 }), fc.nat(8), fc.nat(100), (bytes, offset, length) => {
        const r = v.parse(bytes, offset, length);
        assert.ok(Object.values(DropReason).includes(r));
        if (r === DropReason.NONE) readAll(v);
      }),
      { numRuns: 5000, interruptAfterTimeLimit: 2000 },
    );
  });

  it('walks arbitrary option lists without throwing or reading past OptLen', () => {
    const v = new StampView();
    const opt = fc
      .tuple(
        fc.constantFrom(0xfff0, 0x0103, 0xffff),
        fc.constantFrom(0x01, 0x02, 0x81),
        fc.uint8Array({ maxLength: 8 }).map((b) => b.subarray(0, b.length & ~3)),
      )
      .map(([cls, type, body]) => option(cls, type, [...body]));
    fc.assert(
      fc.property(
        fc.array(fc.oneof(opt, fc.constant(stampOption())), { maxLength: 4 }),
        fc.integer({ min: -2, max: 2 }),
        (options, skew) => {
          const buf = geneveWith(options);
          const declared = buf[0]! + skew;
          if (declared < 0 || declared > 63) return;
          buf[0] = declared;
          const r = v.parse(buf, 0, buf.length);
          const stamps = options.filter((o) => o[0] === 0xff && o[1] === 0xf0 && o[2] === 0x01).length;
          if (r === DropReason.NONE) {
            readAll(v);
            assert.ok(v.headerLength === 8 + declared * 4 && v.innerOffset <= buf.length);
            if (skew === 0) assert.equal(v.hasStamp, stamps === 1);
            if (v.hasStamp) assert.ok(v.stampOffset + 24 <= v.innerOffset);
          }
        },
      ),
      { numRuns: 2000, interruptAfterTimeLimit: 2000 },
    );
  });

  it('never throws on mutations of a valid header, and keeps inner bounds inside the packet', () => {
    const v = new StampView();
    const base = stamped();
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(STAMP_HEADER_LENGTH - 1), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.nat(base.length),
        (edits, length) => {
          const buf = base.slice();
          for (const [at, value] of edits) buf[at] = value;
          const r = v.parse(buf, 0, length);
          if (r === DropReason.NONE) {
            readAll(v);
            assert.ok(v.innerOffset >= 8 && v.innerOffset + v.innerLength === length);
            if (v.hasStamp) assert.ok(v.stampOffset + 24 <= v.innerOffset);
          }
        },
      ),
      { numRuns: 5000, interruptAfterTimeLimit: 2000 },
    );
  });
});

function patch(buf: Uint8Array, at: number, value: number): Uint8Array {
  const copy = buf.slice();
  copy[at] = value;
  return copy;
}

function readAll(v: StampView): void {
  for (const n of [v.vni, v.flags, v.epoch, v.seq, v.timeMs, v.headerLength, v.innerLength]) {
    assert.ok(Number.isFinite(n) && n >= 0);
  }
}

describe('geneve flow option', { timeout: 60_000 }, () => {
  const flow = { srcIp: 0x0a010002, dstIp: 0xc633640a, srcPort: 40000, dstPort: 5001, proto: 17 };

  function withFlow(): Uint8Array {
    const buf = new Uint8Array(FLOW_HEADER_LENGTH + inner.length);
    assert.equal(writeStampHeader(buf, 0, fields, flow), FLOW_HEADER_LENGTH);
    buf.set(inner, FLOW_HEADER_LENGTH);
    return buf;
  }

  it('names the connection right after the stamp, which still reads the same', () => {
    const buf = withFlow();
    assert.equal(buf[0], (FLOW_HEADER_LENGTH - 8) / 4);
    const v = new StampView();
    assert.equal(v.parse(buf, 0, buf.length), DropReason.NONE);
    assert.equal(v.hasFlow, true);
    assert.equal(v.seq, fields.seq);
    assert.equal(v.innerOffset, FLOW_HEADER_LENGTH);
    const into = { srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 };
    assert.equal(v.flowInto(into, 17), into);
    assert.deepEqual(into, flow);
    const plain = stamped();
    assert.equal(v.parse(plain, 0, plain.length), DropReason.NONE);
    assert.equal(v.hasFlow, false);
    assert.deepEqual(v.flowInto({ srcIp: 1, dstIp: 2, srcPort: 3, dstPort: 4, proto: 5 }, 17), {
      srcIp: 1,
      dstIp: 2,
      srcPort: 3,
      dstPort: 4,
      proto: 5,
    });
  });

  it('two flow options are BAD_HEADER, one of the wrong size BAD_LENGTH', () => {
    const body = [10, 1, 0, 2, 198, 51, 100, 10, 0x9c, 0x40, 0x13, 0x89];
    const v = new StampView();
    const two = geneveWith([stampOption(), option(0xfff0, 0x02, body), option(0xfff0, 0x02, body)]);
    assert.equal(v.parse(two, 0, two.length), DropReason.BAD_HEADER);
    const short = geneveWith([stampOption(), option(0xfff0, 0x02, body.slice(0, 8))]);
    assert.equal(v.parse(short, 0, short.length), DropReason.BAD_LENGTH);
  });

  it('the NF instance reads its flow, not its 5-tuple, from a datagram that names one', () => {
    const t = { srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 };
    assert.equal(readTuple(withFlow(), t), true);
    assert.deepEqual(t, flow);
    assert.equal(readTuple(stamped(), t), true);
    assert.deepEqual(t, { srcIp: 0x0a000001, dstIp: 0x0a000002, srcPort: 40000, dstPort: 53, proto: 17 });
  });

  it('a carried Ethernet frame has the bare base header with protocol 0x6558', () => {
    const buf = new Uint8Array(GENEVE_BASE_LENGTH + 14);
    assert.equal(writeFrameHeader(buf, 0, 0x10203), GENEVE_BASE_LENGTH);
    assert.deepEqual([...buf.subarray(0, 8)], [0, 0, 0x65, 0x58, 0x01, 0x02, 0x03, 0]);
    assert.equal(isCarriedFrame(buf), true);
    assert.equal(isCarriedFrame(buf.subarray(0, 8)), false, 'a header alone carries nothing');
    assert.equal(isCarriedFrame(stamped()), false);
    const v = new StampView();
    assert.equal(v.parse(buf, 0, buf.length), DropReason.BAD_HEADER, 'not a packet to stamp');
  });
});
