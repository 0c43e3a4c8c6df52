import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { AddedInstance, DemoSummary } from '../../src/launcher/demo-report.js';
import { summaryFailures } from '../../src/launcher/demo-report.js';
import { nfstate } from '../helpers/cli.js';
import { machineShape } from '../../src/launcher/config.js';
import { availableParallelism } from 'node:os';

/**
 * Runs the demo on two clusters of two instances unless the test names its own shape, by default at 1500
 * packets/s. These tests check what a run guarantees, not how fast it goes: the demo's own twelve
 * instances with copies to their secondaries saturate a 2-core machine, where the kernel drops what the
 * ingress cannot read in time and a loaded event loop looks like a failure. Four instances still have
 * moves inside and across clusters, a secondary for every flow and instances to fail over to, at a third of
 * the CPU. ids costs the most per packet (signature matching, counters across the deployment): it runs at
 * 1000.
 */
async function run(
  args: string[],
  shape = SMALL,
  env: Record<string, string> = {},
): Promise<{ code: number | null; out: string; err: string }> {
  const shaped = args.includes('--clusters') || args.includes('--per-cluster') ? [] : shape;
  const rate = args.includes('ids') ? '1000' : '1500';
  const rated = args.includes('--rate') ? [] : ['--rate', rate];
  const r = await nfstate(['demo', '--json', ...args, ...shaped, ...rated], undefined, env);
  return { code: r.code, out: r.stdout, err: r.stderr };
}

const SMALL = ['--clusters', '2', '--per-cluster', '2'];

async function demo(args: string[], shape = SMALL, env: Record<string, string> = {}): Promise<DemoSummary> {
  const r = await run(args, shape, env);
  assert.equal(r.code, 0, `demo ${args.join(' ')} failed:\n${r.out}\n${r.err}`);
  return JSON.parse(r.out) as DemoSummary;
}

function assertClean(s: DemoSummary): void {
  const why = JSON.stringify({ moves: s.moves, failovers: s.failovers.count, problems: s.mismatched_flows });
  assert.equal(s.lost, 0, `lost: ${why}`);
  assert.equal(s.reordered, 0, `reordered: ${why}`);
  assert.equal(s.duplicated, 0, `duplicated: ${why}`);
  assert.equal(
    s.state_matches_oracle,
    true,
    `state differs from the oracle: ${s.mismatched_flows.join('; ')}`,
  );
  assert.equal(s.delivered, s.sent - s.nf_dropped);
  assert.equal(
    s.replication.replicas_match,
    true,
    `every cluster peer holds each flow as its owner does: ${s.mismatched_flows.join('; ')}`,
  );
  assert.ok(s.throughput_pps > 0);
  for (const k of ['p50', 'p99', 'max'] as const)
    assert.ok(s.latency_us[k] > 0, `latency ${k}: ${JSON.stringify(s.latency_us)}`);
}

/**
 * Each demo run is stopped after 120 s by nfstate() (helpers/cli.ts), which bounds every test here. The
 * suite's own limit, which node:test also gives each test, is above the sum of those for its runs (43
 * today, 86 min): only a test that hangs outside a run can reach it.
 */
