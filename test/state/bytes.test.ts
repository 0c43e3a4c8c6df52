import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { NfsError } from '../../src/errors.js';
import { ByteReader, ByteWriter } from '../../src/state/bytes.js';

type Op = { k: 'u8' | 'u16' | 'u32' | 'u53' | 'f64'; v: number } | { k: 'bytes'; v: Uint8Array };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ k: fc.constant('u8' as const), v: fc.integer({ min: 0, max: 0xff }) }),
  fc.record({ k: fc.constant('u16' as const), v: fc.integer({ min: 0, max: 0xffff }) }),
  fc.record({ k: fc.constant('u32' as const), v: fc.integer({ min: 0, max: 0xffffffff }) }),
  fc.record({ k: fc.constant('u53' as const), v: fc.maxSafeNat() }),
  fc.record({ k: fc.constant('f64' as const), v: fc.double({ noNaN: true }) }),
  fc.record({ k: fc.constant('bytes' as const), v: fc.uint8Array({ maxLength: 40 }) }),
);

describe('ByteWriter and ByteReader', { timeout: 60_000 }, () => {
  it('round-trip any sequence of fields, growing from a tiny buffer', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const w = new ByteWriter(1);
        for (const o of ops) {
          if (o.k === 'bytes') w.bytes(o.v);
          else w[o.k](o.v);
        }
        const r = new ByteReader(w.view());
        for (const o of ops) {
          if (o.k === 'bytes') assert.deepEqual(r.bytes(), o.v);
          else assert.equal(r[o.k](), o.v);
        }
        assert.equal(r.remaining, 0);
      }),
      { numRuns: 300, interruptAfterTimeLimit: 2000 },
    );
  });

  it('reject reading past the end with a clear error', () => {
    const w = new ByteWriter();
    w.u16(7);
    const r = new ByteReader(w.view());
    assert.throws(() => r.u32(), NfsError);
  });
});
