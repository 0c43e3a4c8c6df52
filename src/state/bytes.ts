/**
 * Growable byte writer and bounds-checked reader for state codecs and control bodies.
 * A writer is reused: `reset()` keeps its buffer, so steady-state encoding allocates nothing.
 *
 *   const w = new ByteWriter(); w.u32(7); w.f64(1.5); const bytes = w.view(); // valid until next reset
 */
import { ErrorCode, NfsError } from '../errors.js';

export class ByteWriter {
  private buf: Uint8Array;
  private dv: DataView;
  length = 0;

  constructor(initial = 1024) {
    // Growth doubles the buffer: from 0 it would never grow.
    this.buf = new Uint8Array(Math.max(1, initial));
    this.dv = new DataView(this.buf.buffer);
  }

  reset(): void {
    this.length = 0;
  }

  /** The bytes written since the last reset; a view that the next write may invalidate. */
  view(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }

  private reserve(n: number): number {
    const at = this.length;
    if (at + n > this.buf.length) {
      let size = this.buf.length * 2;
      while (size < at + n) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.buf.subarray(0, at));
      this.buf = next;
      this.dv = new DataView(next.buffer);
    }
    this.length = at + n;
    return at;
  }

  // Each write reserves first, then reads `buf`/`dv`: reserving may replace them.
  u8(v: number): void {
    const at = this.reserve(1);
    this.buf[at] = v;
  }
  u16(v: number): void {
    const at = this.reserve(2);
    this.dv.setUint16(at, v);
  }
  u32(v: number): void {
    const at = this.reserve(4);
    this.dv.setUint32(at, v >>> 0);
  }
  /** An unsigned integer up to 2^53, as two big-endian u32 halves. */
  u53(v: number): void {
    const at = this.reserve(8);
    this.dv.setUint32(at, Math.floor(v / 0x100000000));
    this.dv.setUint32(at + 4, v >>> 0);
  }
  f64(v: number): void {
    const at = this.reserve(8);
    this.dv.setFloat64(at, v);
  }
  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.raw(b);
  }
  raw(b: Uint8Array): void {
    const at = this.reserve(b.length);
    this.buf.set(b, at);
  }
}

export class ByteReader {
  private readonly dv: DataView;
  offset: number;
  private readonly end: number;

  constructor(
    private readonly buf: Uint8Array,
    offset = 0,
    length = buf.length - offset,
  ) {
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.offset = offset;
    this.end = offset + length;
  }

  get remaining(): number {
    return this.end - this.offset;
  }

  private take(n: number): number {
    const at = this.offset;
    if (at + n > this.end) throw new NfsError(ErrorCode.STATE, `truncated: need ${n} bytes at ${at}`);
    this.offset = at + n;
    return at;
  }

  u8(): number {
    return this.dv.getUint8(this.take(1));
  }
  u16(): number {
    return this.dv.getUint16(this.take(2));
  }
  u32(): number {
    return this.dv.getUint32(this.take(4));
  }
  u53(): number {
    const at = this.take(8);
    return this.dv.getUint32(at) * 0x100000000 + this.dv.getUint32(at + 4);
  }
  f64(): number {
    return this.dv.getFloat64(this.take(8));
  }
  /** A length-prefixed byte string, copied out (state outlives the frame it came in). */
  bytes(): Uint8Array {
    const n = this.u32();
    const at = this.take(n);
    // Uint8Array's slice, not Buffer's: a Buffer's `slice` is a view into memory the caller may reuse.
    return Uint8Array.prototype.slice.call(this.buf, at, at + n);
  }
}
