/**
 * The dataplane benchmark: packets per second through one NF instance, as a ratio to a bare UDP
 * relay measured in the same run with the same packets, so that a noisy or shared machine still gives
 * comparable figures.
 *
 *   const r = await runDataplaneBench({ quick: true, json: false, out: console.log });
 *   r.results[0].ratio   // nat, 1 thread: its pps / the Node relay's pps
 *
 * Every point is measured the same way, against a different hop, by the same driver:
 *
 *              stamped datagrams         hop under test            its egress
 *   driver ─────────────────────► relay | c relay | NF instance ──────────────► driver
 *   (sends)                                                                    (counts)
 *      ▲                                                                          │
 *      └──────────────── in flight = sent − received ≤ WINDOW ◄───────────────────┘
 *
 * A closed loop with a bounded window: the driver keeps at most WINDOW packets in flight, so no socket
 * buffer on the way overflows and the rate settles at what the slowest stage drains. A window that
 * sees no progress for STALL_MS counts what is in flight as lost and reopens.
 *
 * The driver is native/driver.c wherever a C compiler is present: a sender and a receiver thread moving
 * packets 32 and 64 at a time with sendmmsg/recvmmsg. Only where there is none does this module drive
 * the loop itself, sending from the main thread and counting on a sink worker_thread. A Node driver
 * spends about as much per packet as the hops it measures, so it caps every point near the Node relay's
 * rate and the points cannot be told apart; the C driver lifts that cap well above the Node hops. Which
 * driver ran is part of the result: figures from the two are not comparable.
 */
