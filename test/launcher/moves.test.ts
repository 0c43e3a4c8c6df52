import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { MoveRecord } from '../../src/controller/controller.js';
import { parseTopology } from '../../src/launcher/config.js';
import { checkRun } from '../../src/launcher/demo-report.js';
import { LocalDeployment } from '../../src/launcher/local.js';
import { silentLogger } from '../../src/log.js';
import { adminCall } from '../../src/admin-call.js';
import { flowKeyString } from '../../src/packet/flow-key.js';
import { Generator } from '../../src/traffic/generator.js';
import { DEFAULT_TRACE, SyntheticTrace } from '../../src/traffic/trace.js';
import { until } from '../helpers/poll.js';

describe(
  'a move whose destination fails (multi-process on loopback, with traffic)',
  { timeout: 300_000 },
  () => {
    it('stopped: the move aborts at its deadline; killed: at once; the flows stay with their sources, nothing lost', async () => {
      // Two clusters of two; the victim, nf-3, owns no flows of its own. Moves go to it from the other
      // cluster, whose replication it does not hold up. Its pause outlasts no failure detection (a pause that
      // does is failover's business, test/launcher/failure.test.ts); its kill is seen at once.
      const topology = parseTopology({
        nf: { type: 'nat' },
        clusters: 2,
        perCluster: 2,
        threads: 1,
        spareInstances: 0,
        lb: { enabled: false },
        move: { timeoutMs: 1000 },
        failure: { heartbeatMs: 50, missCount: 1000 },
      });
      const host = topology.host;
      const dir = mkdtempSync(join(tmpdir(), 'nfstate-move-faults-'));
      const stampLog = join(dir, 'stamps.pcap');
      const gen = new Generator(
        { rate: 1500, window: 512, vni: topology.vni, drainTimeoutMs: 1500 },
        silentLogger,
      );
      const ackPort = await gen.bind(host);
      const deployment = new LocalDeployment(topology, {
        logDir: dir,
        stampLog,
        ackTo: { host, port: ackPort },
      });
      try {
        const ends = await deployment.start();
        const key = deployment.adminKey;
        const victim = deployment.instances[3]!;
        await adminCall(host, ends.ingress.admin, '/live', { instances: ['nf-0', 'nf-1', 'nf-2'] }, { key });
        const trace = new SyntheticTrace({ ...DEFAULT_TRACE, flows: 40, packets: 120 });
        const flows = Array.from({ length: trace.options.flows }, (_, f) => flowKeyString(trace.flowKey(f)));
        const { owners } = (await adminCall(host, ends.ingress.admin, '/owner', { flows }, { key })) as {
          owners: string[];
        };
        const onNf0 = flows.find((_, i) => owners[i] === 'nf-0');
        const onNf1 = flows.find((_, i) => owners[i] === 'nf-1');
        assert.ok(onNf0 !== undefined && onNf1 !== undefined && !owners.includes('nf-3'));
        await gen.connect(host, ends.ingress.port);
        const running = gen.run(trace);
        const move = async (flow: string): Promise<MoveRecord> =>
          (await adminCall(
            host,
            ends.controller.admin,
            '/move',
            { flow, to: 'nf-3' },
            { key },
          )) as unknown as MoveRecord;
        const owner = async (flow: string): Promise<unknown> =>
          (await adminCall(host, ends.ingress.admin, '/owner', { flows: [flow] }, { key })).owners;
        await until(() => gen.sent > trace.total * 0.15, 10_000);

        // (a) Stopped: its admin calls hang until the move's deadline.
        victim.child.kill('SIGSTOP');
        const stopped = await move(onNf0);
        victim.child.kill('SIGCONT');
        assert.equal(stopped.aborted, true);
        assert.equal(stopped.code, 'NFS_ERR_TIMEOUT', stopped.error);
        assert.deepEqual(await owner(onNf0), ['nf-0']);

        // (b) Killed: its admin port refuses at once.
        const exited = new Promise((r) => victim.child.once('exit', r));
        victim.child.kill('SIGKILL');
        await exited;
        // Either the move finds its admin port closed, or the controller has already failed it (it holds
        // no flows) and refuses it as a destination.
        const killed = await move(onNf1).catch((err: unknown) => err as Error);
        if (killed instanceof Error) assert.match(killed.message, /move\.to: no instance "nf-3"/);
        else {
          assert.equal(killed.aborted, true);
          assert.equal(killed.code, 'NFS_ERR_PROCESS', killed.error);
        }
        assert.deepEqual(await owner(onNf1), ['nf-1']);

        const result = await running;
        const report = await deployment.sinkReport();
        const own = await Promise.all(
          deployment.instances.slice(0, 3).map(async (p) => {
            const r = await p.request({ type: 'digest' });
            assert.equal(r.type, 'digest');
            return r.digest;
          }),
        );
        await deployment.stopIngress();
        const { cmp, lost } = checkRun(
          topology.nf,
          topology.global.store,
          stampLog,
          own,
          report,
          result.sent,
        );
        assert.equal(lost, 0, 'lost');
        assert.equal(report.reordered, 0, 'reordered');
        assert.equal(report.duplicated, 0, 'duplicated');
        assert.ok(
          cmp.matches && cmp.globalMatches,
          `state differs from the oracle: ${cmp.mismatched.join('; ')}`,
        );
        assert.equal(report.delivered, result.sent);
      } finally {
        gen.close();
        await deployment.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  },
);
