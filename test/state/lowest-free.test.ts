import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { LowestFree } from '../../src/state/lowest-free.js';

describe('LowestFree', { timeout: 60_000 }, () => {
  it('hands out the lowest free value, whatever was taken around it, like a scan of the range', () => {
    // Steps: take the lowest, free a value, or have a value taken outside (a forced or remote decision).
    const step = fc.oneof(
      fc.constant({ kind: 'take' as const, v: 0 }),
      fc.record({ kind: fc.constant('free' as const), v: fc.integer({ min: 0, max: 15 }) }),
      fc.record({ kind: fc.constant('outside' as const), v: fc.integer({ min: 0, max: 15 }) }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 200 }), (steps) => {
        const taken = new Set<number>();
        const free = new LowestFree(0, 15);
        for (const s of steps) {
          if (s.kind === 'take') {
            let expected = -1;
            for (let v = 0; v <= 15 && expected < 0; v++) if (!taken.has(v)) expected = v;
            assert.equal(
              free.take((v) => !taken.has(v)),
              expected,
            );
            if (expected >= 0) taken.add(expected);
          } else if (s.kind === 'free') {
            if (taken.delete(s.v)) free.offer(s.v);
          } else {
            taken.add(s.v);
          }
        }
      }),
      { interruptAfterTimeLimit: 2000 },
    );
  });

  it('keeps one heap entry per value however often it is offered', () => {
    const free = new LowestFree(0, 9);
    for (let i = 0; i < 10; i++)
      assert.equal(
        free.take(() => true),
        i,
      );
    for (let i = 0; i < 1000; i++) free.offer(3);
    assert.equal(
      free.take(() => true),
      3,
    );
    assert.equal(
      free.take(() => true),
      -1,
    );
  });
});
