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
import { OvsBridge } from '../switch/ovs.js';
import { VXLAN_PORT } from '../wire/vxlan.js';
import type { TraceOptions } from '../traffic/trace.js';
import { SyntheticTrace } from '../traffic/trace.js';
import type { Logger } from '../types.js';
import { nfLabel, type Topology } from './config.js';
import { metricSum } from '../metrics.js';
import { eventualConverged } from '../state/digest.js';
import type { BalancerStatus } from '../controller/balancer.js';
import { flowKeyString } from '../packet/flow-key.js';
import { LocalDeployment } from './local.js';
import { startEtcd, type EtcdCluster } from '../global/etcd-local.js';
import type { Api } from './local.js';
import { controllerAnswers, sleep } from './faults.js';
import { NATIVE_IO } from '../wire/batch-socket.js';
import {
  type DemoOptions,
  type StrongSummary,
  type DemoSummary,
  type LbSummary,
  percentile,
  checkRun,
} from './demo-report.js';
import { moveDuring, moveBatchesDuring, drainDuring, addDuring, summariseMoves } from './demo-moves.js';
import { faultsDuring, etcdKillDuring, controllerKillDuring } from './demo-faults.js';

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

/** Longer than a gossip round (instance.ts GOSSIP_MS) and the records' shipping interval together. */
const SETTLE_MS = 500;

/** Members of the demo's own etcd (with --global etcd and no --etcd). */
const ETCD_MEMBERS = 3;

/**
 * Sums, from one scrape of each instance's /metrics, its replication counters and the packets its moves
 * dropped (the `move_discarded` drop reason).
 */
async function instanceTotals(adminPorts: readonly number[]): Promise<{
  bytes_sent: number;
  messages: number;
  catch_up_bytes: number;
  moveDropped: number;
  strong: Omit<StrongSummary, 'store' | 'etcd_killed'>;
}> {
  const strong = { claims: 0, conflicts: 0, failed: 0, flows_waited: 0 };
  const out = { bytes_sent: 0, messages: 0, catch_up_bytes: 0, moveDropped: 0, strong };
  for (const port of adminPorts) {
    const text = await scrape(port);
    out.bytes_sent += metricSum(text, 'nfstate_replication_sent_bytes_total');
    out.messages += metricSum(text, 'nfstate_replication_messages_total');
    out.catch_up_bytes += metricSum(text, 'nfstate_replication_catch_up_bytes_total');
    out.moveDropped += metricSum(text, 'nfstate_nf_dropped_total', 'reason="move_discarded"');
    strong.claims += metricSum(text, 'nfstate_strong_pool_claims_total');
    strong.conflicts += metricSum(text, 'nfstate_strong_pool_conflicts_total');
    strong.failed += metricSum(text, 'nfstate_strong_pool_failed_total');
    strong.flows_waited += metricSum(text, 'nfstate_nf_deciding_total');
  }
  return out;
}

/**
 * Waits until no instance has a strong claim in progress: the flows waiting for one (parked) have run, with
 * a value or, past the claims' deadline, without one. Bounded by that deadline and a margin.
 */
async function strongSettled(adminPorts: readonly number[]): Promise<void> {
  const until = Date.now() + STRONG_SETTLE_MS;
  while (Date.now() < until) {
    let pending = 0;
    for (const port of adminPorts) {
      const text = await scrape(port);
      pending += metricSum(text, 'nfstate_strong_pool_pending');
    }
    if (pending === 0) return;
    await sleep(100);
  }
}

/** A claim's deadline at the instances (8 s, nf/instance.ts) and a margin. */
const STRONG_SETTLE_MS = 10_000;

/** An instance's /metrics text; empty for one that is gone (killed, or fenced), and its counters with it. */
export function scrape(port: number): Promise<string> {
  return fetch(`http://127.0.0.1:${port}/metrics`).then(
    (r) => r.text(),
    () => '',
  );
}

