/**
 * `bench lb`: latency against packet rate with and without the load-balancing unit (the thesis's "results
 * of load balancing"), 3 clusters of 3 NFs. A few heavy flows (skew 10) start on one instance, which the
 * unit sees overloaded: each instance is taken to be provisioned for 3x its even share of the rate (the
 * demo's rule under skew), and the unit moves heavy flows off the overloaded one — inside its cluster
 * first. Under `paper` the thesis's rates, which no nfstate instance comes near saturating; under `max`,
 * rates where the machine does.
 */
import { FULL_BATCHES_MS, deploy, figures, shape } from './deploy.js';
import type { Experiment, Outcome, Point, RunOptions } from './harness.js';
import { PAPER, at, compare, summarise, sweep, thesisSeries } from './harness.js';
import { THESIS } from './thesis.js';

function base(o: RunOptions) {
  return {
    nf: 'nat',
    flows: 40,
    skew: 10,
    batch: PAPER.batch,
    batchTimeoutMs: FULL_BATCHES_MS,
    ...shape(o.mode, 3, 3),
  } as const;
}

export const lb: Experiment = {
  name: 'lb',
  title: 'Latency vs packet rate, with and without load balancing (3 clusters, 9 NFs)',
  reproduces:
    'Latency per packet of 9 NFs in 3 clusters at 25, 50 and 60 packets/s, with and without load balancing, 4000 packets, batches of 30.',
  async run(o: RunOptions): Promise<Outcome> {
    const rates = { paper: [25, 50, 60], max: [1000, 2000, 3000, 4000], quick: [60] }[o.mode];
    const seconds = o.mode === 'max' ? 8 : undefined;
    const packets = o.packets ?? (o.mode === 'quick' ? 300 : PAPER.packets);
    const points: Point<{ rate: number; lb: boolean }>[] = rates.flatMap((rate) =>
      [true, false].map((on) => ({
        series: on ? 'nfstate, load balancing' : 'nfstate, no load balancing',
        x: rate,
        label: `${rate} packets/s, load balancing ${on ? 'on' : 'off'}`,
        params: { rate, lb: on },
      })),
    );
    const rows = await sweep(o, points, async ({ rate, lb: on }) => {
      const s = await deploy({
        ...base(o),
        rate,
        lb: on,
        packets: seconds === undefined ? packets : rate * seconds,
      });
      return { ...figures(s), lb_moves: s.lb.moves, overloaded_ms: overloadedMs(s.lb.load) };
    });
    const latency = summarise(rows, 'latency_ms_mean');
    const p99 = summarise(rows, 'latency_ms_p99');
    const top = rates.at(-1)!;
    const paper = o.mode !== 'max';
    return {
      params: {
        ...base(o),
        packets: seconds === undefined ? packets : `${seconds} s of traffic`,
        rates_pps: rates,
        capacity: '3x the even share of the rate per instance',
      },
      rows,
      plots: [
        {
          name: 'latency',
          plot: {
            title: 'Latency vs packet rate (9 NFs, skew 10)',
            x: { title: 'offered rate (packets/s)' },
            y: { title: 'mean latency (ms/packet)', log: paper },
            points: [
              ...latency,
              ...(paper
                ? [
                    ...thesisSeries(THESIS.latencyVsRateLb.on, 'thesis, load balancing'),
                    ...thesisSeries(THESIS.latencyVsRateLb.off, 'thesis, no load balancing'),
                  ]
                : []),
            ],
          },
        },
        {
          name: 'latency-p99',
          plot: {
            title: 'Tail latency vs packet rate (9 NFs, skew 10)',
            x: { title: 'offered rate (packets/s)' },
            y: { title: 'p99 latency (ms/packet)' },
            points: p99,
          },
        },
        {
          name: 'moves',
          plot: {
            title: 'Flows the load-balancing unit moved',
            x: { title: 'offered rate (packets/s)' },
            y: { title: 'flows moved per run' },
            points: summarise(rows, 'lb_moves'),
          },
        },
      ],
      comparisons: [
        compare(
          `latency at ${top} packets/s`,
          'ms/packet',
          at(latency, 'nfstate, load balancing', top),
          { baseline: { name: 'no load balancing', value: at(latency, 'nfstate, no load balancing', top) } },
          'lower',
        ),
        ...(paper && top === 60
          ? [
              compare(
                'latency at 60 packets/s, load balancing',
                'ms/packet',
                at(latency, 'nfstate, load balancing', 60),
                {
                  thesis: THESIS.latencyVsRateLb.on[2][1],
                },
                'lower',
              ),
            ]
          : []),
      ],
    };
  },
};

/** The longest any instance was overloaded during the run. */
function overloadedMs(load: Record<string, { overloaded_ms: number }>): number {
  return Math.max(0, ...Object.values(load).map((l) => l.overloaded_ms));
}
