/**
 * What `nfstate demo` is asked (DemoOptions) and what it answers (DemoSummary, each part's summary), and
 * the checks a run must pass: checkRun for lost, reordered and duplicated packets and the oracle's verdict,
 * summaryFailures for everything a summary may report wrong.
 */
import type { Generator } from '../traffic/generator.js';
import { compareRuns, givenAllocations, readTrace, runOracle } from '../traffic/oracle.js';
import type { TraceOptions } from '../traffic/trace.js';
import type { SyntheticTrace } from '../traffic/trace.js';
import type { Topology } from './config.js';
import { deploymentGlobal } from '../state/digest.js';
import type { RunDigest } from '../state/digest.js';
import type { SinkReport } from '../traffic/sink.js';
import type { BalancerStatus } from '../controller/balancer.js';
import type { Guarantee } from '../nf/guarantee.js';
import type { LocalDeployment } from './local.js';
import type { Api, Endpoints } from './local.js';
import type { InstanceFault } from './faults.js';

export interface DemoOptions {
  trace: TraceOptions;
  /**
   * What routes the traffic: the ingress's own switch, or an Open vSwitch bridge in front of it
   * (switch/ovs.ts), which the generator then sends VXLAN frames to.
   */
  switch?: 'builtin' | 'ovs';
  /** Packets per second; 0 = as fast as the deployment drains. */
  rate: number;
  window: number;
  /** Keep the run directory (logs, stamp log) instead of removing it. */
  keep: boolean;
  /** Flow moves during the run, at random moments, alternating inside and across clusters. */
  moves: number;
  /** The guarantee the moves ask for (OpenNF's choice; see nf/processor.ts). */
  guarantee: Guarantee;
  /** Flows per POST /move: 1 moves each flow on its own, more moves them in batches to one instance. */
  moveBatch: number;
  /** Instances drained (all their flows moved away, then removed) during the run, one after another. */
  drain: number;
  /** Instances added during the run, one after another; each then takes its share of the flows. */
  add: number;
  /** NF instances killed (SIGKILL) at random moments during the run, one at a time, each replaced. */
  kill: number;
  /** NF instances paused (SIGSTOP) until failed over, then woken (SIGCONT), which must make them exit. */
  pause: number;
  /**
   * Running NF instances declared failed through the controller (POST /fail), as a false alarm of the
   * failure detector would: each is failed over while it still works, and must exit, fenced.
   */
  fail: number;
  /**
   * Start a 3-member etcd on loopback for the run's strong global state, and stop it afterwards (`--global
   * etcd` without endpoints); `etcdKill` of its members are SIGKILLed half-way through the run.
   */
  ownEtcd: boolean;
  etcdKill: number;
  /** SIGKILL the leading controller 40 % into the run (with etcd: the standby takes over). */
  killController: boolean;
  /**
   * What an experiment does while the traffic runs (moves at given packets, sampling counters): started
   * with the generator and awaited before the run is checked.
   */
  during?: (run: DemoRun) => Promise<void>;
}

/** The running demo, as `DemoOptions.during` sees it. */
export interface DemoRun {
  gen: Generator;
  trace: SyntheticTrace;
  ends: Endpoints;
  api: Api;
  deployment: LocalDeployment;
}

/** The controllers: whether a standby ran (etcd), and how long the deployment had none after a kill. */
export interface ControllerSummary {
  standby: boolean;
  killed: boolean;
  /** From the kill until the standby answered at the same address (-1: it never did). */
  takeover_ms: number;
  /** No controller answered at the end of the run (etcd without quorum: none may lead). */
  lost: boolean;
}

/** Strong global state during the run: where it was decided, and the instances' claims (killed ones aside). */
export interface StrongSummary {
  store: string;
  /** Members of the demo's own etcd killed during the run. */
  etcd_killed: number;
  claims: number;
  /** Claims whose proposed value another instance took first (decided again, in the log). */
  conflicts: number;
  /** Claims and releases the log could not decide in time (no quorum): each is logged as an error. */
  failed: number;
  /** New flows that waited for the log before their first packet. */
  flows_waited: number;
}