/** What routed the run's traffic; with OVS, how many frames the ingress sent where OVS said, or not. */
async function switchSummary(kind: 'builtin' | 'ovs', ingressAdmin: number): Promise<DemoSummary['switch']> {
  if (kind === 'builtin') return { kind };
  const text = await scrape(ingressAdmin);
  const frames = (route: string): number =>
    metricSum(text, 'nfstate_ingress_ovs_frames_total', `route="${route}"`);
  return { kind, followed: frames('followed'), overridden: frames('overridden') };
}

/**
 * Picks the heavy flows of a skewed trace among those the switch places on one instance (the owner of
 * flow 0), so that the skew overloads that instance.
 */
async function heavyOnOne(
  options: TraceOptions,
  ingressAdmin: number,
  api: Api,
): Promise<{ heavy: number[]; on: string }> {
  const keys = new SyntheticTrace({ ...options, packets: 1, skew: 0 });
  const want = Math.max(1, Math.round(options.flows * 0.05));
  const ownerOf = async (f: number): Promise<string> =>
    (await api(ingressAdmin, `/owner?flow=${encodeURIComponent(flowKeyString(keys.flowKey(f)))}`))
      .owner as string;
  const on = await ownerOf(0);
  const heavy = [0];
  for (let f = 1; f < options.flows && heavy.length < want; f++) if ((await ownerOf(f)) === on) heavy.push(f);
  return { heavy, on };
}

async function summariseLb(
  controllerAdmin: number,
  api: Api,
  capacity: number,
  skewed: string | null,
): Promise<LbSummary> {
  const s = (await api(controllerAdmin, '/lb')) as unknown as BalancerStatus;
  const from: Record<string, number> = {};
  const to: Record<string, number> = {};
  const times = new Map<string, number[]>();
  for (const m of s.history) {
    if (m.aborted) continue;
    from[m.from] = (from[m.from] ?? 0) + 1;
    to[m.to] = (to[m.to] ?? 0) + 1;
    times.set(m.flow, [...(times.get(m.flow) ?? []), m.at_ms]);
  }
  const durations = s.history
    .filter((m) => !m.aborted)
    .map((m) => m.duration_ms)
    .sort((a, b) => a - b);
  let maxMoves = 0;
  let minGap: number | null = null;
  for (const at of times.values()) {
    maxMoves = Math.max(maxMoves, at.length);
    for (let i = 1; i < at.length; i++) minGap = Math.min(minGap ?? Infinity, at[i]! - at[i - 1]!);
  }
  return {
    enabled: s.options.enabled,
    capacity_pps: capacity,
    skewed,
    rounds: s.rounds,
    moves: s.moves,
    intra: s.intra,
    inter: s.inter,
    aborted: s.aborted,
    scale_out_requests: s.scale_out_requests,
    from,
    to,
    max_moves_per_flow: maxMoves,
    p50_ms: percentile(durations, 0.5),
    p99_ms: percentile(durations, 0.99),
    min_gap_ms: minGap,
    load: Object.fromEntries(
      s.instances.map((i) => [i.id, { peak: i.peak, overloaded_ms: i.overloaded_ms }]),
    ),
  };
}

