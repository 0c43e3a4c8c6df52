/** Serves a Sequencer (sequencer.ts) to SequencerClients over TCP (the protocol: sequencer-wire.ts). */
import net from 'node:net';
import { ByteReader } from '../state/bytes.js';
import type { Logger } from '../types.js';
import type { FrameDecoder } from '../wire/frame.js';
import { Sequencer } from './sequencer.js';
import { uniqueUpdates, type SubmitResult } from './store.js';
import {
  DEFAULT_MAX_FRAME,
  SequencerFrame,
  Session,
  readUpdates,
  utf8,
  writeUpdates,
} from './sequencer-wire.js';

const DEFAULT_MAX_BUFFERED = 64 << 20;

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
