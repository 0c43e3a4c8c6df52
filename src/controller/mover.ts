/**
 * Moving flows between instances (DESIGN §5), for the controller: POST /move, the load-balancing unit's
 * moves and a drain's all come here. Each group of flows with one source is one exchange with the source,
 * the destination and the switch (moveGroup); a flow moves once at a time (`moving`), and every move is
 * recorded (`moves`, GET /moves). A controller that carries on from a previous leader settles the moves
 * it left open (settleOpenMoves); a failover re-points the switch through the same confirmed call (repoint).
 *
 *   const mover = new Mover({ replicas: true, moveTimeoutMs: 2000 }, deps, calls, logger, clock);
 *   const records = await mover.moveFlows(['udp 10.0.0.1:1000 > 10.0.0.2:2000'], 'nf-2', 'order-preserving');
 */
import { randomBytes } from 'node:crypto';
import { stepTimer } from '../clock.js';
import { ErrorCode, NfsError } from '../errors.js';
import { parseGuarantee, type Guarantee } from '../nf/guarantee.js';
import { canonicalKey, flowKeyString, parseFlowKeyString } from '../packet/flow-key.js';
import { CONTROL_BUCKETS } from '../metric-catalog.js';
import { Histogram } from '../metrics.js';
import type { Clock, Logger, MetricSample } from '../types.js';
import type { OpenMove } from './journal.js';
import {
  emptyRecord,
  type AdminAddress,
  type Frozen,
  type MoveRecord,
  type MoveStep,
  type Registered,
} from './records.js';
import type { RoleCalls } from './role-calls.js';

export const DEFAULT_MOVE_TIMEOUT_MS = 2000;
const MAX_MOVES_KEPT = 10_000;
/** How long a move waits for the switch to confirm a re-point it may already have applied. */
const REPOINT_CONFIRM_MS = 30_000;
/** Install requests stay under the admin API's body limit (MAX_BODY_BYTES), with room to spare. */
const INSTALL_BODY_BYTES = 512 * 1024;

export interface MoverOptions {
  /** Whether instances keep their cluster peers' replicas: a move inside a cluster installs from them. */
  replicas: boolean;
  /** A move's deadline up to the re-point: past it, the move aborts. */
  moveTimeoutMs: number;
  /** Where each move is saved while it is in progress, for a standby (journal.ts). */
  journal?: { beginMove(m: OpenMove): Promise<void>; endMove(id: string): Promise<void> };
}

/** What a move needs of the controller's registry. */
export interface MoverDeps {
  readonly instances: ReadonlyMap<string, Registered>;
  ingress(): AdminAddress | undefined;
  /** Whether two instances are in one cluster, as far as the controller knows. */
  sameCluster(a: string, b: string): boolean;
  /** The instance that keeps copies of `id`'s flows' packets and replicas of their state. */
  secondaryOf(id: string): Registered | undefined;
  /** A new rule epoch. */
  nextEpoch(): number;
}

export class Mover {
  /** Recent moves, oldest first (bounded). */
  readonly moves: MoveRecord[] = [];
  /** Told of each exchange's records as they are kept (the live dashboard). */
  onRecorded: ((records: readonly MoveRecord[]) => void) | undefined;
  /** The flows moving now: one move of a flow at a time. */
  private readonly moving = new Set<string>();
  /** Each exchange's duration, by kind (inside one cluster or not) and result (every flow moved or not). */
  private readonly durations = (['intra', 'inter'] as const).flatMap((kind) =>
    (['done', 'aborted'] as const).map((result) => ({
      kind,
      result,
      histogram: new Histogram('nfstate_controller_move_seconds', CONTROL_BUCKETS),
    })),
  );

  constructor(
    private readonly options: MoverOptions,
    private readonly deps: MoverDeps,
    private readonly calls: RoleCalls,
    private readonly logger: Logger,
    private readonly clock: Clock,
  ) {}

  collect(out: MetricSample[]): void {
    for (const { kind, result, histogram } of this.durations) histogram.collect(out, { kind, result });
  }

