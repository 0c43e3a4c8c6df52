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
import { nfLabel, type Topology } from './config.js';
import { metricSum } from '../metrics.js';
import { ErrorCode, NfsError } from '../errors.js';
import { deploymentGlobal, eventualConverged } from '../state/digest.js';
import type { RunDigest } from '../state/digest.js';
import type { SinkReport } from '../traffic/sink.js';
import type { FlowOwner, MoveRecord } from '../controller/records.js';
import type { BalancerStatus } from '../controller/balancer.js';
import type { Guarantee } from '../nf/processor.js';
import { flowKeyString } from '../packet/flow-key.js';
import { LocalDeployment } from './local.js';
import { startEtcd, type EtcdCluster } from '../global/etcd-local.js';
import type { Api, Endpoints } from './local.js';
import { controllerAnswers, failInstance, seeded, sleep, type InstanceFault } from './faults.js';
import { NATIVE_IO } from '../wire/batch-socket.js';

export interface DemoOptions {
  trace: TraceOptions;
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

/** The moves a run asked for: those the controller answered, and the errors of those it never did. */
interface MovesDone {
  records: MoveRecord[];
  failed: FailedMove[];
}

/** A move the controller never answered with a record: its error, when (ms), and whether it got no answer. */
interface FailedMove {
  error: string;
  at: number;
  /** The controller gave no answer at all: the connection was refused, reset or closed (it was down). */
  unanswered: boolean;
}

function failedMove(err: unknown): FailedMove {
  return { error: String(err), at: Date.now(), unanswered: err instanceof NfsError && noAnswer(err.cause) };
}

/** The connection was refused, reset or closed before an answer: a process that is down, not one that refused. */
function noAnswer(err: unknown): boolean {
  const cause = err instanceof Error ? err.cause : undefined;
  const code = cause instanceof Error && 'code' in cause ? cause.code : undefined;
  return typeof code === 'string' && NO_ANSWER.has(code);
}
const NO_ANSWER = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET']);

/**
 * `api` for the moves: a call to the controller (at `controller`) that it never answered fails with an
 * NfsError whose cause says so (failedMove tells it apart); any other error is left as it is.
 */
function movesApi(api: Api, controller: number): Api {
  return (port, path, body, timeoutMs) =>
    api(port, path, body, timeoutMs).catch((err: unknown) => {
      if (port !== controller || !noAnswer(err)) throw err;
      throw new NfsError(ErrorCode.PROCESS, `controller: no answer to ${path} (${String(err)})`, {
        cause: err,
        retriable: true,
      });
    });
}

/**
 * Moves `n` random flows while the generator runs: each when the generator has sent its share of the trace,
 * alternately to another member of the flow's cluster and to another cluster. Moves run concurrently.
 */
async function moveDuring(
  gen: Generator,
  trace: SyntheticTrace,
  n: number,
  guarantee: Guarantee,
  ends: Endpoints,
  api: Api,
  logger: Logger,
): Promise<MovesDone> {
  const done: MovesDone = { records: [], failed: [] };
  if (n === 0) return done;
  const ask = movesApi(api, ends.controller.admin);
  const random = seeded(trace.options.seed);
  const inFlight = new Set<string>();
  // A flow already on its way somewhere is left alone: the controller moves a flow one move at a time.
  const pick = (): string | undefined => {
    for (let tries = 0; tries < 100; tries++) {
      const flow = flowKeyString(trace.flowKey(Math.floor(random() * trace.options.flows)));
      if (!inFlight.has(flow)) return flow;
    }
    return undefined;
  };
  const moveOne = async (intra: boolean): Promise<MoveRecord> => {
    for (let attempt = 1; ; attempt++) {
      const flow = pick();
      if (flow === undefined)
        throw new NfsError(ErrorCode.STATE, 'move: every flow tried was moving already');
      inFlight.add(flow);
      try {
        const { owner } = (await api(ends.ingress.admin, `/owner?flow=${encodeURIComponent(flow)}`)) as {
          owner: string;
        };
        // Read at each move: instances killed, drained or added during the run have left or joined.
        const clusters = (await ask(ends.controller.admin, '/clusters')) as unknown as {
          id: string;
          members: string[];
        }[];
        const home = clusters.find((c) => c.members.includes(owner));
        const others = clusters.filter((c) => c !== home);
        const candidates =
          home !== undefined && (intra || others.length === 0)
            ? home.members.filter((m) => m !== owner)
            : others.flatMap((c) => c.members);
        const to = candidates[Math.floor(random() * candidates.length)];
        if (to === undefined)
          throw new NfsError(ErrorCode.STATE, `move: no instance to move ${flow} to from ${owner}`);
        return (await ask(
          ends.controller.admin,
          '/move',
          { flow, to, guarantee },
          MOVE_CALL_MS,
        )) as unknown as MoveRecord;
      } catch (err) {
        // A refusal (not a failure) means the load-balancing unit moved the flow meanwhile, or is moving it:
        // another flow is picked. Failures of the move itself come back as aborted records, not here.
        const refused =
          err instanceof NfsError && (err.code === ErrorCode.STATE || err.code === ErrorCode.CONFIG);
        if (!refused || attempt === MOVE_TRIES) throw err;
      } finally {
        inFlight.delete(flow);
      }
      // A cluster that just lost a member has none to move to inside it until the replacement joins.
      await new Promise((r) => setTimeout(r, MOVE_RETRY_MS));
    }
  };
  const moves: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    // Spread over the first 80 % of the trace, so every moved flow still has packets after its move.
    const at = Math.floor(((i + random()) / n) * 0.8 * trace.total);
    while (gen.sent < at) await new Promise((r) => setTimeout(r, 2));
    moves.push(
      moveOne(i % 2 === 0).then(
        (m) => void done.records.push(m),
        (err: unknown) => {
          logger.warn('move failed', { error: String(err) });
          done.failed.push(failedMove(err));
        },
      ),
    );
  }
  await Promise.all(moves);
  return done;
}