import { spawn, fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { DEMO_NF_CONFIG } from '../src/launcher/demo.js';
import { ROLE_SPEC_ENV, RoleProcess } from '../src/launcher/role-process.js';
import type { NfSpec } from '../src/launcher/roles.js';
import { DEFAULT_TRACE, SyntheticTrace } from '../src/traffic/trace.js';
import type { StampFields } from '../src/wire/geneve.js';
import { STAMP_HEADER_LENGTH, writeStampHeader } from '../src/wire/geneve.js';
import { NATIVE_IO } from '../src/wire/batch-socket.js';
import { datagramFlowHash } from '../src/nf/dispatch.js';

export const NF_TYPES = ['nat', 'firewall', 'lb', 'ids'] as const;
export type NfType = (typeof NF_TYPES)[number];

export interface DataplaneBenchOptions {
  /** About 2 s per point and no second relay run: under 60 s in all. */
  quick: boolean;
  json: boolean;
  out: (line: string) => void;
}

/** Narrows a run, for tests; the CLI measures everything. */
export interface DataplaneBenchScope {
  nfs?: readonly NfType[];
  threads?: readonly number[];
  /** Measured seconds per point. */
  seconds?: number;
  warmupSeconds?: number;
}

export interface NfPoint {
  nf: NfType;
  threads: number;
  pps: number;
  /** pps / relay_pps; null when the relay baseline failed. */
  ratio: number | null;
  /** pps / c_relay_pps; null when there is no C relay figure. */
  c_ratio: number | null;
  /** Packets sent during the point (warm-up included) that never reached the sink. */
  lost: number;
  error?: string;
}

export type DriverKind = 'c' | 'node';

export interface BenchResult {
  /** What sent and counted the packets: native/driver.c, or the bench process itself where no cc. */
  driver: DriverKind;
  /** How the NF instance moved its datagrams: recvmmsg/sendmmsg (native/udp.c) or node:dgram. */
  io: 'native' | 'node';
  /** The Node relay baseline; in a full run the mean of `relay_runs`. */
  relay_pps: number;
  relay_runs: number[];
  /** The C recvmmsg relay; null where no C compiler is present or its build failed. */
  c_relay_pps: number | null;
  results: NfPoint[];
  /** Bytes of each datagram on the wire: nfstate Geneve header plus inner IPv4/UDP packet. */
  packet_bytes: number;
  machine: { cpus: number; model: string; node: string };
  method: { window: number; flows: number; seconds: number; warmup_seconds: number };
  /** Why a baseline has no figure, keyed by 'relay' or 'c_relay'; 'driver': why the Node driver ran. */
  errors?: Record<string, string>;
}

export const HOST = '127.0.0.1';
export const FLOWS = 1024;
/** Trace packets per flow in the ring; the ring is re-stamped with growing sequence numbers as it wraps. */
export const RING_PACKETS_PER_FLOW = 64;
const PAYLOAD = 64;
/** Room for any trace packet (payloads go up to 1400 bytes) and its stamp header. */
const SLOT_BYTES = 2048;
const WINDOW = 512;
export const QUICK_SECONDS = 2;
export const QUICK_WARMUP_SECONDS = 0.5;
export const FULL_SECONDS = 8;
export const FULL_WARMUP_SECONDS = 1;
const BURST = 128;
const STALL_MS = 200;
/** How long the generator sleeps on a full window before it looks at the stall clock again. */
const WAIT_MS = 20;
const START_TIMEOUT_MS = 15_000;
/** How long after its measured interval the C driver may take to report: its tail wait and exit. */
const RESULT_SLACK_MS = 10_000;
const STOP_TIMEOUT_MS = 3_000;
const SOCKET_BUFFER = 4 * 1024 * 1024;
const VNI = 1;

// Sink counter slots (Int32): packets received, the count the generator waits for (0: none), and a
// generation number the generator sleeps on.
const COUNT = 0;
const TARGET = 1;
const WAKE = 2;

/**
 * The sink thread. It only counts: any per-packet work here would cap every point alike and shrink
 * the differences the bench exists to show. Evaluated as a script because it needs no module of ours.
 */
const SINK_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const dgram = require('node:dgram');
const v = new Int32Array(workerData.shared);
const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: workerData.buffer });
let count = 0;
socket.on('message', () => {
  Atomics.store(v, ${COUNT}, ++count);
  const target = Atomics.load(v, ${TARGET});
  if (target !== 0 && count >= target && Atomics.compareExchange(v, ${TARGET}, target, 0) === target) {
    Atomics.add(v, ${WAKE}, 1);
    Atomics.notify(v, ${WAKE});
  }
});
socket.bind(0, workerData.host, () => parentPort.postMessage(socket.address().port));
parentPort.once('message', () => socket.close(() => parentPort.close()));
`;

// Atomics.waitAsync is in Node 20 but not in the ES2023 lib this project compiles against.
type WaitAsync = (
  array: Int32Array,
  index: number,
  value: number,
  timeoutMs: number,
) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

class SinkThread {
  private readonly v: Int32Array;

  private constructor(
    private readonly worker: Worker,
    shared: SharedArrayBuffer,
    readonly port: number,
  ) {
    this.v = new Int32Array(shared);
  }

  static async start(): Promise<SinkThread> {
    const shared = new SharedArrayBuffer(4 * Int32Array.BYTES_PER_ELEMENT);
    const worker = new Worker(SINK_SOURCE, {
      eval: true,
      workerData: { shared, host: HOST, buffer: SOCKET_BUFFER },
    });
    try {
      const [port] = (await once(worker, 'message')) as [number];
      return new SinkThread(worker, shared, port);
    } catch (err) {
      await worker.terminate();
      throw err;
    }
  }

  get count(): number {
    return Atomics.load(this.v, COUNT);
  }

  /** Resolves once the sink has counted `target` packets or after `ms`, whichever is first. */
  async waitFor(target: number, ms: number): Promise<void> {
    const v = this.v;
    const wake = Atomics.load(v, WAKE);
    Atomics.store(v, TARGET, Math.max(1, target));
    // Publish the target before reading the count: the sink stores the count before reading the target,
    // so one of the two sides sees the other and no wake-up is missed.
    if (Atomics.load(v, COUNT) < target) {
      const r = waitAsync(v, WAKE, wake, ms);
      if (r.async) await r.value;
    }
    Atomics.store(v, TARGET, 0);
  }

  async stop(): Promise<void> {
    const exited = once(this.worker, 'exit');
    this.worker.postMessage('stop');
    const timer = setTimeout(() => void this.worker.terminate(), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }
}

/**
 * `flows` flows' worth of stamped datagrams, `rounds` per flow, laid out back to back in fixed slots.
 * Each send re-stamps its slot with the flow's next sequence number, as the stamper would, so the ring
 * can wrap forever and a fresh NF instance sees every flow start at 1 and go up by one.
 */
export class PacketRing {
  readonly slots: number;
  readonly stride: number;
  readonly buf: Uint8Array;
  private readonly lengths: Uint16Array;
  private readonly flowOf: Uint32Array;
  private readonly nextSeq: Float64Array;
  private readonly fields: StampFields = { vni: VNI, flags: 0, epoch: 0, seq: 0, timeMs: 0 };

  constructor(
    readonly flows = FLOWS,
    rounds = RING_PACKETS_PER_FLOW,
  ) {
    const trace = new SyntheticTrace({ ...DEFAULT_TRACE, flows, packets: rounds, payload: PAYLOAD });
    this.slots = trace.total;
    // Slots as long as the trace's packets, which one protocol and one payload size make all alike: at
    // a million flows, slots with room for any packet would take gigabytes.
    this.stride = STAMP_HEADER_LENGTH + trace.write(0, new Uint8Array(SLOT_BYTES), 0);
    this.buf = new Uint8Array(this.slots * this.stride);
    this.lengths = new Uint16Array(this.slots);
    this.flowOf = new Uint32Array(this.slots);
    this.nextSeq = new Float64Array(flows);
    // Flows are told apart by source address and port, which is what the trace varies per flow.
    const flowIds = new Map<number, number>();
    for (let i = 0; i < this.slots; i++) {
      const at = i * this.stride;
      const n = trace.write(i, this.buf, at + STAMP_HEADER_LENGTH);
      if (STAMP_HEADER_LENGTH + n !== this.stride)
        throw new Error(`bench trace: packet ${i} is not ${this.stride} bytes`);
      this.lengths[i] = STAMP_HEADER_LENGTH + n;
      const inner = this.buf.subarray(at + STAMP_HEADER_LENGTH);
      const key =
        new DataView(inner.buffer, inner.byteOffset).getUint32(12) * 0x10000 +
        ((inner[20]! << 8) | inner[21]!);
      let id = flowIds.get(key);
      if (id === undefined) {
        id = flowIds.size;
        flowIds.set(key, id);
      }
      this.flowOf[i] = id;
    }
  }

  /** Bytes of one datagram; every packet of the trace has the same size. */
  get packetBytes(): number {
    return this.lengths[0]!;
  }

  /** Starts every flow again at sequence number 1, for a fresh hop. */
  reset(): void {
    this.nextSeq.fill(0);
  }

  /**
   * The ring as native/driver.c's packets file: R rounds of F records, round-major, each a u16
   * big-endian length and the datagram, record r*F + f being flow f's packet stamped with sequence
   * number r + 1. The driver re-stamps each pass over the file so that the numbers keep counting up.
   */
  records(): Uint8Array {
    const rounds = this.slots / this.flows;
    const slotOf = new Uint32Array(this.slots);
    const seen = new Uint32Array(this.flows);
    let bytes = 0;
    for (let i = 0; i < this.slots; i++) {
      const flow = this.flowOf[i]!;
      const round = seen[flow]!++;
      if (round >= rounds) throw new Error(`bench trace: flow ${flow} has more than ${rounds} packets`);
      slotOf[round * this.flows + flow] = i;
      bytes += 2 + this.lengths[i]!;
    }
    const out = new Uint8Array(bytes);
    const f: StampFields = { ...this.fields };
    let at = 0;
    for (let k = 0; k < this.slots; k++) {
      const slot = slotOf[k]!;
      const length = this.lengths[slot]!;
      out[at] = length >>> 8;
      out[at + 1] = length & 0xff;
      out.set(this.buf.subarray(slot * this.stride, slot * this.stride + length), at + 2);
      f.seq = Math.floor(k / this.flows) + 1;
      writeStampHeader(out, at + 2, f);
      at += 2 + length;
    }
    return out;
  }

  /** Stamps packet n (counting from 0 since the last reset) and sends it. */
  send(socket: dgram.Socket, n: number): void {
    const slot = n % this.slots;
    const at = slot * this.stride;
    const f = this.fields;
    f.seq = ++this.nextSeq[this.flowOf[slot]!]!;
    writeStampHeader(this.buf, at, f);
    socket.send(this.buf, at, this.lengths[slot]!);
  }
}

export interface Load {
  pps: number;
  sent: number;
  /** Packets sent during the point (warm-up included) that never came back. */
  lost: number;
  /** Paced runs only (see CDriver's `rate`): latency of the packets of the measured interval. */
  p50_us?: number;
  p99_us?: number;
}

/** Drives one hop for warm-up plus `seconds`, then drains; pps counts only the measured interval. */
async function drive(
  ring: PacketRing,
  sink: SinkThread,
  port: number,
  seconds: number,
  warmupSeconds: number,
): Promise<Load> {
  const socket = dgram.createSocket({ type: 'udp4', sendBufferSize: SOCKET_BUFFER });
  // A refused or failed send shows up as a packet that never reaches the sink.
  socket.on('error', () => undefined);
  socket.connect(port, HOST);
  await once(socket, 'connect');
  ring.reset();
  const base = sink.count;
  let sent = 0;
  let lost = 0;
  let lastReceived = 0;
  const begin = performance.now();
  let lastProgress = begin;
  const measureFrom = begin + warmupSeconds * 1000;
  const measureTo = measureFrom + seconds * 1000;
  let markReceived = -1;
  let markAt = 0;
  let endReceived = 0;
  let endAt = 0;
  try {
    for (;;) {
      const now = performance.now();
      const received = sink.count - base;
      if (markReceived < 0 && now >= measureFrom) {
        markReceived = received;
        markAt = now;
      }
      if (now >= measureTo) {
        endReceived = received;
        endAt = now;
        break;
      }
      if (received !== lastReceived) {
        lastReceived = received;
        lastProgress = now;
      }
      // Packets written off in a stall that turn up after all were late, not lost.
      if (sent - received < lost) lost = sent - received;
      const room = WINDOW - (sent - received - lost);
      if (room <= 0) {
        if (now - lastProgress >= STALL_MS) {
          lost = sent - received;
          lastProgress = now;
        } else {
          await sink.waitFor(base + sent - lost - WINDOW / 2, WAIT_MS);
        }
        continue;
      }
      const burst = Math.min(room, BURST);
      for (let k = 0; k < burst; k++) ring.send(socket, sent++);
      await yieldToLoop();
    }
    // The tail: every packet back, or no progress for STALL_MS.
    let received = sink.count - base;
    let progressAt = performance.now();
    while (received < sent && performance.now() - progressAt < STALL_MS) {
      await sink.waitFor(base + sent, WAIT_MS);
      const r = sink.count - base;
      if (r !== received) {
        received = r;
        progressAt = performance.now();
      }
    }
    const pps = endAt > markAt ? ((endReceived - markReceived) * 1000) / (endAt - markAt) : 0;
    return { pps, sent, lost: Math.max(0, sent - received) };
  } finally {
    socket.close();
  }
}

/** A started hop under test: where to send, and how to take it down. */
export interface Hop {
  port: number;
  /**
   * An NF instance's worker ports: the driver sends each flow to its worker's, as the switch does (the
   * native driver only; the Node driver sends everything to `port`, through the instance's main thread).
   */
  workers?: readonly number[];
  /** A role's admin HTTP port (/metrics); the relays have none. */
  admin?: number;
  stop(): Promise<void>;
}

/** Starts a hop under test that sends its output to `egressPort` on HOST. */
export type StartHop = (egressPort: number) => Promise<Hop>;

/** What sends a point's packets and counts them back. */
interface Driver {
  readonly kind: DriverKind;
  /** Starts the hop, loads it for warm-up plus the measured interval, and takes it down again. */
  run(start: StartHop): Promise<Load>;
  stop(): Promise<void>;
}

/** The fallback: the generator on this thread, the sink on a worker_thread. */
class NodeDriver implements Driver {
  readonly kind = 'node';

  private constructor(
    private readonly ring: PacketRing,
    private readonly sink: SinkThread,
    private readonly seconds: number,
    private readonly warmupSeconds: number,
  ) {}

  static async start(ring: PacketRing, seconds: number, warmupSeconds: number): Promise<NodeDriver> {
    return new NodeDriver(ring, await SinkThread.start(), seconds, warmupSeconds);
  }

  async run(start: StartHop): Promise<Load> {
    const hop = await start(this.sink.port);
    try {
      return await drive(this.ring, this.sink, hop.port, this.seconds, this.warmupSeconds);
    } finally {
      await hop.stop();
    }
  }

  stop(): Promise<void> {
    return this.sink.stop();
  }
}

/**
 * native/driver.c, one process per point. It binds its receive socket and prints the port first, so
 * the hop can be started with that port as its egress; "go <hop's port>" then starts the load, and one
 * JSON line reports it. With a `rate`, it sends at that many packets per second instead of as fast as
 * the window allows, and reports latency too.
 */
export class CDriver implements Driver {
  readonly kind = 'c';

  constructor(
    private readonly children: Children,
    private readonly binary: string,
    private readonly packets: string,
    private readonly seconds: number,
    private readonly warmupSeconds: number,
    private readonly rate = 0,
    /** Flows in the packets file (see PacketRing.records). */
    private readonly flows = FLOWS,
    /** Warm-up lasts also until this many packets are back, which must take at most `limitMs`. */
    private readonly warmUp?: { packets: number; limitMs: number },
  ) {}

  async run(start: StartHop): Promise<Load> {
    const warmupMs = Math.round(this.warmupSeconds * 1000);
    const measureMs = Math.max(1, Math.round(this.seconds * 1000));
    const w = this.warmUp;
    const extra =
      w !== undefined
        ? [Math.round(this.rate), w.packets, Math.round(w.limitMs)]
        : this.rate > 0
          ? [Math.round(this.rate)]
          : [];
    const args = [this.packets, this.flows, HOST, 0, WINDOW, warmupMs, measureMs, ...extra].map(String);
    const child = this.children.track(spawn(this.binary, args, { stdio: ['pipe', 'pipe', 'pipe'] }));
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    // A driver that died early closes its stdin; that shows up as its exit, not as a write error.
    child.stdin!.on('error', () => undefined);
    const failed = (err: unknown): Error => {
      const why = stderr.trim();
      return new Error(`${message(err)}${why === '' ? '' : `; ${why.slice(-400)}`}`);
    };
    let hop: Hop | undefined;
    try {
      let port: number;
      try {
        port = Number((await announced(child, child.stdout!, /\{"port":(\d+)\}\n/, 'driver'))[1]);
      } catch (err) {
        throw failed(err);
      }
      hop = await start(port);
      try {
        const result = announced(
          child,
          child.stdout!,
          /^(\{"sent".*\})\n/m,
          'driver',
          Math.max(warmupMs, w?.limitMs ?? 0) + measureMs + RESULT_SLACK_MS,
        );
        child.stdin!.end(`go ${this.destinations(hop)}\n`);
        const r = JSON.parse((await result)[1]!) as Load;
        const latency = r.p50_us === undefined ? {} : { p50_us: r.p50_us, p99_us: r.p99_us! };
        return { pps: r.pps, sent: r.sent, lost: r.lost, ...latency };
      } catch (err) {
        throw failed(err);
      }
    } finally {
      child.kill('SIGKILL');
      await exited(child);
      await hop?.stop();
    }
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }

  /**
   * What follows "go": the hop's port, or its workers' ports and a table with each flow's worker (the
   * flow hash of its first datagram in the packets file, modulo their number, as the instance shards).
   */
  private destinations(hop: Hop): string {
    const workers = hop.workers ?? [];
    if (workers.length <= 1) return String(workers[0] ?? hop.port);
    const table = `${this.packets}.workers${workers.length}`;
    if (!existsSync(table)) {
      const file = readFileSync(this.packets);
      const dest = new Uint8Array(this.flows);
      for (let f = 0, at = 0; f < this.flows; f++) {
        const n = file.readUInt16BE(at);
        dest[f] = datagramFlowHash(file.subarray(at + 2, at + 2 + n)) % workers.length;
        at += 2 + n;
      }
      writeFileSync(table, dest);
    }
    return `${workers.join(',')} ${table}`;
  }
}

/** Every child this run started, so that a failure anywhere still leaves none behind. */
export class Children {
  private readonly live = new Set<ChildProcess>();

  track(child: ChildProcess): ChildProcess {
    this.live.add(child);
    child.once('exit', () => this.live.delete(child));
    return child;
  }

  killAll(): void {
    for (const child of this.live) child.kill('SIGKILL');
    this.live.clear();
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Asks politely with `ask`, then SIGKILL after STOP_TIMEOUT_MS; resolves once the child is gone. */
export async function shutDown(child: ChildProcess, ask: () => Promise<unknown>): Promise<void> {
  const gone = exited(child);
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  try {
    await Promise.race([ask().catch(() => undefined), gone]);
    await gone;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolves with the first match of `pattern` in what the child writes to `stream` from now on; rejects
 * when the child exits first or after `waitMs`.
 */
export function announced(
  child: ChildProcess,
  stream: NodeJS.ReadableStream,
  pattern: RegExp,
  what: string,
  waitMs = START_TIMEOUT_MS,
): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      reject(new Error(`${what}: exited (code ${child.exitCode}, signal ${child.signalCode})`));
      return;
    }
    let text = '';
    const timer = setTimeout(() => {
      finish(new Error(`${what}: nothing within ${waitMs} ms`));
    }, waitMs);
    const onData = (chunk: Buffer): void => {
      text += chunk.toString('utf8');
      const m = pattern.exec(text);
      if (m !== null) finish(m);
    };
    const onExit = (code: number | null, signal: string | null): void => {
      finish(new Error(`${what}: exited (code ${code}, signal ${signal}) ${text.trim()}`));
    };
    function finish(outcome: RegExpExecArray | Error): void {
      clearTimeout(timer);
      stream.off('data', onData);
      child.off('exit', onExit);
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    }
    stream.on('data', onData);
    child.once('exit', onExit);
  });
}

export async function startNodeRelay(children: Children, script: string, egressPort: number): Promise<Hop> {
  const child = children.track(
    spawn(process.execPath, [script, '0', HOST, String(egressPort)], { stdio: ['pipe', 'pipe', 'pipe'] }),
  );
  try {
    const port = Number((await announced(child, child.stdout!, /"port":(\d+)/, 'node relay'))[1]);
    // Closing its stdin is the relay's signal to stop.
    return { port, stop: () => shutDown(child, () => Promise.resolve(child.stdin!.end())) };
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
}

async function startCRelay(children: Children, binary: string, egressPort: number): Promise<Hop> {
  const child = children.track(
    spawn(binary, ['0', HOST, String(egressPort)], { stdio: ['ignore', 'pipe', 'pipe'] }),
  );
  try {
    const [, listening] = await announced(child, child.stderr!, /listening on 127\.0\.0\.1:(\d+)/, 'c relay');
    const port = Number(listening);
    return { port, stop: () => shutDown(child, () => Promise.resolve(child.kill('SIGTERM'))) };
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
}

/** Starts `role nf` exactly as the local launcher does: forked, spec as JSON in its environment, ready over IPC. */
export function startNf(children: Children, cli: string, dir: string, spec: NfSpec): Promise<Hop> {
  const env = { ...process.env, [ROLE_SPEC_ENV]: JSON.stringify(spec) };
  return startRole(children, dir, spec.id, cli, ['role', 'nf', spec.id], env);
}

/**
 * Forks `script` with `args` as a role that says `ready` with its data port over IPC (launcher/roles.ts),
 * its output in `dir`/`id`.log.
 */
export async function startRole(
  children: Children,
  dir: string,
  id: string,
  script: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<Hop> {
  const log = join(dir, `${id}.log`);
  const fd = openSync(log, 'a');
  let child: ChildProcess;
  try {
    child = children.track(fork(script, args, { env, stdio: ['ignore', fd, fd, 'ipc'] }));
  } finally {
    closeSync(fd);
  }
  const role = new RoleProcess(id, child, log);
  try {
    const ports = await role.ports;
    const port = ports.port;
    if (port === undefined) throw new Error(`${id}: ready without a data port`);
    const admin = ports.admin;
    return {
      port,
      ...(role.workers.length === 0 ? {} : { workers: role.workers }),
      ...(admin === undefined ? {} : { admin }),
      stop: () => shutDown(child, () => role.stop()),
    };
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${err instanceof Error ? err.message : String(err)}${logTail(log)}`);
  }
}