describe('nfstate demo (multi-process on loopback)', { timeout: 7_200_000 }, () => {
  it('replicates to the cluster only; the no-cluster baseline sends to every instance', async () => {
    const cluster = await demo(['--nf', 'ids', '--flows', '60', '--packets', '60']);
    const all = await demo(['--nf', 'ids', '--flows', '60', '--packets', '60', '--no-cluster']);
    const off = await demo(['--nf', 'ids', '--flows', '60', '--packets', '60', '--no-replication']);
    for (const s of [cluster, all, off]) assertClean(s);
    assert.equal(off.replication.bytes_sent, 0);
    assert.ok(cluster.replication.bytes_sent > 0);
    // 1 peer per instance in a cluster of 2, against 3 peers among 4 instances.
    assert.ok(
      all.replication.bytes_sent > 2.5 * cluster.replication.bytes_sent,
      `no-cluster ${all.replication.bytes_sent} B vs cluster ${cluster.replication.bytes_sent} B`,
    );
  });

  for (const nf of ['nat', 'firewall', 'lb', 'ids']) {
    it(`${nf}: 200 flow moves during the run, inside and across clusters, lose and reorder nothing`, async () => {
      const s = await demo(['--nf', nf, '--moves', '200']);
      assertClean(s);
      assert.equal(s.moves.count + s.moves.aborted, 200, JSON.stringify(s.moves));
      assert.ok(s.moves.intra > 50 && s.moves.inter > 50, JSON.stringify(s.moves));
    });
  }

  it('--chain firewall,nat: moves and a failover lose nothing, and each NF of the chain matches the oracle', async () => {
    const s = await demo(['--chain', 'firewall,nat', '--packets', '100', '--moves', '40', '--kill', '1']);
    assertClean(s);
    assert.equal(s.nf, 'firewall>nat');
    assert.deepEqual(s.nf_matches_oracle, { firewall: true, nat: true });
    assert.equal(s.failovers.count, 1, JSON.stringify(s.failovers));
    assert.equal(s.moves.count + s.moves.aborted, 40, JSON.stringify(s.moves));
    assert.ok(s.strong.claims > 0, "the NAT's ports were decided in the log");
  });

  it('through node:dgram (NFSTATE_IO=node, as without a C compiler): moves and a failover lose nothing', async () => {
    const s = await demo(['--packets', '100', '--moves', '40', '--kill', '1'], SMALL, { NFSTATE_IO: 'node' });
    assertClean(s);
    assert.equal(s.io, 'node');
    assert.equal(s.failovers.count, 1, JSON.stringify(s.failovers));
    assert.equal(s.moves.count + s.moves.aborted, 40, JSON.stringify(s.moves));
  });

  it('--guarantee loss-free: 200 moves lose nothing (the source’s packets may come behind)', async () => {
    const s = await demo(['--nf', 'nat', '--moves', '200', '--guarantee', 'loss-free']);
    assert.equal(s.moves.guarantee, 'loss-free');
    assert.equal(s.moves.count + s.moves.aborted, 200, JSON.stringify(s.moves));
    assert.equal(s.lost, 0, 'lost');
    assert.equal(s.duplicated, 0, 'duplicated');
    assert.equal(s.moves.dropped, 0);
    assert.equal(s.delivered, s.sent - s.nf_dropped);
  });

  it('--guarantee none: the run completes, and what the moves dropped is every packet not delivered', async () => {
    const s = await demo(['--nf', 'nat', '--moves', '200', '--guarantee', 'none']);
    assert.equal(s.moves.guarantee, 'none');
    assert.equal(s.moves.count + s.moves.aborted, 200, JSON.stringify(s.moves));
    assert.equal(s.duplicated, 0, 'duplicated');
    assert.equal(s.delivered + s.moves.dropped, s.sent - s.nf_dropped);
    assert.equal(s.lost, s.moves.dropped);
  });

  it('--move-batch: flows moved many at a time, one exchange per source, lose and reorder nothing', async () => {
    const s = await demo(['--nf', 'ids', '--flows', '300', '--moves', '240', '--move-batch', '80']);
    assertClean(s);
    assert.ok(s.moves.count > 0 && s.moves.intra > 0 && s.moves.inter > 0, JSON.stringify(s.moves));
  });

  it('under --skew the load-balancing unit moves heavy flows off the overloaded instance, none more often than its cooldown allows', async () => {
    const args = [
      '--nf',
      'nat',
      '--skew',
      '10',
      '--flows',
      '200',
      '--packets',
      '60',
      '--rate',
      '2500',
      '--thesis',
    ];
    // The thesis's twelve instances: in fewer, the heavy flows' share does not overload one of them.
    const on = await demo([...args, '--cooldown', '1000'], []);
    const off = await demo([...args, '--lb', 'off'], []);
    for (const s of [on, off]) assertClean(s);
    const skewed = on.lb.skewed;
    assert.ok(skewed !== null, 'the heavy flows start on one instance');
    assert.equal(off.lb.skewed, skewed, 'the same one in both runs');
    // Without the unit the skew overloads that instance, and nothing moves a flow off it.
    assert.ok(off.lb.load[skewed]!.overloaded_ms > 0, `${skewed} overloaded: ${JSON.stringify(off.lb.load)}`);
    assert.equal(off.lb.moves, 0);
    assert.equal(off.lb.rounds, 0);
    // With it, heavy flows leave that instance, the first ones inside its cluster. How long it stays
    // overloaded with and without the unit is a measurement of the machine: `nfstate bench lb` reports it.
    assert.ok((on.lb.from[skewed] ?? 0) >= 2, `flows left ${skewed}: ${JSON.stringify(on.lb.from)}`);
    assert.ok(on.lb.intra >= 1, 'the first moves stay inside the cluster');
    // The unit moves flows only off an instance whose load it saw above its high watermark (0.85).
    assert.ok(on.lb.load[skewed]!.peak >= 0.85, `${skewed}: ${JSON.stringify(on.lb.load[skewed])}`);
    // The cooldown is the unit's own rule, on its own clock: no flow moves twice within it.
    assert.ok(
      on.lb.min_gap_ms === null || on.lb.min_gap_ms >= 1000,
      `a flow moved again within its cooldown`,
    );
  });

  it('when no instance has room, the load-balancing unit has an instance started and fills it', async () => {
    const s = await demo([
      ...['--nf', 'nat', '--clusters', '1', '--per-cluster', '2', '--skew', '10'],
      // Long enough for the new instance to start and take flows on a slow machine.
      ...['--flows', '100', '--packets', '300', '--rate', '2000', '--capacity', '1200'],
    ]);
    assertClean(s);
    assert.ok(s.lb.scale_out_requests >= 1, JSON.stringify(s.lb));
    assert.ok((s.lb.to['nf-2'] ?? 0) > 0, `flows moved to the new instance: ${JSON.stringify(s.lb.to)}`);
  });

  it('draining two instances under traffic moves all their flows away with nothing lost, then they leave', async () => {
    const s = await demo(['--nf', 'nat', '--packets', '100', '--drain', '2']);
    assertClean(s);
    assert.equal(s.drained.length, 2);
    for (const d of s.drained) {
      assert.equal(d.aborted, 0);
      assert.ok(d.moved > 0, `${d.id} had flows to move`);
    }
  });

  it('adding two instances under traffic: each joins a cluster and takes flows, the second catches up on its mate’s flows at once, nothing is lost', async () => {
    // Two full clusters of two: the first newcomer forms a third cluster, the second joins it. Without
    // the load-balancing unit, which on a saturated machine asks for instances of its own.
    const s = await demo(['--nf', 'ids', '--packets', '150', '--add', '2', '--lb', 'off']);
    assertClean(s); // replicas_match covers the newcomers: they hold their mates' flows, their mates theirs
    assert.deepEqual(
      s.added.map((a) => [a.id, a.cluster]),
      [
        ['nf-4', 'c2'],
        ['nf-5', 'c2'],
      ],
    );
    const [first, second] = s.added as [AddedInstance, AddedInstance];
    for (const a of s.added) assert.ok(a.flows > 0 && a.ms >= a.join_ms, JSON.stringify(a));
    // nf-4's flows came from other clusters, whole. nf-5's came from nf-4, which sent it the full state
    // of its flows when it joined: every move to it was installed from its own replica (intra), and only
    // the changes since the last batch travelled.
    assert.equal(first.intra, 0);
    assert.equal(second.intra, second.flows, JSON.stringify(second));
    assert.ok(
      second.state_bytes * 3 < first.state_bytes,
      `${second.state_bytes} B per move into nf-5 vs ${first.state_bytes} B into nf-4`,
    );
    assert.ok(s.replication.catch_up_bytes > 0);
  });

  it('nat: instances added under traffic, with moves going on, take flows and their ports; every port stays unique', async () => {
    const s = await demo(['--nf', 'nat', '--add', '2', '--moves', '20']);
    assertClean(s); // includes the check that every allocation is unique deployment-wide
    assert.equal(s.added.length, 2);
    for (const a of s.added) assert.ok(a.flows > 0, JSON.stringify(a));
  });

  it('an intra-cluster move ships the last batch’s changes, an inter-cluster one the whole log-like state', async () => {
    // ids state grows by ~26 B per packet (its per-packet log); flows here have 150 packets, and a move
    // happens after at least a tenth of the run. Inside the cluster only the delta of the batch the move
    // closes travels (at most one batch of 30 packets), across clusters the full log.
    const s = await demo(['--nf', 'ids', '--packets', '150', '--moves', '40']);
    assertClean(s);
    assert.ok(s.moves.intra > 0 && s.moves.inter > 0);
    assert.ok(
      s.moves.state_bytes_intra * 3 < s.moves.state_bytes_inter,
      `intra ${s.moves.state_bytes_intra} B vs inter ${s.moves.state_bytes_inter} B`,
    );
  });

  for (const nf of ['nat', 'ids']) {
    it(`${nf}: --release after-replication (output commit) delivers every packet in order`, async () => {
      const s = await demo(['--nf', nf, '--release', 'after-replication']);
      assert.equal(s.replication.release, 'after-replication');
      assertClean(s);
    });
  }

  for (const nf of ['nat', 'firewall', 'lb', 'ids']) {
    it(`${nf}: defaults deliver every packet, in order, with the oracle's state`, async () => {
      const s = await demo(['--nf', nf], []);
      const shape = machineShape(availableParallelism());
      assert.deepEqual(
        [s.clusters, s.per_cluster, s.threads],
        [shape.clusters, shape.perCluster, shape.threads],
        'the default shape is sized to the machine',
      );
      assertClean(s);
    });

    it(`${nf}: --rate 0 drains as fast as it can with nothing lost`, async () => {
      const s = await demo(['--nf', nf, '--rate', '0', '--proto', nf === 'firewall' ? 'tcp' : 'udp']);
      assertClean(s);
    });
  }

  /** The controllers' 'instance failed' log lines of a run kept with --keep: who, and how it was noticed. */
  function failuresLogged(runDir: string): { id: string; how: string }[] {
    return readdirSync(runDir)
      .filter((f) => /^controller.*\.log$/.test(f))
      .flatMap((f) => readFileSync(join(runDir, f), 'utf8').split('\n'))
      .filter((l) => l.includes('"msg":"instance failed"'))
      .map((l) => JSON.parse(l) as { id: string; how: string });
  }

  /** Checks what every failover run must show: each signalled instance failed over, replaced, nothing lost. */
  function assertFailedOver(s: DemoSummary, n: number): void {
    assert.equal(s.lost, 0, 'lost');
    assert.equal(s.reordered, 0, 'reordered');
    assert.equal(s.duplicated, 0, 'duplicated (replays do not count: the sink drops them by stamp)');
    assert.deepEqual(s.mismatched_flows, [], 'every flow ends in the state of a run without the fault');
    assert.equal(s.replication.replicas_match, true);
    assert.equal(s.failovers.each.length, n);
    for (const f of s.failovers.each) {
      assert.equal(f.error, undefined, `${f.id}: ${f.error}`);
      assert.ok(
        f.successor !== null && f.replacement !== null,
        `${f.id} taken over and replaced: ${JSON.stringify(f)}`,
      );
      assert.ok(f.recover_ms > 0 && f.detect_ms <= f.recover_ms);
    }
    assert.equal(s.failovers.count, n);
    assert.equal(s.failovers.gaps, 0, 'every kept copy continued its replica');
  }

  for (const nf of ['nat', 'firewall', 'ids', 'lb']) {
    for (const global of ['local', 'etcd']) {
      it(`${nf}: --kill 5 --global ${global}: five failovers, one at a time, lose nothing, global state included`, async () => {
        const s = await demo(['--nf', nf, '--packets', '100', '--kill', '5', '--global', global]);
        assertFailedOver(s, 5);
        assert.equal(s.state_matches_oracle, true);
        assert.equal(s.global_matches_oracle, true, 'the killed instances’ eventual global state lived on');
        assert.equal(s.global_converged, true, 'every instance holds the same eventual global state');
        assert.ok(s.failovers.replayed > 0, 'the successors replayed what no record covered');
        assert.equal(s.strong.store, global);
        assert.equal(s.strong.failed, 0);
        // Only the NAT has a pool, whose flows claimed their ports in the log. The count is the living
        // instances' (the killed ones took theirs along), and in four instances five kills may leave few.
        if (nf === 'nat') assert.ok(s.strong.claims > 0, JSON.stringify(s.strong));
      });
    }
  }

  it('--global etcd --etcd-kill 1: one etcd member of three dies while the flows claim their ports; nothing is lost', async () => {
    const s = await demo(['--nf', 'nat', '--global', 'etcd', '--etcd-kill', '1']);
    assertClean(s);
    assert.equal(s.strong.etcd_killed, 1);
    assert.equal(s.strong.failed, 0);
    assert.equal(s.strong.flows_waited, 200);
  });

  it('--global etcd --kill-controller: the standby controller carries on from the journal; nothing is lost', async () => {
    const s = await demo([
      '--nf',
      'nat',
      '--packets',
      '100',
      '--global',
      'etcd',
      '--kill-controller',
      '--moves',
      '20',
    ]);
    assertClean(s);
    assert.equal(s.controller.standby, true);
    assert.ok(s.controller.takeover_ms > 0, JSON.stringify(s.controller));
    // Moves go on once the standby leads; those asked for while no controller answered fail, counted, and
    // told apart: the run killed the controller on purpose, so they do not fail it (exit 0 above).
    assert.ok(s.moves.count > 0, JSON.stringify(s.moves));
    assert.equal(s.moves.count + s.moves.aborted + s.moves.failed, 20);
    assert.equal(s.moves.controller_down, s.moves.failed, JSON.stringify(s.moves));
    assert.deepEqual(summaryFailures(s), []);
  });

  it('--global etcd --etcd-kill 2: without a quorum, claims fail with a clear error, never silently', async () => {
    // Many flows, so that many still start after the second member is gone.
    const r = await run([
      '--nf',
      'nat',
      '--flows',
      '2000',
      '--packets',
      '3',
      '--global',
      'etcd',
      '--etcd-kill',
      '2',
    ]);
    assert.equal(r.code, 1, 'the run is reported as failed');
    const s = JSON.parse(r.out) as DemoSummary;
    assert.equal(s.strong.etcd_killed, 2);
    assert.ok(s.strong.failed > 0, JSON.stringify(s.strong));
    // Nor may any controller lead: the one that did stepped down when it could not renew its lease.
    assert.equal(s.controller.lost, true);
    // The flows that got no port were rejected: their packets count as lost against the oracle.
    assert.equal(s.state_matches_oracle, false);
    assert.equal(s.reordered, 0);
    assert.equal(s.duplicated, 0);
  });

  it('--pause 1: a paused instance is failed over, and once woken it exits fenced; nothing it sends is accepted', async () => {
    const s = await demo(['--nf', 'nat', '--packets', '100', '--pause', '1', '--keep']);
    try {
      assertFailedOver(s, 1);
      assert.equal(s.state_matches_oracle, true);
      assert.equal(s.failovers.woke_fenced, 1);
      const [paused] = s.failovers.each;
      assert.equal(paused!.signal, 'SIGSTOP');
      // A paused process keeps its connection: the controller saw it fail by its missed heartbeats only.
      assert.deepEqual(
        failuresLogged(s.run_dir!)
          .filter((f) => f.id === paused!.id)
          .map((f) => f.how),
        ['heartbeats'],
      );
    } finally {
      rmSync(s.run_dir!, { recursive: true, force: true });
    }
  });

  // A false alarm: instances failed over while they work, through the operator's POST /fail. Each goes on
  // until it reads that it is fenced (test/nf/failover.test.ts takes one that never does through the steps).
  for (const [nf, release] of [
    ['nat', 'immediate'],
    ['ids', 'after-replication'],
  ] as const) {
    it(`${nf}: --fail 3 --release ${release}: instances declared failed while they work lose nothing, and exit fenced`, async () => {
      const s = await demo(['--nf', nf, '--packets', '100', '--fail', '3', '--release', release]);
      assertFailedOver(s, 3);
      assert.equal(s.state_matches_oracle, true);
      assert.equal(s.global_matches_oracle, true);
      assert.deepEqual(
        s.failovers.each.map((f) => f.signal),
        ['fail', 'fail', 'fail'],
      );
      assert.ok(s.failovers.replayed > 0, 'failed over while their flows ran');
    });
  }

  it('--kill with --release after-replication: a batch acknowledged but not yet released is not lost', async () => {
    const s = await demo([
      '--nf',
      'nat',
      '--packets',
      '100',
      '--kill',
      '1',
      '--release',
      'after-replication',
    ]);
    assertFailedOver(s, 1);
    assert.equal(s.state_matches_oracle, true);
  });
});

