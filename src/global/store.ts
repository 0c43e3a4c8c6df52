/**
 * The contract for strong global state: one totally ordered log of updates shared by every instance.
 * Instances submit batches of updates and every instance applies the committed log, through a watch, in
 * the same order. Two implementations keep it: `Sequencer`/`SequencerServer`/`SequencerClient`
 * (sequencer.ts, one process hosts the log) and `EtcdGlobalStore` (etcd.ts, a replicated etcd cluster).
 *
 *   await store.start();
 *   const handle = store.watch(0, (u) => apply(u.id, u.data));  // every update, in the global order
 *   await store.submit([{ id: 'nat:10.0.0.1:4242', data }]);     // one round trip for the whole batch
 *
 * Order. Each accepted batch gets one revision; the updates of a batch that were applied share it and
 * are numbered 0, 1, … by `index`. (revision, index) is the global order and is the same at every
 * watcher. Revisions increase but need not be consecutive.
 *
 * Exactly once. An update whose id was committed before is not applied again, so a packet replayed
 * after a failover may re-submit its update safely. A TIMEOUT leaves the outcome unknown (the batch may
 * commit later): resubmitting the same ids is the way to settle it.
 */
import { ErrorCode, NfsError } from '../errors.js';

/** One update as submitted: `id` names it for deduplication, `data` is opaque to the store. */
export interface GlobalUpdate {
  readonly id: string;
  readonly data: Uint8Array;
}

/** One committed update as a watcher sees it. */
export interface CommittedUpdate {
  readonly revision: number;
  /** Position among the updates applied at `revision`, from 0. */
  readonly index: number;
  readonly id: string;
  readonly data: Uint8Array;
}

export interface SubmitResult {
  /** The highest revision that this call committed updates at; 0 when every update was a duplicate. */
  readonly revision: number;
  /** Updates that this call committed. */
  readonly applied: number;
  /** Updates whose id had been committed before (by this call's retry or anyone else). */
  readonly duplicates: number;
}

export interface CallOptions {
  /** How long the call may take, in milliseconds, before it fails with NFS_ERR_TIMEOUT. */
  readonly deadlineMs?: number;
  readonly signal?: AbortSignal;
}

/** Called once per committed update, in the global order. An exception is logged and counted, not retried. */
export type ApplyUpdate = (update: CommittedUpdate) => void;

/**
 * Called when a watch cannot go on, after which it delivers nothing more: the updates after its
 * position are no longer kept (the log was compacted), so the watcher must rebuild from a snapshot.
 */
export type WatchFailed = (err: Error) => void;

export interface WatchHandle {
  /** The last revision delivered to `apply` in full; a new watch from here loses and repeats nothing. */
  readonly revision: number;
  /** Stops delivery; safe to repeat. */
  stop(): Promise<void>;
}

export interface GlobalStore {
  start(): Promise<void>;
  /** Fails pending calls and stops every watch; safe to repeat. */
  stop(): Promise<void>;
  /** Appends a batch in one round trip and resolves once it is committed. */
  submit(updates: readonly GlobalUpdate[], options?: CallOptions): Promise<SubmitResult>;
  /**
   * Delivers every update committed after `afterRevision`, then every later one as it commits, each
   * exactly once and in order, across reconnects. A revision delivered is always delivered whole.
   */
  watch(afterRevision: number, apply: ApplyUpdate, onFail?: WatchFailed): WatchHandle;
}

/** The deadline of a call that names none: long enough for a leader election, short enough not to stall. */
export const DEFAULT_DEADLINE_MS = 2000;

/** The largest id, in UTF-8 bytes: ids become etcd keys and frame fields, so they stay short. */
export const MAX_ID_BYTES = 256;

/**
 * Checks a batch and drops repeats of an id inside it (they would be duplicates anyway, and etcd rejects
 * a transaction that writes one key twice). Throws NFS_ERR_STATE for an empty, oversized or non-string
 * id or non-byte data: the caller's bug, never worth a round trip.
 */
export function uniqueUpdates(updates: readonly GlobalUpdate[]): GlobalUpdate[] {
  const seen = new Set<string>();
  const out: GlobalUpdate[] = [];
  for (const u of updates) {
    if (typeof u.id !== 'string' || u.id.length === 0 || Buffer.byteLength(u.id) > MAX_ID_BYTES) {
      throw new NfsError(ErrorCode.STATE, `update id must be a string of 1..${MAX_ID_BYTES} UTF-8 bytes`);
    }
    if (!(u.data instanceof Uint8Array)) {
      throw new NfsError(ErrorCode.STATE, `update ${u.id}: data must be a Uint8Array`);
    }
    if (seen.has(u.id)) continue;
    seen.add(u.id);
    out.push(u);
  }
  return out;
}

/**
 * Runs `call` with a deadline: rejects with a retriable NFS_ERR_TIMEOUT after `deadlineMs`, or with the
 * signal's reason once it aborts, whichever comes first. `call` gets the absolute deadline so it can
 * hand the same limit to the transport underneath.
 */
export async function withDeadline<T>(
  what: string,
  options: CallOptions,
  call: (deadline: number) => Promise<T>,
): Promise<T> {
  const ms = options.deadlineMs ?? DEFAULT_DEADLINE_MS;
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new NfsError(ErrorCode.CONFIG, `deadlineMs must be a positive number, got ${ms}`);
  }
  const signal = options.signal;
  signal?.throwIfAborted();
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new NfsError(ErrorCode.TIMEOUT, `${what}: no answer within ${ms} ms`, { retriable: true }));
    }, ms);
    if (signal !== undefined) {
      onAbort = () => {
        reject(signal.reason as Error);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    }
  });
  try {
    return await Promise.race([call(Date.now() + ms), limit]);
  } finally {
    clearTimeout(timer);
    if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
  }
}
