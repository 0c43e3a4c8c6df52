import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ChaosReport } from '../../src/chaos/chaos.js';
import { nfstate } from '../helpers/cli.js';

describe('nfstate chaos', { timeout: 600_000 }, () => {
  it('a short run with six faults of the schedule ends clean, each fault got over', async () => {
    const r = await nfstate(['chaos', '--duration', '20', '--seed', '2', '--count', '6', '--json'], 300_000);
    const report = JSON.parse(r.stdout) as ChaosReport;
    assert.deepEqual(report.failures, []);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(report.faults.length, 6);
    assert.ok(report.faults.every((f) => f.ok));
    assert.equal(new Set(report.faults.map((f) => f.kind)).size, 6, 'six kinds, none twice');
    assert.deepEqual([report.lost, report.reordered, report.duplicated], [0, 0, 0]);
    assert.equal(report.delivered, report.sent);
    assert.ok(report.state_matches_oracle && report.global_matches_oracle && report.replicas_match);
  });

  it('the ingress is one process: killing it loses the traffic after, and the run says so and exits 1', async () => {
    const r = await nfstate(['chaos', '--duration', '8', '--faults', 'ingress-kill', '--json'], 300_000);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout) as ChaosReport;
    assert.equal(report.ok, false);
    assert.deepEqual(
      report.faults.map((f) => [f.kind, f.ok]),
      [['ingress-kill', true]],
    );
    assert.ok(report.lost > 0, `lost ${report.lost}`);
    assert.ok(
      report.failures.some((f) => /lost/.test(f)),
      report.failures.join('; '),
    );
  });

  it('refuses an unknown fault kind before it starts anything', async () => {
    const r = await nfstate(['chaos', '--faults', 'kill,meteor']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^nfstate: NFS_ERR_USAGE: .*--faults: meteor is not one of kill, pause/);
  });
});