/** Refused moves tried again with another flow, this far apart, before one counts as failed. */
const MOVE_TRIES = 5;
const MOVE_RETRY_MS = 200;

/**
 * A move answers within its deadline, its hand-over wait and its re-point confirmation, which together can
 * take longer than an admin call's default on a loaded machine.
 */
const MOVE_CALL_MS = 60_000;

/**
 * Moves `options.moves` random flows in batches of `options.moveBatch`: each batch is one POST /move of many
 * flows to one random instance, at a random moment of the first 80 % of the trace (flows already there are
 * left out), and the controller makes one exchange per source. Batches run concurrently.
 */
async function moveBatchesDuring(
  gen: Generator,
  trace: SyntheticTrace,
  options: DemoOptions,
  ends: Endpoints,
  api: Api,
  logger: Logger,
): Promise<MovesDone> {
  const { moves: n, moveBatch: size, guarantee } = options;
  const random = seeded(trace.options.seed);
  const ids = ends.instances.map((i) => i.id);
  const done: MovesDone = { records: [], failed: [] };
  const ask = movesApi(api, ends.controller.admin);
  const batches: Promise<void>[] = [];
  const inFlight = new Set<string>();
  const count = Math.ceil(n / size);
  for (let b = 0; b < count; b++) {
    const at = Math.floor(((b + random()) / count) * 0.8 * trace.total);
    while (gen.sent < at) await new Promise((r) => setTimeout(r, 2));
    const to = ids[Math.floor(random() * ids.length)]!;
    // Every flow not moving already, in a random order (Fisher–Yates with the seeded generator).
    const order = Array.from({ length: trace.options.flows }, (_, f) => f);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const pool = order.map((f) => flowKeyString(trace.flowKey(f))).filter((f) => !inFlight.has(f));
    const { owners } = (await api(ends.ingress.admin, '/owner', { flows: pool })) as {
      owners: (string | null)[];
    };
    const flows = pool
      .filter((_, i) => owners[i] !== null && owners[i] !== to)
      .slice(0, Math.min(size, n - b * size));
    if (flows.length === 0) continue;
    for (const f of flows) inFlight.add(f);
    batches.push(
      (
        ask(ends.controller.admin, '/move', { flows, to, guarantee }, MOVE_CALL_MS) as unknown as Promise<
          MoveRecord[]
        >
      )
        .then(
          (records) => void done.records.push(...records.filter((m) => m.refused !== true)),
          (err: unknown) => {
            logger.warn('batched move failed', { flows: flows.length, to, error: String(err) });
            done.failed.push(failedMove(err));
          },
        )
        .finally(() => {
          for (const f of flows) inFlight.delete(f);
        }),
    );
  }
  await Promise.all(batches);
  return done;
}

