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
 * Wire protocol: frames from wire/frame.ts under the cluster key. Each side first sends HELLO with a
 * random 8-byte nonce; every later frame body starts with the receiver's nonce, so frames recorded on one
 * connection are dropped on any other. Bodies after the nonce (u53 is 8 bytes, `bytes` is u32 length +
 * bytes; an update is `bytes id, bytes data`):
 *
 *   HELLO      nonce(8)                                          both ways, first
 *   SUBMIT     req u53, count u32, update*                        client → server
 *   RESULT     req u53, revision u53, applied u32, duplicates u32 server → client
 *   FAIL       req u53, message bytes                             server → client
 *   WATCH      watch u53, afterRevision u53                       client → server
 *   UNWATCH    watch u53                                          client → server
 *   UPDATES    watch u53, revision u53, count u32, update*        server → client, one revision whole
 *   WATCH_FAIL watch u53, message bytes                           server → client
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { ErrorCode, NfsError } from '../errors.js';
import { ByteReader, ByteWriter } from '../state/bytes.js';
import { FrameDecoder, encodeFrame } from '../wire/frame.js';
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

/** The frame types of the sequencer's protocol (see the wire protocol above). */
export const SequencerFrame = {
  HELLO: 1,
  SUBMIT: 2,
  RESULT: 3,
  FAIL: 4,
  WATCH: 5,
  UNWATCH: 6,
  UPDATES: 7,
  WATCH_FAIL: 8,
} as const;

const NONCE_BYTES = 8;
const DEFAULT_RETAIN = 1 << 20;
const DEFAULT_MAX_FRAME = 16 << 20;
const DEFAULT_MAX_BUFFERED = 64 << 20;

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

interface Revision {
  readonly revision: number;
  readonly updates: readonly CommittedUpdate[];
}

/** Receives whole revisions, in order. */
interface Subscriber {
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

function writeUpdates(w: ByteWriter, updates: readonly { id: string; data: Uint8Array }[]): void {
  w.u32(updates.length);
  for (const u of updates) {
    w.bytes(utf8.encode(u.id));
    w.bytes(u.data);
  }
}

/** Reads `count` updates; throws NFS_ERR_STATE (truncated, bad UTF-8 or bad id) on a corrupt body. */
function readUpdates(r: ByteReader): GlobalUpdate[] {
  const count = r.u32();
  // Each update takes at least 8 bytes, so a count the body cannot hold is refused before allocating.
  if (count * 8 > r.remaining) throw new NfsError(ErrorCode.STATE, `update count ${count} exceeds the body`);
  const out: GlobalUpdate[] = [];
  for (let i = 0; i < count; i++) {
    let id: string;
    try {
      id = utf8Strict.decode(r.bytes());
    } catch (err) {
      throw new NfsError(ErrorCode.STATE, 'update id is not UTF-8', { cause: err });
    }
    out.push({ id, data: r.bytes() });
  }
  return out;
}

function readMessage(r: ByteReader): string {
  return new TextDecoder().decode(r.bytes());
}

/**
 * One authenticated connection, either end: sends HELLO, learns the peer's nonce, prefixes every later
 * body with it and accepts only bodies that start with its own.
 */
class Session {
  /** Frames dropped: before HELLO, with a foreign nonce, or with a body that does not parse. */
  readonly drops = { session: 0, malformed: 0 };
  readonly decoder: FrameDecoder;
  private readonly nonce = randomBytes(NONCE_BYTES);
  private peerNonce: Uint8Array | undefined;
  private sent = 0;
  private readonly w = new ByteWriter();

  constructor(
    readonly socket: net.Socket,
    private readonly key: Uint8Array,
    maxFrame: number,
    private readonly onReady: () => void,
    private readonly onMessage: (type: number, r: ByteReader) => void,
    private readonly logger: Logger,
  ) {
    this.decoder = new FrameDecoder({ key, maxFrame });
    socket.setNoDelay(true);
    socket.write(encodeFrame(SequencerFrame.HELLO, ++this.sent, this.nonce, key));
    socket.on('data', (chunk: Buffer) => {
      this.decoder.push(chunk, (type, _seq, body) => {
        this.receive(type, body);
      });
      if (this.decoder.failed) {
        this.logger.warn('global sequencer connection lost frame sync', { drops: this.decoder.drops });
        socket.destroy();
      }
    });
  }

  get ready(): boolean {
    return this.peerNonce !== undefined;
  }

  /** A writer for the next body, its nonce prefix already in place. */
  begin(): ByteWriter {
    this.w.reset();
    this.w.raw(this.peerNonce!);
    return this.w;
  }

  send(type: number): void {
    if (this.socket.destroyed) return;
    this.socket.write(encodeFrame(type, ++this.sent, this.w.view(), this.key));
  }

