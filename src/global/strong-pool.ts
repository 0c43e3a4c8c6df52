/**
 * Integer pools shared by a whole deployment and kept strongly consistent (DESIGN.md §7): a replicated
 * state machine over a GlobalStore. Every allocation is decided once, in the log's order, by the same
 * rule at every instance, so all instances agree on who holds what. A successor that replays a failed
 * instance's packets claims the flow's NAT port again and gets the one the failed instance chose.
 *
 *   const pools = new StrongPools(store, { self: 'nat-1' }, logger);
 *   pools.define('nat.port', 1024, 65535);           // before start, the same at every instance
 *   await pools.start();
 *   const port = await pools.claim('nat.port', owner, incarnation);  // -1: the pool is exhausted
 *   pools.valueOf('nat.port', owner, incarnation);   // synchronous reads of the applied state
 *   pools.ownerOf('nat.port', port);
 *   await pools.release('nat.port', owner, incarnation);
 *
 * The rule every instance applies, and the layout of its updates: pool-rule.ts.
 *
 * A proposer names the lowest value free in its own view that it has not proposed already, so its own
 * claims never collide with each other. When its candidate lost, or its view has nothing left to
 * propose, it claims ANY, which cannot lose: a claim takes at most two rounds, and exhaustion is
 * decided in the log, not by a stale view.
 *
 * Ids. Each update is `pool:<self>:<boot>:<seq>`, unique per attempt (`boot` is random per process).
 * Resubmitting an attempt whose outcome is unknown (TIMEOUT, a dropped connection) reuses its id, so it
 * applies exactly once. A successor's replayed claim is a new update, which the rule answers with the
 * value already held. Ids derived from (owner, incarnation) would make it a duplicate instead, whose
 * outcome the successor may have applied before it asked and cannot learn from the submit's result.
 * Updates with other ids belong to other users of the log and are ignored.
 *
 * Failure. A call has `deadlineMs` from when it is made, and one submit at most `attemptMs` of it. A
 * submit that fails retriably (a TIMEOUT too) leaves its updates' outcome open, so they go again, with
 * the same ids, until they apply or the deadline passes; then the call rejects with NFS_ERR_TIMEOUT
 * and the store's words (etcd: "leader lost or no quorum?"). An error that retrying cannot help rejects
 * at once, with the store's code. A claim that rejected may still commit later: its owner then holds a
 * value, which a new claim returns and `release` frees.
 *
 * State. An instance builds its state by applying the log from revision 0. If the store no longer
 * has that far back (the sequencer's window, an etcd compaction), the watch fails and every call
 * rejects from then on: starting from a snapshot is not done here.
 *
 * Memory: at most `maxPending` calls wait at once, and more are refused; the state is one entry per
 * holding, and the free structures (state/lowest-free.ts) grow only with the values given back.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCode, NfsError } from '../errors.js';
import { LowestFree } from '../state/lowest-free.js';
import { sliceOf, type Partition } from '../state/global-local.js';
import type { Logger, MetricSample, MetricSource } from '../types.js';
import {
  DEFAULT_DEADLINE_MS,
  MAX_ID_BYTES,
  type CommittedUpdate,
  type GlobalStore,
  type GlobalUpdate,
  type WatchHandle,
} from './store.js';
import {
  DecisionState,
  LOST,
  PoolOp,
  PoolState,
  decodePoolUpdate,
  encodePoolUpdate,
  holdingKey,
} from './pool-rule.js';

const ID_PREFIX = 'pool:';
/** `self` is one part of every id; the rest (prefix, boot, sequence number) takes under 48 bytes. */
const MAX_SELF_BYTES = MAX_ID_BYTES - 64;
/** A submit never outlives its oldest call's deadline; past it by this much, the call fails regardless. */
const SUBMIT_GRACE_MS = 250;
const MAX_BACKOFF_MS = 200;

const Stage = { QUEUED: 0, SUBMITTING: 1, COMMITTED: 2, DONE: 3 } as const;
type Stage = (typeof Stage)[keyof typeof Stage];

