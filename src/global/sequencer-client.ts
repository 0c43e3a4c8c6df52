/** The GlobalStore that instances use to reach a SequencerServer (the protocol: sequencer-wire.ts). */
import net from 'node:net';
import { ErrorCode, NfsError } from '../errors.js';
import { ByteReader } from '../state/bytes.js';
import type { Logger } from '../types.js';
import {
  uniqueUpdates,
  withDeadline,
  type ApplyUpdate,
  type CallOptions,
  type GlobalStore,
  type GlobalUpdate,
  type SubmitResult,
  type WatchFailed,
  type WatchHandle,
} from './store.js';
import {
  DEFAULT_MAX_FRAME,
  SequencerFrame,
  Session,
  readMessage,
  readUpdates,
  writeUpdates,
} from './sequencer-wire.js';

export interface SequencerClientOptions {
  host: string;
  port: number;
  key: Uint8Array;
  logger: Logger;
  maxFrame?: number;
  /** The longest pause between reconnect attempts, in ms; attempts start at 1/16 of it. */
  maxBackoffMs?: number;
}

interface Pending {
  resolve(result: SubmitResult): void;
  reject(err: Error): void;
}

interface ClientWatch {
  last: number;
  readonly apply: ApplyUpdate;
  readonly onFail: WatchFailed | undefined;
}

/**
 * A GlobalStore backed by a remote SequencerServer. It keeps one connection and reconnects with backoff;
 * watches are re-sent from their last delivered revision on every new connection. Submits in flight when
 * a connection drops fail with a retriable NFS_ERR_STATE (their outcome is unknown; resubmit).
 */
export class SequencerClient implements GlobalStore {
  readonly counts = { applyErrors: 0, staleRevisions: 0, reconnects: 0 };
  private readonly options: SequencerClientOptions;
  private session: Session | undefined;
  private running = false;
  private backoff = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextReq = 0;
  private readonly watches = new Map<number, ClientWatch>();
  private nextWatch = 0;
  private readyWaiters: (() => void)[] = [];

  constructor(options: SequencerClientOptions) {
    this.options = options;
  }

  start(): Promise<void> {
    if (!this.running) {
      this.running = true;
      this.connect();
    }
    return Promise.resolve();
  }

  stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.retryTimer);
    this.session?.socket.destroy();
    this.session = undefined;
    this.failPending(new NfsError(ErrorCode.STATE, 'global store client stopped'));
    this.watches.clear();
    for (const wake of this.readyWaiters.splice(0)) wake();
    return Promise.resolve();
  }

  async submit(updates: readonly GlobalUpdate[], options: CallOptions = {}): Promise<SubmitResult> {
    const batch = uniqueUpdates(updates);
    const req = ++this.nextReq;
    try {
      return await withDeadline('global submit to the sequencer', options, async () => {
        const session = await this.ready();
        return new Promise<SubmitResult>((resolve, reject) => {
          this.pending.set(req, { resolve, reject });
          const w = session.begin();
          w.u53(req);
          writeUpdates(w, batch);
          session.send(SequencerFrame.SUBMIT);
        });
      });
    } finally {
      this.pending.delete(req);
    }
  }

  watch(afterRevision: number, apply: ApplyUpdate, onFail?: WatchFailed): WatchHandle {
    const id = ++this.nextWatch;
    const watch: ClientWatch = { last: afterRevision, apply, onFail };
    this.watches.set(id, watch);
    if (this.session?.ready === true) this.sendWatch(this.session, id, watch);
    return {
      get revision() {
        return watch.last;
      },
      stop: () => {
        if (this.watches.delete(id) && this.session?.ready === true) {
          this.session.begin().u53(id);
          this.session.send(SequencerFrame.UNWATCH);
        }
        return Promise.resolve();
      },
    };
  }

  private async ready(): Promise<Session> {
    for (;;) {
      if (!this.running) throw new NfsError(ErrorCode.STATE, 'global store client is not started');
      const s = this.session;
      if (s?.ready === true) return s;
      await new Promise<void>((resolve) => this.readyWaiters.push(resolve));
    }
  }

  private connect(): void {
    const socket = net.connect({ host: this.options.host, port: this.options.port });
    const session: Session = new Session(
      socket,
      this.options.key,
      this.options.maxFrame ?? DEFAULT_MAX_FRAME,
      () => {
        this.backoff = 0;
        for (const [id, w] of this.watches) this.sendWatch(session, id, w);
        for (const wake of this.readyWaiters.splice(0)) wake();
      },
      (type, r) => {
        this.handle(type, r);
      },
      this.options.logger,
    );
    this.session = session;
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (this.session !== session) return;
      this.session = undefined;
      this.failPending(
        new NfsError(ErrorCode.STATE, 'connection to the sequencer lost; the outcome is unknown, resubmit', {
          retriable: true,
        }),
      );
      if (!this.running) return;
      const max = this.options.maxBackoffMs ?? 1000;
      this.backoff = Math.min(max, Math.max(max / 16, this.backoff * 2));
      this.counts.reconnects++;
      this.retryTimer = setTimeout(() => {
        if (this.running) this.connect();
      }, this.backoff);
    });
  }

  private sendWatch(session: Session, id: number, w: ClientWatch): void {
    const body = session.begin();
    body.u53(id);
    body.u53(w.last);
    session.send(SequencerFrame.WATCH);
  }

  private failPending(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private handle(type: number, r: ByteReader): void {
    switch (type) {
      case SequencerFrame.RESULT: {
        const p = this.pending.get(r.u53());
        const result = { revision: r.u53(), applied: r.u32(), duplicates: r.u32() };
        p?.resolve(result);
        return;
      }
      case SequencerFrame.FAIL: {
        const p = this.pending.get(r.u53());
        p?.reject(new NfsError(ErrorCode.STATE, `sequencer refused the batch: ${readMessage(r)}`));
        return;
      }
      case SequencerFrame.UPDATES: {
        const w = this.watches.get(r.u53());
        const revision = r.u53();
        // Beyond 2^53 it is not exact, and a watch that took it as its position would skip all that follows.
        if (!Number.isSafeInteger(revision))
          throw new NfsError(ErrorCode.STATE, `revision ${revision} is not a u53`);
        const updates = readUpdates(r);
        if (w === undefined) return;
        // A revision at or below the position was delivered before a reconnect: skipping it keeps
        // delivery exactly once.
        if (revision <= w.last) {
          this.counts.staleRevisions++;
          return;
        }
        for (let index = 0; index < updates.length; index++) {
          const u = updates[index]!;
          try {
            w.apply({ revision, index, id: u.id, data: u.data });
          } catch (err) {
            this.counts.applyErrors++;
            this.options.logger.error('global update apply failed', { id: u.id, revision, err: String(err) });
          }
        }
        w.last = revision;
        return;
      }
      case SequencerFrame.WATCH_FAIL: {
        const id = r.u53();
        const w = this.watches.get(id);
        const err = new NfsError(ErrorCode.STATE, `sequencer ended the watch: ${readMessage(r)}`);
        this.watches.delete(id);
        if (w?.onFail !== undefined) w.onFail(err);
        else this.options.logger.error('global watch failed', { err: err.message });
        return;
      }
      default:
        throw new NfsError(ErrorCode.STATE, `unexpected sequencer message type ${type}`);
    }
  }
}
