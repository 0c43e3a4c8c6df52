/**
 * The failure detection unit (FDU): every NF instance sends the controller a heartbeat datagram every
 * `heartbeatMs`; an instance that stays silent for `missCount` intervals is declared failed. This catches
 * the silent failures (a paused process, a partition, a dead host) that no connection reset reveals.
 *
 *   const fdu = new FailureDetector({ heartbeatMs: 50, missCount: 3 }, clock);
 *   fdu.onFailed = (id, { detectMs }) => …;
 *   fdu.watch('nf-3', token);     // once it has registered
 *   socket.on('message', (m) => fdu.receive(m));
 *   fdu.start();                  // or call check() from a test's ManualClock
 *
 * A failed instance stays failed: it is fenced. A paused process that resumes does not know it was
 * declared dead and may try to act on flows that are no longer its own, so its late heartbeats are
 * counted and never bring it back. It may only return as a new instance, under a new id.
 *
 * Heartbeat (UDP, 8 + n + 16 bytes, big-endian):
 *
 *   0      1      2      3      4                          8                 8+n              24+n
 *   +------+------+------+------+--------------------------+-----------------+----------------+
 *   | 'N'  | 'H'  | ver 2| n    | sequence (u32, rising)   | instance id     | tag (16 bytes) |
 *   |      |      |      |      |                          | (n bytes, UTF-8)|                |
 *   +------+------+------+------+--------------------------+-----------------+----------------+
 *
 *   tag = HMAC-SHA256(token, bytes 0 .. 8+n)[0..16), under the token the instance got when it registered
 *
 * A heartbeat without the right tag, or with a sequence number not above the last, is counted as bad and
 * changes nothing: nobody can keep a dead instance alive, or make a live one say goodbye, by sending the
 * controller datagrams. (A controller that took over from another watches each instance afresh, so a
 * heartbeat recorded before is accepted there once, if its sequence number is the highest it sees.)
 *
 * Sequence number 0 says goodbye: the instance is stopping in order, and its silence from then on is no
 * failure. A load report on the same port is JSON and starts with '{': the magic tells them apart.
 */
import { datagramTag, TAG_BYTES, tagMatches } from '../auth.js';
import type { Clock, MetricSample, MetricSource } from '../types.js';

export interface FailureOptions {
  /** How often each instance sends a heartbeat. */
  heartbeatMs: number;
  /** Intervals without a sign of life after which an instance is declared failed. */
  missCount: number;
}

/**
 * Ten missed intervals: on a saturated machine (twelve instances on two cores, one of them sending its
 * state to a newcomer) three, and then six, declared a healthy instance failed, and each needless failover
 * costs a replacement. A crash is caught sooner anyway, when its liveness connection closes; only a pause,
 * a hang or a cut-off host waits for the misses.
 */
export const DEFAULT_FAILURE: Readonly<FailureOptions> = Object.freeze({ heartbeatMs: 50, missCount: 10 });

/**
 * How a failure was noticed: missed heartbeats, the instance's liveness connection closing, or an operator
 * (POST /fail); `restored`: a previous controller declared it (journal.ts).
 */
export type FailureHow = 'heartbeats' | 'connection' | 'operator' | 'restored';

export interface FailureInfo {
  /** The last sign of life (clock ms). */
  lastSeenMs: number;
  /** From the last sign of life to the declaration. */
  detectMs: number;
  how: FailureHow;
}

interface Failed extends FailureInfo {
  /** Its token: its heartbeats after the declaration are counted as fenced only when they carry its tag. */
  key?: Uint8Array;
  id: string;
  /** When it was declared failed (clock ms). */
  at: number;
  /** Signs of life received since: the instance was only paused, or cut off. */
  fenced: number;
}

const MAGIC_0 = 0x4e; // 'N'
const MAGIC_1 = 0x48; // 'H'
const VERSION = 2;
const HEADER_BYTES = 8;
const MAX_ID_BYTES = 255;

export function encodeHeartbeat(id: string, seq: number, key: Uint8Array): Uint8Array {
  const idBytes = Buffer.from(id, 'utf8');
  if (idBytes.length > MAX_ID_BYTES) throw new RangeError(`heartbeat: id longer than ${MAX_ID_BYTES} bytes`);
  const signed = HEADER_BYTES + idBytes.length;
  const out = new Uint8Array(signed + TAG_BYTES);
  const view = new DataView(out.buffer);
  out[0] = MAGIC_0;
  out[1] = MAGIC_1;
  out[2] = VERSION;
  out[3] = idBytes.length;
  view.setUint32(4, seq >>> 0);
  out.set(idBytes, HEADER_BYTES);
  out.set(datagramTag(key, out.subarray(0, signed)), signed);
  return out;
}

