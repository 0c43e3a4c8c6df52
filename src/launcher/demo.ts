/**
 * `nfstate demo`: starts a local deployment, sends a synthetic trace through it, waits for it to drain,
 * checks every flow by stamp and the final state against the oracle, stops everything and summarises.
 *
 *   const summary = await runDemo(topology, { flows: 200, packets: 50, rate: 0, ... }, logger);
 *   summary.lost === 0 && summary.state_matches_oracle;
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Generator } from '../traffic/generator.js';
import { compareRuns, givenAllocations, readTrace, runOracle } from '../traffic/oracle.js';
import type { TraceOptions } from '../traffic/trace.js';
import { SyntheticTrace } from '../traffic/trace.js';
import type { Logger } from '../types.js';
import type { Topology } from './config.js';
import { adminCall } from '../metrics.js';
import { mergeGlobal } from '../state/digest.js';
import type { MoveRecord } from '../controller/controller.js';
import { flowKeyString } from '../packet/flow-key.js';
import { LocalDeployment } from './local.js';
import type { Endpoints } from './local.js';

export interface DemoOptions {
  trace: TraceOptions;
  /** Packets per second; 0 = as fast as the deployment drains. */
  rate: number;
  window: number;
  /** Keep the run directory (logs, stamp log) instead of removing it. */
  keep: boolean;
  /** Flow moves during the run, at random moments, alternating inside and across clusters. */
  moves: number;
  /** Instances drained (all their flows moved away, then removed) during the run, one after another. */
  drain: number;
}

export interface DemoSummary {
  nf: string;
  clusters: number;
  per_cluster: number;
  instances: number;
  threads: number;
  batch: number;
  flows: number;
  sent: number;
  stamped: number;
  delivered: number;
  lost: number;
  reordered: number;
  duplicated: number;
  nf_dropped: number;
  throughput_pps: number;
  rate_pps: number;
  duration_ms: number;
  latency_us: { p50: number; p90: number; p99: number; max: number };
  state_matches_oracle: boolean;
  global_matches_oracle: boolean;
  /** Batch replication: bytes and frames sent to cluster peers, and whether every replica equals its origin. */
  replication: {
    mode: string;
    release: string;
    bytes_sent: number;
    messages: number;
    replicas_match: boolean;
  };
  moves: MoveSummary;
  drained: { id: string; moved: number; aborted: number; duration_ms: number }[];
  mismatched_flows: string[];
  run_dir: string | null;
}

export interface MoveSummary {
  count: number;
  intra: number;
  inter: number;
  aborted: number;
  /** Mean state bytes shipped per move. */
  state_bytes_intra: number;
  state_bytes_inter: number;
  p50_ms: number;
  p99_ms: number;
}

/**
 * NF configs the demo uses where the NF's own defaults are not enough to run: an LB needs backends.
 * The synthetic trace is shaped to match them (see traffic/trace.ts).
 */
export const DEMO_NF_CONFIG: Record<string, Record<string, unknown>> = {
  lb: {
    vip: '198.51.100.10',
    backends: ['10.1.0.1:8080', '10.1.0.2:8080', '10.1.0.3:8080', '10.1.0.4:8080'],
  },
};

/**
 * Moves `n` random flows while the generator runs: each when the generator has sent its share of the trace,
 * alternately to another member of the flow's cluster and to another cluster. Moves run concurrently.
 */