/** One claim, release or decision of this instance, from the call until its update applies here or it fails. */
interface Call {
  readonly op: typeof PoolOp.CLAIM | typeof PoolOp.RELEASE | typeof PoolOp.DECIDE;
  /** The pool, or for a decision, the decision's name (decisions need no definition). */
  readonly name: string;
  readonly pool: Pool | undefined;
  readonly owner: string;
  readonly incarnation: number;
  readonly key: string;
  readonly deadline: number;
  readonly promise: Promise<number>;
  resolve(value: number): void;
  reject(err: Error): void;
  stage: Stage;
  /** The current attempt's update; a claim whose candidate lost gets a new one. */
  id: string;
  data: Uint8Array;
  /** The value this attempt proposes, or -1 for ANY (and for a release). */
  candidate: number;
  /** The store's last error for this call, which its rejection reports. */
  lastError: Error | undefined;
  readonly signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/**
 * One pool's applied state and this instance's proposals. Its candidates come from its own slice of the
 * range first (`slice`), where no other instance proposes, so that its claims rarely lose and take one
 * round; past the slice, from anywhere.
 */
class Pool extends PoolState {
  /** The latest call of this instance per holding key: calls for one owner go one after another. */
  readonly busy = new Map<string, Call>();
  /** Candidates this instance proposed whose claims are not decided yet. */
  private readonly proposed = new Set<number>();
  /** Lowest free in this instance's view that it has not proposed, in its slice and anywhere. */
  private readonly mine: LowestFree;
  private readonly anywhere: LowestFree;
  private readonly isProposable = (v: number): boolean => !this.byValue.has(v) && !this.proposed.has(v);

  constructor(
    name: string,
    first: number,
    last: number,
    private readonly slice: readonly [number, number],
  ) {
    super(name, first, last);
    this.mine = new LowestFree(slice[0], slice[1]);
    this.anywhere = new LowestFree(first, last);
    this.released = (value) => {
      if (!this.proposed.has(value)) this.offer(value);
    };
  }

  /** A candidate for a new claim, or -1 when this view has none left. */
  propose(): number {
    let v = this.mine.take(this.isProposable);
    if (v < 0) v = this.anywhere.take(this.isProposable);
    if (v >= 0) this.proposed.add(v);
    return v;
  }

  /** The claim that proposed `v` is decided (or given up): `v` may be proposed again if it is free. */
  settleProposal(v: number): void {
    if (this.proposed.delete(v) && !this.byValue.has(v)) this.offer(v);
  }

