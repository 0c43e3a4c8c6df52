/**
 * `bench batch` and `bench rate`: the thesis's "effects of clustering". Twelve NFs in three clusters send
 * each batch's changes to their three cluster peers (nfstate); the `no-cluster` baseline sends them to all
 * eleven others. The thesis plotted throughput against batch size and against packet rate; the bytes each
 * deployment replicates per second are plotted beside, since that is what clustering saves.
 */
import type { DeployPoint } from './deploy.js';
import { FULL_BATCHES_MS, PACKET_BYTES, deploy, figures, shape } from './deploy.js';
import type { Experiment, Outcome, Point, RunOptions } from './harness.js';
import {
  PAPER,
  at,
  caveats,
  compare,
  fewerPackets,
  offeredRateCap,
  summarise,
  sweep,
  thesisSeries,
} from './harness.js';
import type { Series } from './thesis.js';
import { THESIS } from './thesis.js';

function base(o: RunOptions): {
  nf: 'nat';
  clusters: number;
  perCluster: number;
  flows: number;
  batchTimeoutMs: number;
} {
  return {
    nf: 'nat',
    flows: o.mode === 'quick' ? 8 : 24,
    batchTimeoutMs: FULL_BATCHES_MS,
    ...shape(o.mode, 3, 4),
  };
}
const SERIES = [
  { name: 'nfstate', replication: 'cluster' },
  { name: 'no-cluster', replication: 'all' },
] as const;

interface Sweep {
  x: readonly number[];
  point: (x: number) => { batch: number; rate: number; packets: number };
  label: (x: number) => string;
}

function nfs(o: RunOptions): number {
  const b = base(o);
  return b.clusters * b.perCluster;
}

async function measure(o: RunOptions, s: Sweep): Promise<ReturnType<typeof sweep>> {
  const points: Point<DeployPoint>[] = s.x.flatMap((x) =>
    SERIES.map((series) => ({
      series: series.name,
      x,
      label: `${s.label(x)}, ${series.name}`,
      params: { ...base(o), replication: series.replication, ...s.point(x) },
    })),
  );
  return sweep(o, points, async (p) => figures(await deploy(p)));
}

function thesisLines(t: { cluster: Series; noCluster: Series }): ReturnType<typeof thesisSeries> {
  return [
    ...thesisSeries(t.cluster, 'thesis, clusters'),
    ...thesisSeries(t.noCluster, 'thesis, no clusters'),
  ];
}

export const batch: Experiment = {
  name: 'batch',
  title: 'Throughput vs batch size, with and without clustering (3 clusters, 12 NFs)',
  reproduces:
    'Throughput of 12 NFs in 3 clusters against batch size 10..100, with and without clustering, 4000 packets at 100 packets/s.',
  caveat: (c, r) => caveats(offeredRateCap(c, Number(r.params.rate_pps), PACKET_BYTES), fewerPackets(c, r)),
  async run(o: RunOptions): Promise<Outcome> {
    const sizes = { paper: [10, 30, 60, 100], max: [10, 30, 100], quick: [10, 100] }[o.mode];
    const rate = o.mode === 'max' ? 0 : PAPER.rate;
    const packets = o.packets ?? { paper: PAPER.packets, max: 60_000, quick: 200 }[o.mode];
    const rows = await measure(o, {
      x: sizes,
      point: (size) => ({ batch: size, rate, packets }),
      label: (size) => `batch ${size}`,
    });
    const paper = rate !== 0;
    const throughput = summarise(rows, paper ? 'throughput_Bps' : 'throughput_pps');
    const replicated = summarise(rows, 'replication_Bps');
    const s = sizes.includes(PAPER.batch) ? PAPER.batch : sizes[0]!;
    return {
      params: { ...base(o), packets, rate_pps: rate, batch_sizes: sizes },
      rows,
      plots: [
        {
          name: 'throughput',
          plot: {
            title: `Throughput vs batch size (${nfs(o)} NFs, ${paper ? `${rate} packets/s` : 'saturated'})`,
            x: { title: 'batch size (packets)' },
            y: { title: paper ? 'throughput (bytes/s)' : 'throughput (packets/s)' },
            points: [...throughput, ...(paper ? thesisLines(THESIS.throughputVsBatch) : [])],
          },
        },
        {
          name: 'replication',
          plot: {
            title: 'State replication traffic vs batch size (all instances together)',
            x: { title: 'batch size (packets)' },
            y: { title: 'replication (bytes/s)' },
            points: replicated,
          },
        },
      ],
      comparisons: [
        compare(
          `throughput at batch ${s}`,
          paper ? 'bytes/s' : 'packets/s',
          at(throughput, 'nfstate', s),
          { baseline: { name: 'no-cluster', value: at(throughput, 'no-cluster', s) } },
          'higher',
        ),
        compare(
          `replication traffic at batch ${s}`,
          'bytes/s',
          at(replicated, 'nfstate', s),
          { baseline: { name: 'no-cluster', value: at(replicated, 'no-cluster', s) } },
          'lower',
        ),
        ...(paper
          ? [
              compare(
                `throughput at batch ${sizes[0]!}`,
                'bytes/s',
                at(throughput, 'nfstate', sizes[0]!),
                {
                  thesis: THESIS.throughputVsBatch.cluster[0][1],
                },
                'higher',
              ),
            ]
          : []),
      ],
    };
  },
};