async function moveDuring(
  gen: Generator,
  trace: SyntheticTrace,
  n: number,
  ends: Endpoints,
  host: string,
  logger: Logger,
): Promise<MoveRecord[]> {
  if (n === 0) return [];
  const api = (port: number, path: string, body?: unknown): Promise<unknown> =>
    adminCall(host, port, path, body);
  const clusters = (await api(ends.controller.admin, '/clusters')) as { id: string; members: string[] }[];
  const random = seeded(trace.options.seed);
  const moves: Promise<MoveRecord | undefined>[] = [];
  const inFlight = new Set<string>();
  for (let i = 0; i < n; i++) {
    // Spread over the first 80 % of the trace, so every moved flow still has packets after its move.
    const at = Math.floor(((i + random()) / n) * 0.8 * trace.total);
    while (gen.sent < at) await new Promise((r) => setTimeout(r, 2));
    // A flow already on its way somewhere is left alone: the controller moves a flow one move at a time.
    let flow = flowKeyString(trace.flowKey(Math.floor(random() * trace.options.flows)));
    for (let tries = 0; inFlight.has(flow) && tries < 100; tries++) {
      flow = flowKeyString(trace.flowKey(Math.floor(random() * trace.options.flows)));
    }
    if (inFlight.has(flow)) continue;
    const { owner } = (await api(ends.ingress.admin, `/owner?flow=${encodeURIComponent(flow)}`)) as {
      owner: string;
    };
    const home = clusters.find((c) => c.members.includes(owner))!;
    const others = clusters.filter((c) => c !== home);
    const candidates =
      i % 2 === 0 || others.length === 0
        ? home.members.filter((m) => m !== owner)
        : others.flatMap((c) => c.members);
    if (candidates.length === 0) continue;
    const to = candidates[Math.floor(random() * candidates.length)]!;
    inFlight.add(flow);
    moves.push(
      (api(ends.controller.admin, '/move', { flow, to }) as Promise<MoveRecord>)
        .catch((err: unknown) => {
          logger.warn('move failed', { flow, to, error: String(err) });
          return undefined;
        })
        .finally(() => inFlight.delete(flow)),
    );
  }
  return (await Promise.all(moves)).filter((m): m is MoveRecord => m !== undefined && 'duration_ms' in m);
}

/** Drains instances nf-0, nf-1, … one after another while the generator is between 20 % and 60 % done. */
async function drainDuring(
  gen: Generator,
  total: number,
  n: number,
  ends: Endpoints,
  host: string,
): Promise<{ id: string; moved: number; aborted: number; duration_ms: number }[]> {
  const out: { id: string; moved: number; aborted: number; duration_ms: number }[] = [];
  for (let i = 0; i < n && i < ends.instances.length - 1; i++) {
    const at = Math.floor(total * (0.2 + (0.4 * i) / Math.max(1, n)));
    while (gen.sent < at) await new Promise((r) => setTimeout(r, 2));
    const r = await adminCall(host, ends.controller.admin, '/drain', { id: ends.instances[i]!.id });
    out.push(r as unknown as { id: string; moved: number; aborted: number; duration_ms: number });
  }
  return out;
}

function summariseMoves(moves: readonly MoveRecord[]): MoveSummary {
  const done = moves.filter((m) => !m.aborted);
  const mean = (xs: number[]): number =>
    xs.length === 0 ? 0 : Math.round(xs.reduce((a, b) => a + b, 0) / xs.length);
  const ms = done.map((m) => m.duration_ms).sort((a, b) => a - b);
  const pct = (p: number): number =>
    ms.length === 0 ? 0 : Math.round(ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]! * 100) / 100;
  return {
    count: done.length,
    intra: done.filter((m) => m.intra).length,
    inter: done.filter((m) => !m.intra).length,
    aborted: moves.length - done.length,
    state_bytes_intra: mean(done.filter((m) => m.intra).map((m) => m.state_bytes)),
    state_bytes_inter: mean(done.filter((m) => !m.intra).map((m) => m.state_bytes)),
    p50_ms: pct(0.5),
    p99_ms: pct(0.99),
  };
}

