import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runGlobalBench } from '../../bench/global.js';

// A short run of both stores: this checks that the bench runs end to end against a real etcd and what it
// reports, never how fast anything is.
test(
  'global bench measures the local sequencer and a 3-member etcd and prints one JSON line',
  { timeout: 600_000 },
  async () => {
    const lines: string[] = [];
    const points = await runGlobalBench({
      writers: 2,
      batch: 10,
      seconds: 0.3,
      json: true,
      out: (line) => lines.push(line),
    });
    assert.equal(lines.length, 1);
    const printed = JSON.parse(lines[0]!) as { points: unknown[]; etcd_vs_local: number };
    assert.deepEqual(printed.points, JSON.parse(JSON.stringify(points)));
    assert.deepEqual(
      points.map((p) => p.store),
      ['local', 'etcd'],
    );
    for (const p of points) {
      assert.ok(p.updates_per_s > 0 && p.batches_per_s > 0, JSON.stringify(p));
      assert.equal(p.writers, 2);
      assert.equal(p.batch, 10);
    }
    assert.ok(printed.etcd_vs_local > 0);
  },
);