export const rate: Experiment = {
  name: 'rate',
  title: 'Throughput and latency vs packet rate, with and without clustering (3 clusters, 12 NFs)',
  reproduces:
    'Throughput of 12 NFs in 3 clusters at 25, 50 and 100 packets/s, with and without clustering, 4000 packets, batches of 30.',
  // Every figure is read at the highest rate (before figures said which: results of older runs).
  caveat: (c, r) => {
    const rates = r.params.rates_pps;
    const top = Array.isArray(rates) ? Math.max(...rates.map(Number)) : NaN;
    return caveats(offeredRateCap(c, c.x ?? top, PACKET_BYTES), fewerPackets(c, r));
  },
  async run(o: RunOptions): Promise<Outcome> {
    const rates = { paper: [25, 50, 100], max: [1000, 2000, 4000, 8000], quick: [50, 100] }[o.mode];
    const seconds = o.mode === 'max' ? 8 : undefined;
    const packets = o.packets ?? (o.mode === 'quick' ? 150 : PAPER.packets);
    const rows = await measure(o, {
      x: rates,
      point: (r) => ({ rate: r, batch: PAPER.batch, packets: seconds === undefined ? packets : r * seconds }),
      label: (r) => `${r} packets/s`,
    });
    const throughput = summarise(rows, 'throughput_Bps');
    const latency = summarise(rows, 'latency_ms_mean');
    const paper = o.mode !== 'max';
    const top = rates.at(-1)!;
    return {
      params: {
        ...base(o),
        packets: seconds === undefined ? packets : `${seconds} s of traffic`,
        batch: PAPER.batch,
        rates_pps: rates,
      },
      rows,
      plots: [
        {
          name: 'throughput',
          plot: {
            title: `Throughput vs packet rate (${nfs(o)} NFs, batch 30)`,
            x: { title: 'offered rate (packets/s)' },
            y: { title: 'throughput (bytes/s)' },
            points: [...throughput, ...(paper ? thesisLines(THESIS.throughputVsRate) : [])],
          },
        },
        {
          name: 'latency',
          plot: {
            title: `Latency vs packet rate (${nfs(o)} NFs, batch 30)`,
            x: { title: 'offered rate (packets/s)' },
            y: { title: 'mean latency (ms/packet)' },
            points: latency,
          },
        },
      ],
      comparisons: [
        compare(
          `throughput at ${top} packets/s`,
          'bytes/s',
          at(throughput, 'nfstate', top),
          { baseline: { name: 'no-cluster', value: at(throughput, 'no-cluster', top) } },
          'higher',
          top,
        ),
        compare(
          `latency at ${top} packets/s`,
          'ms/packet',
          at(latency, 'nfstate', top),
          { baseline: { name: 'no-cluster', value: at(latency, 'no-cluster', top) } },
          'lower',
          top,
        ),
        ...(paper && top === 100
          ? [
              compare(
                'throughput at 100 packets/s',
                'bytes/s',
                at(throughput, 'nfstate', 100),
                {
                  thesis: THESIS.throughputVsRate.cluster[2][1],
                },
                'higher',
                100,
              ),
            ]
          : []),
      ],
    };
  },
};
