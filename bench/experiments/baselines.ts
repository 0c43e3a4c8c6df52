/**
 * `bench baselines`: nfstate beside the three designs it is measured against (DESIGN.md §9), each in the
 * same run on the same machine:
 * - `no-cluster`: every instance replicates each batch to all the others, not only its cluster (12
 *   instances, batch 30, as fast as the deployment drains);
 * - `central-move`: no replicas; a move ships the flow's full state through the controller, as OpenNF's
 *   does (moves during a run at a fixed rate);
 * - `remote-state`: no local state; every packet reads and writes its flow's state in a real Redis, as
 *   StatelessNF does (one instance against one nfstate instance, bench/remote-state.ts).
 */
import { loadOptional } from '../optional.js';
import { deploy, figures, shape } from './deploy.js';
import type { Experiment, Outcome, Point, Row, RunOptions } from './harness.js';
import { PAPER, at, compare, summarise, sweep } from './harness.js';

function clustered(o: RunOptions) {
  return { nf: 'nat', flows: 100, batch: PAPER.batch, ...shape(o.mode, 3, 4) } as const;
}
/** Bars of two series in one category, set apart. */
const APART = 0.2;

/** The figures that need a caveat to be read right, and what it says. */
const FIGURES = {
  moveBytes: 'state bytes per move inside a cluster',
  moveMs: 'move time p50',
  remoteThroughput: 'throughput, one instance',
  remoteLatency: 'latency p50, one instance',
} as const;
const REMOTE_RUNS =
  'its runs (bench/remote-state.ts) are checked for lost packets only, not against the oracle; Redis on loopback';
const CAVEATS: Record<string, string> = {
  [FIGURES.moveBytes]:
    'a NAT flow’s full state is a few dozen bytes, so a full-state move ships little more than the last batch’s changes; the gap grows with the NF’s state',
  [FIGURES.moveMs]:
    'not like for like: central-move runs with replication off, and a move inside a cluster in nfstate first waits until the cluster peers have acknowledged what the source sent',
  [FIGURES.remoteThroughput]: REMOTE_RUNS,
  [FIGURES.remoteLatency]: REMOTE_RUNS,
};

async function noCluster(o: RunOptions): Promise<Row[]> {
  const packets = { paper: 20_000, max: 60_000, quick: 3000 }[o.mode];
  const points: Point<'cluster' | 'all'>[] = (['cluster', 'all'] as const).map((replication, i) => ({
    series: replication === 'cluster' ? 'nfstate' : 'no-cluster',
    x: 1 + (i === 0 ? -APART : APART),
    label: `12 instances saturated, ${replication === 'cluster' ? 'nfstate' : 'no-cluster'}`,
    params: replication,
  }));
  return sweep(o, points, async (replication) =>
    figures(await deploy({ ...clustered(o), replication, rate: 0, packets })),
  );
}

async function centralMove(o: RunOptions): Promise<Row[]> {
  const moves = o.mode === 'quick' ? 20 : 100;
  const rate = 1000;
  const packets = o.mode === 'quick' ? 3000 : 8000;
  const points: Point<'cluster' | 'off'>[] = (['cluster', 'off'] as const).map((replication) => ({
    series: replication === 'cluster' ? 'nfstate' : 'central-move',
    x: 0,
    label: `${moves} moves, ${replication === 'cluster' ? 'nfstate' : 'central-move'}`,
    params: replication,
  }));
  const rows = await sweep(o, points, async (replication) => {
    const s = await deploy({ ...clustered(o), replication, rate, packets, moves });
    const m = s.moves;
    // Under central-move every move ships the full state, whatever the clusters: both kinds get its mean.
    const full = replication === 'off';
    return {
      ...figures(s),
      moves: m.count,
      aborted: m.aborted,
      bytes_intra: full ? m.state_bytes_inter : m.state_bytes_intra,
      bytes_inter: m.state_bytes_inter,
      move_ms_p50: m.p50_ms,
      move_ms_p99: m.p99_ms,
    };
  });
  return rows;
}

