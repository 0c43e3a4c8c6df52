/**
 * Fuzzing the control and replication frame decoder (src/wire/frame.ts): streams of authenticated frames
 * cut at any byte, damaged at any byte, or replaced by garbage. The decoder must deliver exactly the
 * frames that were sent under the key (never an altered one), count every frame it drops by reason,
 * never throw, and refuse a length field above its limit before it buffers anything for it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { encodeFrame, FRAME_OVERHEAD, FrameDecoder, type FrameDropReason } from '../../src/wire/frame.js';
import { concat, mutate, report, Rng, wireSample } from './corpus.js';

const KEY = new TextEncoder().encode('nfstate-fuzz-frame-key');
const MAX_FRAME = 4096;
const STREAMS = 240;
const FRAMES_PER_STREAM = 30;

interface Sent {
  type: number;
  seq: number;
  body: Uint8Array;
}

function drops(d: FrameDecoder): number {
  return d.drops.oversized + d.drops.malformed + d.drops.bad_auth + d.drops.replayed;
}

/** What the decoder has buffered for a frame split across chunks (0 when nothing). */
function buffered(d: FrameDecoder): number {
  return (d as unknown as { partial: Uint8Array | undefined }).partial?.length ?? 0;
}

/** Pushes `stream` in the chunks that `cuts` mark and returns what was delivered. */
function decode(d: FrameDecoder, stream: Uint8Array, cuts: readonly number[]): Sent[] {
  const got: Sent[] = [];
  const at = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
  let from = 0;
  for (const to of [...at, stream.length]) {
    d.push(stream.subarray(from, to), (type, seq, body) => {
      got.push({ type, seq, body: body.slice() });
    });
    from = to;
  }
  return got;
}

/** Whether `got` is `sent` with some frames left out, in order and each byte for byte. */
function isSubsequence(got: readonly Sent[], sent: readonly Sent[]): boolean {
  let i = 0;
  for (const g of got) {
    while (i < sent.length && !same(sent[i]!, g)) i++;
    if (i === sent.length) return false;
    i++;
  }
  return true;
}

function same(a: Sent, b: Sent): boolean {
  return a.type === b.type && a.seq === b.seq && Buffer.from(a.body).equals(Buffer.from(b.body));
}

const framesArb = fc.array(
  fc.record({ type: fc.integer({ min: 0, max: 255 }), body: fc.uint8Array({ maxLength: 96 }) }),
  { minLength: 1, maxLength: 12 },
);

function encodeAll(
  frames: readonly { type: number; body: Uint8Array }[],
  firstSeq = 1,
): {
  sent: Sent[];
  stream: Uint8Array;
} {
  const sent = frames.map((f, i) => ({ type: f.type, seq: firstSeq + i, body: f.body }));
  return { sent, stream: concat(...sent.map((s) => encodeFrame(s.type, s.seq, s.body, KEY))) };
}

const FC = { seed: 0x5eed_0301, numRuns: 1000, interruptAfterTimeLimit: 10_000 };