  private offer(v: number): void {
    if (v >= this.slice[0] && v <= this.slice[1]) this.mine.offer(v);
    this.anywhere.offer(v);
  }
}

export interface StrongPoolsOptions {
  /** This instance's name, unique in the deployment; it is part of every update id. */
  self: string;
  /**
   * How long a call's update waits for others to share its submit, in ms (default 0: those of the same
   * event-loop turn, and those made while the previous submit was in flight).
   */
  batchMs?: number;
  /** The most updates in one submit (default 512). */
  maxBatch?: number;
  /** How long a claim or release may take, in ms, before it rejects (default DEFAULT_DEADLINE_MS). */
  deadlineMs?: number;
  /**
   * How long one submit may take, in ms, before its updates go again with the same ids (default a
   * quarter of `deadlineMs`). etcd holds a write sent to a member whose leader just died until its own
   * request timeout, so a call must try again within its deadline rather than wait on one attempt.
   */
  attemptMs?: number;
  /** The most calls in progress at once (default 65536). */
  maxPending?: number;
  /**
   * This instance's slice of every pool (index of count, as the instances number themselves), where its
   * candidates come from first (default: the whole range, as one slice).
   */
  slice?: Partition;
}

export class StrongPools implements MetricSource {
  /** This instance's calls and the log's oddities; plain fields read at scrape time. */
  readonly counts = {
    claims: 0,
    decisions: 0,
    /** Candidates of this instance that another claim took first. */
    conflicts: 0,
    releases: 0,
    batches: 0,
    /** Updates submitted again after an unknown outcome. */
    resubmits: 0,
    failed: 0,
    malformed: 0,
    undeclared: 0,
  };
  /**
   * Each pool update as it applies here, in log order (its data, valid during the call): a mirror that
   * applies the same to its own PoolStates holds the same state.
   */
  onApplied: ((data: Uint8Array) => void) | undefined;
  private readonly pools = new Map<string, Pool>();
  /** Decisions as applied here. */
  readonly decisions = new DecisionState();
  private readonly batchMs: number;
  private readonly maxBatch: number;
  private readonly deadlineMs: number;
  private readonly attemptMs: number;
  private readonly maxPending: number;
  private readonly slice: Partition;
  private readonly idStem: string;
  private nextSeq = 0;
  private watch: WatchHandle | undefined;
  private running = false;
  /** Set when the watch failed: the state can no longer follow the log. */
  private broken: Error | undefined;
  /** The last revision applied; a restart resumes after it. */
  private applied = 0;
  private readonly byId = new Map<string, Call>();
  private pending = 0;
  /** Calls whose update waits for the next submit; settled ones are skipped when they come up. */
  private queue: Call[] = [];
  private queueHead = 0;
  private submitting = false;
  private flushTimer: NodeJS.Timeout | undefined;
  private flushSoon: NodeJS.Immediate | undefined;
  private backoffMs = 0;
  /** Every call in progress, oldest first, which is also deadline order. */
  private byAge: Call[] = [];
  private ageHead = 0;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: GlobalStore,
    options: StrongPoolsOptions,
    private readonly logger: Logger,
  ) {
    const { self } = options;
    if (typeof self !== 'string' || self.length === 0 || Buffer.byteLength(self) > MAX_SELF_BYTES) {
      throw new NfsError(ErrorCode.CONFIG, `strongPools.self: must be 1..${MAX_SELF_BYTES} UTF-8 bytes`);
    }
    this.batchMs = checkCount('batchMs', options.batchMs ?? 0, 0);
    this.maxBatch = checkCount('maxBatch', options.maxBatch ?? 512, 1);
    this.deadlineMs = checkCount('deadlineMs', options.deadlineMs ?? DEFAULT_DEADLINE_MS, 1);
    this.attemptMs = checkCount('attemptMs', options.attemptMs ?? Math.ceil(this.deadlineMs / 4), 1);
    this.maxPending = checkCount('maxPending', options.maxPending ?? 65536, 1);
    this.slice = options.slice ?? { index: 0, count: 1 };
    const { index, count } = this.slice;
    if (
      !Number.isSafeInteger(count) ||
      count < 1 ||
      !Number.isSafeInteger(index) ||
      index < 0 ||
      index >= count
    )
      throw new NfsError(ErrorCode.CONFIG, `strongPools.slice: bad slice ${index} of ${count}`);
    this.idStem = `${ID_PREFIX}${self}:${randomBytes(8).toString('hex')}:`;
  }

  /** Declares the pool of the integers [first, last]. Every instance declares the same, before start. */
  define(name: string, first: number, last: number): void {
    const existing = this.pools.get(name);
    if (existing !== undefined) {
      if (existing.first === first && existing.last === last) return;
      throw new NfsError(
        ErrorCode.CONFIG,
        `strongPools.${name}: already defined as [${existing.first}, ${existing.last}], not [${first}, ${last}]`,
      );
    }
    if (this.watch !== undefined || this.applied > 0) {
      // Updates for it that applied before would have been ignored here and not elsewhere.
      throw new NfsError(ErrorCode.STATE, `strongPools.${name}: pools must be defined before start`);
    }
    if (name.length === 0 || !Number.isSafeInteger(first) || !Number.isSafeInteger(last)) {
      throw new NfsError(ErrorCode.CONFIG, `strongPools.${name}: bad name or range [${first}, ${last}]`);
    }
    if (first < 0 || first > last) {
      throw new NfsError(
        ErrorCode.CONFIG,
        `strongPools.${name}: range [${first}, ${last}] is empty or negative`,
      );
    }
    this.pools.set(name, new Pool(name, first, last, sliceOf(first, last, this.slice) ?? [first, last]));
  }

  /**
   * Follows the log from `afterRevision` (default: where this instance stopped, or 0 at first), applying
   * every update. Safe to repeat.
   */
  start(afterRevision = this.applied): Promise<void> {
    if (this.running) return Promise.resolve();
    this.running = true;
    this.broken = undefined;
    this.watch = this.store.watch(
      afterRevision,
      (u) => {
        this.apply(u);
      },
      (err) => {
        this.watchFailed(err);
      },
    );
    return Promise.resolve();
  }