/** Drains instances nf-0, nf-1, … one after another while the generator is between 20 % and 60 % done. */
async function drainDuring(
  gen: Generator,
  total: number,
  n: number,
  ends: Endpoints,
  api: Api,
): Promise<{ id: string; moved: number; aborted: number; duration_ms: number }[]> {
  const out: { id: string; moved: number; aborted: number; duration_ms: number }[] = [];
  for (let i = 0; i < n && i < ends.instances.length - 1; i++) {
    const at = Math.floor(total * (0.2 + (0.4 * i) / Math.max(1, n)));
    while (gen.sent < at) await new Promise((r) => setTimeout(r, 2));
    const r = await api(ends.controller.admin, '/drain', { id: ends.instances[i]!.id });
    out.push(r as unknown as { id: string; moved: number; aborted: number; duration_ms: number });
  }
  return out;
}

/**
 * Adds instances one after another while the generator is between 20 % and 60 % done (POST /instances on
 * the controller). Each then takes its share of the running flows, which never move by themselves (and
 * this trace starts every flow at once): from its cluster mates when they have flows, so that only the
 * changes since their last batch travel, else from the busiest instances elsewhere.
 */
async function addDuring(
  gen: Generator,
  total: number,
  n: number,
  controller: number,
  api: Api,
  logger: Logger,
): Promise<{ added: AddedInstance[]; admins: number[] }> {
  const added: AddedInstance[] = [];
  const admins: number[] = [];
  for (let i = 0; i < n; i++) {
    const at = Math.floor(total * (0.2 + (0.4 * i) / Math.max(1, n)));
    while (gen.sent < at) await new Promise((r) => setTimeout(r, 2));
    const reply = (await api(controller, '/instances', { count: 1 }, ADD_TIMEOUT_MS)) as unknown as {
      added: { id: string; cluster: string | null; ms: number; join_ms: number }[];
    };
    for (const a of reply.added) {
      const moves = await takeShare(a.id, controller, api, logger);
      const bytes = moves.reduce((sum, m) => sum + m.state_bytes, 0);
      added.push({
        ...a,
        flows: moves.length,
        intra: moves.filter((m) => m.intra).length,
        state_bytes: moves.length === 0 ? 0 : Math.round(bytes / moves.length),
      });
    }
  }
  const instances = (await api(controller, '/instances')) as unknown as {
    id: string;
    admin: number;
  }[];
  for (const a of added) {
    const inst = instances.find((x) => x.id === a.id);
    if (inst !== undefined) admins.push(inst.admin);
  }
  return { added, admins };
}

/**
 * Moves flows onto a newcomer, one at a time from whichever source has the most, until it has its even
 * share or no source has more than it would. Returns the moves that completed.
 */
