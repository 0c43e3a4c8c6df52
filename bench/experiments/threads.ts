/**
 * `bench threads`: latency and throughput of one NF instance against its number of worker threads (the
 * thesis's "results of multithreading"). Under `paper`, the thesis's 4000 packets at 100 packets/s over 10
 * flows, so that threads have flows to share; under `max`, as fast as the instance drains.
 */
import { FULL_BATCHES_MS, PACKET_BYTES, deploy, figures } from './deploy.js';
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
import { THESIS } from './thesis.js';

const FLOWS = 10;

export const threads: Experiment = {
  name: 'threads',
  title: 'Latency and throughput vs worker threads (one NF)',
  reproduces:
    'Latency and throughput of one NF with 1 to 5 threads, 4000 packets at 100 packets/s, batches of 30.',
  caveat: (c, r) => caveats(offeredRateCap(c, Number(r.params.rate_pps), PACKET_BYTES), fewerPackets(c, r)),
  async run(o: RunOptions): Promise<Outcome> {
    const counts = o.threads ?? (o.mode === 'quick' ? [1, 2] : [1, 2, 3, 4, 5]);
    const rate = o.mode === 'max' ? 0 : PAPER.rate;
    const packets = o.packets ?? { paper: PAPER.packets, max: 60_000, quick: 200 }[o.mode];
    const points: Point<number>[] = counts.map((t) => ({
      series: 'nfstate',
      x: t,
      label: `${t} thread${t === 1 ? '' : 's'}`,
      params: t,
    }));
    const rows = await sweep(o, points, async (t) =>
      figures(
        await deploy({
          nf: 'nat',
          clusters: 1,
          perCluster: 1,
          threads: t,
          batch: PAPER.batch,
          batchTimeoutMs: FULL_BATCHES_MS,
          flows: FLOWS,
          packets,
          rate,
        }),
      ),
    );
    const latency = summarise(rows, 'latency_ms_mean');
    const throughput = summarise(rows, rate === 0 ? 'throughput_pps' : 'throughput_Bps');
    const paper = rate !== 0;
    const first = counts[0]!;
    return {
      params: {
        nf: 'nat',
        instances: 1,
        flows: FLOWS,
        packets,
        rate_pps: rate,
        batch: PAPER.batch,
        batchTimeoutMs: FULL_BATCHES_MS,
        threads: counts,
      },
      rows,
      plots: [
        {
          name: 'latency',
          plot: {
            title: `Latency vs threads (1 NF, ${paper ? `${rate} packets/s` : 'saturated'})`,
            x: { title: 'worker threads', integer: true },
            y: { title: 'mean latency (ms/packet)', log: paper },
            points: [...latency, ...(paper ? thesisSeries(THESIS.latencyVsThreads) : [])],
          },
        },
        {
          name: 'throughput',
          plot: {
            title: `Throughput vs threads (1 NF, ${paper ? `${rate} packets/s offered` : 'saturated'})`,
            x: { title: 'worker threads', integer: true },
            y: { title: paper ? 'throughput (bytes/s)' : 'throughput (packets/s)' },
            points: [...throughput, ...(paper ? thesisSeries(THESIS.throughputVsThreads) : [])],
          },
        },
      ],
      comparisons: paper
        ? [
            compare(
              `latency, ${first} thread(s)`,
              'ms/packet',
              at(latency, 'nfstate', first),
              {
                thesis: THESIS.latencyVsThreads.find(([x]) => x === first)?.[1] ?? NaN,
              },
              'lower',
            ),
            compare(
              `throughput, ${first} thread(s)`,
              'bytes/s',
              at(throughput, 'nfstate', first),
              {
                thesis: THESIS.throughputVsThreads.find(([x]) => x === first)?.[1] ?? NaN,
              },
              'higher',
            ),
          ]
        : [],
      notes: paper
        ? [
            'At a fixed offered rate the throughput is the offered rate once nothing is lost; the thesis prototype fell short of it.',
          ]
        : [],
    };
  },
};