  private receive(type: number, body: Uint8Array): void {
    if (type === SequencerFrame.HELLO) {
      if (this.peerNonce !== undefined || body.length !== NONCE_BYTES) {
        this.drops.session++;
        return;
      }
      this.peerNonce = body.slice();
      this.onReady();
      return;
    }
    if (this.peerNonce === undefined || body.length < NONCE_BYTES || !sameBytes(body, this.nonce)) {
      this.drops.session++;
      return;
    }
    try {
      this.onMessage(type, new ByteReader(body, NONCE_BYTES));
    } catch (err) {
      if (!(err instanceof NfsError)) throw err;
      // An authentic body that does not parse is a peer bug: nothing after it can be trusted.
      this.drops.malformed++;
      this.logger.warn('global sequencer dropped a malformed frame', { type, err: err.message });
      this.socket.destroy();
    }
  }
}

function sameBytes(body: Uint8Array, nonce: Uint8Array): boolean {
  for (let i = 0; i < NONCE_BYTES; i++) if (body[i] !== nonce[i]) return false;
  return true;
}

export interface SequencerServerOptions {
  /** The cluster key every client shares. */
  key: Uint8Array;
  logger: Logger;
  /** The log to serve; default a new one. */
  sequencer?: Sequencer;
  retain?: number;
  maxFrame?: number;
  /** Bytes that may wait in one connection's send buffer before the connection is cut. */
  maxBuffered?: number;
}

/** Serves a Sequencer to SequencerClients over TCP. */
export class SequencerServer {
  readonly sequencer: Sequencer;
  /** Connections cut for falling behind, and frames dropped by every connection so far. */
  readonly counts = { slowSubscribers: 0, droppedFrames: 0 };
  private readonly server: net.Server;
  private readonly sessions = new Set<Session>();
  private readonly options: SequencerServerOptions;

  constructor(options: SequencerServerOptions) {
    this.options = options;
    this.sequencer =
      options.sequencer ??
      new Sequencer({
        logger: options.logger,
        ...(options.retain === undefined ? {} : { retain: options.retain }),
      });
    this.server = net.createServer((socket) => {
      this.accept(socket);
    });
  }

  get port(): number {
    const addr = this.server.address();
    return addr !== null && typeof addr === 'object' ? addr.port : 0;
  }

  async listen(host: string, port: number): Promise<void> {
    if (this.server.listening) return;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    for (const s of this.sessions) s.socket.destroy();
    this.sessions.clear();
    if (!this.server.listening) return;
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    const watches = new Map<number, () => void>();
    const maxBuffered = this.options.maxBuffered ?? DEFAULT_MAX_BUFFERED;
    const session: Session = new Session(
      socket,
      this.options.key,
      this.options.maxFrame ?? DEFAULT_MAX_FRAME,
      () => undefined,
      (type, r) => {
        this.handle(session, watches, type, r, maxBuffered);
      },
      this.options.logger,
    );
    this.sessions.add(session);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      for (const cancel of watches.values()) cancel();
      watches.clear();
      this.sessions.delete(session);
      this.counts.droppedFrames +=
        session.drops.session + session.drops.malformed + dropTotal(session.decoder);
    });
  }

  private handle(
    session: Session,
    watches: Map<number, () => void>,
    type: number,
    r: ByteReader,
    maxBuffered: number,
  ): void {
    switch (type) {
      case SequencerFrame.SUBMIT: {
        const req = r.u53();
        const updates = readUpdates(r);
        let result: SubmitResult;
        try {
          result = this.sequencer.commit(uniqueUpdates(updates));
        } catch (err) {
          const w = session.begin();
          w.u53(req);
          w.bytes(utf8.encode((err as Error).message));
          session.send(SequencerFrame.FAIL);
          return;
        }
        const w = session.begin();
        w.u53(req);
        w.u53(result.revision);
        w.u32(result.applied);
        w.u32(result.duplicates);
        session.send(SequencerFrame.RESULT);
        return;
      }
      case SequencerFrame.WATCH: {
        const watch = r.u53();
        const after = r.u53();
        watches.get(watch)?.();
        try {
          const cancel = this.sequencer.subscribe(after, {
            deliver: (rev) => {
              const w = session.begin();
              w.u53(watch);
              w.u53(rev.revision);
              writeUpdates(w, rev.updates);
              session.send(SequencerFrame.UPDATES);
              if (session.socket.writableLength > maxBuffered && !session.socket.destroyed) {
                this.counts.slowSubscribers++;
                session.socket.destroy();
              }
            },
          });
          watches.set(watch, cancel);
        } catch (err) {
          const w = session.begin();
          w.u53(watch);
          w.bytes(utf8.encode((err as Error).message));
          session.send(SequencerFrame.WATCH_FAIL);
        }
        return;
      }
      case SequencerFrame.UNWATCH: {
        const watch = r.u53();
        watches.get(watch)?.();
        watches.delete(watch);
        return;
      }
      default:
        session.drops.session++;
    }
  }
}

function dropTotal(d: FrameDecoder): number {
  return d.drops.bad_auth + d.drops.malformed + d.drops.oversized + d.drops.replayed;
}

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
