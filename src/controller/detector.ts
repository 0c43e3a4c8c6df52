/**
 * The failure detection unit (FDU): every NF instance sends the controller a heartbeat datagram every
 * `heartbeatMs`, from a thread of its own (nf/liveness.ts), so that a busy event loop does not delay them.
 * An instance silent for longer than its suspicion timeout is probed: the controller sends a probe to the
 * address its heartbeats come from, which that thread answers with a heartbeat at once. Only an instance
 * that answers neither within `probeMs` is declared failed. This catches the silent failures (a paused
 * process, a partition, a dead host) that no connection reset reveals, and a late heartbeat alone fails
 * nobody.
 *
 * The suspicion timeout adapts to each instance's observed jitter, as TCP's retransmission timeout does
 * (RFC 6298): the mean gap between consecutive heartbeats plus four deviations, never under `missCount`
 * intervals nor over MAX_SUSPECT_INTERVALS of them.
 *
 *   const fdu = new FailureDetector({ heartbeatMs: 20, missCount: 3, probeMs: 50 }, clock);
 *   fdu.onFailed = (id, { detectMs }) => …;
 *   fdu.onProbe = (to, probe) => socket.send(probe, to.port, to.address);
 *   fdu.watch('nf-3', token);     // once it has registered
 *   socket.on('message', (m, from) => fdu.receive(m, from));
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
 *
 * Probe (UDP, controller → the heartbeats' source, 8 + n + 16 bytes): the same layout with 'N' 'P', the
 * probe's number in place of the sequence number, and the tag under the instance's token, so that only the
 * controller can make an instance answer.
 */
import { datagramTag, TAG_BYTES, tagMatches } from '../auth.js';
import type { Clock, MetricSample, MetricSource } from '../types.js';

export interface FailureOptions {
  /** How often each instance sends a heartbeat. */
  heartbeatMs: number;
  /** Intervals without a sign of life after which an instance is suspected, at the least. */
  missCount: number;
  /** How long a suspected instance has to answer a probe before it is declared failed; 0: no probe. */
  probeMs: number;
}

/**
 * Heartbeats every 20 ms, suspicion after 3 silent intervals (more where an instance's heartbeats come
 * with more jitter), then 50 ms for the probe's answer: a pause is declared 110–130 ms after it begins.
 * Without a heartbeat thread and a probe, a saturated 2-core machine running twelve instances needed ten
 * missed 50 ms intervals (500 ms) to stop declaring healthy instances failed. A crash is caught sooner
 * anyway, when its liveness connection closes.
 */
export const DEFAULT_FAILURE: Readonly<FailureOptions> = Object.freeze({
  heartbeatMs: 20,
  missCount: 3,
  probeMs: 50,
});

/** Where a watched instance's heartbeats come from: its probes go there. */
export interface ProbeAddress {
  address: string;
  port: number;
}

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
const PROBE_1 = 0x50; // 'P'
const VERSION = 2;
const HEADER_BYTES = 8;
const MAX_ID_BYTES = 255;

export function encodeHeartbeat(id: string, seq: number, key: Uint8Array): Uint8Array {
  return encodeSigned(MAGIC_1, id, seq, key);
}

export function encodeProbe(id: string, n: number, key: Uint8Array): Uint8Array {
  return encodeSigned(PROBE_1, id, n, key);
}

/** Whether `msg` is a probe from the controller for instance `id`, tagged under its `key`. */
export function isProbeFor(msg: Uint8Array, id: string, key: Uint8Array): boolean {
  const p = decodeSigned(msg, PROBE_1);
  return p !== undefined && p.id === id && tagMatches(key, p.signed, p.tag);
}

function encodeSigned(kind: number, id: string, seq: number, key: Uint8Array): Uint8Array {
  const idBytes = Buffer.from(id, 'utf8');
  if (idBytes.length > MAX_ID_BYTES) throw new RangeError(`heartbeat: id longer than ${MAX_ID_BYTES} bytes`);
  const signed = HEADER_BYTES + idBytes.length;
  const out = new Uint8Array(signed + TAG_BYTES);
  const view = new DataView(out.buffer);
  out[0] = MAGIC_0;
  out[1] = kind;
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
  return decodeSigned(msg, MAGIC_1);
}