  /**
   * POST /move. `{ flow, to, guarantee? }` moves one flow and answers its MoveRecord; a flow that is already
   * moving is refused (retriable). `{ flows, to, guarantee? }` moves many and answers one MoveRecord per
   * flow, in order (see moveFlows).
   */
  async request(body: unknown): Promise<MoveRecord | MoveRecord[]> {
    const b = (body ?? {}) as Record<string, unknown>;
    if (b.flows === undefined) return this.move(b);
    if (!Array.isArray(b.flows) || b.flows.length === 0 || !b.flows.every((f) => typeof f === 'string'))
      throw new NfsError(ErrorCode.CONFIG, 'move.flows: must be a non-empty list of flow key strings');
    if (typeof b.to !== 'string') throw new NfsError(ErrorCode.CONFIG, 'move.to: must be an instance id');
    const guarantee = parseGuarantee(b.guarantee, 'move.guarantee');
    return this.moveFlows(b.flows.map(canonicalString), b.to, guarantee);
  }

  /** Moves one flow: `{ flow, to, guarantee? }`. */
  private async move(body: unknown): Promise<MoveRecord> {
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof b.flow !== 'string')
      throw new NfsError(ErrorCode.CONFIG, 'move.flow: must be a flow key string');
    if (typeof b.to !== 'string') throw new NfsError(ErrorCode.CONFIG, 'move.to: must be an instance id');
    const [record] = await this.moveFlows(
      [canonicalString(b.flow)],
      b.to,
      parseGuarantee(b.guarantee, 'move.guarantee'),
    );
    if (record!.refused === true)
      throw new NfsError(record!.code ?? ErrorCode.STATE, record!.error ?? 'move: refused', {
        retriable: record!.code === ErrorCode.STATE,
      });
    return record!;
  }

  /**
   * Moves `flows` (canonical key strings) to `to`. They are grouped by source, and each group is one
   * exchange (moveGroup); the groups run concurrently. A flow that is already moving, already on `to`, or
   * owned by no known instance is refused on its own (`refused`), never the whole batch.
   */
  async moveFlows(flows: readonly string[], to: string, guarantee: Guarantee): Promise<MoveRecord[]> {
    const ingress = this.deps.ingress();
    if (ingress === undefined) throw new NfsError(ErrorCode.STATE, 'move: no ingress has registered');
    const dst = this.deps.instances.get(to);
    if (dst === undefined) throw new NfsError(ErrorCode.CONFIG, `move.to: no instance ${JSON.stringify(to)}`);
    const out = new Array<MoveRecord>(flows.length);
    const refuse = (i: number, from: string, code: ErrorCode, error: string): void => {
      out[i] = { ...emptyRecord(flows[i]!, from, to, guarantee), aborted: true, refused: true, code, error };
    };
    // One move of a flow at a time: a second one would find it half-way and could undo the first's steps.
    const claimed: number[] = [];
    flows.forEach((flow, i) => {
      if (this.moving.has(flow)) refuse(i, '', ErrorCode.STATE, `move: ${flow} is already moving`);
      else {
        this.moving.add(flow);
        claimed.push(i);
      }
    });
    const groups = new Map<Registered, number[]>();
    try {
      const { owners } = (await this.calls.call(
        ingress,
        'ingress',
        '/owner',
        { flows: claimed.map((i) => flows[i]) },
        this.clock.now() + this.options.moveTimeoutMs,
      )) as { owners: (string | null)[] };
      claimed.forEach((i, j) => {
        const owner = owners[j] ?? null;
        const src = owner === null ? undefined : this.deps.instances.get(owner);
        if (src === undefined)
          refuse(i, owner ?? '', ErrorCode.STATE, `move: ${flows[i]!} has no known owner`);
        else if (src.id === dst.id)
          refuse(i, src.id, ErrorCode.CONFIG, `move: ${flows[i]!} is already on ${dst.id}`);
        else {
          const group = groups.get(src);
          if (group === undefined) groups.set(src, [i]);
          else group.push(i);
        }
      });
    } catch (err) {
      for (const i of claimed) this.moving.delete(flows[i]!);
      throw err;
    }
    for (const i of claimed) if (out[i] !== undefined) this.moving.delete(flows[i]!);
    await Promise.all(
      [...groups].map(async ([src, at]) => {
        const group = at.map((i) => flows[i]!);
        const records = await this.moveGroup(src, dst, group, guarantee, ingress);
        at.forEach((i, j) => (out[i] = records[j]!));
      }),
    );
    return out;
  }

  /**
   * Moves `flows` from `src` to `dst` in one exchange (DESIGN §5), each step carrying the whole list: the
   * destination learns to expect the flows (expect) while the source parks their packets and hands over
   * their state (freeze) — only the changes since the last replicated batch inside a cluster, the full state
   * across; the destination installs it while the source confirms it still holds every flow (commit); one
   * switch update re-points them all, and the source hands over what it parked once the end-of-move markers
   * come (finish).
   *
   * The move has a deadline (`moveTimeoutMs`) up to the re-point, the commit point. A step that fails or
   * misses it aborts every flow not yet re-pointed, on both sides: each stays with its source, which
   * processes what it parked, and the destination forgets it. A flow that fails alone — gone from the source,
   * no state to install, parked packets at the bound, a newer rule at the switch — aborts alone. The
   * flows stay claimed (`moving`) until the destination has forgotten the aborted ones, so that a late
   * forget cannot hit a later move of the same flow.
   */
  private async moveGroup(
    src: Registered,
    dst: Registered,
    flows: readonly string[],
    guarantee: Guarantee,
    ingress: { host: string; admin: number },
  ): Promise<MoveRecord[]> {
    const started = this.clock.now();
    const deadline = started + this.options.moveTimeoutMs;
    const n = flows.length;
    // Inside a cluster the destination installs from its replicas; only the last batch's changes travel.
    const fromReplicas = this.options.replicas && this.deps.sameCluster(src.id, dst.id);
    const intra = new Array<boolean>(n).fill(fromReplicas);
    const stateBytes = new Array<number>(n).fill(0);
    const buffered = new Array<number>(n).fill(0);
    const failed = new Array<NfsError | undefined>(n).fill(undefined);
    const repointed = new Array<boolean>(n).fill(false);
    const pending = (): number[] => flows.flatMap((_, i) => (failed[i] === undefined ? [i] : []));
    const names = (at: readonly number[]): string[] => at.map((i) => flows[i]!);
    const fail = (i: number, code: ErrorCode, message: string): void => {
      failed[i] ??= new NfsError(code, `move: ${flows[i]!}: ${message}`);
    };
    const open = { id: randomBytes(8).toString('hex'), src: src.id, dst: dst.id, flows: [...flows] };
    const { steps, mark } = stepTimer<MoveStep>(this.clock);
    try {
      await this.options.journal?.beginMove(open);
      const left = Math.max(1, Math.ceil(deadline - this.clock.now()));
      const copyTo = this.deps.secondaryOf(dst.id);
      // Both at once: nothing reaches the destination before the re-point. If either fails, both have
      // settled before the abort goes out, so that an abort never overtakes the step it undoes.
      const [expected, freeze] = await Promise.allSettled([
        this.calls.call(dst, dst.id, '/move/expect', { flows, guarantee }, deadline),
        this.calls.call(
          src,
          src.id,
          '/move/freeze',
          {
            flows,
            to: { host: dst.host, port: dst.port },
            // The destination's secondary keeps copies of the packets the source hands over, as it does
            // of the switch's: the destination may fail before a batch of its own covers them.
            ...(copyTo === undefined ? {} : { copy_to: { host: copyTo.host, port: copyTo.port } }),
            intra: fromReplicas,
            guarantee,
            settle_ms: left,
            deadline_ms: left,
          },
          deadline,
        ),
      ]);
      mark('frozen');
      if (expected.status === 'rejected') throw expected.reason;
      if (freeze.status === 'rejected') throw freeze.reason;
      const frozen = (freeze.value as { flows: (Frozen | null)[] }).flows;
      flows.forEach((_, i) => {
        if ((frozen[i] ?? null) === null)
          fail(
            i,
            ErrorCode.STATE,
            `not movable at ${src.id} (gone, already moving, or its first packet waits for a global decision)`,
          );
      });
      const ready = pending();
      const [install, commit] = await Promise.allSettled([
        this.install(src, dst, flows, ready, frozen, fromReplicas, { intra, stateBytes }, deadline),
        this.calls.call(src, src.id, '/move/commit', { flows: names(ready) }, deadline),
      ]);
      mark('installed');
      if (install.status === 'rejected') throw install.reason;
      if (commit.status === 'rejected') throw commit.reason;
      const committed = commit.value.ok as boolean[];
      ready.forEach((i, j) => {
        if (!install.value[j]) fail(i, ErrorCode.STATE, `${dst.id} could not install its state`);
        if (committed[j] !== true)
          fail(
            i,
            ErrorCode.STATE,
            `${src.id} took it back (its parked packets reached the bound, or the deadline passed)`,
          );
      });
      const go = pending();
      if (go.length > 0) {
        const epoch = this.deps.nextEpoch();
        const rules = go.map((i) => ({ flow: flows[i], primary: dst.id, epoch, move: true }));
        const taken = await this.repoint(ingress, rules, deadline);
        mark('repointed');
        go.forEach((i, j) => {
          if (taken[j] === true) repointed[i] = true;
          else fail(i, ErrorCode.STATE, 'the switch kept a newer rule');
        });
      }
    } catch (err) {
      const e = err instanceof NfsError ? err : new NfsError(ErrorCode.PROCESS, String(err), { cause: err });
      for (const i of pending()) if (!repointed[i]) failed[i] = e;
    }
    const aborted = flows.flatMap((_, i) => (failed[i] === undefined ? [] : [i]));
    const undone = aborted.length > 0 ? this.abort(src, dst, names(aborted)) : undefined;
    await undone?.resumed;
    const moved = flows.flatMap((_, i) => (repointed[i] ? [i] : []));
    let finishError: string | undefined;
    if (moved.length > 0) {
      // Committed: the end-of-move markers close the move. The source hands over on its own after
      // `wait_ms` if a marker is lost, so this waits a little longer than that.
      try {
        const { parked } = (await this.calls.call(
          src,
          src.id,
          '/move/finish',
          { flows: names(moved), wait_ms: this.options.moveTimeoutMs },
          this.clock.now() + 2 * this.options.moveTimeoutMs,
        )) as { parked: number[] };
        moved.forEach((i, j) => (buffered[i] = parked[j] ?? 0));
        mark('handed_over');
      } catch (err) {
        finishError = String(err);
        this.logger.warn('move: hand-over unconfirmed', { from: src.id, to: dst.id, error: finishError });
      }
    }
    const duration = this.clock.now() - started;
    const records = flows.map((flow, i): MoveRecord => {
      const e = failed[i];
      return {
        ...emptyRecord(flow, src.id, dst.id, guarantee),
        intra: intra[i]!,
        state_bytes: e === undefined ? stateBytes[i]! : 0,
        buffered: buffered[i]!,
        duration_ms: duration,
        steps_ms: steps,
        group: n,
        aborted: e !== undefined,
        ...(e === undefined
          ? finishError === undefined
            ? {}
            : { error: finishError }
          : { error: e.message, code: e.code }),
      };
    });
    for (const i of moved) this.moving.delete(flows[i]!);
    for (const r of records) this.moves.push(r);
    this.onRecorded?.(records);
    const kind = intra.every(Boolean) ? 'intra' : 'inter';
    const result = aborted.length === 0 ? 'done' : 'aborted';
    this.durations.find((d) => d.kind === kind && d.result === result)!.histogram.observe(duration / 1000);
    if (this.moves.length > MAX_MOVES_KEPT) this.moves.splice(0, this.moves.length - MAX_MOVES_KEPT);
    if (aborted.length > 0)
      this.logger.warn('move aborted', {
        from: src.id,
        to: dst.id,
        flows: aborted.length,
        error: failed[aborted[0]!]!.message,
      });
    const journal = this.options.journal;
    if (journal !== undefined)
      void Promise.resolve(undone?.forgotten)
        .then(() => journal.endMove(open.id))
        .catch((err: unknown) => {
          this.logger.warn('move not closed in the journal: a standby would settle it again', {
            error: String(err),
          });
        });
    return records;
  }

  /**
   * Re-points the switch: the commit point of a move. A request that missed the deadline may still be
   * applied later, so it is never given up on while the switch may hold it: the same request is sent again
   * until the switch answers, which makes the outcome certain. That is safe because it is idempotent — same
   * epoch, and a flow whose owner is already the destination gets no second marker. Only a switch that
   * cannot be reached, or that answers nothing for REPOINT_CONFIRM_MS, leaves the move to abort.
   */
  async repoint(
    ingress: { host: string; admin: number },
    rules: readonly Record<string, unknown>[],
    deadline: number,
  ): Promise<boolean[]> {
    const giveUp = this.clock.now() + REPOINT_CONFIRM_MS;
    let until = deadline;
    for (;;) {
      try {
        const r = await this.calls.call(ingress, 'ingress', '/rules', { rules }, until);
        return r.installed as boolean[];
      } catch (err) {
        if (!(err instanceof NfsError) || err.code !== ErrorCode.TIMEOUT || this.clock.now() >= giveUp)
          throw err;
        this.logger.warn('move: re-point not confirmed yet, asking again', { flows: rules.length });
        until = Math.min(giveUp, this.clock.now() + this.options.moveTimeoutMs);
      }
    }
  }

  /**
   * Installs the frozen flows at `at` on the destination: inside a cluster (`intra`) from its own replicas,
   * which the freeze brought up to date, falling back to the full state for a flow whose replica is behind;
   * across clusters from the full state the freeze answered with. Resolves with, per flow of `at`, whether it
   * installed, and records in `out` what travelled.
   */
  private async install(
    src: Registered,
    dst: Registered,
    flows: readonly string[],
    at: readonly number[],
    frozen: readonly (Frozen | null)[],
    intra: boolean,
    out: { intra: boolean[]; stateBytes: number[] },
    deadline: number,
  ): Promise<boolean[]> {
    const ok = new Array<boolean>(at.length).fill(false);
    const item = (i: number, state?: string): Record<string, unknown> => {
      const f = frozen[i]!;
      return {
        flow: flows[i],
        expected: f.expected,
        version: f.version,
        ...(state === undefined ? {} : { state }),
      };
    };
    // Positions in `at` still to install from their full state.
    let rest = at.map((_, j) => j);
    if (intra && at.length > 0) {
      const r = await this.installChunks(
        dst,
        src.id,
        at.map((i) => item(i)),
        deadline,
      );
      rest = rest.filter((j) => {
        if (r[j] !== true) return true;
        ok[j] = true;
        out.stateBytes[at[j]!] = frozen[at[j]!]!.last_delta_bytes;
        return false;
      });
      if (rest.length === 0) return ok;
    }
    const states = new Map<number, string>();
    for (const j of rest) {
      const s = frozen[at[j]!]!.state;
      if (s !== undefined) states.set(j, s);
    }
    const missing = rest.filter((j) => !states.has(j));
    if (missing.length > 0) {
      const r = (await this.calls.call(
        src,
        src.id,
        '/move/state',
        { flows: missing.map((j) => flows[at[j]!]) },
        deadline,
      )) as { states: (string | null)[] };
      missing.forEach((j, k) => {
        const s = r.states[k];
        if (typeof s === 'string') states.set(j, s);
      });
    }
    const send = rest.filter((j) => states.has(j));
    const r = await this.installChunks(
      dst,
      src.id,
      send.map((j) => item(at[j]!, states.get(j))),
      deadline,
    );
    send.forEach((j, k) => {
      const i = at[j]!;
      ok[j] = r[k] === true;
      // The destination's replica was behind, or the clusters differ: the whole state travelled.
      out.intra[i] = false;
      out.stateBytes[i] = frozen[i]!.full_bytes;
    });
    return ok;
  }

  /** POST /move/install in as few requests as the admin API's body limit allows; per item, installed or not. */
  private async installChunks(
    dst: Registered,
    from: string,
    items: readonly Record<string, unknown>[],
    deadline: number,
  ): Promise<boolean[]> {
    const chunks: Record<string, unknown>[][] = [[]];
    let bytes = 0;
    for (const item of items) {
      const size = JSON.stringify(item).length + 1;
      if (bytes + size > INSTALL_BODY_BYTES && chunks.at(-1)!.length > 0) {
        chunks.push([]);
        bytes = 0;
      }
      chunks.at(-1)!.push(item);
      bytes += size;
    }
    const answers = await Promise.all(
      chunks.map(async (chunk) =>
        chunk.length === 0
          ? []
          : (
              (await this.calls.call(
                dst,
                dst.id,
                '/move/install',
                // The source hands over within `wait_ms` of the re-point (see finish): the destination waits.
                // Its own peers hold the installed states before it answers (`settle_ms`): from the re-point
                // on, its secondary gets copies of the flows' packets, which replay from those states if the
                // destination fails before its first batch of them.
                {
                  from,
                  flows: chunk,
                  wait_ms: this.options.moveTimeoutMs,
                  settle_ms: Math.max(1, Math.ceil(deadline - this.clock.now())),
                },
                deadline,
              )) as {
                ok: boolean[];
              }
            ).ok,
      ),
    );
    return answers.flat();
  }

  /**
   * Undoes a move of `flows` on both sides: the source resumes them and processes what it parked; the
   * destination forgets them. The move waits for the source only (`resumed`): the flows' fate is there, and
   * a destination that hangs must not hold them back. The flows stay claimed until the destination has
   * answered or its time is up (`forgotten`).
   */
  private abort(
    src: Registered,
    dst: Registered,
    flows: string[],
  ): { resumed: Promise<void>; forgotten: Promise<void> } {
    const deadline = this.clock.now() + this.options.moveTimeoutMs;
    const forgotten = this.calls
      .call(dst, dst.id, '/move/abort', { flows, side: 'destination' }, deadline)
      .then(
        () => undefined,
        (err: unknown) => {
          this.logger.warn('move abort: destination did not answer', { to: dst.id, error: String(err) });
        },
      )
      .finally(() => {
        for (const f of flows) this.moving.delete(f);
      });
    const resumed = this.calls.call(src, src.id, '/move/abort', { flows, side: 'source' }, deadline).then(
      () => undefined,
      (err: unknown) => {
        this.logger.error('move abort: source did not answer', { from: src.id, error: String(err) });
      },
    );
    return { resumed, forgotten };
  }

  /**
   * Settles the moves a previous leader left half-way. A flow the switch already points to the destination
   * is handed over by its source, as the move's last step would have done. Any other goes back to its
   * source, pinned there by a rule numbered above anything the old leader used (a late re-point of its
   * cannot land then), and the destination forgets it.
   */
  async settleOpenMoves(moves: readonly OpenMove[]): Promise<void> {
    const ingress = this.deps.ingress();
    if (ingress === undefined) return;
    await Promise.all(
      moves.map(async (m) => {
        for (const f of m.flows) this.moving.add(f);
        try {
          const deadline = this.clock.now() + this.options.moveTimeoutMs;
          const { owners } = (await this.calls.call(
            ingress,
            'ingress',
            '/owner',
            { flows: m.flows },
            deadline,
          )) as {
            owners: (string | null)[];
          };
          const src = this.deps.instances.get(m.src);
          const dst = this.deps.instances.get(m.dst);
          const moved: string[] = [];
          const back: string[] = [];
          const pin: string[] = [];
          m.flows.forEach((f, i) => {
            if (owners[i] === m.dst) moved.push(f);
            else back.push(f);
            if (owners[i] === m.src) pin.push(f);
          });
          if (moved.length > 0 && src !== undefined)
            await this.calls.call(
              src,
              src.id,
              '/move/finish',
              { flows: moved, wait_ms: this.options.moveTimeoutMs },
              this.clock.now() + 2 * this.options.moveTimeoutMs,
            );
          if (back.length > 0) {
            if (pin.length > 0) {
              const epoch = this.deps.nextEpoch();
              await this.repoint(
                ingress,
                pin.map((flow) => ({ flow, primary: m.src, epoch })),
                deadline,
              );
            }
            if (dst !== undefined)
              await this.calls.call(
                dst,
                dst.id,
                '/move/abort',
                { flows: back, side: 'destination' },
                deadline,
              );
            if (src !== undefined)
              await this.calls.call(src, src.id, '/move/abort', { flows: back, side: 'source' }, deadline);
          }
          await this.options.journal?.endMove(m.id);
          this.logger.info('move left open by the previous controller settled', {
            from: m.src,
            to: m.dst,
            moved: moved.length,
            back: back.length,
          });
        } catch (err) {
          this.logger.error('move left open by the previous controller not settled', {
            from: m.src,
            to: m.dst,
            flows: m.flows.length,
            error: String(err),
          });
        } finally {
          for (const f of m.flows) this.moving.delete(f);
        }
      }),
    );
  }
}

/** The flow's key string in canonical form, so that both spellings of a connection are one flow. */
export function canonicalString(flow: string): string {
  const k = parseFlowKeyString(flow);
  return flowKeyString(canonicalKey(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto));
}