/** Whether a datagram on the report port is meant as a heartbeat (well-formed or not) rather than a load report. */
export function looksLikeHeartbeat(msg: Uint8Array): boolean {
  return msg.length >= 2 && msg[0] === MAGIC_0 && msg[1] === MAGIC_1;
}

/**
 * The heartbeat's id and sequence number, the bytes its tag covers and the tag, or undefined when the
 * datagram is not a well-formed one.
 */
export function decodeHeartbeat(
  msg: Uint8Array,
): { id: string; seq: number; signed: Uint8Array; tag: Uint8Array } | undefined {
  if (msg.length < HEADER_BYTES || msg[0] !== MAGIC_0 || msg[1] !== MAGIC_1 || msg[2] !== VERSION)
    return undefined;
  const n = msg[3]!;
  const signed = HEADER_BYTES + n;
  if (n === 0 || msg.length !== signed + TAG_BYTES) return undefined;
  const seq = new DataView(msg.buffer, msg.byteOffset, msg.byteLength).getUint32(4);
  return {
    id: Buffer.from(msg.buffer, msg.byteOffset + HEADER_BYTES, n).toString('utf8'),
    seq,
    signed: msg.subarray(0, signed),
    tag: msg.subarray(signed),
  };
}

export class FailureDetector implements MetricSource {
  /** Watched instances: the last sign of life (clock ms), the last heartbeat sequence number, the token. */
  private readonly watched = new Map<string, { lastSeen: number; seq: number; key: Uint8Array }>();
  private readonly failed = new Map<string, Failed>();
  private lastCheck: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Until then (clock ms), silence must last twice as long: a failure was declared just before. */
  private wary = 0;
  /** Checks that declared nobody because too many instances were silent at once (a shared cause). */
  suspended = 0;
  heartbeats = 0;
  badHeartbeats = 0;
  fencedHeartbeats = 0;
  onFailed: ((id: string, info: FailureInfo) => void) | undefined;

  constructor(
    readonly options: Readonly<FailureOptions>,
    private readonly clock: Clock,
  ) {}

  /** Silence longer than this is a failure. */
  get timeoutMs(): number {
    return this.options.heartbeatMs * this.options.missCount;
  }