  /** Stops following the log; calls in progress reject. Safe to repeat. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearTimeout(this.flushTimer);
    clearImmediate(this.flushSoon);
    clearTimeout(this.sweepTimer);
    this.flushTimer = undefined;
    this.flushSoon = undefined;
    this.sweepTimer = undefined;
    const watch = this.watch;
    this.watch = undefined;
    this.failAll(new NfsError(ErrorCode.STATE, 'strong pools stopped'));
    await watch?.stop();
  }

  /**
   * A value of pool `name` for `owner`'s `incarnation`: the value it holds, or one decided in the log
   * for it now; -1 when the pool has no free value. Resolves once the decision applied here.
   */
  async claim(
    name: string,
    owner: string,
    incarnation: number,
    options: { signal?: AbortSignal } = {},
  ): Promise<number> {
    const pool = this.poolFor(name);
    checkOwner(owner, incarnation);
    const key = holdingKey(owner, incarnation);
    for (let busy = pool.busy.get(key); busy !== undefined; busy = pool.busy.get(key)) {
      if (busy.op === PoolOp.CLAIM) return busy.promise;
      await busy.promise.then(ignore, ignore);
    }
    this.counts.claims++;
    const held = pool.byOwner.get(key);
    if (held !== undefined) return held.value;
    const call = this.open(PoolOp.CLAIM, pool, owner, incarnation, options.signal);
    this.propose(call);
    return call.promise;
  }

  /**
   * Frees, in log order at every instance, what `owner`'s `incarnation` holds in pool `name`. Resolves
   * with the value freed, or -1 when it held nothing by the time the release applied.
   */
  async release(
    name: string,
    owner: string,
    incarnation: number,
    options: { signal?: AbortSignal } = {},
  ): Promise<number> {
    const pool = this.poolFor(name);
    checkOwner(owner, incarnation);
    const key = holdingKey(owner, incarnation);
    for (let busy = pool.busy.get(key); busy !== undefined; busy = pool.busy.get(key)) {
      if (busy.op === PoolOp.RELEASE) return busy.promise;
      await busy.promise.then(ignore, ignore);
    }
    this.counts.releases++;
    const call = this.open(PoolOp.RELEASE, pool, owner, incarnation, options.signal);
    this.send(call, PoolOp.RELEASE, -1);
    return call.promise;
  }

  /**
   * The decision `name` for `owner`'s `incarnation`: `candidate` if this is the first in log order, else the
   * one made first (by this instance before, or another). Decisions need no definition.
   */
  decide(name: string, owner: string, incarnation: number, candidate: number): Promise<number> {
    checkOwner(owner, incarnation);
    if (!Number.isSafeInteger(candidate) || candidate < -1)
      throw new NfsError(
        ErrorCode.USAGE,
        `strong pools: a decision is a safe integer ≥ -1 (got ${candidate})`,
      );
    const made = this.decisions.valueOf(name, owner, incarnation);
    if (made !== undefined) return Promise.resolve(made);
    this.counts.decisions++;
    const call = this.open(PoolOp.DECIDE, name, owner, incarnation, undefined);
    this.send(call, PoolOp.DECIDE, candidate);
    return call.promise;
  }

  /** The value `owner`'s `incarnation` holds, as applied here. */
  valueOf(name: string, owner: string, incarnation: number): number | undefined {
    return this.pools.get(name)?.valueOf(owner, incarnation);
  }

  /** The owner holding `value`, as applied here. */
  ownerOf(name: string, value: number): string | undefined {
    return this.pools.get(name)?.byValue.get(value)?.owner;
  }

  size(name: string): number {
    return this.poolFor(name).size;
  }

  inUse(name: string): number {
    return this.poolFor(name).byValue.size;
  }

  /** Every holding of the pool, by value: a deterministic dump for comparing instances. */
  holdings(name: string): { value: number; owner: string; incarnation: number }[] {
    const out = [...this.poolFor(name).byValue.values()].map((h) => ({ ...h }));
    return out.sort((a, b) => a.value - b.value);
  }

  collect(out: MetricSample[]): void {
    const c = this.counts;
    out.push(['nfstate_strong_pool_claims_total', {}, c.claims]);
    out.push(['nfstate_strong_pool_decisions_total', {}, c.decisions]);
    out.push(['nfstate_strong_pool_conflicts_total', {}, c.conflicts]);
    out.push(['nfstate_strong_pool_releases_total', {}, c.releases]);
    out.push(['nfstate_strong_pool_batches_total', {}, c.batches]);
    out.push(['nfstate_strong_pool_resubmits_total', {}, c.resubmits]);
    out.push(['nfstate_strong_pool_failed_total', {}, c.failed]);
    out.push(['nfstate_strong_pool_malformed_total', {}, c.malformed]);
    out.push(['nfstate_strong_pool_undeclared_total', {}, c.undeclared]);
    out.push(['nfstate_strong_pool_pending', {}, this.pending]);
    for (const p of this.pools.values())
      out.push(['nfstate_strong_pool_in_use', { pool: p.name }, p.byValue.size]);
  }

