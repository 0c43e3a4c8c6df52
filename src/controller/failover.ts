/**
 * The first five steps of a failover (DESIGN.md §6), from the controller, for an instance X the detector
 * (or an operator) declared failed:
 * 1. fence X where it could still act: if it still listens (paused, or alive and declared by mistake) it is
 *    told, and exits when it can; it is already fenced at the controller (detector); its successor (its
 *    secondary) takes nothing more from it, so the successor's replicas, and the copies of the packets they
 *    do not cover, stay as they are;
 * 2. X owns no new flow (the live set; its running flows stay pinned to it meanwhile), at the same time as
 *    step 1; once both are done, the switch lists its flows and reads its stamp clock;
 * 3. the egress drops X's output for packets stamped from then on. The successor replays every one of
 *    those: their records, which came after step 1, were refused. What X emits for earlier packets still
 *    passes, since no replay covers the packets a record accepted before step 1 did; what it emits for the
 *    other earlier ones is the same as the successor's replay, and whichever comes second is dropped;
 * 4. its successor takes over every flow X had: the replicas' state, then its kept copies replayed;
 * 5. the switch sends those flows to the successor (a rule each, a new epoch).
 * Packets in flight meanwhile are not lost: until the re-point the switch sends them to X and copies to the
 * secondary, which from step 4 on processes the copies itself. What X's leaving changes in its cluster is
 * the controller's part (controller.ts, steps 6 and 7).
 *
 *   const record = await failOver(x, { declared, detectMs }, options, deps, logger, clock);
 */
import { round2, stepTimer } from '../clock.js';
import type { Clock, Logger } from '../types.js';
import type { Mover } from './mover.js';
import type { AdminAddress, FailoverRecord, FailoverStep, Registered, TakeoverAnswer } from './records.js';
import { ingressFlows, type RoleCalls } from './role-calls.js';

/** Deadline of a failover's small steps (fencing the successor and the egress). */
const FAILOVER_STEP_MS = 1000;
/** Deadline of a takeover: replicas to decode and copies to replay, for every flow of the failed instance. */
const TAKEOVER_MS = 10_000;

export interface FailoverOptions {
  /** Whether instances keep replicas: without them no instance holds X's flows' state. */
  replicas: boolean;
  /** The egress's admin API, told to drop X's output (fence). */
  egress?: AdminAddress;
  /** The re-point's deadline, as a move's. */
  moveTimeoutMs: number;
}

/** What a failover needs of the controller. */
export interface FailoverDeps {
  readonly calls: RoleCalls;
  readonly mover: Mover;
  readonly ingress: AdminAddress | undefined;
  /** Who takes over: X's secondary as the ingress knows it, or another live member of its cluster. */
  readonly successor: Registered | undefined;
  /** A live instance, owner of X's flows when no successor holds their state. */
  anyLive(): Registered | undefined;
  /** Tells X, if it still listens on its liveness connection, that it is fenced. */
  fenceLiveness(): void;
  /** Tells the ingress the live set (X is out of it by now). */
  pushLive(ingress: AdminAddress): Promise<void>;
  nextEpoch(): number;
}

/** Steps 1 to 5 for X; the record says what happened, and `error` what went wrong. */
export async function failOver(
  x: Registered,
  when: { declared: number; detectMs: number },
  options: FailoverOptions,
  deps: FailoverDeps,
  logger: Logger,
  clock: Clock,
): Promise<FailoverRecord> {
  const { ingress, successor } = deps;
  const { id } = x;
  const { declared, detectMs } = when;
  const record: FailoverRecord = {
    id,
    successor: null,
    declared_at: declared,
    detect_ms: round2(detectMs),
    flows: 0,
    with_state: 0,
    replayed: 0,
    gaps: 0,
    takeover_ms: 0,
    took_over_at: 0,
    recovered_at: 0,
    recover_ms: 0,
    replacement: null,
  };
  const egress = options.egress;
  // Set in a callback: a plain `false` would be narrowed away.
  let egressFenced = false as boolean;
  /** Step 3, from `sinceMs` on (0: all of its output, when the switch's clock could not be read). */
  const fence = async (sinceMs: number): Promise<void> => {
    egressFenced = true;
    if (egress === undefined) return;
    const deadline = clock.now() + FAILOVER_STEP_MS;
    await deps.calls
      .call(egress, 'egress', '/fence', { emitter: x.emitter, since_ms: sinceMs }, deadline)
      .catch((err: unknown) => {
        logger.error('failover: the egress was not told to fence', { id, error: String(err) });
      });
  };
  const { steps, mark } = stepTimer<FailoverStep>(clock);
  record.steps_ms = steps;
  deps.fenceLiveness();
  try {
    // Steps 1 and 2's live set at once; the flow list and its stamp clock only after the successor's
    // fence, so that every record of a packet stamped from then on was refused (step 3).
    await Promise.all([
      successor === undefined
        ? undefined
        : deps.calls.call(
            successor,
            successor.id,
            '/takeover/fence',
            { origin: id },
            clock.now() + FAILOVER_STEP_MS,
          ),
      ingress === undefined ? undefined : deps.pushLive(ingress),
    ]);
    mark('fenced');
    const { flows, stampMs } =
      ingress === undefined
        ? { flows: [], stampMs: 0 }
        : await ingressFlows(ingress, id).then((r) => ({
            flows: r.flows.map((f) => f.flow),
            stampMs: r.stampMs,
          }));
    mark('listed');
    await fence(stampMs);
    mark('egress');
    if (successor === undefined) {
      // An instance that held nothing yet (a replacement killed as it joined) needs no successor.
      if (flows.length > 0)
        record.error = !options.replicas
          ? `replication is off: the state of its ${flows.length} flows is lost`
          : `no live member of its cluster to take over ${flows.length} flows: their state is lost`;
    } else {
      record.successor = successor.id;
      const r = (await deps.calls.call(
        successor,
        successor.id,
        '/takeover',
        { origin: id, flows },
        clock.now() + TAKEOVER_MS,
      )) as unknown as TakeoverAnswer;
      Object.assign(record, {
        flows: r.flows,
        with_state: r.with_state,
        replayed: r.replayed,
        gaps: r.gaps,
        takeover_ms: r.ms,
        took_over_at: clock.now(),
      });
      mark('takeover');
    }
    // Without a successor the flows still need an owner, or the switch would send them to the dead.
    const to = successor ?? deps.anyLive();
    if (ingress !== undefined && to !== undefined && flows.length > 0) {
      const epoch = deps.nextEpoch();
      await deps.mover.repoint(
        ingress,
        flows.map((flow) => ({ flow, primary: to.id, epoch })),
        clock.now() + options.moveTimeoutMs,
      );
    }
    mark('repointed');
    record.recovered_at = clock.now();
    record.recover_ms = round2(record.recovered_at - declared + detectMs);
  } catch (err) {
    record.error = err instanceof Error ? err.message : String(err);
    // Whatever step failed, an instance that wakes up must deliver nothing.
    if (!egressFenced) await fence(0);
  }
  return record;
}
