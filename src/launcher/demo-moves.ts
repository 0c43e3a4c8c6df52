/**
 * What the demo does to its deployment's flows while traffic runs: moves (one at a time, or in batches of
 * many), a drain, instances added that take a share of the flows; and the moves' summary.
 */
import type { Generator } from '../traffic/generator.js';
import type { SyntheticTrace } from '../traffic/trace.js';
import type { Logger } from '../types.js';
import { ErrorCode, NfsError } from '../errors.js';
import type { FlowOwner, MoveRecord } from '../controller/records.js';
import type { Guarantee } from '../nf/guarantee.js';
import { flowKeyString } from '../packet/flow-key.js';
import type { Api, Endpoints } from './local.js';
import { seeded } from './faults.js';
import { type DemoOptions, type AddedInstance, type MoveSummary, percentile } from './demo-report.js';

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
export async function moveDuring(
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
export async function moveBatchesDuring(
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
export async function drainDuring(
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
export async function addDuring(
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

export function summariseMoves(
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