function logTail(path: string): string {
  try {
    const text = readFileSync(path, 'utf8').trim();
    return text === '' ? '' : `; log: ${text.slice(-400)}`;
  } catch {
    return '';
  }
}

/** Builds native/<name>.c into `dir`; resolves with the binary, or rejects with why not. */
export async function buildC(
  children: Children,
  name: string,
  dir: string,
  flags: readonly string[] = [],
): Promise<string> {
  const source = locate(`../../native/${name}.c`, `../native/${name}.c`);
  if (source === undefined) throw new Error(`native/${name}.c not found`);
  const binary = join(dir, name);
  const cc = children.track(
    spawn('cc', ['-O2', ...flags, '-o', binary, source], { stdio: ['ignore', 'ignore', 'pipe'] }),
  );
  let err = '';
  cc.stderr!.on('data', (chunk: Buffer) => {
    err += chunk.toString('utf8');
  });
  let code: number | null;
  try {
    [code] = (await once(cc, 'exit')) as [number | null];
  } catch (e) {
    throw new Error(`no C compiler: ${message(e)}`);
  }
  if (code !== 0) throw new Error(`cc failed (${code}): ${err.trim().slice(0, 400)}`);
  return binary;
}

/** The first of `candidates` (relative to this module) that exists: compiled under dist/ or run from source. */
export function locate(...candidates: string[]): string | undefined {
  for (const c of candidates) {
    const path = fileURLToPath(new URL(c, import.meta.url));
    if (existsSync(path)) return path;
  }
  return undefined;
}

