/**
 * The `etcd` GlobalStore: the log lives in a replicated etcd cluster, so it survives any minority of
 * members and any instance or controller.
 *
 *   const store = new EtcdGlobalStore({ hosts: ['http://127.0.0.1:2379'], prefix: 'nfstate/', logger });
 *   await store.start();
 *   store.watch(0, (u) => apply(u));
 *   await store.submit(updates, { deadlineMs: 500 });
 *
 * Layout. Update `id` is the key `<prefix>log/<id>`, written once and never changed; its value is
 *
 *   +-------------+-------------------+
 *   | index (u32) | data (n bytes)    |
 *   +-------------+-------------------+
 *
 * where index is the update's position in its transaction. A batch is one transaction that creates all
 * of its keys only if none exists (create_revision == 0 for each): the keys share one mod revision, and
 * (mod revision, index) is the global order. If some key exists the transaction writes nothing, and the
 * batch falls back to one transaction per update, so the new ones commit and the repeats count as
 * duplicates. etcd caps a transaction at --max-txn-ops (128 by default): a larger batch goes as several
 * transactions at once, each its own revision.
 *
 * Deadlines. Every call carries an absolute gRPC deadline, which also bounds the etcd3 client's retries
 * on other members, and a timer of the same length around it. Without a quorum etcd holds a write until
 * its own request timeout (about 7 s); here it fails with NFS_ERR_TIMEOUT at the deadline instead.
 *
 * Dedup memory is the keyspace itself: keys are never deleted, so the window is everything not yet
 * removed by an operator. Watches resume from the last revision they delivered; one that falls behind a
 * compaction is failed through `onFail`. The client is etcd-client.ts's (capped watch backoff, bounded
 * watch cancel).
 */
import {
  Etcd3,
  GRPCDeadlineExceededError,
  type IRequestOp,
  type IWatchCreateRequest,
  type IWatchRequest,
  type IWatchResponse,
  type Watcher,
} from 'etcd3';
import { ErrorCode, NfsError } from '../errors.js';
import { cancelWatcher, etcdClient } from './etcd-client.js';
import type { Logger } from '../types.js';
import {
  uniqueUpdates,
  withDeadline,
  type ApplyUpdate,
  type CallOptions,
  type CommittedUpdate,
  type GlobalStore,
  type GlobalUpdate,
  type SubmitResult,
  type WatchFailed,
  type WatchHandle,
} from './store.js';

export interface EtcdGlobalStoreOptions {
  /** Client URLs of the members, `http://host:port`. */
  hosts: string[];
  /** Key prefix for this deployment's log; ends with '/' by convention. */
  prefix: string;
  logger: Logger;
  /** The server's --max-txn-ops. */
  maxTxnOps?: number;
}

const INDEX_BYTES = 4;

export class EtcdGlobalStore implements GlobalStore {
  readonly counts = { fallbacks: 0, applyErrors: 0, staleRevisions: 0, malformed: 0 };
  private readonly options: EtcdGlobalStoreOptions;
  private readonly logPrefix: string;
  private readonly keyPrefix: Buffer;
  private readonly maxTxnOps: number;
  private client: Etcd3 | undefined;
  /** Set when stopping: the watch streams stop reconnecting (etcd-client.ts). */
  private closing = { closing: false };
  private readonly watchers = new Set<{ stop(): Promise<void> }>();

  constructor(options: EtcdGlobalStoreOptions) {
    if (options.hosts.length === 0) throw new NfsError(ErrorCode.CONFIG, 'etcd: at least one host is needed');
    const maxTxnOps = options.maxTxnOps ?? 128;
    if (!Number.isSafeInteger(maxTxnOps) || maxTxnOps < 1) {
      throw new NfsError(ErrorCode.CONFIG, `etcd: maxTxnOps must be a positive integer, got ${maxTxnOps}`);
    }
    this.options = options;
    this.maxTxnOps = maxTxnOps;
    this.logPrefix = `${options.prefix}log/`;
    this.keyPrefix = Buffer.from(this.logPrefix);
  }

  start(): Promise<void> {
    if (this.client === undefined) {
      this.closing = { closing: false };
      this.client = etcdClient(this.options.hosts, this.closing);
    }
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    const client = this.client;
    if (client === undefined) return;
    this.client = undefined;
    this.closing.closing = true;
    await Promise.all([...this.watchers].map((w) => w.stop()));
    client.close();
  }

  async submit(updates: readonly GlobalUpdate[], options: CallOptions = {}): Promise<SubmitResult> {
    const client = this.started();
    const batch = uniqueUpdates(updates);
    if (batch.length === 0) return { revision: 0, applied: 0, duplicates: 0 };
    return withDeadline('etcd transaction (leader lost or no quorum?)', options, async (deadline) => {
      const chunks: Promise<SubmitResult>[] = [];
      for (let at = 0; at < batch.length; at += this.maxTxnOps) {
        chunks.push(this.submitChunk(client, batch.slice(at, at + this.maxTxnOps), deadline));
      }
      const results = await Promise.all(chunks);
      return merge(results);
    });
  }