export async function runDemo(given: Topology, options: DemoOptions, logger: Logger): Promise<DemoSummary> {
  const skewed = options.trace.skew > 1;
  // On one machine every instance shares the same cores, so the skew cannot make one instance busy and
  // leave the others idle. Instead each is taken to be provisioned for 3x its even share of the rate: the
  // instance carrying the heavy flows goes over that, the others stay well under.
  const instances = given.clusters * given.perCluster;
  let topology =
    skewed && given.lb.capacityPps === 0 && options.rate > 0
      ? { ...given, lb: { ...given.lb, capacityPps: Math.ceil((3 * options.rate) / instances) } }
      : given;
  let trace = new SyntheticTrace(options.trace);
  let skewedOn: string | null = null;
  const runDir = mkdtempSync(join(tmpdir(), 'nfstate-demo-'));
  const stampLog = join(runDir, 'stamps.pcap');
  const viaOvs = options.switch === 'ovs';
  const gen = new Generator(
    {
      rate: options.rate,
      window: options.window,
      vni: topology.vni,
      drainTimeoutMs: 1500,
      framing: viaOvs ? 'vxlan' : 'geneve',
    },
    logger,
  );
  let deployment: LocalDeployment | undefined;
  let ovs: OvsBridge | undefined;
  let etcd: EtcdCluster | undefined;
  let etcdKilled = 0;
  try {
    if (options.ownEtcd) {
      etcd = await startEtcd(ETCD_MEMBERS);
      topology = { ...topology, global: { store: 'etcd', endpoints: etcd.clientUrls } };
    }
    if (viaOvs) ovs = await OvsBridge.start(logger);
    // The generator's socket must exist before the sink, which acknowledges to it.
    const ackPort = await gen.bind(topology.host);
    deployment = new LocalDeployment(topology, {
      logDir: runDir,
      stampLog,
      ...(ovs === undefined ? {} : { ovs: ovs.forIngress }),
      ackTo: { host: topology.host, port: ackPort },
      logger,
    });
    const ends = await deployment.start();
    const api = deployment.api;
    if (skewed) {
      const { heavy, on } = await heavyOnOne(options.trace, ends.ingress.admin, api);
      trace = new SyntheticTrace({ ...options.trace, heavy });
      skewedOn = on;
    }
    if (ovs === undefined) await gen.connect(topology.host, ends.ingress.port);
    else await gen.connect(ovs.switchAddress, VXLAN_PORT);
    logger.info('demo running', { instances: ends.instances.length, packets: trace.total, runDir });
    const moving =
      options.moveBatch > 1
        ? moveBatchesDuring(gen, trace, options, ends, api, logger)
        : moveDuring(gen, trace, options.moves, options.guarantee, ends, api, logger);
    const draining = drainDuring(gen, trace.total, options.drain, ends, api);
    const adding = addDuring(gen, trace.total, options.add, ends.controller.admin, api, logger);
    const faulting = faultsDuring(
      gen,
      trace.total,
      { kill: options.kill, pause: options.pause, fail: options.fail, seed: options.trace.seed },
      deployment,
      logger,
    );
    const killingController = options.killController
      ? controllerKillDuring(gen, trace.total, deployment, logger)
      : Promise.resolve(undefined);
    const killingEtcd = etcdKillDuring(
      gen,
      trace.options.flows,
      options.etcdKill,
      etcd,
      options.trace.seed,
      logger,
    );
    const experiment = options.during?.({ gen, trace, ends, api, deployment });
    const result = await gen.run(trace);
    await experiment;
    etcdKilled = await killingEtcd;
    if (topology.global.store !== 'none') await strongSettled(ends.instances.map((i) => i.admin));
    const kill = await killingController;
    const takeoverMs = kill?.takeoverMs ?? -1;
    const faults = await faulting;
    // While the killed controller had no successor, it answered no move at all.
    const down =
      kill === undefined
        ? undefined
        : { from: kill.killedAt, to: takeoverMs < 0 ? Infinity : kill.killedAt + takeoverMs };
    const moves = summariseMoves(await moving, options.guarantee, down);
    // A leader may have been demoted (etcd stalled on a loaded machine) and the next not lead yet; with a
    // quorum one will. Without one (more members killed than a quorum spares) none can: the summary says so
    // instead of failing.
    if (deployment.controllers.length > 1 && etcdKilled * 2 < ETCD_MEMBERS)
      await controllerAnswers(deployment);
    // Set in a callback: a plain `false` would be narrowed away.
    let controllerLost = false as boolean;
    const lb = await summariseLb(ends.controller.admin, api, topology.lb.capacityPps, skewedOn).catch(
      (): LbSummary => {
        controllerLost = true;
        const none = { rounds: 0, moves: 0, intra: 0, inter: 0, aborted: 0, scale_out_requests: 0 };
        return {
          ...none,
          enabled: topology.lb.enabled,
          capacity_pps: topology.lb.capacityPps,
          skewed: skewedOn,
          from: {},
          to: {},
          max_moves_per_flow: 0,
          min_gap_ms: null,
          p50_ms: 0,
          p99_ms: 0,
          load: {},
        };
      },
    );
    const drained = await draining;
    const { added, admins } = await adding;
    const report = await deployment.sinkReport();
    // The first round closes every batch and ships the last changes; the second finds them everywhere.
    await deployment.digests();
    await sleep(SETTLE_MS);
    const own = await deployment.digests();
    const replicaProblems = await deployment.checkReplicas(own);
    // A controller without a quorum steps down at its next renewal: one that answered /lb may not answer this.
    const ask = async <T>(path: string): Promise<T[]> =>
      controllerLost
        ? []
        : await api(ends.controller.admin, path).then(
            (r) => r as unknown as T[],
            () => {
              controllerLost = true;
              return [];
            },
          );
    const now = await ask<{ admin: number }>('/instances');
    const faulted = new Set(faults.each.map((f) => f.id));
    const falseAlarms = (await ask<{ id: string }>('/failures'))
      .map((f) => f.id)
      .filter((id) => !faulted.has(id));
    const { moveDropped, strong, ...replication } = await instanceTotals([
      ...new Set([...ends.instances.map((i) => i.admin), ...admins, ...now.map((i) => i.admin)]),
    ]);
    moves.dropped = moveDropped;
    const routing = await switchSummary(ovs === undefined ? 'builtin' : 'ovs', ends.ingress.admin);
    await deployment.stopIngress();
    const { stamped, cmp, lost, nfDropped } = checkRun(
      topology.nf,
      topology.global.store,
      stampLog,
      own,
      report,
      result.sent,
    );
    const summary: DemoSummary = {
      nf: nfLabel(topology.nf),
      clusters: topology.clusters,
      per_cluster: topology.perCluster,
      instances: ends.instances.length,
      threads: topology.threads,
      batch: topology.batch.size,
      flows: options.trace.flows,
      switch: routing,
      sent: result.sent,
      stamped,
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
        mean: report.latency.mean,
      },
      state_matches_oracle: cmp.matches && cmp.globalMatches,
      ...(cmp.byNf === undefined
        ? {}
        : {
            nf_matches_oracle: Object.fromEntries(Object.entries(cmp.byNf).map(([n, bad]) => [n, bad === 0])),
          }),
      replication: {
        mode: topology.replication,
        release: topology.release,
        ...replication,
        replicas_match: replicaProblems.length === 0,
      },
      global_matches_oracle: cmp.globalMatches,
      global_compared: cmp.globalCompared,
      global_converged: eventualConverged(own),
      strong: { store: topology.global.store, etcd_killed: etcdKilled, ...strong },
      controller: {
        standby: deployment.controllers.length > 1,
        killed: options.killController,
        takeover_ms: takeoverMs,
        lost: controllerLost,
      },
      moves,
      lb,
      drained,
      added,
      failovers: {
        ...faults,
        fenced_output: report.fenced,
        replays_dropped: report.replays,
        false_alarms: falseAlarms,
      },
      mismatched_flows: [
        ...cmp.mismatched.map((f) => `state differs: ${f}`),
        ...cmp.missing.map((f) => `missing: ${f}`),
        ...cmp.extra.map((f) => `not in the oracle: ${f}`),
        ...cmp.twice.map((f) => `held twice: ${f}`),
        ...cmp.duplicateAllocations.map((a) => `allocated twice: ${a}`),
        ...cmp.badAllocations.map((a) => `allocation: ${a}`),
        ...replicaProblems,
      ].slice(0, 10),
      run_dir: options.keep ? runDir : null,
      io: NATIVE_IO ? 'native' : 'node',
    };
    return summary;
  } finally {
    gen.close();
    await deployment?.stop();
    await ovs?.stop();
    await etcd?.stop();
    if (!options.keep) rmSync(runDir, { recursive: true, force: true });
  }
}
