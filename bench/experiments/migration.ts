/**
 * `bench migration-bytes`: the thesis's migration-overhead scenario, exactly. One flow at 50 packets/s
 * through 2 clusters of 2 NFs, batches of 30. After 68 packets the flow moves from its instance (NF-1) to
 * the other member of its cluster (NF-2), which installs it from its replica: only the changes since the
 * last batch travel. After 165 packets it moves to an instance of the other cluster (NF-3), which gets its
 * full state. Meanwhile each instance's replication counters are read every few milliseconds, so each
 * batch shows as the bytes it sent to, or received from, its cluster peers, at the packet count it
 * closed at. The moves' own state bytes come from the controller's records.
 */
import { scrape } from '../../src/launcher/demo.js';
import type { DemoRun } from '../../src/launcher/demo-report.js';
import type { MoveRecord } from '../../src/controller/records.js';
import { metricSum } from '../../src/metrics.js';
import { flowKeyString } from '../../src/packet/flow-key.js';
import { FULL_BATCHES_MS, deploy } from './deploy.js';
import type { Experiment, Outcome, Row, RunOptions } from './harness.js';
import { median, compare } from './harness.js';
import type { PlotPoint } from './plot.js';
import { THESIS } from './thesis.js';

const RATE = 50;
const BATCH = 30;
const SAMPLE_MS = 10;
const KINDS = {
  sent: 'sent to own cluster (per batch)',
  received: 'received from own cluster (per batch)',
  intra: 'received in the move inside the cluster',
  inter: 'received in the move from another cluster',
} as const;

interface Trace {
  /** NF-1 … NF-4 in the thesis's naming: the flow's first owner, its cluster mate, the other cluster's. */
  names: Map<string, string>;
  rows: Row[];
}

/** Runs the scenario once: the two moves at their packets, and every instance's counters meanwhile. */
async function scenario(packets: number, repeat: number): Promise<Trace & { clean: boolean }> {
  const trace: Trace = { names: new Map(), rows: [] };
  const during = async ({ gen, trace: t, ends, api }: DemoRun): Promise<void> => {
    const flow = flowKeyString(t.flowKey(0));
    const { owner } = (await api(ends.ingress.admin, `/owner?flow=${encodeURIComponent(flow)}`)) as {
      owner: string;
    };
    const clusters = (await api(ends.controller.admin, '/clusters')) as unknown as {
      members: string[];
    }[];
    const home = clusters.find((c) => c.members.includes(owner))!;
    const other = clusters.find((c) => c !== home)!;
    const order = [owner, home.members.find((m) => m !== owner)!, ...other.members];
    order.forEach((id, i) => trace.names.set(id, `NF-${i + 1}`));
    const admins = new Map(ends.instances.map((i) => [i.id, i.admin]));
    const last = new Map<string, { sent: number; received: number }>();
    const sampling = { on: true };
    // The first sample only sets where the counters start: clusters formed before the flow's first packet.
    const sample = async (record = true): Promise<void> => {
      const at = gen.sent;
      await Promise.all(
        order.map(async (id) => {
          const text = await scrape(admins.get(id)!);
          const now = {
            sent: metricSum(text, 'nfstate_replication_sent_bytes_total'),
            received: metricSum(text, 'nfstate_replication_received_bytes_total'),
          };
          const before = last.get(id) ?? { sent: 0, received: 0 };
          last.set(id, now);
          for (const kind of ['sent', 'received'] as const) {
            const bytes = now[kind] - before[kind];
            if (record && bytes > 0)
              trace.rows.push({ series: KINDS[kind], x: at, repeat, instance: trace.names.get(id)!, bytes });
          }
        }),
      );
    };
    await sample(false);
    const sampler = (async () => {
      while (sampling.on) {
        await sample();
        await new Promise((r) => setTimeout(r, SAMPLE_MS));
      }
    })();
    const moveAt = async (after: number, to: string, kind: 'intra' | 'inter'): Promise<void> => {
      while (gen.sent < after) await new Promise((r) => setTimeout(r, 2));
      const r = (await api(ends.controller.admin, '/move', { flow, to }, 30_000)) as unknown as MoveRecord;
      trace.rows.push({
        series: KINDS[kind],
        x: after,
        repeat,
        instance: trace.names.get(to)!,
        bytes: r.aborted ? 0 : r.state_bytes,
        move_ms: r.duration_ms,
      });
    };
    await moveAt(THESIS.migration.intraAfter, order[1]!, 'intra');
    await moveAt(THESIS.migration.interAfter, order[2]!, 'inter');
    while (gen.sent < packets) await new Promise((r) => setTimeout(r, 20));
    // The last batch closes on its timer after the last packet.
    await new Promise((r) => setTimeout(r, 300));
    sampling.on = false;
    await sampler;
    await sample();
  };
  const s = await deploy({
    nf: 'nat',
    clusters: 2,
    perCluster: 2,
    flows: 1,
    packets,
    rate: RATE,
    batch: BATCH,
    batchTimeoutMs: FULL_BATCHES_MS,
    during,
  });
  return { ...trace, clean: s.lost === 0 && s.reordered === 0 && s.state_matches_oracle };
}