  private async submitChunk(client: Etcd3, chunk: GlobalUpdate[], deadline: number): Promise<SubmitResult> {
    const res = await this.txn(client, chunk, deadline);
    if (res.succeeded) return { revision: Number(res.header.revision), applied: chunk.length, duplicates: 0 };
    if (chunk.length === 1) return { revision: 0, applied: 0, duplicates: 1 };
    this.counts.fallbacks++;
    const singles = await Promise.all(
      chunk.map(async (u) => {
        const one = await this.txn(client, [u], deadline);
        return one.succeeded
          ? { revision: Number(one.header.revision), applied: 1, duplicates: 0 }
          : { revision: 0, applied: 0, duplicates: 1 };
      }),
    );
    return merge(singles);
  }

  private async txn(client: Etcd3, chunk: readonly GlobalUpdate[], deadline: number) {
    const ops: IRequestOp[] = [];
    let txn = client.if(this.logPrefix + chunk[0]!.id, 'Create', '==', 0);
    for (let i = 0; i < chunk.length; i++) {
      const u = chunk[i]!;
      if (i > 0) txn = txn.and(this.logPrefix + u.id, 'Create', '==', 0);
      const value = Buffer.allocUnsafe(INDEX_BYTES + u.data.length);
      value.writeUInt32BE(i, 0);
      value.set(u.data, INDEX_BYTES);
      ops.push({ request_put: { key: Buffer.from(this.logPrefix + u.id), value } });
    }
    try {
      return await txn
        .then(...ops)
        .options({ deadline })
        .commit();
    } catch (err) {
      if (err instanceof GRPCDeadlineExceededError) {
        throw new NfsError(
          ErrorCode.TIMEOUT,
          'etcd did not commit before the deadline (leader lost or no quorum?)',
          {
            cause: err,
            retriable: true,
          },
        );
      }
      throw new NfsError(ErrorCode.STATE, `etcd refused the transaction: ${(err as Error).message}`, {
        cause: err,
        retriable: true,
      });
    }
  }

  watch(afterRevision: number, apply: ApplyUpdate, onFail?: WatchFailed): WatchHandle {
    const client = this.started();
    let last = afterRevision;
    let stopped = false;
    let watcher: Watcher | undefined;
    const fail = (err: Error): void => {
      if (stopped) return;
      void handle.stop();
      if (onFail !== undefined) onFail(err);
      else this.options.logger.error('global watch failed', { err: err.message });
    };
    const deliver = (res: IWatchResponse): void => {
      if (stopped) return;
      const updates: CommittedUpdate[] = [];
      for (const ev of res.events) {
        if (ev.type !== 'Put') continue;
        const u = this.decode(ev.kv.key, ev.kv.mod_revision, ev.kv.value);
        if (u === undefined) continue;
        if (u.revision <= last) {
          this.counts.staleRevisions++;
          continue;
        }
        updates.push(u);
      }
      // etcd sends a revision's events in one response and in transaction order; sorting by index keeps
      // the order right even if a response were ever assembled differently.
      updates.sort((a, b) => a.revision - b.revision || a.index - b.index);
      for (const u of updates) {
        try {
          apply(u);
        } catch (err) {
          this.counts.applyErrors++;
          this.options.logger.error('global update apply failed', {
            id: u.id,
            revision: u.revision,
            err: String(err),
          });
        }
        last = u.revision;
      }
    };
    const handle: WatchHandle & { stop(): Promise<void> } = {
      get revision() {
        return last;
      },
      stop: async () => {
        if (stopped) return;
        stopped = true;
        this.watchers.delete(handle);
        if (watcher !== undefined) await cancelWatcher(client, watcher, 'etcd');
      },
    };
    this.watchers.add(handle);
    const builder = client
      .watch()
      .prefix(this.logPrefix)
      .startRevision(String(last + 1));
    builder
      .create()
      .then((w) => {
        watcher = w;
        if (stopped) {
          void w.cancel();
          return;
        }
        // etcd3 resumes a reconnecting watch after the last response header's revision, which can run
        // ahead of the events delivered while etcd catches a watcher up: resume from our own position.
        // The event's typing says IWatchRequest, but etcd3 passes the create request it is about to send.
        w.on('connecting', (req: IWatchRequest) => {
          (req as IWatchCreateRequest).start_revision = String(last + 1);
        });
        w.on('data', deliver);
        w.on('error', fail);
      })
      .catch((err: unknown) => {
        fail(err as Error);
      });
    return handle;
  }

  private decode(key: Buffer, modRevision: string, value: Buffer): CommittedUpdate | undefined {
    if (value.length < INDEX_BYTES || !key.subarray(0, this.keyPrefix.length).equals(this.keyPrefix)) {
      this.counts.malformed++;
      return undefined;
    }
    return {
      revision: Number(modRevision),
      index: value.readUInt32BE(0),
      id: key.subarray(this.keyPrefix.length).toString(),
      data: new Uint8Array(value.buffer, value.byteOffset + INDEX_BYTES, value.length - INDEX_BYTES),
    };
  }

  private started(): Etcd3 {
    if (this.client === undefined) throw new NfsError(ErrorCode.STATE, 'etcd global store is not started');
    return this.client;
  }
}

function merge(results: readonly SubmitResult[]): SubmitResult {
  let revision = 0;
  let applied = 0;
  let duplicates = 0;
  for (const r of results) {
    revision = Math.max(revision, r.revision);
    applied += r.applied;
    duplicates += r.duplicates;
  }
  return { revision, applied, duplicates };
}
