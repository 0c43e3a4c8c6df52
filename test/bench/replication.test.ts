import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runReplicationBench } from '../../bench/replication.js';

// A short run: this checks that the bench runs end to end and what it reports, never how fast anything is.
test(
  'replication bench times each burst to its commit and prints one JSON line',
  { timeout: 60_000 },
  async () => {
    const lines: string[] = [];
    const points = await runReplicationBench({ rounds: 5, json: true, out: (line) => lines.push(line) });
    assert.equal(lines.length, 1);
    assert.deepEqual(
      (JSON.parse(lines[0]!) as { points: unknown[] }).points,
      JSON.parse(JSON.stringify(points)),
    );
    assert.deepEqual(
      points.map((p) => p.burst),
      [1, 2, 8],
    );
    for (const p of points) {
      assert.equal(p.rounds, 5);
      assert.ok(
        p.commit_p50_ms > 0 && p.commit_p50_ms <= p.commit_p90_ms && p.commit_p90_ms <= p.commit_max_ms,
      );
    }
    assert.equal(points[0]!.vs_single, 1);
  },
);