/** What the run's failovers (--kill, --pause, --fail) showed. Times in ms from the signal. */
export interface FailoverSummary {
  count: number;
  /** To the controller's declaration. */
  detect_ms_p50: number;
  detect_ms_max: number;
  /** To the successor having replayed every kept packet: the first packet it processed is before that. */
  recover_ms_p50: number;
  recover_ms_max: number;
  /** Kept copies replayed, over all failovers, and flows whose copies did not continue their replica. */
  replayed: number;
  gaps: number;
  /**
   * Paused instances that exited as fenced once woken, and the output of failed-over instances that the
   * egress dropped.
   */
  woke_fenced: number;
  fenced_output: number;
  /** Replayed output the sink dropped because the failed instance had delivered it already. */
  replays_dropped: number;
  /**
   * Instances the controller declared failed that the run did not kill, pause or fail: false alarms of
   * the failure detection unit.
   */
  false_alarms: string[];
  /** Per failover: the instance, signal (`fail` for --fail), successor, replacement and its figures. */
  each: InstanceFault[];
}

/** An instance `--add` started during the run. */
export interface AddedInstance {
  id: string;
  cluster: string | null;
  /** From the request until it was registered, in its cluster and live for new flows; of that, from its
   * registration on (the rest is starting the process). */
  ms: number;
  join_ms: number;
  /** Flows moved onto it right after it joined, how many of them from its own cluster, and the mean
   * state bytes a move shipped. */
  flows: number;
  intra: number;
  state_bytes: number;
}

export interface DemoSummary {
  nf: string;
  clusters: number;
  per_cluster: number;
  instances: number;
  threads: number;
  batch: number;
  flows: number;
  /**
   * What routed the traffic; with an OVS bridge, the frames the ingress sent where OVS said (`followed`)
   * and those it sent by a newer rule of its own (`overridden`: classified before the rule reached OVS).
   */
  switch: { kind: 'builtin' } | { kind: 'ovs'; followed: number; overridden: number };
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
  latency_us: { p50: number; p90: number; p99: number; max: number; mean: number };
  state_matches_oracle: boolean;
  /** A chain: per NF, whether its part of every flow's state equals the oracle's. */
  nf_matches_oracle?: Record<string, boolean>;
  global_matches_oracle: boolean;
  /** What `global_matches_oracle` compared: pools' holders, counters, sets (none: the NF keeps no global state). */
  global_compared: string[];
  /** Every worker of every instance holds the same eventual global state (counters, sets) at the end. */
  global_converged: boolean;
  strong: StrongSummary;
  controller: ControllerSummary;
  /** Batch replication: bytes and frames sent to cluster peers, and whether every replica equals its origin. */
  replication: {
    mode: string;
    release: string;
    bytes_sent: number;
    messages: number;
    /** Of bytes_sent: full states sent to peers that joined a cluster (instances added, clusters re-formed). */
    catch_up_bytes: number;
    replicas_match: boolean;
  };
  moves: MoveSummary;
  /** The load-balancing unit: what it moved, and the instances' loads as it saw them. */
  lb: LbSummary;
  drained: { id: string; moved: number; aborted: number; duration_ms: number }[];
  added: AddedInstance[];
  failovers: FailoverSummary;
  mismatched_flows: string[];
  run_dir: string | null;
  /** How the roles move datagrams: `native` (recvmmsg/sendmmsg, native/udp.c) or `node` (node:dgram). */
  io: 'native' | 'node';
}

export interface LbSummary extends Pick<
  BalancerStatus,
  'rounds' | 'moves' | 'intra' | 'inter' | 'aborted' | 'scale_out_requests'
> {
  enabled: boolean;
  capacity_pps: number;
  /** Under --skew: the instance the heavy flows started on. */
  skewed: string | null;
  /** Flows moved off and onto each instance. */
  from: Record<string, number>;
  to: Record<string, number>;
  /** The most moves of any one flow, and the shortest time between two moves of one flow (null: none). */
  max_moves_per_flow: number;
  min_gap_ms: number | null;
  /** Duration of the unit's moves. */
  p50_ms: number;
  p99_ms: number;
  /** Per instance: the highest load seen and how long it was overloaded. */
  load: Record<string, { peak: number; overloaded_ms: number }>;
}

export interface MoveSummary {
  count: number;
  intra: number;
  inter: number;
  aborted: number;
  /** Moves the controller never answered with a record, and the first few distinct errors they met. */
  failed: number;
  errors: string[];
  /**
   * Of `failed`: those the controller gave no answer to at all (refused, reset) while the run had killed it
   * (--kill-controller) and no standby answered yet. Expected there, so they do not fail the run
   * (summaryFailures).
   */
  controller_down: number;
  /** Mean state bytes shipped per move. */
  state_bytes_intra: number;
  state_bytes_inter: number;
  p50_ms: number;
  p99_ms: number;
  guarantee: Guarantee;
  /** Packets the moves dropped (under `none`: what the sources had parked), from the instances' counters. */
  dropped: number;
}