export const baselines: Experiment = {
  name: 'baselines',
  title: 'nfstate beside its baselines: no-cluster, central-move (OpenNF), remote-state (StatelessNF)',
  reproduces:
    'Clustering against sharing with every instance (the thesis’s “no clustering”); moves that ship only the last batch’s changes against moves that ship the full state through a controller; local state against state in a remote store.',
  // The remote-state comparison's rows share series, x and repeat with the no-cluster runs': its own
  // figures tell them apart.
  runOf: (row) =>
    `${row.series}\u0000${row.x}\u0000${row.repeat}\u0000${'remote_throughput_pps' in row ? 'remote-state' : ''}`,
  caveat: (c) => {
    const note = CAVEATS[c.what];
    return note === undefined ? undefined : { note };
  },
  async run(o: RunOptions): Promise<Outcome> {
    const rows = [...(await noCluster(o)), ...(await centralMove(o))];
    o.progress.step(1, 1, 'remote-state against nfstate, one instance each, with redis-server');
    // The Redis client is optional: without it, this baseline says so rather than the whole bench failing to load.
    const { runRemoteStateBench } = await loadOptional(
      'redis',
      'the remote-state baseline (Redis)',
      () => import('../remote-state.js'),
    );
    const remote = await runRemoteStateBench({ nf: 'nat', quick: o.mode === 'quick' });
    o.progress.done();
    for (const p of remote.points)
      rows.push({
        series: p.system,
        x: p.system === 'nfstate' ? 1 - APART : 1 + APART,
        repeat: 1,
        remote_throughput_pps: p.throughput_pps,
        remote_p50_us: p.p50_us,
        remote_p99_us: p.p99_us,
        lost: p.lost,
      });
    const saturated = summarise(rows, 'throughput_pps');
    const replicated = summarise(rows, 'replication_Bps');
    const moveRows = rows.filter((r) => r.x === 0);
    const bytesPerMove = [
      ...summarise(moveRows, 'bytes_intra').map((p) => ({
        ...p,
        x: 1 + (p.series === 'nfstate' ? -APART : APART),
      })),
      ...summarise(moveRows, 'bytes_inter').map((p) => ({
        ...p,
        x: 2 + (p.series === 'nfstate' ? -APART : APART),
      })),
    ];
    const moveMs = summarise(moveRows, 'move_ms_p50');
    const remoteThroughput = summarise(rows, 'remote_throughput_pps');
    const remoteP50 = summarise(rows, 'remote_p50_us');
    const one = (series: string, points: typeof saturated): number =>
      points.find((p) => p.series === series)?.median ?? NaN;
    const categories = (labels: Record<number, string>, title: string) => ({ title, labels });
    return {
      params: {
        nf: 'nat',
        'no-cluster': '12 instances in 3 clusters, batch 30, as fast as the deployment drains',
        'central-move':
          'moves of random flows during a run at 1000 packets/s, half inside clusters, half across',
        'remote-state': `one instance each, redis-server ${remote.redis_version} on loopback`,
      },
      rows,
      plots: [
        {
          name: 'no-cluster',
          plot: {
            title: 'Throughput with clustering and with every instance sharing (12 NFs, batch 30)',
            x: categories({ 1: '12 instances, saturated' }, ''),
            y: { title: 'throughput (packets/s)' },
            points: saturated.filter((p) => p.x !== 0),
            bars: true,
          },
        },
        {
          name: 'central-move',
          plot: {
            title: 'State shipped per move: last batch’s changes vs full state through the controller',
            x: categories({ 1: 'inside a cluster', 2: 'across clusters' }, 'move'),
            y: { title: 'state bytes per move' },
            points: bytesPerMove,
            bars: true,
          },
        },
        {
          name: 'remote-state',
          plot: {
            title: 'Local state (nfstate) vs state in Redis (remote-state), one instance',
            x: categories({ 1: 'saturated' }, ''),
            y: { title: 'throughput (packets/s)' },
            points: remoteThroughput,
            bars: true,
          },
        },
        {
          name: 'remote-state-latency',
          plot: {
            title: 'Latency: local state (nfstate) vs state in Redis (remote-state)',
            x: categories({ 1: 'fixed rate both sustain' }, ''),
            y: { title: 'p50 latency (µs)' },
            points: remoteP50,
            bars: true,
          },
        },
      ],
      comparisons: [
        compare(
          'throughput, 12 instances, batch 30',
          'packets/s',
          one('nfstate', saturated),
          {
            baseline: { name: 'no-cluster', value: one('no-cluster', saturated) },
          },
          'higher',
        ),
        compare(
          'replication traffic, 12 instances',
          'bytes/s',
          one(
            'nfstate',
            replicated.filter((p) => p.x !== 0),
          ),
          {
            baseline: {
              name: 'no-cluster',
              value: one(
                'no-cluster',
                replicated.filter((p) => p.x !== 0),
              ),
            },
          },
          'lower',
        ),
        compare(
          FIGURES.moveBytes,
          'bytes',
          at(bytesPerMove, 'nfstate', 1 - APART),
          {
            baseline: { name: 'central-move', value: at(bytesPerMove, 'central-move', 1 + APART) },
          },
          'lower',
        ),
        compare(
          FIGURES.moveMs,
          'ms',
          one('nfstate', moveMs),
          {
            baseline: { name: 'central-move', value: one('central-move', moveMs) },
          },
          'lower',
        ),
        compare(
          FIGURES.remoteThroughput,
          'packets/s',
          one('nfstate', remoteThroughput),
          {
            baseline: { name: 'remote-state', value: one('remote-state', remoteThroughput) },
          },
          'higher',
        ),
        compare(
          FIGURES.remoteLatency,
          'µs',
          one('nfstate', remoteP50),
          {
            baseline: { name: 'remote-state', value: one('remote-state', remoteP50) },
          },
          'lower',
        ),
      ],
      notes: [
        'A NAT flow’s full state is a few dozen bytes, so a full-state move ships little more than nfstate’s last-batch changes; the gap grows with the NF’s state (the thesis’s state grew with every packet: see migration-bytes).',
        'The move times are not like for like: central-move runs with replication off, so its instances carry none of the replication load that nfstate’s twelve do on the same two cores, and a move inside a cluster in nfstate first waits until the cluster peers have acknowledged what the source sent before it, so that the destination’s replica is current.',
      ],
    };
  },
};