async function takeShare(id: string, controller: number, api: Api, logger: Logger): Promise<MoveRecord[]> {
  const instances = (await api(controller, '/instances')) as unknown as {
    id: string;
    cluster: string | null;
    live: boolean;
  }[];
  const { flows } = (await api(controller, '/flows')) as unknown as { flows: FlowOwner[] };
  const share = Math.floor(flows.length / Math.max(1, instances.filter((i) => i.live).length));
  const byOwner = new Map<string, string[]>();
  for (const f of flows) {
    if (f.owner === null || f.owner === id) continue;
    byOwner.set(f.owner, [...(byOwner.get(f.owner) ?? []), f.flow]);
  }
  const home = instances.find((i) => i.id === id)?.cluster;
  const mates = [...byOwner.keys()].filter((o) => instances.find((i) => i.id === o)?.cluster === home);
  const sources = mates.length > 0 ? mates : [...byOwner.keys()];
  const picked: string[] = [];
  while (picked.length < share) {
    const from = sources.sort((a, b) => byOwner.get(b)!.length - byOwner.get(a)!.length)[0];
    if (from === undefined || byOwner.get(from)!.length <= picked.length + 1) break;
    picked.push(byOwner.get(from)!.pop()!);
  }
  const done: MoveRecord[] = [];
  await Promise.all(
    Array.from({ length: Math.min(SHARE_PARALLEL, picked.length) }, async (_, lane) => {
      for (let i = lane; i < picked.length; i += SHARE_PARALLEL) {
        const flow = picked[i]!;
        try {
          const m = (await api(controller, '/move', { flow, to: id })) as unknown as MoveRecord;
          if (!m.aborted) done.push(m);
        } catch (err) {
          // Moving already (a --moves move): it stays where that move takes it.
          logger.warn('move to a new instance failed', { flow, to: id, error: String(err) });
        }
      }
    }),
  );
  return done;
}

/** Starting a process, its workers and its registration takes well under this, even on a busy machine. */
const ADD_TIMEOUT_MS = 60_000;
const SHARE_PARALLEL = 8;

/**
 * Kills (SIGKILL), pauses (SIGSTOP), then declares failed (POST /fail) random live instances at random
 * moments while the generator is between 20 % and 80 % done, one at a time (faults.ts).
 */
async function faultsDuring(
  gen: Generator,
  total: number,
  options: { kill: number; pause: number; fail: number; seed: number },
  deployment: LocalDeployment,
  logger: Logger,
): Promise<Omit<FailoverSummary, 'fenced_output' | 'replays_dropped' | 'false_alarms'>> {
  const rand = seeded(options.seed + 7);
  const n = options.kill + options.pause + options.fail;
  const points = Array.from({ length: n }, () => Math.floor(total * (0.2 + 0.6 * rand()))).sort(
    (a, b) => a - b,
  );
  const each: InstanceFault[] = [];
  for (let i = 0; i < n; i++) {
    while (gen.sent < points[i]!) await sleep(2);
    const signal = i < options.kill ? 'SIGKILL' : i < options.kill + options.pause ? 'SIGSTOP' : 'fail';
    const fault = await failInstance(deployment, signal, rand, logger);
    if (fault === undefined) break;
    each.push(fault);
  }
  const done = each.filter((e) => e.recover_ms >= 0);
  const detect = done.map((e) => e.detect_ms).sort((a, b) => a - b);
  const recover = done.map((e) => e.recover_ms).sort((a, b) => a - b);
  return {
    count: done.length,
    detect_ms_p50: percentile(detect, 0.5),
    detect_ms_max: detect.at(-1) ?? 0,
    recover_ms_p50: percentile(recover, 0.5),
    recover_ms_max: recover.at(-1) ?? 0,
    replayed: each.reduce((a, e) => a + e.replayed, 0),
    gaps: each.reduce((a, e) => a + e.gaps, 0),
    woke_fenced: each.filter((e) => e.signal === 'SIGSTOP' && e.woke_fenced).length,
    each,
  };
}

/** Longer than a gossip round (instance.ts GOSSIP_MS) and the records' shipping interval together. */
const SETTLE_MS = 500;

