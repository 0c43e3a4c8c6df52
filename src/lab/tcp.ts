/**
 * A TCP transfer that proves itself: the sender sends a deterministic pseudo-random stream (AES-128-CTR
 * over zeros, so gigabytes cost little CPU) and hashes what it sent; the receiver hashes what it receives
 * and times the gaps in its byte stream. Equal SHA-256 and byte counts at both ends, and no reset, mean
 * the connection survived whatever happened in between; the longest gap is how long it stalled.
 *
 *   nfstate tcp receive --port 5001                          (in the server's namespace)
 *   nfstate tcp send --to 198.51.100.10:5001 --bytes 100M    (in the client's)
 *
 * Both print one JSON line when done (TcpReport); the receiver also prints a progress line every
 * PROGRESS_MS while data flows, so that a test can act in the middle of a transfer. Either side gives up
 * after `idleMs` without progress (a connection that broke without a reset) and says so.
 */
import { createCipheriv, createHash } from 'node:crypto';
import net from 'node:net';

export interface TcpReport {
  role: 'send' | 'receive';
  bytes: number;
  sha256: string;
  /** The whole stream went through and ended in order. */
  completed: boolean;
  /** Why not: `reset` (ECONNRESET, EPIPE …), `idle` (no progress for idleMs), or another error code. */
  error: string | null;
  duration_ms: number;
  /**
   * Receiver: the longest time between two arrivals of data, from the first byte on; for a stream that did
   * not complete, the time from its last data until the receiver gave up counts too.
   */
  max_stall_ms: number;
  /** Receiver: when that longest gap began, ms after the first byte. */
  stall_at_ms: number;
}

export interface Progress {
  progress: number;
  at_ms: number;
}

const PROGRESS_MS = 100;
const EMPTY_REPORT: TcpReport = {
  role: 'receive',
  bytes: 0,
  sha256: createHash('sha256').digest('hex'),
  completed: false,
  error: null,
  duration_ms: 0,
  max_stall_ms: 0,
  stall_at_ms: 0,
};
const CHUNK = 256 * 1024;
/** The same key and counter everywhere: the stream is a function of its length alone. */
const KEY = Buffer.alloc(16, 7);
const IV = Buffer.alloc(16, 0);

/** `100M`, `1G`, `4096`: a byte count. */
export function parseBytes(text: string): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(text.trim());
  if (m === null) throw new Error(`'${text}' is not a byte count like 100M`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Number(m[1]) * unit;
}

/** Accepts one connection on `port`, reads it to its end, reports. */
export function receive(
  options: { host?: string; port: number; idleMs: number },
  onProgress: (p: Progress) => void,
): Promise<TcpReport> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    // A sender that never connects (its SYN dropped on the way) is a transfer that never started.
    let waiting: NodeJS.Timeout | undefined;
    server.listen(options.port, options.host ?? '0.0.0.0', () => {
      onProgress({ progress: 0, at_ms: 0 });
      waiting = setTimeout(() => {
        server.close();
        resolve({ ...EMPTY_REPORT, error: 'idle' });
      }, options.idleMs);
    });
    server.once('connection', (socket) => {
      clearTimeout(waiting);
      server.close();
      const hash = createHash('sha256');
      let bytes = 0;
      let first = 0;
      let last = 0;
      let maxStall = 0;
      let stallAt = 0;
      let done = false;
      const finish = (completed: boolean, error: string | null): void => {
        if (done) return;
        done = true;
        clearInterval(ticker);
        socket.destroy();
        // A stream that broke ends in a stall that never ended: it counts to the moment we gave up.
        const now = performance.now();
        if (!completed && first !== 0 && now - last > maxStall) {
          maxStall = now - last;
          stallAt = last;
        }
        resolve({
          role: 'receive',
          bytes,
          sha256: hash.digest('hex'),
          completed,
          error,
          duration_ms: Math.round(last - first),
          max_stall_ms: Math.round(maxStall * 100) / 100,
          stall_at_ms: Math.round(stallAt - first),
        });
      };
      const ticker = setInterval(() => {
        const now = performance.now();
        onProgress({ progress: bytes, at_ms: first === 0 ? 0 : Math.round(now - first) });
        if (now - (last || now) > options.idleMs) finish(false, 'idle');
      }, PROGRESS_MS);
      socket.on('data', (chunk: Buffer) => {
        const now = performance.now();
        if (first === 0) first = now;
        else if (now - last > maxStall) {
          maxStall = now - last;
          stallAt = last;
        }
        last = now;
        bytes += chunk.length;
        hash.update(chunk);
      });
      socket.on('end', () => finish(true, null));
      socket.on('error', (err: NodeJS.ErrnoException) => finish(false, resetOrCode(err)));
    });
  });
}

/** Connects to `to`, sends `bytes` of the stream, closes, reports. */
export function send(options: {
  host: string;
  port: number;
  bytes: number;
  idleMs: number;
}): Promise<TcpReport> {
  return new Promise((resolve) => {
    const cipher = createCipheriv('aes-128-ctr', KEY, IV);
    const zeros = Buffer.alloc(CHUNK);
    const hash = createHash('sha256');
    const socket = net.connect(options.port, options.host);
    socket.setNoDelay(true);
    let sent = 0;
    let acked = 0;
    const started = performance.now();
    let progressAt = started;
    let done = false;
    const finish = (completed: boolean, error: string | null): void => {
      if (done) return;
      done = true;
      clearInterval(watch);
      socket.destroy();
      resolve({
        role: 'send',
        bytes: sent,
        sha256: hash.digest('hex'),
        completed,
        error,
        duration_ms: Math.round(performance.now() - started),
        max_stall_ms: 0,
        stall_at_ms: 0,
      });
    };
    // Progress is what the kernel took off the send buffer: a connection that broke stops taking.
    const watch = setInterval(() => {
      const written = socket.bytesWritten;
      if (written !== acked) {
        acked = written;
        progressAt = performance.now();
      } else if (performance.now() - progressAt > options.idleMs) finish(false, 'idle');
    }, PROGRESS_MS);
    const pump = (): void => {
      while (sent < options.bytes) {
        const n = Math.min(CHUNK, options.bytes - sent);
        const data = cipher.update(n === CHUNK ? zeros : zeros.subarray(0, n));
        hash.update(data);
        sent += n;
        if (!socket.write(data)) return;
      }
      socket.end();
    };
    socket.on('connect', pump);
    socket.on('drain', pump);
    // The FIN went out and the receiver closed its side: every byte was taken.
    socket.on('close', (hadError) => {
      if (!hadError) finish(sent === options.bytes, sent === options.bytes ? null : 'closed');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => finish(false, resetOrCode(err)));
  });
}

function resetOrCode(err: NodeJS.ErrnoException): string {
  return err.code === 'ECONNRESET' || err.code === 'EPIPE' ? 'reset' : (err.code ?? err.message);
}
