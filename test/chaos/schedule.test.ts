import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_KINDS, FAULT_KINDS, planFaults } from '../../src/chaos/schedule.js';

describe('planFaults', { timeout: 60_000 }, () => {
  it('is the same for the same seed and differs for another', () => {
    const a = planFaults({ durationMs: 60_000, seed: 3, kinds: DEFAULT_KINDS });
    assert.deepEqual(planFaults({ durationMs: 60_000, seed: 3, kinds: DEFAULT_KINDS }), a);
    assert.notDeepEqual(planFaults({ durationMs: 60_000, seed: 4, kinds: DEFAULT_KINDS }), a);
  });

  it('plans one fault per 5 s, in order, between 10 % and 80 % of the run', () => {
    for (const seed of [1, 2, 3, 99]) {
      const plan = planFaults({ durationMs: 60_000, seed, kinds: DEFAULT_KINDS });
      assert.equal(plan.length, 12);
      for (let i = 0; i < plan.length; i++) {
        assert.ok(plan[i]!.at_ms >= 6000 && plan[i]!.at_ms <= 48_000, JSON.stringify(plan[i]));
        if (i > 0) assert.ok(plan[i]!.at_ms > plan[i - 1]!.at_ms);
      }
    }
    assert.equal(planFaults({ durationMs: 1000, seed: 1, kinds: ['kill'] }).length, 1);
    assert.deepEqual(planFaults({ durationMs: 60_000, seed: 1, kinds: [] }), []);
  });

  it('plans every kind once before any twice, and never the ingress kill unless asked', () => {
    const plan = planFaults({
      durationMs: 60_000,
      seed: 5,
      kinds: DEFAULT_KINDS,
      count: DEFAULT_KINDS.length + 3,
    });
    const first = plan.slice(0, DEFAULT_KINDS.length).map((f) => f.kind);
    assert.deepEqual([...first].sort(), [...DEFAULT_KINDS].sort());
    assert.ok(!DEFAULT_KINDS.includes('ingress-kill'));
    assert.ok(FAULT_KINDS.includes('ingress-kill'));
  });
});
