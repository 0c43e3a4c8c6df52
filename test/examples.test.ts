/**
 * The examples work as their README says: the flow meter's own tests pass when run as its author runs them
 * (`node --test`, importing `nfstate/nf` and `nfstate/testing` as a package user does), and a demo of it,
 * with moves and a kill, loses nothing and matches the oracle.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import type { DemoSummary } from '../src/launcher/demo-report.js';
import { nfstate } from './helpers/cli.js';
import { repoPath } from './helpers/paths.js';

describe('examples/flow-meter', { timeout: 600_000 }, () => {
  it("its own tests pass, the compliance suite's included", async () => {
    const test = repoPath('examples', 'flow-meter', 'flow-meter.test.js');
    const out = await new Promise<{ code: number; text: string }>((resolve) => {
      // Run as its author would, not as a subtest of this file: without the test runner's context.
      const env = { ...process.env };
      delete env.NODE_TEST_CONTEXT;
      execFile(process.execPath, ['--test', test], { timeout: 300_000, env }, (err, stdout, stderr) => {
        resolve({ code: err === null ? 0 : Number(err.code ?? 1), text: stdout + stderr });
      });
    });
    assert.equal(out.code, 0, out.text);
    assert.match(out.text, /^# pass 4$/m);
    assert.match(out.text, /^# fail 0$/m);
  });

  it('a demo of it with moves and a kill loses nothing, and its state and global counters match the oracle', async () => {
    const topology = repoPath('examples', 'flow-meter', 'topology.yaml');
    const r = await nfstate([
      'demo',
      '-c',
      topology,
      '--moves',
      '6',
      '--kill',
      '1',
      '--rate',
      '1500',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const s = JSON.parse(r.stdout) as DemoSummary;
    assert.equal(s.nf, 'flow-meter');
    assert.equal(s.lost, 0);
    assert.equal(s.reordered, 0);
    assert.equal(s.duplicated, 0);
    assert.ok(s.nf_dropped > 0, 'the meter policed some packets');
    assert.equal(s.delivered, s.sent - s.nf_dropped);
    assert.equal(s.state_matches_oracle, true, s.mismatched_flows.join('; '));
    assert.equal(s.replication.replicas_match, true);
    assert.equal(s.failovers.count, 1);
  });

  it('a module that is not there is a usage error naming the path', async () => {
    const r = await nfstate(['demo', '--nf', './no-such-nf.js']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--nf: no such file .*no-such-nf\.js/);
  });
});