/** xorshift32: the same moves for the same seed. */
function seeded(seed: number): () => number {
  let x = (seed * 0x9e3779b1) >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

/** Sums the instances' replication counters from their /metrics. */
async function replicationTotals(
  adminPorts: readonly number[],
): Promise<{ bytes_sent: number; messages: number }> {
  let bytes = 0;
  let messages = 0;
  for (const port of adminPorts) {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    bytes += metricValue(text, 'nfstate_replication_sent_bytes_total');
    messages += metricValue(text, 'nfstate_replication_messages_total');
  }
  return { bytes_sent: bytes, messages };
}

function metricValue(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(name + ' '));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

export async function runDemo(
  topology: Topology,
  options: DemoOptions,
  logger: Logger,
): Promise<DemoSummary> {
  const trace = new SyntheticTrace(options.trace);
  const runDir = mkdtempSync(join(tmpdir(), 'nfstate-demo-'));
  const stampLog = join(runDir, 'stamps.pcap');
  const gen = new Generator(
    { rate: options.rate, window: options.window, vni: topology.vni, drainTimeoutMs: 1500 },
    logger,
  );
  let deployment: LocalDeployment | undefined;
  try {
    // The generator's socket must exist before the sink, which acknowledges to it.
    const ackPort = await gen.bind(topology.host);
    deployment = new LocalDeployment(topology, {
      logDir: runDir,
      stampLog,
      ackTo: { host: topology.host, port: ackPort },
    });
    const ends = await deployment.start();
    await gen.connect(topology.host, ends.ingress.port);
    logger.info('demo running', { instances: ends.instances.length, packets: trace.total, runDir });
    const moving = moveDuring(gen, trace, options.moves, ends, topology.host, logger);
    const draining = drainDuring(gen, trace.total, options.drain, ends, topology.host);
    const result = await gen.run(trace);
    const moves = summariseMoves(await moving);
    const drained = await draining;
    const report = await deployment.sinkReport();
    const own = await deployment.digests();
    const run = { flows: own.flatMap((d) => d.flows), global: mergeGlobal(own.map((d) => d.global)) };
    const replicaProblems = await deployment.checkReplicas(own);
    const replication = await replicationTotals(ends.instances.map((i) => i.admin));
    await deployment.stopIngress();
    const ref = runOracle(topology.nf, readTrace(stampLog), givenAllocations(run.flows));
    const cmp = compareRuns(run, ref);
    const deliveredBy = new Map(report.flows.map((f) => [f.flow, f.delivered]));
    let lost = Math.max(0, result.sent - ref.packets);
    let nfDropped = 0;
    for (const [flow, expected] of ref.forwarded)
      lost += Math.max(0, expected - (deliveredBy.get(flow) ?? 0));
    for (const f of ref.flows) nfDropped += f.packets - f.forwarded;
    const summary: DemoSummary = {
      nf: topology.nf.type,
      clusters: topology.clusters,
      per_cluster: topology.perCluster,
      instances: ends.instances.length,
      threads: topology.threads,
      batch: topology.batch.size,
      flows: options.trace.flows,
      sent: result.sent,
      stamped: ref.packets,
      delivered: report.delivered,
      lost,
      reordered: report.reordered,
      duplicated: report.duplicated,
      nf_dropped: nfDropped,
      throughput_pps: Math.round(report.delivered / (result.durationMs / 1000)),
      rate_pps: options.rate,
      duration_ms: Math.round(result.durationMs),
      latency_us: {
        p50: report.latency.p50,
        p90: report.latency.p90,
        p99: report.latency.p99,
        max: report.latency.max,
      },
      state_matches_oracle: cmp.matches && cmp.globalMatches,
      replication: {
        mode: topology.replication,
        release: topology.release,
        ...replication,
        replicas_match: replicaProblems.length === 0,
      },
      global_matches_oracle: cmp.globalMatches,
      moves,
      drained,
      mismatched_flows: [
        ...cmp.mismatched,
        ...cmp.missing,
        ...cmp.extra,
        ...cmp.duplicateAllocations,
        ...replicaProblems,
      ].slice(0, 10),
      run_dir: options.keep ? runDir : null,
    };
    return summary;
  } finally {
    gen.close();
    await deployment?.stop();
    if (!options.keep) rmSync(runDir, { recursive: true, force: true });
  }
}