  private poolFor(name: string): Pool {
    const pool = this.pools.get(name);
    if (pool === undefined) throw new NfsError(ErrorCode.CONFIG, `strongPools.${name}: not defined`);
    return pool;
  }

  private open(
    op: Call['op'],
    pool: Pool | string,
    owner: string,
    incarnation: number,
    signal: AbortSignal | undefined,
  ): Call {
    if (this.broken !== undefined) throw this.broken;
    if (!this.running) throw new NfsError(ErrorCode.STATE, 'strong pools are not started');
    signal?.throwIfAborted();
    if (this.pending >= this.maxPending) {
      throw new NfsError(ErrorCode.STATE, `strong pools: ${this.pending} calls already in progress`, {
        retriable: true,
      });
    }
    let resolve!: (value: number) => void;
    let reject!: (err: Error) => void;
    const promise = new Promise<number>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const key = holdingKey(owner, incarnation);
    const call: Call = {
      op,
      name: typeof pool === 'string' ? pool : pool.name,
      pool: typeof pool === 'string' ? undefined : pool,
      owner,
      incarnation,
      key,
      deadline: Date.now() + this.deadlineMs,
      promise,
      resolve,
      reject,
      stage: Stage.QUEUED,
      id: '',
      data: new Uint8Array(0),
      candidate: -1,
      lastError: undefined,
      signal,
      onAbort: undefined,
    };
    if (signal !== undefined) {
      call.onAbort = () => {
        this.fail(call, signal.reason as Error);
      };
      signal.addEventListener('abort', call.onAbort, { once: true });
    }
    call.pool?.busy.set(key, call);
    this.pending++;
    // Settled calls at the front need no sweep: dropping them here keeps the list to the calls in progress.
    while (this.byAge[this.ageHead]?.stage === Stage.DONE) this.ageHead++;
    this.byAge.push(call);
    this.armSweep();
    return call;
  }

  /** Queues a claim's next attempt: the candidate its view proposes, or ANY when it has none. */
  private propose(call: Call): void {
    const candidate = call.pool!.propose();
    this.send(call, candidate < 0 ? PoolOp.CLAIM_ANY : PoolOp.CLAIM, candidate);
  }

  private send(call: Call, op: PoolOp, candidate: number): void {
    call.candidate = candidate;
    call.id = `${this.idStem}${this.nextSeq++}`;
    call.data = encodePoolUpdate({
      op,
      pool: call.name,
      owner: call.owner,
      incarnation: call.incarnation,
      candidate,
    });
    call.stage = Stage.QUEUED;
    this.byId.set(call.id, call);
    this.queue.push(call);
    this.kick();
  }

