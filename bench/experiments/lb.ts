/**
 * `bench lb`: latency against packet rate with and without the load-balancing unit (the thesis's "results
 * of load balancing"), 3 clusters of 3 NFs. A few heavy flows (skew 10) start on one instance, which the
 * unit sees overloaded: each instance is taken to be provisioned for 3x its even share of the rate (the
 * demo's rule under skew), and the unit moves flows off the overloaded one — inside its cluster first.
 * Under `paper` the thesis's rates, which no nfstate instance comes near saturating; under `max`, rates
 * where the machine does.
 *
 * The headline compares the two series at the rate where the unit moved the most flows, and says how
 * many: a comparison at a rate where it moved none would set two runs without load balancing side by side.
 */
import { DEFAULT_BALANCER } from '../../src/controller/balancer.js';
import { FULL_BATCHES_MS, deploy, figures, shape } from './deploy.js';
import type {
  Caveat,
  Comparison,
  Experiment,
  ExperimentResult,
  Outcome,
  Point,
  Row,
  RunOptions,
} from './harness.js';
import {
  PAPER,
  at,
  caveats,
  compare,
  fewerPackets,
  median,
  summarise,
  sweep,
  thesisSeries,
} from './harness.js';
import { THESIS } from './thesis.js';

const ON = 'nfstate, load balancing';
const OFF = 'nfstate, no load balancing';
const SKEW = 10;

function base(o: RunOptions) {
  return {
    nf: 'nat',
    flows: 40,
    skew: SKEW,
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
        series: on ? ON : OFF,
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
    const moved = summarise(rows, 'lb_moves');
    // Where the unit moved the most flows (the highest such rate on a tie, the highest rate if none).
    const where = [...rates]
      .reverse()
      .reduce((best, r) => (at(moved, ON, r) > at(moved, ON, best) ? r : best));
    const paper = o.mode !== 'max';
    const thesis = THESIS.latencyVsRateLb.on.find(([r]) => r === where)?.[1];
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
            points: moved,
          },
        },
      ],
      comparisons: [
        compare(
          `latency at ${where} packets/s`,
          'ms/packet',
          at(latency, ON, where),
          { baseline: { name: 'no load balancing', value: at(latency, OFF, where) } },
          'lower',
          where,
        ),
        ...(paper && thesis !== undefined
          ? [
              compare(
                `latency at ${where} packets/s, load balancing`,
                'ms/packet',
                at(latency, ON, where),
                { thesis },
                'lower',
                where,
              ),
            ]
          : []),
      ],
      notes: [movesNote(rows, rates)],
    };
  },
  caveat: (c, r) => caveats(qualify(c, r), fewerPackets(c, r)),
};

/** The flows the unit moved per run at `rate` (all rates where undefined): median, least and most. */
function moves(rows: readonly Row[], rate: number | undefined): { median: number; min: number; max: number } {
  const n = rows
    .filter((r) => r.series === ON && (rate === undefined || r.x === rate) && typeof r.lb_moves === 'number')
    .map((r) => r.lb_moves as number);
  return n.length === 0
    ? { median: NaN, min: NaN, max: NaN }
    : { median: median(n), min: Math.min(...n), max: Math.max(...n) };
}

/** The smallest and largest `metric` of `series` at `x` (every x where undefined). */
function range(
  rows: readonly Row[],
  series: string,
  x: number | undefined,
  metric: string,
): { min: number; max: number } | undefined {
  const v = rows
    .filter((r) => r.series === series && (x === undefined || r.x === x))
    .map((r) => r[metric])
    .filter((m): m is number => typeof m === 'number');
  return v.length === 0 ? undefined : { min: Math.min(...v), max: Math.max(...v) };
}

/** Three significant figures: enough to tell the ranges apart. */
function num(v: number): string {
  return Number(v.toPrecision(3)).toString();
}

function qualify(c: Comparison, r: ExperimentResult): Caveat {
  const m = moves(r.rows, c.x);
  if (!(m.median > 0))
    return {
      note: 'the unit moved no flow in these runs: both sides ran without load balancing',
      void: true,
    };
  const spread = m.min === m.max ? '' : ` (${m.min} to ${m.max})`;
  const notes = [
    `the unit moved ${m.median} flows per run${spread}`,
    'the overload it relieved is nominal: each instance counts as provisioned for 3x its even share of the rate, far below what it can carry, so there is no load for the moves to relieve',
  ];
  if (c.baseline !== undefined) {
    const [on, off] = [ON, OFF].map((series) => range(r.rows, series, c.x, 'latency_ms_mean'));
    if (on !== undefined && off !== undefined && on.min <= off.max && off.min <= on.max)
      notes.push(
        `the repeats overlap: ${num(on.min)} to ${num(on.max)} ${c.unit} with the unit, ${num(off.min)} to ${num(off.max)} without`,
      );
  }
  return { note: notes.join('; ') };
}

/**
 * What the unit did at each rate, beside how long a heavy flow's burst lasts there: it sends its packets
 * back to back, `SKEW` at a time, and the unit calls an instance overloaded only after `sustainMs` above
 * `high`.
 */
function movesNote(rows: readonly Row[], rates: readonly number[]): string {
  const per = rates.map((r) => {
    const m = moves(rows, r);
    const burst = Math.round((SKEW * 1000) / r);
    return `${Number.isNaN(m.median) ? 'n/a' : m.median} at ${r} packets/s (a heavy flow's ${SKEW} back-to-back packets last ${burst} ms)`;
  });
  const { sustainMs, high } = DEFAULT_BALANCER;
  return `Flows the load-balancing unit moved per run (median): ${per.join('; ')}. The unit counts an instance as overloaded once its load has stayed above ${high} for ${sustainMs} ms.`;
}

/** The longest any instance was overloaded during the run. */
function overloadedMs(load: Record<string, { overloaded_ms: number }>): number {
  return Math.max(0, ...Object.values(load).map((l) => l.overloaded_ms));
}
