/**
 * The sequencer's protocol (sequencer.ts), shared by SequencerServer and SequencerClient.
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
import type net from 'node:net';
import { ErrorCode, NfsError } from '../errors.js';
import { ByteReader, ByteWriter } from '../state/bytes.js';
import { FrameDecoder, encodeFrame } from '../wire/frame.js';
import type { Logger } from '../types.js';
import type { GlobalUpdate } from './store.js';

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
export const DEFAULT_MAX_FRAME = 16 << 20;

export const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

export function writeUpdates(w: ByteWriter, updates: readonly { id: string; data: Uint8Array }[]): void {
  w.u32(updates.length);
  for (const u of updates) {
    w.bytes(utf8.encode(u.id));
    w.bytes(u.data);
  }
}

/** Reads `count` updates; throws NFS_ERR_STATE (truncated, bad UTF-8 or bad id) on a corrupt body. */
export function readUpdates(r: ByteReader): GlobalUpdate[] {
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

export function readMessage(r: ByteReader): string {
  return new TextDecoder().decode(r.bytes());
}

/**
 * One authenticated connection, either end: sends HELLO, learns the peer's nonce, prefixes every later
 * body with it and accepts only bodies that start with its own.
 */
export class Session {
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
