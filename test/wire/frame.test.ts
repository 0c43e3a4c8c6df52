import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { NfsError } from '../../src/errors.js';
import { FRAME_OVERHEAD, FrameDecoder, encodeFrame } from '../../src/wire/frame.js';

const key = new TextEncoder().encode('cluster-key-for-frame-tests');
const MAX = 4096;

interface Got {
  type: number;
  seq: number;
  body: number[];
}

function decodeAll(chunks: Iterable<Uint8Array>, dec = new FrameDecoder({ key, maxFrame: MAX })): Got[] {
  const got: Got[] = [];
  for (const c of chunks) dec.push(c, (type, seq, body) => got.push({ type, seq, body: [...body] }));
  return got;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Splits `bytes` at the given cut points (any order, duplicates allowed). */
function split(bytes: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  return out;
}

const frameArb = fc.record({
  type: fc.integer({ min: 0, max: 255 }),
  body: fc.uint8Array({ maxLength: 200 }),
});

describe('control frames', { timeout: 60_000 }, () => {
  it('lays out length, type, sequence, body and a truncated HMAC', () => {
    const body = new Uint8Array([0xaa, 0xbb, 0xcc]);
    const f = encodeFrame(7, 2 ** 32 + 1, body, key);
    assert.equal(FRAME_OVERHEAD, 29);
    assert.equal(f.length, FRAME_OVERHEAD + 3);
    assert.deepEqual([...f.subarray(0, 16)], [0, 0, 0, 28, 7, 0, 0, 0, 1, 0, 0, 0, 1, 0xaa, 0xbb, 0xcc]);
    const mac = createHmac('sha256', key).update(f.subarray(4, 16)).digest();
    assert.deepEqual(f.subarray(16), new Uint8Array(mac.subarray(0, 16)));
  });

  it('decodes frames split at every byte and many per chunk', () => {
    const frames = [
      encodeFrame(1, 1, new Uint8Array(0), key),
      encodeFrame(2, 2, new Uint8Array([1, 2, 3]), key),
      encodeFrame(255, 10, new Uint8Array(300).fill(9), key),
    ];
    const stream = concat(frames);
    const want: Got[] = [
      { type: 1, seq: 1, body: [] },
      { type: 2, seq: 2, body: [1, 2, 3] },
      { type: 255, seq: 10, body: new Array<number>(300).fill(9) },
    ];
    assert.deepEqual(decodeAll([stream]), want);
    const bytes = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
    assert.deepEqual(decodeAll(bytes), want);
    assert.deepEqual(decodeAll([new Uint8Array(0), ...frames, new Uint8Array(0)]), want);
  });

  it('yields the same frames for any fragmentation', () => {
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (specs, cuts) => {
          const stream = concat(specs.map((s, i) => encodeFrame(s.type, i + 1, s.body, key)));
          const want = specs.map((s, i) => ({ type: s.type, seq: i + 1, body: [...s.body] }));
          const dec = new FrameDecoder({ key, maxFrame: MAX });
          assert.deepEqual(decodeAll(split(stream, cuts), dec), want);
          assert.equal(dec.frames, specs.length);
          assert.equal(dec.failed, false);
        },
      ),
      { numRuns: 300, interruptAfterTimeLimit: 2000 },
    );
  });

  it('drops a frame whose tag, body or header was tampered with, and keeps going', () => {
    const a = encodeFrame(1, 1, new Uint8Array([1, 2, 3]), key);
    const b = encodeFrame(1, 2, new Uint8Array([4, 5, 6]), key);
    const c = encodeFrame(1, 3, new Uint8Array([7]), key);
    for (const at of [4, 5, 12, 13, a.length - 1]) {
      const bad = a.slice();
      bad[at]! ^= 0x01;
      const dec = new FrameDecoder({ key, maxFrame: MAX });
      const got = decodeAll([concat([bad, b, c])], dec);
      assert.deepEqual(
        got.map((g) => g.seq),
        [2, 3],
        `flip at ${at}`,
      );
      assert.equal(dec.drops.bad_auth, 1);
      assert.equal(dec.failed, false);
    }
    const other = new FrameDecoder({ key: new TextEncoder().encode('another key'), maxFrame: MAX });
    assert.deepEqual(decodeAll([a], other), []);
    assert.equal(other.drops.bad_auth, 1);
  });

  it('drops replayed and out-of-order sequence numbers', () => {
    const dec = new FrameDecoder({ key, maxFrame: MAX });
    const f = (seq: number) => encodeFrame(3, seq, new Uint8Array([seq & 0xff]), key);
    const got = decodeAll([f(0), f(5), f(5), f(4), f(6), f(0)], dec);
    assert.deepEqual(
      got.map((g) => g.seq),
      [0, 5, 6],
    );
    assert.equal(dec.drops.replayed, 3);
  });

  it('drops an authentic sequence beyond 2^53 as malformed', () => {
    const f = encodeFrame(3, 1, new Uint8Array(0), key);
    f[5] = 0xff; // high word of the sequence
    const mac = createHmac('sha256', key).update(f.subarray(4, 13)).digest();
    f.set(mac.subarray(0, 16), 13);
    const dec = new FrameDecoder({ key, maxFrame: MAX });
    assert.deepEqual(decodeAll([f, encodeFrame(3, 2, new Uint8Array(0), key)], dec).length, 1);
    assert.equal(dec.drops.malformed, 1);
    assert.equal(dec.failed, false);
  });

  it('fails on a huge length before buffering anything', () => {
    const dec = new FrameDecoder({ key, maxFrame: MAX });
    const before = process.memoryUsage().arrayBuffers;
    dec.push(new Uint8Array([0x80, 0, 0, 0]), () => assert.fail('no frame expected'));
    assert.equal(dec.failed, true);
    assert.equal(dec.drops.oversized, 1);
    // A 2 GiB body would show up here had it been allocated.
    assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20);
    // Later input, even a valid frame, is ignored.
    assert.deepEqual(decodeAll([encodeFrame(1, 1, new Uint8Array(0), key)], dec), []);
    assert.equal(dec.frames, 0);
  });

  it('fails on a length split across chunks as well', () => {
    const dec = new FrameDecoder({ key, maxFrame: MAX });
    const good = encodeFrame(1, 1, new Uint8Array(0), key);
    dec.push(concat([good, new Uint8Array([0, 0])]), () => undefined);
    assert.equal(dec.failed, false);
    dec.push(new Uint8Array([0x10, 0x00]), () => undefined);
    assert.equal(dec.failed, true);
    assert.equal(dec.drops.oversized, 1);
  });

  it('enforces maxFrame on the whole frame, inclusive', () => {
    const body = new Uint8Array(MAX - FRAME_OVERHEAD);
    assert.equal(decodeAll([encodeFrame(1, 1, body, key)]).length, 1);
    const dec = new FrameDecoder({ key, maxFrame: MAX });
    assert.deepEqual(decodeAll([encodeFrame(1, 1, new Uint8Array(body.length + 1), key)], dec), []);
    assert.equal(dec.drops.oversized, 1);
  });

  it('fails on a length too small to hold a frame', () => {
    for (const length of [0, 1, 24]) {
      const dec = new FrameDecoder({ key, maxFrame: MAX });
      dec.push(new Uint8Array([0, 0, 0, length, ...new Array<number>(40).fill(0)]), () => undefined);
      assert.equal(dec.failed, true, `length ${length}`);
      assert.equal(dec.drops.malformed, 1);
    }
  });

  it('never throws on random input, whole or fragmented', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
        const dec = new FrameDecoder({ key, maxFrame: 256 });
        for (const c of split(bytes, cuts)) dec.push(c, () => undefined);
        const dropped = Object.values(dec.drops).reduce((a, b) => a + b, 0);
        assert.ok(dec.frames === 0 && (dropped > 0 || !dec.failed));
      }),
      { numRuns: 1000, interruptAfterTimeLimit: 2000 },
    );
  });

  it('fails the stream when the handler throws, and rethrows', () => {
    const dec = new FrameDecoder({ key, maxFrame: MAX });
    const two = concat([
      encodeFrame(1, 1, new Uint8Array(0), key),
      encodeFrame(1, 2, new Uint8Array(0), key),
    ]);
    assert.throws(
      () => {
        dec.push(two, () => {
          throw new Error('handler bug');
        });
      },
      { message: 'handler bug' },
    );
    assert.equal(dec.failed, true);
  });

  it('rejects programming errors on the sending side and bad configuration', () => {
    const empty = new Uint8Array(0);
    assert.throws(() => encodeFrame(256, 1, empty, key), { code: 'NFS_ERR_FRAME' });
    assert.throws(() => encodeFrame(1, -1, empty, key), { code: 'NFS_ERR_FRAME' });
    assert.throws(() => encodeFrame(1, 2 ** 53, empty, key), { code: 'NFS_ERR_FRAME' });
    assert.throws(() => encodeFrame(1, 1, empty, empty), { code: 'NFS_ERR_AUTH' });
    assert.throws(() => new FrameDecoder({ key: empty, maxFrame: MAX }), NfsError);
    assert.throws(() => new FrameDecoder({ key, maxFrame: 10 }), { code: 'NFS_ERR_CONFIG' });
  });
});
