/**
 * `bench scale`: one NF instance's throughput and memory per flow against the number of concurrent flows,
 * 1k to 1M (bench/scale.ts), each throughput beside the bare Node relay measured with the same packets
 * just before it. Not an experiment of the thesis, whose runs had a handful of flows.
 */
import { runScaleBench, SCALE_FLOWS } from '../scale.js';
import type { Experiment, Outcome, Row, RunOptions } from './harness.js';
import { at, compare, summarise } from './harness.js';

/** The NAT gives each flow a port of one public address: it holds 64 512 flows, not a million. */
const NF = 'firewall';

export const scale: Experiment = {
  name: 'scale',
  title: 'Throughput and memory per flow vs concurrent flows (one NF, 1k to 1M flows)',
  reproduces: 'Not measured by the thesis: its runs had a few flows.',
  caveat: () => ({
    note: 'each point checks only that no packet was lost and that the instance held exactly its flows',
  }),
  async run(o: RunOptions): Promise<Outcome> {
    const flows = o.mode === 'quick' ? SCALE_FLOWS.quick : SCALE_FLOWS.full;
    const rows: Row[] = [];
    let driver = '';
    for (let repeat = 1; repeat <= o.repeats; repeat++) {
      const r = await runScaleBench({
        nf: NF,
        flows,
        quick: o.mode === 'quick',
        step: (what) => o.progress.step(repeat, o.repeats, `${what} (${repeat}/${o.repeats})`),
      });
      driver = r.driver;
      for (const p of r.points) {
        rows.push({ series: 'nfstate', x: p.flows, repeat, ...p });
        rows.push({ series: 'Node relay (baseline)', x: p.flows, repeat, throughput_pps: p.relay_pps });
      }
    }
    o.progress.done();
    const throughput = summarise(rows, 'throughput_pps');
    const memory = summarise(rows, 'bytes_per_flow');
    const most = flows.at(-1)!;
    const fewest = flows[0];
    return {
      params: { nf: NF, threads: 1, flows: flows.join(', '), driver },
      rows,
      plots: [
        {
          name: 'throughput',
          plot: {
            title: 'Throughput vs concurrent flows (one NF instance, one worker)',
            x: { title: 'concurrent flows', log: true },
            y: { title: 'throughput (packets/s)' },
            points: throughput,
          },
        },
        {
          name: 'memory',
          plot: {
            title: `Memory per flow vs concurrent flows (${NF})`,
            x: { title: 'concurrent flows', log: true },
            y: { title: 'bytes per flow' },
            points: memory,
          },
        },
      ],
      comparisons: [
        compare(
          `throughput with ${most} flows`,
          'packets/s',
          at(throughput, 'nfstate', most),
          {
            baseline: { name: `${fewest} flows`, value: at(throughput, 'nfstate', fewest) },
          },
          'higher',
        ),
      ],
    };
  },
};