function decodeSigned(
  msg: Uint8Array,
  kind: number,
): { id: string; seq: number; signed: Uint8Array; tag: Uint8Array } | undefined {
  if (msg.length < HEADER_BYTES || msg[0] !== MAGIC_0 || msg[1] !== kind || msg[2] !== VERSION)
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

/** A watched instance: its last sign of life and heartbeat, the gaps between them, and its probe. */
interface Watched {
  /** The last sign of life (clock ms). */
  lastSeen: number;
  seq: number;
  key: Uint8Array;
  /** Smoothed gap between consecutive heartbeats, and its smoothed deviation (ms). */
  gap: number;
  gapDev: number;
  /** Where its heartbeats come from; unknown until the first. */
  from: ProbeAddress | undefined;
  /** When the current suspicion's probe went (clock ms), or 0. */
  probedAt: number;
  probesSent: number;
}

export class FailureDetector implements MetricSource {
  private readonly watched = new Map<string, Watched>();
  private readonly failed = new Map<string, Failed>();
  private lastCheck: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private probeNumber = 0;
  /** Checks that declared nobody because too many instances were silent at once (a shared cause). */
  suspended = 0;
  heartbeats = 0;
  badHeartbeats = 0;
  fencedHeartbeats = 0;
  /** Probes sent, and suspicions a heartbeat ended before the probe's time ran out (false alarms spared). */
  probes = 0;
  cleared = 0;
  onFailed: ((id: string, info: FailureInfo) => void) | undefined;
  /** Sends a probe; without it, suspicion is declared at once. */
  onProbe: ((to: ProbeAddress, probe: Uint8Array) => void) | undefined;

  constructor(
    readonly options: Readonly<FailureOptions>,
    private readonly clock: Clock,
  ) {}

  /** The least silence that is suspected: `missCount` intervals. */
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
    this.watched.set(id, {
      lastSeen: this.clock.now(),
      seq: -1,
      key,
      gap: this.options.heartbeatMs,
      gapDev: 0,
      from: undefined,
      probedAt: 0,
      probesSent: 0,
    });
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

  /** A heartbeat datagram, from `from` (where the instance's probes go). */
  receive(msg: Uint8Array, from?: ProbeAddress): void {
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
    const now = this.clock.now();
    // Only the gap between consecutive heartbeats measures the jitter; a probe's answer comes early.
    if (hb.seq === w.seq + 1 && w.probedAt === 0) {
      const gap = now - w.lastSeen;
      w.gapDev += (Math.abs(gap - w.gap) - w.gapDev) / 4;
      w.gap += (gap - w.gap) / 8;
    }
    if (w.probedAt !== 0) this.cleared++;
    w.probedAt = 0;
    w.probesSent = 0;
    w.seq = hb.seq;
    w.lastSeen = now;
    if (from !== undefined) w.from = { address: from.address, port: from.port };
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

  /** How long `id` may be silent before it is suspected now (ms), or undefined when it is not watched. */
  suspectAfterMs(id: string): number | undefined {
    const w = this.watched.get(id);
    return w === undefined ? undefined : this.suspectAfter(w);
  }

  /** Probes the instances silent past their suspicion, and declares failed those whose probe went unanswered. */
  check(): void {
    const now = this.clock.now();
    const last = this.lastCheck;
    this.lastCheck = now;
    // The controller itself was stalled (a pause, a long task): the heartbeats that came meanwhile are
    // still queued on the socket and are read after this timer, so silence proves nothing yet.
    if (last !== undefined && now - last > this.options.heartbeatMs) return;
    const silent = [...this.watched].filter(([, w]) => now - w.lastSeen > this.suspectAfter(w));
    if (silent.length === 0) return;
    // Many instances silent at once is the host or the network (overloaded, cut off), not each of them:
    // failing them all over would only add load and lose what two failures in one cluster lose.
    if (silent.length > 1 && silent.length > this.watched.size / MASS_SILENCE) {
      this.suspended++;
      return;
    }
    const probeMs = this.options.probeMs;
    for (const [id, w] of silent) {
      if (probeMs > 0 && this.onProbe !== undefined && w.from !== undefined) {
        if (w.probedAt === 0) w.probedAt = now;
        const waited = now - w.probedAt;
        // One probe at once and one more halfway, in case a datagram is lost.
        if (w.probesSent === 0 || (w.probesSent === 1 && waited >= probeMs / 2)) this.probe(id, w);
        if (waited <= probeMs) continue;
      }
      this.declare(id, w, now, 'heartbeats');
    }
  }

  private suspectAfter(w: Watched): number {
    // Until its first heartbeat, an instance is starting its heartbeat thread: on a loaded machine that
    // can take longer than the silence that fails one already beating.
    const floor = w.seq < 0 ? Math.max(this.timeoutMs, FIRST_BEAT_GRACE_MS) : this.timeoutMs;
    const adaptive = Math.min(w.gap + 4 * w.gapDev, MAX_SUSPECT_INTERVALS * this.options.heartbeatMs);
    return Math.max(floor, adaptive);
  }

  private probe(id: string, w: Watched): void {
    w.probesSent++;
    this.probes++;
    this.onProbe!(w.from!, encodeProbe(id, ++this.probeNumber, w.key));
  }

  private declare(id: string, w: Watched, now: number, how: FailureHow): void {
    const detectMs = now - w.lastSeen;
    this.watched.delete(id);
    this.failed.set(id, { id, at: now, lastSeenMs: w.lastSeen, detectMs, fenced: 0, how, key: w.key });
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
    out.push(['nfstate_fdu_probes_total', {}, this.probes]);
    out.push(['nfstate_fdu_suspicions_cleared_total', {}, this.cleared]);
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
/** How long a registered instance may take to send its first heartbeat. */
const FIRST_BEAT_GRACE_MS = 1000;
/** However jittery an instance's heartbeats, it is suspected after this many intervals of silence. */
const MAX_SUSPECT_INTERVALS = 30;