describe('summaryFailures: what fails a demo run', { timeout: 60_000 }, () => {
  /** A run of 2 x 2 instances that passed every check, with 20 moves, 2 of them aborted. */
  function passed(): DemoSummary {
    const none = { rounds: 0, moves: 0, intra: 0, inter: 0, aborted: 0, scale_out_requests: 0 };
    return {
      nf: 'nat',
      clusters: 2,
      per_cluster: 2,
      instances: 4,
      threads: 2,
      batch: 30,
      flows: 200,
      switch: { kind: 'builtin' },
      sent: 10_000,
      stamped: 10_000,
      delivered: 10_000,
      lost: 0,
      reordered: 0,
      duplicated: 0,
      nf_dropped: 0,
      throughput_pps: 1500,
      rate_pps: 1500,
      duration_ms: 6667,
      latency_us: { p50: 1, p90: 1, p99: 1, max: 1, mean: 1 },
      state_matches_oracle: true,
      global_matches_oracle: true,
      global_compared: [],
      global_converged: true,
      strong: { store: 'local', etcd_killed: 0, claims: 200, conflicts: 0, failed: 0, flows_waited: 200 },
      controller: { standby: false, killed: false, takeover_ms: -1, lost: false },
      replication: {
        mode: 'cluster',
        release: 'immediate',
        bytes_sent: 1,
        messages: 1,
        catch_up_bytes: 0,
        replicas_match: true,
      },
      moves: {
        count: 18,
        intra: 9,
        inter: 9,
        aborted: 2,
        failed: 0,
        errors: [],
        controller_down: 0,
        state_bytes_intra: 10,
        state_bytes_inter: 100,
        p50_ms: 1,
        p99_ms: 2,
        guarantee: 'order-preserving',
        dropped: 0,
      },
      lb: {
        ...none,
        enabled: true,
        capacity_pps: 0,
        skewed: null,
        from: {},
        to: {},
        max_moves_per_flow: 0,
        min_gap_ms: null,
        p50_ms: 0,
        p99_ms: 0,
        load: {},
      },
      drained: [],
      added: [],
      failovers: {
        count: 0,
        detect_ms_p50: 0,
        detect_ms_max: 0,
        recover_ms_p50: 0,
        recover_ms_max: 0,
        replayed: 0,
        gaps: 0,
        woke_fenced: 0,
        fenced_output: 0,
        replays_dropped: 0,
        false_alarms: [],
        each: [],
      },
      mismatched_flows: [],
      run_dir: null,
      io: 'native',
    };
  }

  it('passes a clean run, with moves aborted or refused cleanly', () => {
    assert.deepEqual(summaryFailures(passed()), []);
  });

  it('fails an OVS run in which packets reached the ingress without a route from the bridge', () => {
    const s = passed();
    s.switch = { kind: 'ovs', followed: 9_990, overridden: 10 };
    assert.deepEqual(summaryFailures(s), []);
    s.switch.followed = 9_000;
    assert.deepEqual(summaryFailures(s), ['OVS routed 9010 of the 10000 packets stamped']);
  });

  it('fails a run whose replicas differ from their owners, and says where', () => {
    const s = passed();
    s.replication.replicas_match = false;
    s.mismatched_flows = ['nf-1 holds udp 10.0.0.1:1000 198.51.100.10:80 of nf-0 differently'];
    assert.deepEqual(summaryFailures(s), [
      "replicas differ from their owners' flows: nf-1 holds udp 10.0.0.1:1000 198.51.100.10:80 of nf-0 differently",
    ]);
  });

  it('fails a run with moves that failed, unless the run killed the controller and none answered them', () => {
    const s = passed();
    s.moves.failed = 2;
    s.moves.errors = ['NfsError: 127.0.0.1:4000/move: move: /move/expect on nf-1 failed'];
    assert.deepEqual(summaryFailures(s), [
      '2 moves failed: NfsError: 127.0.0.1:4000/move: move: /move/expect on nf-1 failed',
    ]);
    // --kill-controller: those asked while no controller answered are expected…
    s.controller = { standby: true, killed: true, takeover_ms: 900, lost: false };
    s.moves.controller_down = 2;
    assert.deepEqual(summaryFailures(s), []);
    // …any other is not.
    s.moves.failed = 3;
    assert.equal(summaryFailures(s).length, 1);
    assert.match(summaryFailures(s)[0]!, /^1 moves failed/);
  });

  it('fails a run in which the controller declared failed an instance the run did not fail', () => {
    const s = passed();
    s.failovers.false_alarms = ['nf-3'];
    assert.deepEqual(summaryFailures(s), ['declared failed, though the run did not fail them: nf-3']);
  });

  it('fails a run whose controller was lost, or killed and never replaced', () => {
    const lost = passed();
    lost.controller.lost = true;
    assert.deepEqual(summaryFailures(lost), ['no controller answered at the end of the run']);
    const killed = passed();
    killed.controller = { standby: true, killed: true, takeover_ms: -1, lost: false };
    assert.deepEqual(summaryFailures(killed), ['the controller was killed and no standby took over']);
  });

  it('fails on loss, duplicates, a failed failover or strong state the log could not decide', () => {
    const s = passed();
    s.lost = 3;
    s.duplicated = 1;
    s.strong.failed = 4;
    s.failovers.each.push({
      id: 'nf-2',
      signal: 'SIGKILL',
      successor: null,
      replacement: null,
      detect_ms: 1,
      recover_ms: -1,
      steps_ms: {},
      flows: 10,
      woke_fenced: false,
      replayed: 0,
      gaps: 0,
      error: 'no live member of its cluster to take over 10 flows: their state is lost',
    });
    assert.deepEqual(summaryFailures(s), [
      '3 packets lost',
      '1 packets delivered twice',
      'failover of nf-2 (SIGKILL): no live member of its cluster to take over 10 flows: their state is lost',
      '4 claims or releases of strong global state failed (the log did not decide them)',
    ]);
  });

  it('holds each guarantee to what it promises: loss-free may reorder, none may lose what its moves dropped', () => {
    const s = passed();
    s.reordered = 5;
    s.state_matches_oracle = false;
    s.mismatched_flows = ['state differs: udp 10.0.0.1:1000 198.51.100.10:80'];
    assert.deepEqual(summaryFailures(s), [
      '5 packets reordered',
      'state differs from the oracle: state differs: udp 10.0.0.1:1000 198.51.100.10:80',
    ]);
    s.moves.guarantee = 'loss-free';
    assert.deepEqual(summaryFailures(s), []);
    s.moves.guarantee = 'none';
    s.moves.dropped = 7;
    s.lost = 7;
    assert.deepEqual(summaryFailures(s), []);
    s.lost = 8;
    assert.deepEqual(summaryFailures(s), ['8 packets lost (the moves dropped 7 of them at most)']);
  });
});
