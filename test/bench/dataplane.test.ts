import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { runDataplaneBench } from '../../bench/dataplane.js';

const hasCc = spawnSync('cc', ['--version'], { stdio: 'ignore' }).status === 0;

// One NF point with short intervals: this checks that the bench runs end to end and what it reports,
// never how fast anything is.
test(
  'dataplane bench measures the relays and an NF point and prints one JSON line',
  { timeout: 600_000 },
  async () => {
    const lines: string[] = [];
    const result = await runDataplaneBench(
      { quick: true, json: true, out: (line) => lines.push(line) },
      { nfs: ['nat'], threads: [1], seconds: 0.5, warmupSeconds: 0.25 },
    );

    assert.equal(lines.length, 1);
    const printed = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.deepEqual(printed, JSON.parse(JSON.stringify(result)));

    // The C driver wherever a compiler is present; the Node one only where there is none.
    assert.equal(result.driver, hasCc ? 'c' : 'node');
    assert.ok(result.relay_pps > 0, `relay_pps ${result.relay_pps} (${JSON.stringify(result.errors)})`);
    assert.equal(result.relay_runs.length, 1);
    assert.ok(result.c_relay_pps === null || result.c_relay_pps > 0);
    assert.equal(result.packet_bytes, 36 + 20 + 8 + 64);
    assert.ok(result.machine.cpus > 0);
    assert.match(result.machine.node, /^v\d+/);

    assert.equal(result.results.length, 1);
    const point = result.results[0]!;
    assert.equal(point.nf, 'nat');
    assert.equal(point.threads, 1);
    assert.equal(point.error, undefined);
    assert.ok(point.pps > 0);
    assert.ok('ratio' in point && typeof point.ratio === 'number' && point.ratio > 0);
    assert.ok('c_ratio' in point);
    assert.equal(point.c_ratio === null, result.c_relay_pps === null);
    assert.equal(typeof point.lost, 'number');
  },
);

test('a point that cannot start reports its error and the run goes on', { timeout: 600_000 }, async () => {
  const result = await runDataplaneBench(
    { quick: true, json: true, out: () => undefined },
    // An NF type nfstate does not have: its instance exits during start.
    { nfs: ['nope' as 'nat', 'nat'], threads: [1], seconds: 0.3, warmupSeconds: 0.1 },
  );
  const [bad, good] = result.results;
  assert.equal(bad!.pps, 0);
  assert.match(bad!.error ?? '', /exited during start/);
  assert.ok(good!.pps > 0);
  assert.equal(good!.error, undefined);
});