  /**
   * Group commit: with no submit in flight, the calls made in this turn of the event loop go out at its
   * end; calls made while one is in flight share the next, sent as soon as it returns. A timer would add
   * its millisecond to every claim, and a flow's first packet waits for its claim.
   */
  private kick(): void {
    if (!this.running || this.submitting) return;
    if (this.flushTimer !== undefined || this.flushSoon !== undefined) return;
    const waiting = this.queue.length - this.queueHead;
    if (waiting === 0) return;
    const wait = this.backoffMs > 0 ? this.backoffMs : waiting >= this.maxBatch ? 0 : this.batchMs;
    if (wait > 0) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined;
        void this.flush();
      }, wait);
    } else {
      this.flushSoon = setImmediate(() => {
        this.flushSoon = undefined;
        void this.flush();
      });
    }
  }

  private async flush(): Promise<void> {
    const calls: Call[] = [];
    const ids: string[] = [];
    const updates: GlobalUpdate[] = [];
    while (calls.length < this.maxBatch && this.queueHead < this.queue.length) {
      const call = this.queue[this.queueHead++]!;
      if (call.stage !== Stage.QUEUED) continue;
      call.stage = Stage.SUBMITTING;
      calls.push(call);
      ids.push(call.id);
      updates.push({ id: call.id, data: call.data });
    }
    if (this.queueHead === this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    }
    if (calls.length === 0) return;
    this.submitting = true;
    this.counts.batches++;
    try {
      // The oldest call's deadline bounds the last attempt, so that it fails with the store's own words.
      const deadlineMs = Math.max(1, Math.min(this.attemptMs, calls[0]!.deadline - Date.now()));
      await this.store.submit(updates, { deadlineMs });
      this.backoffMs = 0;
      for (let i = 0; i < calls.length; i++) {
        const call = calls[i]!;
        if (call.stage !== Stage.SUBMITTING || call.id !== ids[i]) continue;
        call.stage = Stage.COMMITTED;
        call.lastError = undefined;
      }
    } catch (thrown) {
      const err = thrown instanceof Error ? thrown : new Error(String(thrown));
      const retriable = err instanceof NfsError && err.retriable;
      this.backoffMs = retriable ? Math.min(MAX_BACKOFF_MS, Math.max(5, this.backoffMs * 2)) : 0;
      const again: Call[] = [];
      const now = Date.now();
      for (let i = 0; i < calls.length; i++) {
        const call = calls[i]!;
        if (call.stage !== Stage.SUBMITTING || call.id !== ids[i]) continue;
        if (!retriable) {
          this.fail(call, this.failure(call, err));
          continue;
        }
        call.lastError = telling(call.lastError, err);
        if (now >= call.deadline) {
          this.fail(call, this.expired(call));
          continue;
        }
        call.stage = Stage.QUEUED;
        this.counts.resubmits++;
        again.push(call);
      }
      // The calls still waiting would go to the same store: if they time out, this is why.
      if (retriable) {
        for (let i = this.queueHead; i < this.queue.length; i++) {
          const call = this.queue[i]!;
          call.lastError = telling(call.lastError, err);
        }
      }
      if (again.length > 0) {
        this.logger.warn('strong pools: submit failed, resubmitting', {
          updates: again.length,
          err: err.message,
        });
        this.queue = again.concat(this.queue.slice(this.queueHead));
        this.queueHead = 0;
      }
    } finally {
      this.submitting = false;
      this.kick();
    }
  }

  private apply(u: CommittedUpdate): void {
    this.applied = u.revision;
    if (!u.id.startsWith(ID_PREFIX)) return;
    const m = decodePoolUpdate(u.data);
    if (m === undefined) {
      this.counts.malformed++;
      return;
    }
    if (m.op === PoolOp.DECIDE) {
      const made = this.decisions.apply(m);
      this.onApplied?.(u.data);
      const call = this.byId.get(u.id);
      if (call !== undefined) this.settle(call, made);
      return;
    }
    const pool = this.pools.get(m.pool);
    if (pool === undefined) {
      this.counts.undeclared++;
      return;
    }
    const outcome = pool.apply(m);
    this.onApplied?.(u.data);
    const call = this.byId.get(u.id);
    if (call === undefined) return;
    this.byId.delete(u.id);
    if (outcome === LOST) {
      this.counts.conflicts++;
      pool.settleProposal(call.candidate);
      this.send(call, PoolOp.CLAIM_ANY, -1);
      return;
    }
    this.settle(call, outcome);
  }

  private settle(call: Call, value: number): void {
    this.close(call);
    call.resolve(value);
  }

  private fail(call: Call, err: Error): void {
    this.close(call);
    this.counts.failed++;
    call.reject(err);
  }

  private close(call: Call): void {
    call.stage = Stage.DONE;
    this.pending--;
    this.byId.delete(call.id);
    const pool = call.pool;
    if (pool?.busy.get(call.key) === call) pool.busy.delete(call.key);
    if (call.op === PoolOp.CLAIM && call.candidate >= 0) pool?.settleProposal(call.candidate);
    if (call.onAbort !== undefined) call.signal?.removeEventListener('abort', call.onAbort);
  }

  /** A store error that retrying cannot help, with the call it ended. */
  private failure(call: Call, err: Error): NfsError {
    const code = err instanceof NfsError ? err.code : ErrorCode.STATE;
    return new NfsError(code, `${named(call)}: ${err.message}`, { cause: err });
  }

  /** Fails the calls past their deadline, oldest first, and waits for the next one. */
  private sweep(): void {
    const now = Date.now();
    while (this.ageHead < this.byAge.length) {
      const call = this.byAge[this.ageHead]!;
      if (call.stage !== Stage.DONE) {
        if (now < this.expiry(call)) break;
        this.fail(call, this.expired(call));
      }
      this.ageHead++;
    }
    if (this.ageHead === this.byAge.length) {
      this.byAge = [];
      this.ageHead = 0;
    } else if (this.ageHead > 1024 && this.ageHead * 2 > this.byAge.length) {
      this.byAge = this.byAge.slice(this.ageHead);
      this.ageHead = 0;
    }
    this.armSweep();
  }

  /** A call in a submit is left to that submit's outcome, which its deadline bounds, for a little longer. */
  private expiry(call: Call): number {
    return call.stage === Stage.SUBMITTING ? call.deadline + SUBMIT_GRACE_MS : call.deadline;
  }

  private armSweep(): void {
    if (this.sweepTimer !== undefined || !this.running) return;
    let call = this.byAge[this.ageHead];
    while (call?.stage === Stage.DONE) call = this.byAge[++this.ageHead];
    if (call === undefined) return;
    this.sweepTimer = setTimeout(
      () => {
        this.sweepTimer = undefined;
        this.sweep();
      },
      Math.max(1, this.expiry(call) - Date.now()),
    );
  }

  /**
   * The deadline passed: always NFS_ERR_TIMEOUT, since the outcome may still be open, with what the
   * store last said, if it said anything.
   */
  private expired(call: Call): NfsError {
    const why =
      call.lastError !== undefined
        ? `not committed within ${this.deadlineMs} ms: ${call.lastError.message}`
        : call.stage === Stage.COMMITTED
          ? `committed, but not applied here within ${this.deadlineMs} ms (the watch is behind)`
          : `not decided within ${this.deadlineMs} ms`;
    return new NfsError(ErrorCode.TIMEOUT, `${named(call)}: ${why}`, {
      cause: call.lastError,
      retriable: true,
    });
  }

  private watchFailed(err: Error): void {
    this.broken = new NfsError(ErrorCode.STATE, `strong pools: the watch failed: ${err.message}`, {
      cause: err,
    });
    this.logger.error('strong pools: the watch failed, the pools no longer follow the log', {
      err: err.message,
    });
    this.failAll(this.broken);
  }

  private failAll(err: Error): void {
    for (let i = this.ageHead; i < this.byAge.length; i++) {
      const call = this.byAge[i]!;
      if (call.stage !== Stage.DONE) this.fail(call, err);
    }
    this.byAge = [];
    this.ageHead = 0;
    this.queue = [];
    this.queueHead = 0;
  }
}