/** The p-quantile of ascending `sorted` (0 when empty), to 0.01. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! * 100) / 100;
}

function summariseMoves(
  { records: moves, failed }: MovesDone,
  guarantee: Guarantee,
  controllerDown: { from: number; to: number } | undefined,
): MoveSummary {
  const done = moves.filter((m) => !m.aborted);
  const mean = (xs: number[]): number =>
    xs.length === 0 ? 0 : Math.round(xs.reduce((a, b) => a + b, 0) / xs.length);
  const ms = done.map((m) => m.duration_ms).sort((a, b) => a - b);
  return {
    count: done.length,
    intra: done.filter((m) => m.intra).length,
    inter: done.filter((m) => !m.intra).length,
    aborted: moves.length - done.length,
    failed: failed.length,
    errors: [...new Set(failed.map((f) => f.error))].slice(0, 5),
    controller_down: failed.filter(
      (f) =>
        f.unanswered &&
        controllerDown !== undefined &&
        f.at >= controllerDown.from &&
        f.at <= controllerDown.to,
    ).length,
    state_bytes_intra: mean(done.filter((m) => m.intra).map((m) => m.state_bytes)),
    state_bytes_inter: mean(done.filter((m) => !m.intra).map((m) => m.state_bytes)),
    p50_ms: percentile(ms, 0.5),
    p99_ms: percentile(ms, 0.99),
    guarantee,
    dropped: 0,
  };
}

/**
 * Kills `n` members of the demo's own etcd (n < 2 keeps its quorum) one after another while the flows start
 * (the trace's first `starting` packets: each claims its NAT port then), each a random one, the leader as
 * likely as any. Returns how many it killed.
 */
async function etcdKillDuring(
  gen: Generator,
  starting: number,
  n: number,
  etcd: EtcdCluster | undefined,
  seed: number,
  logger: Logger,
): Promise<number> {
  if (etcd === undefined || n === 0) return 0;
  const rand = seeded(seed + 13);
  const members = Array.from({ length: etcd.clientUrls.length }, (_, i) => i);
  let killed = 0;
  for (let i = 0; i < n && members.length > 0; i++) {
    while (gen.sent < (starting * (i + 1)) / (n + 1)) await sleep(1);
    const [member] = members.splice(Math.floor(rand() * members.length), 1);
    await etcd.kill(member!);
    logger.info('demo: etcd member killed', { member });
    killed++;
  }
  return killed;
}

/**
 * SIGKILLs the leading controller 40 % into the run and waits until a controller answers at its address
 * again (the standby, once it leads and has loaded the journal). Returns when it killed it (ms since the
 * epoch) and how long that took, in ms, or -1.
 */
async function controllerKillDuring(
  gen: Generator,
  total: number,
  deployment: LocalDeployment,
  logger: Logger,
): Promise<{ killedAt: number; takeoverMs: number }> {
  while (gen.sent < total * 0.4) await sleep(2);
  const killedAt = Date.now();
  deployment.controller?.child.kill('SIGKILL');
  logger.info('demo: controller killed');
  return { killedAt, takeoverMs: await controllerAnswers(deployment) };
}

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
  return out;
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
  const gen = new Generator(
    { rate: options.rate, window: options.window, vni: topology.vni, drainTimeoutMs: 1500 },
    logger,
  );
  let deployment: LocalDeployment | undefined;
  let etcd: EtcdCluster | undefined;
  let etcdKilled = 0;
  try {
    if (options.ownEtcd) {
      etcd = await startEtcd(ETCD_MEMBERS);
      topology = { ...topology, global: { store: 'etcd', endpoints: etcd.clientUrls } };
    }
    // The generator's socket must exist before the sink, which acknowledges to it.
    const ackPort = await gen.bind(topology.host);
    deployment = new LocalDeployment(topology, {
      logDir: runDir,
      stampLog,
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
    await gen.connect(topology.host, ends.ingress.port);
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
    await etcd?.stop();
    if (!options.keep) rmSync(runDir, { recursive: true, force: true });
  }
}