describe('fuzz: control and replication frames', { timeout: 60_000 }, () => {
  it('delivers every frame sent, whatever the chunking', () => {
    fc.assert(
      fc.property(framesArb, fc.array(fc.nat(), { maxLength: 20 }), (frames, cuts) => {
        const { sent, stream } = encodeAll(frames);
        const d = new FrameDecoder({ key: KEY, maxFrame: MAX_FRAME });
        assert.deepEqual(decode(d, stream, cuts), sent);
        assert.equal(drops(d), 0);
        assert.equal(buffered(d), 0);
      }),
      FC,
    );
  });

  it('delivers the whole frames of a cut stream and nothing else', () => {
    fc.assert(
      fc.property(framesArb, fc.nat(), (frames, cut) => {
        const { sent, stream } = encodeAll(frames);
        const end = cut % (stream.length + 1);
        let whole = 0;
        for (let at = 0, i = 0; i < sent.length; i++) {
          at += FRAME_OVERHEAD + sent[i]!.body.length;
          if (at <= end) whole++;
        }
        const d = new FrameDecoder({ key: KEY, maxFrame: MAX_FRAME });
        assert.deepEqual(decode(d, stream.subarray(0, end), []), sent.slice(0, whole));
        assert.equal(d.failed || drops(d) > 0, false);
      }),
      FC,
    );
  });

  it('drops exactly the frame a changed byte falls in, unless the byte is a length field', () => {
    fc.assert(
      fc.property(framesArb, fc.nat(), fc.integer({ min: 1, max: 255 }), fc.nat(), (frames, at, xor, cut) => {
        const { sent, stream } = encodeAll(frames);
        const i = at % stream.length;
        const bad = Uint8Array.from(stream);
        bad[i]! ^= xor;
        const d = new FrameDecoder({ key: KEY, maxFrame: MAX_FRAME });
        const got = decode(d, bad, [cut]);
        assert.ok(isSubsequence(got, sent), 'a delivered frame is one that was sent');
        let start = 0;
        let hit = 0;
        while (start + FRAME_OVERHEAD + sent[hit]!.body.length <= i)
          start += FRAME_OVERHEAD + sent[hit++]!.body.length;
        if (i - start >= 4) {
          assert.equal(got.length, sent.length - 1);
          assert.deepEqual(d.drops, { oversized: 0, malformed: 0, bad_auth: 1, replayed: 0 });
        } else {
          // The length changed: the frames before it arrive, the frame itself never does (its tag is now
          // read from other bytes), and what follows arrives only if it is found intact.
          assert.deepEqual(got.slice(0, hit), sent.slice(0, hit));
          assert.ok(!got.some((g) => same(g, sent[hit]!)));
        }
      }),
      FC,
    );
  });

  it('refuses a frame sent twice, or with a lower sequence number, and carries on', () => {
    fc.assert(
      fc.property(framesArb, fc.nat(), (frames, pick) => {
        const { sent, stream } = encodeAll(frames, 10);
        const again = sent[pick % sent.length]!;
        const d = new FrameDecoder({ key: KEY, maxFrame: MAX_FRAME });
        const tail = encodeAll([{ type: 1, body: new Uint8Array(1) }], sent.length + 10);
        const got = decode(
          d,
          concat(stream, encodeFrame(again.type, again.seq, again.body, KEY), tail.stream),
          [],
        );
        assert.deepEqual(got, [...sent, ...tail.sent]);
        assert.deepEqual(d.drops, { oversized: 0, malformed: 0, bad_auth: 0, replayed: 1 });
      }),
      FC,
    );
  });

  it('decides on a length field as soon as its four bytes are in, before buffering anything', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.integer({ min: 0, max: 64 }),
          fc.integer({ min: 0, max: 1 << 20 }),
          fc.integer({ min: 0, max: 0xffffffff }),
        ),
        fc.integer({ min: FRAME_OVERHEAD, max: 1 << 20 }),
        fc.boolean(),
        (length, maxFrame, byteByByte) => {
          const d = new FrameDecoder({ key: KEY, maxFrame });
          const head = Uint8Array.of(length >>> 24, length >>> 16, length >>> 8, length);
          if (byteByByte) for (const b of head) d.push(Uint8Array.of(b), () => assert.fail('no frame'));
          else d.push(head, () => assert.fail('no frame'));
          const oversized = length + 4 > maxFrame;
          const malformed = !oversized && length < FRAME_OVERHEAD - 4;
          assert.equal(d.failed, oversized || malformed);
          assert.equal(d.drops.oversized, oversized ? 1 : 0);
          assert.equal(d.drops.malformed, malformed ? 1 : 0);
          // A refused length buffers nothing; an accepted one at most the frame it announced.
          assert.equal(buffered(d), d.failed ? 0 : length);
          // Once failed, later input is ignored: no frame, no buffering, no new drops.
          if (d.failed) {
            d.push(encodeFrame(1, 1, new Uint8Array(8), KEY), () => assert.fail('no frame after failing'));
            assert.deepEqual([drops(d), buffered(d)], [1, 0]);
          }
        },
      ),
      FC,
    );
  });

  it('refuses a frame that claims 2^31 bytes at once, and buffers nothing for it', (t) => {
    const before = process.memoryUsage().arrayBuffers;
    const data = new Uint8Array(64 * 1024).fill(0x41);
    const decoders: FrameDecoder[] = [];
    for (let i = 0; i < 2000; i++) {
      const d = new FrameDecoder({ key: KEY, maxFrame: 16 << 20 });
      d.push(Uint8Array.of(0x80, 0, 0, 0), () => assert.fail('no frame'));
      assert.equal(d.failed, true);
      assert.equal(d.drops.oversized, 1);
      d.push(data, () => assert.fail('no frame'));
      assert.equal(buffered(d), 0);
      decoders.push(d);
    }
    const grown = process.memoryUsage().arrayBuffers - before;
    // 2000 buffers of 2 GiB would not fit in any machine; even one 16 MiB frame would show here.
    assert.ok(grown < 8 << 20, `array buffers grew by ${grown} bytes`);
    // At the limit: the largest accepted frame is buffered, one byte more is refused.
    const at = new FrameDecoder({ key: KEY, maxFrame: 4096 });
    at.push(Uint8Array.of(0, 0, 0x0f, 0xfc, 1), () => assert.fail('not complete'));
    assert.equal(at.failed, false);
    assert.equal(buffered(at), 4092);
    const over = new FrameDecoder({ key: KEY, maxFrame: 4096 });
    over.push(Uint8Array.of(0, 0, 0x0f, 0xfd), () => assert.fail('no frame'));
    assert.deepEqual([over.failed, over.drops.oversized], [true, 1]);
    report(t, 'frame oversized', { decoders: decoders.length, arrayBufferGrowth: Math.max(0, grown) });
  });

  it(`delivers only authentic frames from ${STREAMS * FRAMES_PER_STREAM} frames in damaged and random streams`, (t) => {
    const rng = new Rng(0x5eed_0302);
    const sample = wireSample('frame-hmac.hex');
    const sampleKey = new TextEncoder().encode('nfstate-frame-fixture-key');
    let frames = 0;
    let delivered = 0;
    let failed = 0;
    const dropped: Record<FrameDropReason, number> = { oversized: 0, malformed: 0, bad_auth: 0, replayed: 0 };
    for (let s = 0; s < STREAMS; s++) {
      const kind = s % 4;
      const key = kind === 3 ? sampleKey : KEY;
      const sent: Sent[] = [];
      const parts: Uint8Array[] = [];
      for (let i = 0; i < FRAMES_PER_STREAM; i++) {
        const frame =
          kind === 3
            ? sample
            : encodeFrame(rng.int(256), i + 1, rng.bytes(rng.int(kind === 2 ? 400 : 64)), KEY);
        const seq = kind === 3 ? 1 : i + 1;
        if (kind !== 3 || i === 0)
          sent.push({ type: frame[4]!, seq, body: frame.slice(13, frame.length - 16) });
        // Kind 0: some frames damaged; 1: random bytes between frames; 2: long frames, small chunks.
        if (kind === 0 && rng.int(3) === 0) parts.push(mutate(frame, rng));
        else parts.push(frame);
        if (kind === 1 && rng.int(4) === 0) parts.push(rng.bytes(rng.int(40)));
      }
      frames += FRAMES_PER_STREAM;
      const stream = concat(...parts);
      const cuts = Array.from({ length: kind === 2 ? 200 : 10 }, () => rng.int(stream.length + 1));
      const d = new FrameDecoder({ key, maxFrame: MAX_FRAME });
      const got = decode(d, stream, cuts);
      assert.ok(isSubsequence(got, sent), `stream ${s}: a delivered frame is one that was sent`);
      assert.equal(d.frames, got.length);
      assert.ok(buffered(d) <= MAX_FRAME);
      if (kind === 2 || kind === 3) assert.equal(got.length, kind === 3 ? 1 : FRAMES_PER_STREAM);
      if (kind === 3) assert.equal(d.drops.replayed, FRAMES_PER_STREAM - 1);
      delivered += got.length;
      if (d.failed) failed++;
      for (const r of Object.keys(dropped) as FrameDropReason[]) dropped[r] += d.drops[r];
    }
    // Random bytes decoded as a stream of their own: never a frame, never an exception.
    let garbage = 0;
    for (let i = 0; i < 2000; i++) {
      const d = new FrameDecoder({ key: KEY, maxFrame: MAX_FRAME });
      decode(d, rng.bytes(rng.int(200)), [rng.int(200)]);
      assert.equal(d.frames, 0);
      garbage++;
    }
    assert.ok(frames >= 7000 && delivered > 0 && dropped.bad_auth > 0);
    report(t, 'frame', {
      properties: 5 * FC.numRuns,
      frames,
      delivered,
      garbageStreams: garbage,
      failedStreams: failed,
      ...dropped,
    });
  });
});
