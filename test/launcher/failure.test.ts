import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseTopology } from '../../src/launcher/config.js';
import type { Endpoints } from '../../src/launcher/local.js';
import type { RoleProcess } from '../../src/launcher/role-process.js';
import { LocalDeployment } from '../../src/launcher/local.js';
import { adminCall } from '../../src/admin-call.js';
import type { FailoverRecord } from '../../src/controller/controller.js';
import { EXIT_FENCED } from '../../src/launcher/roles.js';
import { metrics, sample, until } from '../helpers/poll.js';

interface FailureRow {
  id: string;
  at: number;
  last_seen: number;
  detect_ms: number;
  how: 'heartbeats' | 'connection';
  fenced_heartbeats: number;
}

/**
 * The failure detection unit's settings here: heartbeats every 50 ms, suspected after 10 missed, then
 * 50 ms for the probe's answer, so that the lower bound below is far from the heartbeats' jitter.
 */
const HEARTBEAT_MS = 50;
const MISS_COUNT = 10;
const PROBE_MS = 50;

/**
 * One cluster of three instances and no traffic; instances are killed and paused under the controller's
 * failure detection unit.
 */
describe('failure detection (multi-process on loopback)', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'nfstate-failure-'));
  const deployment = new LocalDeployment(
    parseTopology({
      nf: { type: 'firewall' },
      clusters: 1,
      perCluster: 3,
      threads: 1,
      spareInstances: 0,
      failure: { heartbeatMs: HEARTBEAT_MS, missCount: MISS_COUNT, probeMs: PROBE_MS },
    }),
    { logDir: dir },
  );
  let ends: Endpoints;
  const failures = async (): Promise<FailureRow[]> =>
    (await adminCall('127.0.0.1', ends.controller.admin, '/failures')) as unknown as FailureRow[];
  const proc = (id: string): RoleProcess => deployment.instances.find((p) => p.name === id)!;

  /** Signals `id`, then waits until the controller lists it as failed; the row and how long that took. */
  async function failAndWait(id: string, signal: NodeJS.Signals): Promise<[FailureRow, number]> {
    const t0 = performance.now();
    proc(id).child.kill(signal);
    let row: FailureRow | undefined;
    await until(async () => (row = (await failures()).find((f) => f.id === id)) !== undefined, 30_000);
    assert.ok(row !== undefined, `${id} not declared failed after ${signal}`);
    return [row, performance.now() - t0];
  }

  before(async () => {
    ends = await deployment.start();
  });

  after(async () => {
    await deployment.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('starts with every instance heartbeating and none failed', async () => {
    assert.deepEqual(await failures(), []);
    await until(
      async () => sample(await metrics(ends.controller.admin), 'nfstate_fdu_heartbeats_total') >= 30,
    );
    const m = await metrics(ends.controller.admin);
    assert.ok(sample(m, 'nfstate_fdu_heartbeats_total') >= 30);
    assert.equal(sample(m, 'nfstate_fdu_bad_heartbeats_total'), 0);
    assert.equal(sample(m, 'nfstate_fdu_failures_total'), 0);
  });

  it('detects a killed instance at once, by its liveness connection closing, before any heartbeat is missed', async (t) => {
    const before = (await deployment.controllerGet('/instances')) as { id: string; secondary: string }[];
    const secondary = before.find((i) => i.id === 'nf-0')!.secondary;
    const [row, seen] = await failAndWait('nf-0', 'SIGKILL');
    t.diagnostic(`SIGKILL nf-0: detect_ms ${row.detect_ms}, listed ${seen.toFixed(1)} ms after the kill`);
    // The connection, not the silence, told: the declaration came before any heartbeat was missed.
    assert.equal(row.how, 'connection');
    assert.ok(row.at > row.last_seen);
    // Failed over (no traffic, so no flows) and gone from the registry; no spare to replace it with.
    await until(async () => ((await deployment.controllerGet('/failovers')) as unknown[]).length === 1);
    const [failover] = (await deployment.controllerGet('/failovers')) as FailoverRecord[];
    assert.equal(failover!.id, 'nf-0');
    assert.equal(failover!.successor, secondary, 'its secondary, the next member of its cluster');
    assert.equal(failover!.flows, 0);
    const inst = (await deployment.controllerGet('/instances')) as { id: string; live: boolean }[];
    assert.deepEqual(inst.map((i) => [i.id, i.live]).sort(), [
      ['nf-1', true],
      ['nf-2', true],
    ]);
  });

  it('detects a paused instance, fails it over, and once it resumes it learns it is fenced and exits', async (t) => {
    const [row, seen] = await failAndWait('nf-1', 'SIGSTOP');
    t.diagnostic(`SIGSTOP nf-1: detect_ms ${row.detect_ms}, listed ${seen.toFixed(1)} ms after the pause`);
    assert.equal(row.how, 'heartbeats', 'a paused process keeps its connection: only its silence tells');
    // Never before MISS_COUNT intervals of silence and then the probe's time, unanswered: check() declares
    // only past that, however late it runs. (No upper bound: that is the scheduler's.)
    const silence = HEARTBEAT_MS * MISS_COUNT + PROBE_MS;
    assert.ok(row.detect_ms > silence, `detect_ms ${row.detect_ms}, more than ${silence}`);
    assert.ok(sample(await metrics(ends.controller.admin), 'nfstate_fdu_probes_total') >= 1, 'probed first');
    assert.equal(row.fenced_heartbeats, 0);
    await until(async () => ((await deployment.controllerGet('/failovers')) as unknown[]).length === 2);
    proc('nf-1').child.kill('SIGCONT');
    await until(() => proc('nf-1').exited, 30_000);
    assert.equal(proc('nf-1').exitCode, EXIT_FENCED);
    const m = await metrics(ends.controller.admin);
    assert.equal(sample(m, 'nfstate_fdu_failures_total'), 2);
    assert.deepEqual((await failures()).map((f) => f.id).sort(), ['nf-0', 'nf-1']);
  });
});
