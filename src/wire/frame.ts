/**
 * Authenticated, length-prefixed frames for the control and replication TCP connections. Every frame
 * carries a truncated HMAC-SHA256 under the cluster key and a per-connection sequence number, so a frame
 * that was forged, altered or replayed inside a connection is dropped, and a peer that sends garbage
 * lengths is cut off before it makes the receiver buffer anything.
 *
 *   socket.write(encodeFrame(type, ++sent, body, key));
 *   const dec = new FrameDecoder({ key, maxFrame: 16 << 20 });
 *   socket.on('data', (chunk) => {
 *     dec.push(chunk, (type, seq, body) => handle(type, body));
 *     if (dec.failed) socket.destroy();
 *   });
 *
 * Layout (big endian):
 *
 *    0        4      5                13                  13+n             29+n
 *   +--------+------+----------------+-------------------+----------------+
 *   | length | type | sequence (u64) | body (n bytes)    | tag (16 bytes) |
 *   +--------+------+----------------+-------------------+----------------+
 *            |<------------- length = 1 + 8 + n + 16 ------------------->|
 *            |<----- authenticated (HMAC input) --------->|
 *
 *   tag = HMAC-SHA256(key, type || sequence || body)[0..16)
 *
 * The sequence is the sender's frame counter on this connection; the receiver accepts only strictly
 * increasing values. Replay protection therefore spans one connection: the key is per cluster, so a
 * recording replayed on a fresh connection is only caught by whatever the first frames negotiate.
 */
import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { ErrorCode, NfsError } from '../errors.js';
import { read32, write32 } from '../packet/layout.js';

/** Bytes a frame adds around its body: length, type, sequence and tag. */
export const FRAME_OVERHEAD = 29;
/** Bytes of the truncated HMAC tag. */
export const FRAME_TAG_LENGTH = 16;

const LENGTH_FIELD = 4;
const TYPE_SEQ = 9;
// The smallest valid length field: type, sequence and tag around an empty body.
const MIN_LENGTH = FRAME_OVERHEAD - LENGTH_FIELD;
const TWO_32 = 0x1_0000_0000;
// High word of Number.MAX_SAFE_INTEGER: larger sequences cannot be represented exactly.
const MAX_SEQ_HI = 0x1fffff;

/** Why the decoder dropped a frame (or, for the first two, gave up on the stream). */
export type FrameDropReason = 'oversized' | 'malformed' | 'bad_auth' | 'replayed';

export interface FrameDecoderOptions {
  /** The cluster key shared by both ends. */
  key: Uint8Array;
  /** The largest whole frame accepted, in bytes, length field and tag included. */
  maxFrame: number;
}

/** Called once per authenticated, in-sequence frame. `body` is a view valid only during the call. */
export type FrameHandler = (type: number, seq: number, body: Uint8Array) => void;

/**
 * Encodes one frame into a new buffer. Throws NFS_ERR_FRAME for a type that is not a u8, a sequence
 * that is not a non-negative safe integer or a body too large for the length field, and NFS_ERR_AUTH for
 * an empty key: these are programming errors on the sending side, never input from the network.
 */
export function encodeFrame(type: number, seq: number, body: Uint8Array, key: Uint8Array): Uint8Array {
  if (!Number.isInteger(type) || type < 0 || type > 0xff) {
    throw new NfsError(ErrorCode.FRAME, `frame type must be an integer in 0..255, got ${type}`);
  }
  if (!Number.isSafeInteger(seq) || seq < 0) {
    throw new NfsError(ErrorCode.FRAME, `frame sequence must be a non-negative safe integer, got ${seq}`);
  }
  if (key.length === 0) throw new NfsError(ErrorCode.AUTH, 'frame key must not be empty');
  const length = MIN_LENGTH + body.length;
  if (length > 0xffffffff) {
    throw new NfsError(ErrorCode.FRAME, `frame body of ${body.length} bytes exceeds the u32 length field`);
  }
  const out = new Uint8Array(LENGTH_FIELD + length);
  write32(out, 0, length);
  out[4] = type;
  const hi = Math.floor(seq / TWO_32);
  write32(out, 5, hi);
  write32(out, 9, seq - hi * TWO_32);
  const bodyEnd = LENGTH_FIELD + TYPE_SEQ + body.length;
  out.set(body, LENGTH_FIELD + TYPE_SEQ);
  const mac = createHmac('sha256', key).update(out.subarray(LENGTH_FIELD, bodyEnd)).digest();
  out.set(mac.subarray(0, FRAME_TAG_LENGTH), bodyEnd);
  return out;
}

/**
 * Reassembles frames from a TCP byte stream: frames may be split at any byte and many may share a
 * chunk. Whole frames inside one chunk are delivered in place without copying; a frame split across
 * chunks is assembled in one buffer, allocated only after its length passed the limit.
 *
 * Bad input never throws. A length field that is too large (`oversized`) or too small to hold a frame
 * (`malformed`) leaves no way to find the next frame boundary, so the decoder sets `failed`, ignores all
 * further input, and the caller closes the connection. A bad tag (`bad_auth`), a sequence not above the
 * last accepted one (`replayed`) or an authentic sequence beyond 2^53 (`malformed`) drops that frame
 * only, because its length was still trustworthy enough to skip it.
 */