export function nfSpec(nf: NfType, threads: number, egressPort: number): NfSpec {
  return {
    id: `bench-${nf}-${threads}`,
    host: HOST,
    port: 0,
    adminPort: 0,
    threads,
    // Each NF's defaults, except where it has none to run with (an LB needs backends): the demo's.
    nf: { type: nf, config: { ...DEMO_NF_CONFIG[nf] } },
    processor: { batchSize: 30, batchTimeoutMs: 5, maxHeld: 1024, gapTimeoutMs: 250, flowIdleMs: 120_000 },
    egress: { host: HOST, port: egressPort },
    partition: { index: 0, count: 1 },
  };
}

const DRIVER_NAMES: Record<DriverKind, string> = {
  c: 'c (native/driver.c)',
  node: 'node (generator and sink in the bench process)',
};

interface Measured {
  pps: number;
  lost: number;
  error?: string;
}

export function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs the whole benchmark. Children (drivers, relays, NF instances) are always taken down and the
 * temporary directory removed, whatever fails; a point that fails reports 0 pps and its error.
 */
export async function runDataplaneBench(
  o: DataplaneBenchOptions,
  scope: DataplaneBenchScope = {},
): Promise<BenchResult> {
  const seconds = scope.seconds ?? (o.quick ? QUICK_SECONDS : FULL_SECONDS);
  const warmupSeconds = scope.warmupSeconds ?? (o.quick ? QUICK_WARMUP_SECONDS : FULL_WARMUP_SECONDS);
  const nfs = scope.nfs ?? NF_TYPES;
  const threadCounts = scope.threads ?? [1, 2];
  const cli = locate('../src/cli/main.js');
  const relayScript = locate('./node-relay.js');

  const ring = new PacketRing();
  const children = new Children();
  const dir = mkdtempSync(join(tmpdir(), 'nfstate-bench-'));
  const errors: Record<string, string> = {};
  let driver: Driver | undefined;

  try {
    const [cRelayBuild, driverBuild] = await Promise.allSettled([
      buildC(children, 'relay', dir),
      buildC(children, 'driver', dir, ['-pthread']),
    ]);
    if (driverBuild.status === 'fulfilled') {
      const packets = join(dir, 'packets.bin');
      writeFileSync(packets, ring.records());
      driver = new CDriver(children, driverBuild.value, packets, seconds, warmupSeconds);
    } else {
      errors.driver = message(driverBuild.reason);
      driver = await NodeDriver.start(ring, seconds, warmupSeconds);
    }
    const activeDriver = driver;

    if (!o.json) {
      const points = 2 + nfs.length * threadCounts.length + (o.quick ? 0 : 1);
      o.out(
        `dataplane bench: ${points} points, ${seconds} s each after ${warmupSeconds} s warm-up; ` +
          `${FLOWS} flows, window ${WINDOW}, ${ring.packetBytes}-byte datagrams`,
      );
    }

    const measure = async (start: StartHop): Promise<Measured> => {
      try {
        const load = await activeDriver.run(start);
        return { pps: load.pps, lost: load.lost };
      } catch (err) {
        return { pps: 0, lost: 0, error: message(err) };
      }
    };
    const measureRelay = async (): Promise<Measured> =>
      relayScript === undefined
        ? { pps: 0, lost: 0, error: 'node-relay.js not found next to this module' }
        : measure((egress) => startNodeRelay(children, relayScript, egress));

    const relayRuns: Measured[] = [await measureRelay()];

    let cRelay: Measured | null = null;
    if (cRelayBuild.status === 'fulfilled') {
      const binary = cRelayBuild.value;
      cRelay = await measure((egress) => startCRelay(children, binary, egress));
      if (cRelay.error !== undefined) errors.c_relay = cRelay.error;
    } else {
      errors.c_relay = message(cRelayBuild.reason);
    }

    const points: { nf: NfType; threads: number; m: Measured }[] = [];
    for (const nf of nfs) {
      for (const threads of threadCounts) {
        const m =
          cli === undefined
            ? { pps: 0, lost: 0, error: 'the nfstate CLI (src/cli/main.js) was not found' }
            : await measure((egress) => startNf(children, cli, dir, nfSpec(nf, threads, egress)));
        points.push({ nf, threads, m });
      }
    }

    // A full run brackets the NF points with two relay runs, so a drift in the machine's load during
    // the run shows up as two different baselines instead of skewing every ratio unseen.
    if (!o.quick) relayRuns.push(await measureRelay());

    const good = relayRuns.filter((r) => r.error === undefined);
    const relayPps = good.length === 0 ? 0 : good.reduce((s, r) => s + r.pps, 0) / good.length;
    if (good.length < relayRuns.length) errors.relay = relayRuns.find((r) => r.error !== undefined)!.error!;
    const cPps = cRelay === null || cRelay.error !== undefined ? null : cRelay.pps;

    const result: BenchResult = {
      driver: driver.kind,
      io: NATIVE_IO ? 'native' : 'node',
      relay_pps: Math.round(relayPps),
      relay_runs: relayRuns.map((r) => Math.round(r.pps)),
      c_relay_pps: cPps === null ? null : Math.round(cPps),
      results: points.map(({ nf, threads, m }) => ({
        nf,
        threads,
        pps: Math.round(m.pps),
        ratio: relayPps > 0 ? round3(m.pps / relayPps) : null,
        c_ratio: cPps !== null && cPps > 0 ? round3(m.pps / cPps) : null,
        lost: m.lost,
        ...(m.error === undefined ? {} : { error: m.error }),
      })),
      packet_bytes: ring.packetBytes,
      machine: { cpus: cpus().length, model: cpus()[0]?.model.trim() ?? 'unknown', node: process.version },
      method: { window: WINDOW, flows: FLOWS, seconds, warmup_seconds: warmupSeconds },
      ...(Object.keys(errors).length === 0 ? {} : { errors }),
    };
    if (o.json) o.out(JSON.stringify(result));
    else for (const line of table(result)) o.out(line);
    return result;
  } finally {
    children.killAll();
    await driver?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function table(r: BenchResult): string[] {
  const pps = (n: number | null): string => (n === null ? '-' : n.toLocaleString('en-US'));
  const ratio = (n: number | null): string => (n === null ? '-' : n.toFixed(2));
  const row = (cells: string[]): string =>
    cells
      .map((c, i) => (i < 2 ? c.padEnd([10, 8][i]!) : c.padStart([12, 10, 12, 8][i - 2]!)))
      .join('  ')
      .trimEnd();
  const runs = r.relay_runs.length > 1 ? `  (runs: ${r.relay_runs.map(pps).join(', ')})` : '';
  const lines = [
    `machine: ${r.machine.cpus} x ${r.machine.model}, node ${r.machine.node}`,
    `driver      ${DRIVER_NAMES[r.driver]}`,
    `node relay  ${pps(r.relay_pps)} pps${runs}`,
    `c relay     ${pps(r.c_relay_pps)} pps`,
  ];
  for (const [what, why] of Object.entries(r.errors ?? {})) lines.push(`  ${what}: ${why}`);
  lines.push('', row(['nf', 'threads', 'pps', 'vs relay', 'vs c relay', 'lost']));
  for (const p of r.results) {
    lines.push(row([p.nf, String(p.threads), pps(p.pps), ratio(p.ratio), ratio(p.c_ratio), String(p.lost)]));
    if (p.error !== undefined) lines.push(`  error: ${p.error}`);
  }
  lines.push(
    '',
    'ratios are against baselines measured in this run; compare ratios across machines, not pps',
  );
  return lines;
}
