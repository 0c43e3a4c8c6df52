/**
 * `bench switch` (root, Open vSwitch): the same deployment with its traffic routed by the ingress's own
 * switch and by an Open vSwitch bridge in front of it (`demo --switch ovs`, src/switch/ovs.ts), side by
 * side in one run. Two points per series: saturated (a closed loop, x = 0), for throughput and latency; and
 * at a fixed rate with moves during the run, for how long a move takes when each rule also goes to OVS.
 *
 * Both series keep the same number of packets in flight when saturated: the bridge's own limit
 * (OVS_WINDOW), so that the window does not decide the comparison.
 */
import { ovsUnavailable, OVS_WINDOW } from '../../src/switch/ovs.js';
import { deploy, figures, shape } from './deploy.js';
import type { Comparison, Experiment, Outcome, Point, RunOptions } from './harness.js';
import type { PlotPoint } from './plot.js';
import { at, compare, summarise, sweep } from './harness.js';

const BUILTIN = 'built-in switch';
const OVS = 'Open vSwitch';
const MOVE_RATE = 2000;

/** OVS's figure at `x` against the built-in switch's of the same run. */
function against(
  what: string,
  unit: string,
  points: readonly PlotPoint[],
  x: number,
  better: 'higher' | 'lower',
): Comparison {
  return compare(
    what,
    unit,
    at(points, OVS, x),
    { baseline: { name: BUILTIN, value: at(points, BUILTIN, x) } },
    better,
    x,
  );
}

export const switchBackends: Experiment = {
  name: 'switch',
  title: 'The built-in switch against Open vSwitch in front of the ingress (2 clusters, 4 NFs)',
  reproduces:
    'The thesis routed with Open vSwitch; nfstate’s own switch is in its ingress. The same runs through each: throughput and latency saturated, and moves at a fixed rate.',
  needs: () => ovsUnavailable() ?? undefined,
  async run(o: RunOptions): Promise<Outcome> {
    const packets = o.packets ?? { paper: 20_000, max: 100_000, quick: 4_000 }[o.mode];
    const moves = o.mode === 'quick' ? 6 : 20;
    const base = { nf: 'firewall', flows: 200, packets, ...shape(o.mode, 2, 2) } as const;
    const points: Point<{ ovs: boolean; rate: number }>[] = [0, MOVE_RATE].flatMap((rate) =>
      [false, true].map((ovs) => ({
        series: ovs ? OVS : BUILTIN,
        x: rate,
        label: `${ovs ? OVS : BUILTIN}, ${rate === 0 ? 'saturated' : `${rate} packets/s with ${moves} moves`}`,
        params: { ovs, rate },
      })),
    );
    const rows = await sweep(o, points, async ({ ovs, rate }) => {
      const s = await deploy({
        ...base,
        rate,
        switch: ovs ? 'ovs' : 'builtin',
        window: OVS_WINDOW,
        ...(rate === 0 ? {} : { moves }),
      });
      return {
        ...figures(s),
        ...(rate === 0
          ? {}
          : { move_ms_p50: s.moves.p50_ms, move_ms_p99: s.moves.p99_ms, moves: s.moves.count }),
        ...(s.switch.kind === 'ovs' ? { ovs_overridden: s.switch.overridden } : {}),
      };
    });
    const throughput = summarise(rows, 'throughput_pps');
    const latency = summarise(rows, 'latency_ms_p50');
    const move = summarise(rows, 'move_ms_p50');
    return {
      params: { ...base, window: OVS_WINDOW, moves_rate_pps: MOVE_RATE, moves_per_run: moves },
      rows,
      plots: [
        {
          name: 'throughput',
          plot: {
            title: 'Throughput by switch (x = 0: saturated)',
            x: { title: 'offered rate (packets/s; 0 = as fast as it drains)' },
            y: { title: 'throughput (packets/s)' },
            points: throughput,
          },
        },
        {
          name: 'moves',
          plot: {
            title: `Move duration by switch, at ${MOVE_RATE} packets/s`,
            x: { title: 'offered rate (packets/s)' },
            y: { title: 'move p50 (ms)' },
            points: move,
          },
        },
      ],
      comparisons: [
        against('throughput, saturated', 'packets/s', throughput, 0, 'higher'),
        against('latency p50, saturated', 'ms/packet', latency, 0, 'lower'),
        against(`move p50 at ${MOVE_RATE} packets/s`, 'ms', move, MOVE_RATE, 'lower'),
      ],
      notes: [
        'Through OVS a packet crosses a veth pair into its namespace, is read with AF_PACKET, classified by the exact rules and the multipath default, and sent on in VXLAN to the ingress, which stamps it as the route in its destination address says: one more hop, two more system calls and two more copies per packet than the built-in switch.',
        'A move through OVS also writes the flow’s two exact rules with ovs-ofctl (one OpenFlow bundle, a process per call).',
      ],
    };
  },
};