export class FrameDecoder {
  /** Dropped frames by reason; plain fields, read at scrape time. */
  readonly drops: Record<FrameDropReason, number> = { oversized: 0, malformed: 0, bad_auth: 0, replayed: 0 };
  /** Frames delivered. */
  frames = 0;
  /** The stream lost frame sync; push ignores input from now on. */
  failed = false;
  private readonly key: KeyObject;
  private readonly maxFrame: number;
  private lastSeq = -1;
  // A length field split across chunks.
  private readonly lenBuf = new Uint8Array(LENGTH_FIELD);
  private lenFill = 0;
  // A frame (without its length field) split across chunks, and how much of it has arrived.
  private partial: Uint8Array | undefined;
  private partialFill = 0;

  constructor(options: FrameDecoderOptions) {
    if (options.key.length === 0) throw new NfsError(ErrorCode.AUTH, 'frame key must not be empty');
    if (!Number.isInteger(options.maxFrame) || options.maxFrame < FRAME_OVERHEAD) {
      throw new NfsError(
        ErrorCode.CONFIG,
        `maxFrame must be an integer of at least ${FRAME_OVERHEAD}, got ${options.maxFrame}`,
      );
    }
    // Importing the key once spares createHmac from re-importing it for every frame.
    this.key = createSecretKey(options.key);
    this.maxFrame = options.maxFrame;
  }

  /**
   * Consumes one chunk of the stream, calling `onFrame` for every complete, valid frame in order. If
   * `onFrame` throws, the rest of the chunk is lost with it, so the decoder fails and the error propagates.
   */
  push(chunk: Uint8Array, onFrame: FrameHandler): void {
    try {
      this.consume(chunk, onFrame);
    } catch (err) {
      this.failed = true;
      this.partial = undefined;
      throw err;
    }
  }

  private consume(chunk: Uint8Array, onFrame: FrameHandler): void {
    let i = 0;
    const n = chunk.length;
    while (i < n && !this.failed) {
      const partial = this.partial;
      if (partial !== undefined) {
        const take = Math.min(partial.length - this.partialFill, n - i);
        partial.set(chunk.subarray(i, i + take), this.partialFill);
        this.partialFill += take;
        i += take;
        if (this.partialFill === partial.length) {
          this.partial = undefined;
          this.partialFill = 0;
          this.deliver(partial, 0, partial.length, onFrame);
        }
        continue;
      }

      let length: number;
      if (this.lenFill === 0 && n - i >= LENGTH_FIELD) {
        length = read32(chunk, i);
        i += LENGTH_FIELD;
      } else {
        const take = Math.min(LENGTH_FIELD - this.lenFill, n - i);
        this.lenBuf.set(chunk.subarray(i, i + take), this.lenFill);
        this.lenFill += take;
        i += take;
        if (this.lenFill < LENGTH_FIELD) return;
        this.lenFill = 0;
        length = read32(this.lenBuf, 0);
      }

      if (LENGTH_FIELD + length > this.maxFrame) {
        this.fail('oversized');
        return;
      }
      if (length < MIN_LENGTH) {
        this.fail('malformed');
        return;
      }
      if (n - i >= length) {
        const at = i;
        i += length;
        this.deliver(chunk, at, length, onFrame);
      } else {
        const buf = new Uint8Array(length);
        buf.set(chunk.subarray(i, n));
        this.partial = buf;
        this.partialFill = n - i;
        i = n;
      }
    }
  }

  private fail(reason: FrameDropReason): void {
    this.drops[reason]++;
    this.failed = true;
    this.partial = undefined;
  }

  // buf[at, at+length) is one frame after its length field: type, sequence, body, tag.
  private deliver(buf: Uint8Array, at: number, length: number, onFrame: FrameHandler): void {
    const tagAt = at + length - FRAME_TAG_LENGTH;
    const mac = createHmac('sha256', this.key).update(buf.subarray(at, tagAt)).digest();
    if (!timingSafeEqual(mac.subarray(0, FRAME_TAG_LENGTH), buf.subarray(tagAt, tagAt + FRAME_TAG_LENGTH))) {
      this.drops.bad_auth++;
      return;
    }
    const hi = read32(buf, at + 1);
    if (hi > MAX_SEQ_HI) {
      this.drops.malformed++;
      return;
    }
    const seq = hi * TWO_32 + read32(buf, at + 5);
    if (seq <= this.lastSeq) {
      this.drops.replayed++;
      return;
    }
    this.lastSeq = seq;
    this.frames++;
    onFrame(buf[at]!, seq, buf.subarray(at + TYPE_SEQ, tagAt));
  }
}
