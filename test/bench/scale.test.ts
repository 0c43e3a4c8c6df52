import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { runScaleBench } from '../../bench/scale.js';

const hasCc = spawnSync('cc', ['--version'], { stdio: 'ignore' }).status === 0;

// Two small points: this checks that the bench runs end to end and that each point's figures are
// there and whole, never how fast anything is.
test(
  'scale bench measures throughput and memory per flow at each flow count',
  { skip: !hasCc && 'no C compiler', timeout: 600_000 },
  async () => {
    const steps: string[] = [];
    const r = await runScaleBench({
      nf: 'nat',
      flows: [1000, 5000],
      quick: true,
      step: (s) => steps.push(s),
    });

    assert.equal(r.nf, 'nat');
    assert.equal(r.driver, 'c');
    assert.deepEqual(
      r.points.map((p) => p.flows),
      [1000, 5000],
    );
    for (const p of r.points) {
      assert.ok(p.throughput_pps > 0, `${p.flows} flows: ${p.throughput_pps} pps`);
      assert.ok(p.relay_pps > 0, `${p.flows} flows: relay ${p.relay_pps} pps`);
      assert.ok(
        Math.abs(p.ratio - p.throughput_pps / p.relay_pps) < 0.01,
        `${p.flows} flows: ratio ${p.ratio}`,
      );
      assert.ok(p.bytes_per_flow > 0, `${p.flows} flows: ${p.bytes_per_flow} B per flow`);
      assert.equal(p.lost, 0);
    }
    assert.ok(steps.includes('5000 flows: nat'));
  },
);

test('nat is refused past its port pool, before anything runs', { timeout: 600_000 }, async () => {
  await assert.rejects(
    runScaleBench({ nf: 'nat', flows: [1000, 100_000], quick: true }),
    /nat holds at most 64512/,
  );
});