export const migration: Experiment = {
  name: 'migration-bytes',
  title: 'State bytes vs packet count for a flow that moves twice (2 clusters, 4 NFs)',
  reproduces:
    'Bytes of state information each instance sends and receives per batch for one flow at 50 packets/s, batches of 30, which moves from NF-1 to NF-2 (same cluster) after 68 packets and to NF-3 (other cluster) after 165.',
  // One scenario per repeat: it writes a row per batch and per move.
  runOf: (row) => String(row.repeat),
  caveat: (c) =>
    c.thesis === undefined
      ? undefined
      : {
          note: "different state models: the thesis's state was the flow's packet history (about 100 bytes per packet), so it grew with every packet; a NAT flow's is its mapping and counters, a few dozen bytes however long it runs",
        },
  async run(o: RunOptions): Promise<Outcome> {
    const packets = o.mode === 'quick' ? 200 : 300;
    const rows: Row[] = [];
    let clean = 0;
    for (let repeat = 1; repeat <= o.repeats; repeat++) {
      o.progress.step(
        repeat,
        o.repeats,
        `one flow, ${packets} packets at ${RATE} packets/s (${repeat}/${o.repeats})`,
      );
      const t = await scenario(packets, repeat);
      rows.push(...t.rows.map((r) => ({ ...r, clean: t.clean ? 1 : 0 })));
      if (t.clean) clean++;
    }
    o.progress.done();
    // The plots show the first run; the table and comparisons take every run.
    const first = rows.filter((r) => r.repeat === 1);
    const plot = (instance: string): PlotPoint[] =>
      first
        .filter((r) => r.instance === instance)
        .map((r) => ({
          series: r.series,
          x: r.x,
          median: r.bytes as number,
          min: r.bytes as number,
          max: r.bytes as number,
        }));
    const bytes = (series: string): number[] =>
      rows.filter((r) => r.series === series).map((r) => r.bytes as number);
    const perBatch = median(bytes(KINDS.sent));
    const intra = median(bytes(KINDS.intra));
    const inter = median(bytes(KINDS.inter));
    const moveMs = (series: string): number =>
      median(rows.filter((r) => r.series === series).map((r) => r.move_ms as number));
    return {
      params: {
        nf: 'nat',
        clusters: 2,
        nfs: 4,
        flows: 1,
        packets,
        rate_pps: RATE,
        batch: BATCH,
        batchTimeoutMs: FULL_BATCHES_MS,
        moves_after: '68 and 165 packets',
      },
      rows,
      plots: ['NF-1', 'NF-2', 'NF-3'].map((name) => ({
        name: name.toLowerCase(),
        plot: {
          title: `${name}: state information (bytes) vs packet count`,
          x: { title: 'packets of the flow sent' },
          y: { title: 'state information (bytes)' },
          points: plot(name),
          bars: true,
        },
      })),
      comparisons: [
        compare('state sent per batch', 'bytes', perBatch, { thesis: THESIS.migration.batchBytes }, 'lower'),
        compare(
          'move inside the cluster',
          'bytes',
          intra,
          { thesis: THESIS.migration.intraMoveBytes },
          'lower',
        ),
        compare(
          'move to another cluster',
          'bytes',
          inter,
          { thesis: THESIS.migration.interMoveBytes },
          'lower',
        ),
        compare(
          'move inside the cluster',
          'ms',
          moveMs(KINDS.intra),
          {
            baseline: { name: 'move to another cluster', value: moveMs(KINDS.inter) },
          },
          'lower',
        ),
      ],
      notes: [
        `Runs without a packet lost or reordered and with the state equal to the oracle's: ${clean} of ${o.repeats}.`,
        "The thesis's state was the flow's packet history (about 100 bytes per packet), so its full state grew with every packet; a NAT flow's state is its mapping and counters, a few dozen bytes however long the flow runs.",
      ],
    };
  },
};
