/**
 * The `local` GlobalStore: one process (the controller) keeps the log and assigns revisions. `Sequencer`
 * is the log itself and a GlobalStore for code in the same process; `SequencerServer` serves it over TCP
 * and `SequencerClient` is the GlobalStore that instances use to reach it.
 *
 *   const server = new SequencerServer({ key, logger });
 *   await server.listen('127.0.0.1', 0);
 *   const store = new SequencerClient({ host: '127.0.0.1', port: server.port, key, logger });
 *   await store.start();
 *   store.watch(0, (u) => apply(u));
 *   await store.submit([{ id: 'lb:42', data }]);
 *
 * Memory is bounded: the sequencer keeps the last `retain` committed updates (default 2^20), which serve
 * both as the deduplication window and as the backlog a watcher resumes from. An id re-submitted after
 * it left the window commits again, so `retain` must cover every update a failover can replay; a watcher
 * whose position fell out of the window is failed rather than silently skipped. A subscriber that reads
 * slower than the log grows is disconnected once `maxBuffered` bytes wait for it; it resumes on reconnect.
 *
 * The wire protocol is in sequencer-wire.ts, the server in sequencer-server.ts and the client in
 * sequencer-client.ts.
 */
import { ErrorCode, NfsError } from '../errors.js';
import type { Logger } from '../types.js';
import {
  uniqueUpdates,
  type ApplyUpdate,
  type CommittedUpdate,
  type GlobalStore,
  type GlobalUpdate,
  type SubmitResult,
  type WatchFailed,
  type WatchHandle,
} from './store.js';

const DEFAULT_RETAIN = 1 << 20;

export interface Revision {
  readonly revision: number;
  readonly updates: readonly CommittedUpdate[];
}

/** Receives whole revisions, in order. */
export interface Subscriber {
  deliver(rev: Revision): void;
}

export interface SequencerOptions {
  /** Committed updates kept for deduplication and for watchers to resume from. */
  retain?: number;
  logger: Logger;
}

/**
 * The log. Every submit is applied synchronously, so callers in this process see it committed on return;
 * watchers in this process are fed through a per-watcher queue, so an `apply` that submits again sees its
 * own update delivered after the one it is handling, never in the middle of it.
 */
export class Sequencer implements GlobalStore {
  /** Updates applied and skipped as duplicates since start; plain fields read at scrape time. */
  readonly counts = { applied: 0, duplicates: 0, revisions: 0, applyErrors: 0 };
  private readonly retain: number;
  private readonly logger: Logger;
  private readonly log: Revision[] = [];
  private logHead = 0;
  private retained = 0;
  private revision = 0;
  private readonly ids = new Map<string, number>();
  private readonly subscribers = new Set<Subscriber>();

  constructor(options: SequencerOptions) {
    const retain = options.retain ?? DEFAULT_RETAIN;
    if (!Number.isSafeInteger(retain) || retain < 1) {
      throw new NfsError(ErrorCode.CONFIG, `retain must be a positive integer, got ${retain}`);
    }
    this.retain = retain;
    this.logger = options.logger;
  }

  /** The latest revision committed. */
  get head(): number {
    return this.revision;
  }

  start(): Promise<void> {
    return Promise.resolve();
  }

  stop(): Promise<void> {
    this.subscribers.clear();
    return Promise.resolve();
  }

  /** Commits at once: there is no network in between, so no deadline applies. */
  submit(updates: readonly GlobalUpdate[]): Promise<SubmitResult> {
    // The executor turns a thrown NfsError (a bad id) into a rejection.
    return new Promise((resolve) => {
      resolve(this.commit(uniqueUpdates(updates)));
    });
  }

  /** Commits the new updates of a batch whose ids are already unique, as one revision. */
  commit(updates: readonly GlobalUpdate[]): SubmitResult {
    const fresh: CommittedUpdate[] = [];
    const revision = this.revision + 1;
    for (const u of updates) {
      if (this.ids.has(u.id)) continue;
      fresh.push({ revision, index: fresh.length, id: u.id, data: u.data });
    }
    const duplicates = updates.length - fresh.length;
    this.counts.duplicates += duplicates;
    if (fresh.length === 0) return { revision: 0, applied: 0, duplicates };
    this.revision = revision;
    const rev: Revision = { revision, updates: fresh };
    for (const u of fresh) this.ids.set(u.id, revision);
    this.log.push(rev);
    this.retained += fresh.length;
    this.counts.applied += fresh.length;
    this.counts.revisions++;
    this.evict();
    for (const s of this.subscribers) s.deliver(rev);
    return { revision, applied: fresh.length, duplicates };
  }

  // Whole revisions leave the window, oldest first, so a resuming watcher never gets half of one.
  private evict(): void {
    while (this.retained > this.retain && this.logHead < this.log.length - 1) {
      const old = this.log[this.logHead]!;
      this.log[this.logHead++] = undefined as unknown as Revision;
      this.retained -= old.updates.length;
      for (const u of old.updates) this.ids.delete(u.id);
    }
    // Compact the array once its dead prefix dominates, so eviction stays O(1) amortised.
    if (this.logHead > 1024 && this.logHead * 2 > this.log.length) {
      this.log.splice(0, this.logHead);
      this.logHead = 0;
    }
  }

  /**
   * Feeds `sub` every revision after `afterRevision`, then every new one. Throws NFS_ERR_STATE if some
   * of those revisions already left the window.
   */
  subscribe(afterRevision: number, sub: Subscriber): () => void {
    if (!Number.isSafeInteger(afterRevision) || afterRevision < 0) {
      throw new NfsError(
        ErrorCode.STATE,
        `watch position must be a non-negative integer, got ${afterRevision}`,
      );
    }
    const oldest = this.log[this.logHead];
    if (oldest !== undefined && afterRevision < oldest.revision - 1) {
      throw new NfsError(
        ErrorCode.STATE,
        `revision ${afterRevision + 1} was compacted: the sequencer keeps revisions from ${oldest.revision}`,
      );
    }
    for (let i = this.firstAfter(afterRevision); i < this.log.length; i++) sub.deliver(this.log[i]!);
    this.subscribers.add(sub);
    return () => this.subscribers.delete(sub);
  }

  private firstAfter(revision: number): number {
    let lo = this.logHead;
    let hi = this.log.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.log[mid]!.revision <= revision) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  watch(afterRevision: number, apply: ApplyUpdate, onFail?: WatchFailed): WatchHandle {
    const queue: Revision[] = [];
    let draining = false;
    let stopped = false;
    let last = afterRevision;
    const drain = (): void => {
      draining = true;
      for (let rev = queue.shift(); rev !== undefined && !stopped; rev = queue.shift()) {
        for (const u of rev.updates) this.applyOne(apply, u);
        last = rev.revision;
      }
      draining = false;
    };
    let cancel = (): void => undefined;
    const sub: Subscriber = {
      deliver: (rev) => {
        queue.push(rev);
        if (!draining) drain();
      },
    };
    try {
      cancel = this.subscribe(afterRevision, sub);
    } catch (err) {
      stopped = true;
      if (onFail === undefined) throw err;
      onFail(err as Error);
    }
    return {
      get revision() {
        return last;
      },
      stop: () => {
        stopped = true;
        cancel();
        return Promise.resolve();
      },
    };
  }

  private applyOne(apply: ApplyUpdate, u: CommittedUpdate): void {
    try {
      apply(u);
    } catch (err) {
      this.counts.applyErrors++;
      this.logger.error('global update apply failed', { id: u.id, revision: u.revision, err: String(err) });
    }
  }
}