/** The p-quantile of ascending `sorted` (0 when empty), to 0.01. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! * 100) / 100;
}

/**
 * Checks a run against the oracle, which replays the stamp log (complete once the ingress has stopped)
 * through the NF one packet at a time: the final state of the instances (`own`: a digest of each) and, flow by
 * flow, what the sink received against what the oracle forwarded (`lost`; packets sent but never stamped
 * count too). `nfDropped`: what the NF itself drops by policy, which is no loss.
 */
export function checkRun(
  nf: Topology['nf'],
  store: Topology['global']['store'],
  stampLog: string,
  own: readonly RunDigest[],
  report: SinkReport,
  sent: number,
): { stamped: number; cmp: ReturnType<typeof compareRuns>; lost: number; nfDropped: number } {
  const run = { flows: own.flatMap((d) => d.flows), global: deploymentGlobal(own) };
  const ref = runOracle(nf, readTrace(stampLog), givenAllocations(run.flows));
  // Without a log each worker lists only what it handed out itself: a flow taken over is in no list.
  const cmp = compareRuns(run, ref, { log: store !== 'none' });
  const deliveredBy = new Map(report.flows.map((f) => [f.flow, f.delivered]));
  let lost = Math.max(0, sent - ref.packets);
  let nfDropped = 0;
  for (const [flow, expected] of ref.forwarded) lost += Math.max(0, expected - (deliveredBy.get(flow) ?? 0));
  for (const f of ref.flows) nfDropped += f.packets - f.forwarded;
  return { stamped: ref.packets, cmp, lost, nfDropped };
}

/**
 * Why a run failed, one line per reason (none: it passed); `nfstate demo` exits 1 on any. What a run must
 * show depends on what its moves guarantee: under loss-free the source's packets may come behind (and an NF
 * that depends on order then ends in another state); under none, the packets the moves dropped are lost
 * too. Moves that aborted or were refused are normal, cleanly undone; a move the controller never answered
 * with a record is a failure, unless the run killed the controller on purpose (--kill-controller) and the
 * move was asked while none answered (`moves.controller_down`). A controller that was killed and never
 * replaced, or none answering at the end, fails the run: moves, failovers and new instances had no one to
 * run them, and what the run checked last may not have been checked at all.
 */
export function summaryFailures(s: DemoSummary): string[] {
  const out: string[] = [];
  const m = s.moves;
  const ordered = m.guarantee === 'order-preserving' || m.count + m.aborted === 0;
  const mayLose = m.guarantee === 'none' ? m.dropped : 0;
  if (s.lost > mayLose)
    out.push(`${s.lost} packets lost${mayLose > 0 ? ` (the moves dropped ${mayLose} of them at most)` : ''}`);
  if (s.duplicated > 0) out.push(`${s.duplicated} packets delivered twice`);
  if (ordered && s.reordered > 0) out.push(`${s.reordered} packets reordered`);
  if (ordered && !s.state_matches_oracle)
    out.push(`state differs from the oracle: ${s.mismatched_flows.slice(0, 3).join('; ')}`);
  if (!s.replication.replicas_match) {
    const why = s.mismatched_flows.filter((p) => p.includes(' holds ') || p.startsWith('replicas '));
    out.push(
      `replicas differ from their owners' flows${why.length > 0 ? `: ${why.slice(0, 3).join('; ')}` : ''}`,
    );
  }
  const failedMoves = m.failed - m.controller_down;
  if (failedMoves > 0) out.push(`${failedMoves} moves failed: ${m.errors.join('; ')}`);
  for (const f of s.failovers.each)
    if (f.error !== undefined) out.push(`failover of ${f.id} (${f.signal}): ${f.error}`);
  if (s.failovers.false_alarms.length > 0)
    out.push(`declared failed, though the run did not fail them: ${s.failovers.false_alarms.join(', ')}`);
  if (s.strong.failed > 0)
    out.push(
      `${s.strong.failed} claims or releases of strong global state failed (the log did not decide them)`,
    );
  if (s.controller.killed && s.controller.takeover_ms < 0)
    out.push('the controller was killed and no standby took over');
  if (s.controller.lost) out.push('no controller answered at the end of the run');
  // Every packet went to the bridge: one the ingress stamped without OVS's route did not go through it.
  if (s.switch.kind === 'ovs' && s.switch.followed + s.switch.overridden !== s.stamped)
    out.push(`OVS routed ${s.switch.followed + s.switch.overridden} of the ${s.stamped} packets stamped`);
  return out;
}