  /** Checks several times per interval, so that detection comes at most a fifth of one late. */
  start(): void {
    if (this.timer !== undefined) return;
    this.lastCheck = this.clock.now();
    this.timer = setInterval(
      () => {
        this.check();
      },
      Math.max(1, this.options.heartbeatMs / 5),
    );
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** An instance has registered with this token: from now on, its silence counts. */
  watch(id: string, key: Uint8Array): void {
    if (this.failed.has(id)) return;
    this.watched.set(id, { lastSeen: this.clock.now(), seq: -1, key });
  }

  /** An instance left in order (drained): its silence means nothing any more. */
  forget(id: string): void {
    this.watched.delete(id);
  }

  /**
   * An instance a previous controller declared failed (journal.ts): it stays fenced here too, with no
   * failover of its own, which that controller ran.
   */
  restoreFailed(id: string, now: number): void {
    this.watched.delete(id);
    this.failed.set(id, { id, at: now, lastSeenMs: now, detectMs: 0, fenced: 0, how: 'restored' });
  }

  isFailed(id: string): boolean {
    return this.failed.has(id);
  }

  /**
   * The instance's liveness connection closed without a goodbye. A process that dies has its sockets
   * closed by the kernel at once, so this is the fast path for crashes (a paused process keeps its
   * connection and is caught by its silence).
   */
  lost(id: string): void {
    const w = this.watched.get(id);
    if (w === undefined) return;
    const now = this.clock.now();
    this.declare(id, w, now, 'connection');
  }

  /**
   * An operator declares a watched instance failed (POST /fail on the controller), alive or not: it is fenced
   * and failed over as if it had fallen silent. False when it is not watched (unknown, or failed already).
   */
  fail(id: string): boolean {
    const w = this.watched.get(id);
    if (w === undefined) return false;
    this.declare(id, w, this.clock.now(), 'operator');
    return true;
  }

  /** A heartbeat datagram. */
  receive(msg: Uint8Array): void {
    const hb = decodeHeartbeat(msg);
    const w = hb === undefined ? undefined : this.watched.get(hb.id);
    const key = hb === undefined ? undefined : (w?.key ?? this.failed.get(hb.id)?.key);
    if (hb === undefined || key === undefined || !tagMatches(key, hb.signed, hb.tag)) {
      this.badHeartbeats++;
      return;
    }
    if (w === undefined) {
      this.fence(hb.id);
      return;
    }
    if (hb.seq === 0) {
      this.watched.delete(hb.id);
      return;
    }
    // A repeated or older sequence number is a duplicated, reordered or replayed datagram: no news of now.
    if (hb.seq <= w.seq) {
      this.badHeartbeats++;
      return;
    }
    this.heartbeats++;
    w.seq = hb.seq;
    w.lastSeen = this.clock.now();
  }

  /**
   * Another sign of life (a load report). False when the instance is fenced: what it says must not be
   * acted on.
   */
  alive(id: string): boolean {
    const w = this.watched.get(id);
    if (w !== undefined) {
      w.lastSeen = this.clock.now();
      return true;
    }
    return !this.fence(id);
  }

  /** Declares failed every instance silent for longer than the timeout. */
  check(): void {
    const now = this.clock.now();
    const last = this.lastCheck;
    this.lastCheck = now;
    // The controller itself was stalled (a pause, a long task): the heartbeats that came meanwhile are
    // still queued on the socket and are read after this timer, so silence proves nothing yet.
    if (last !== undefined && now - last > this.options.heartbeatMs) return;
    const timeout = now < this.wary ? 2 * this.timeoutMs : this.timeoutMs;
    const silent = [...this.watched].filter(([, w]) => now - w.lastSeen > timeout);
    if (silent.length === 0) return;
    // Many instances silent at once is the host or the network (overloaded, cut off), not each of them:
    // failing them all over would only add load and lose what two failures in one cluster lose.
    if (silent.length > 1 && silent.length > this.watched.size / MASS_SILENCE) {
      this.suspended++;
      return;
    }
    for (const [id, w] of silent) this.declare(id, w, now, 'heartbeats');
  }

  private declare(id: string, w: { lastSeen: number; key: Uint8Array }, now: number, how: FailureHow): void {
    const detectMs = now - w.lastSeen;
    this.watched.delete(id);
    this.failed.set(id, { id, at: now, lastSeenMs: w.lastSeen, detectMs, fenced: 0, how, key: w.key });
    // A failover loads the machine and the network it runs on: silence right after it is weaker evidence.
    // A crash is still caught at once, by its connection.
    this.wary = now + WARY_MS;
    this.onFailed?.(id, { lastSeenMs: w.lastSeen, detectMs, how });
  }

  /** GET /failures: every instance declared failed, oldest first. */
  list(): {
    id: string;
    at: number;
    last_seen: number;
    detect_ms: number;
    how: FailureHow;
    fenced_heartbeats: number;
  }[] {
    return [...this.failed.values()].map((f) => ({
      id: f.id,
      at: f.at,
      last_seen: f.lastSeenMs,
      detect_ms: Math.round(f.detectMs * 100) / 100,
      how: f.how,
      fenced_heartbeats: f.fenced,
    }));
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_fdu_failures_total', {}, this.failed.size]);
    out.push(['nfstate_fdu_heartbeats_total', {}, this.heartbeats]);
    out.push(['nfstate_fdu_bad_heartbeats_total', {}, this.badHeartbeats]);
    out.push(['nfstate_fdu_fenced_heartbeats_total', {}, this.fencedHeartbeats]);
    out.push(['nfstate_fdu_suspended_checks_total', {}, this.suspended]);
  }

  /** Counts a sign of life from a failed instance; false when the id is not a failed one. */
  private fence(id: string): boolean {
    const f = this.failed.get(id);
    if (f === undefined) return false;
    f.fenced++;
    this.fencedHeartbeats++;
    return true;
  }
}

/** More than 1 in this many instances silent at one check suspends declarations by silence. */
const MASS_SILENCE = 3;
/** How long after a declaration silence must last twice as long. */
const WARY_MS = 2000;