function checkCount(field: string, v: number, min: number): number {
  if (!Number.isSafeInteger(v) || v < min) {
    throw new NfsError(ErrorCode.CONFIG, `strongPools.${field}: must be an integer ≥ ${min} (got ${v})`);
  }
  return v;
}

function checkOwner(owner: string, incarnation: number): void {
  if (typeof owner !== 'string' || owner.length === 0) {
    throw new NfsError(ErrorCode.USAGE, 'strong pools: owner must be a non-empty string');
  }
  if (!Number.isSafeInteger(incarnation) || incarnation < 0) {
    throw new NfsError(
      ErrorCode.USAGE,
      `strong pools: incarnation must be a safe integer ≥ 0 (got ${incarnation})`,
    );
  }
}

function named(call: Call): string {
  const what = call.op === PoolOp.CLAIM ? 'claim' : call.op === PoolOp.DECIDE ? 'decision' : 'release';
  return `strong pool ${call.name}: ${what} for '${call.owner}' #${call.incarnation}`;
}

/**
 * Which of two store errors explains a failure better: a timeout says what the store was waiting for
 * (etcd: "leader lost or no quorum?"), where the errors between two of them (a client's circuit breaker
 * on a dead member) say less.
 */
function telling(previous: Error | undefined, next: Error): Error {
  const timeout = (e: Error | undefined): boolean => e instanceof NfsError && e.code === ErrorCode.TIMEOUT;
  return timeout(previous) && !timeout(next) ? previous! : next;
}

function ignore(): void {
  // A call that comes after another for the same owner waits for it, whatever it came to.
}
