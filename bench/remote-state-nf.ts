/**
 * The `remote-state` baseline (DESIGN.md §9), StatelessNF-style: an NF instance that keeps no flow state
 * of its own. For every packet it reads the flow's state from Redis, runs the NF on it (createNf and the
 * NF's own codec, the code an nfstate worker runs), writes the state back, and only then forwards the
 * packet, so that what left the instance is always covered by the store:
 *
 *   datagram ─► stamp + IPv4 parse ─► GET flow ─► initFlow/process ─► SET flow ─► (acknowledged) ─► egress
 *
 *   const nf = new RemoteStateNf(spec, logger);
 *   const { port } = await nf.start();   // stamped datagrams in on `port`, out to spec.egress
 *   await nf.stop();
 *
 * Order and isolation. A flow has at most one packet between its GET and its SET acknowledgment; its
 * later packets queue behind it, in arrival order, and run one by one. Two packets of a flow in flight at
 * once would both read the same state and one update would be lost, and their output could swap places.
 * Serializing in the instance is enough, with no lock or WATCH in Redis, because the switch sends a flow
 * to one instance only. Different flows run concurrently: hiding the store's round trip behind other
 * flows' packets is how StatelessNF keeps its rate, and the bench's window keeps hundreds of packets of
 * different flows in flight. node-redis writes every command issued in one turn of the event loop in one
 * write, without waiting for earlier replies, so Redis sees deep pipelines, not one round trip at a time.
 * A flow's next GET could also go out behind its SET on the one connection, which keeps them in order;
 * that is not done, because the bench's packets of one flow come a whole round of flows apart, where it
 * would gain nothing.
 *
 * The value stored per flow, under the 13 packed bytes of its canonical 5-tuple (srcIp, dstIp, srcPort,
 * dstPort, proto, big endian):
 *
 *   +-------------------+-------------------+--------------------------------+
 *   | next seq (u53)    | writer (u53)      | NF state (codec.encodeFull)    |
 *   +-------------------+-------------------+--------------------------------+
 *
 * A packet below `next seq` is a duplicate and is dropped, as nfstate drops one; `writer` is the flow
 * incarnation's CRDT writer (global-crdt.ts), so that eventual global updates count as a worker counts
 * them. What it leaves out, next to nfstate: a packet past a gap runs at once (no hold list), nothing is
 * replicated or moved, global state is process-local as in a worker without a strong log, and a flow's
 * state expires in Redis after `flowIdleMs` without releasing what it holds in global state.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import { createClient, RESP_TYPES } from 'redis';
import { PacketContext } from '../src/nf/context.js';
import { createNf } from '../src/nfs/index.js';
import { flowKeyOf, flowHashOf } from '../src/packet/flow-key.js';
import { FlowTable } from '../src/packet/flow-table.js';
import { Packet } from '../src/packet/packet.js';
import { ByteReader, ByteWriter } from '../src/state/bytes.js';
import { writerOf } from '../src/state/crdt/index.js';
import { CrdtGlobalState } from '../src/state/global-crdt.js';
import { LocalGlobalState } from '../src/state/global-local.js';
import type { FlowKey, Logger, NetworkFunction } from '../src/types.js';
import { DropReason, Verdict } from '../src/types.js';
import { StampView } from '../src/wire/geneve.js';

export interface RemoteStateSpec {
  id: string;
  host: string;
  /** 0: any free port. */
  port: number;
  nf: { type: string; config: Record<string, unknown> };
  redis: { host: string; port: number };
  egress: { host: string; port: number };
  /** A flow's state expires in Redis after this long without a packet. */
  flowIdleMs: number;
}

export class RemoteStateCounters {
  received = 0;
  processed = 0;
  forwarded = 0;
  /** Packets the NF itself dropped (policy): not a loss. */
  nfDropped = 0;
  /** Packets whose step failed: a read or write the store refused, or stored bytes that did not decode. */
  failed = 0;
  events = 0;
  /** By DropReason. */
  readonly drops = new Float64Array(16);
}

/** A flow with a packet between its GET and its SET's acknowledgment, and the packets queued behind it. */
interface Busy {
  readonly key: FlowKey;
  readonly hash: number;
  readonly storeKey: Buffer;
  readonly queue: Buffer[];
}

const STOP_TIMEOUT_MS = 3_000;

/** The Redis key of a flow: its canonical 5-tuple, packed. */
export function storeKey(key: FlowKey): Buffer {
  const b = Buffer.allocUnsafe(13);
  b.writeUInt32BE(key.srcIp, 0);
  b.writeUInt32BE(key.dstIp, 4);
  b.writeUInt16BE(key.srcPort, 8);
  b.writeUInt16BE(key.dstPort, 10);
  b.writeUInt8(key.proto, 12);
  return b;
}

export interface StoredFlow {
  /** The next sequence number to process. */
  expected: number;
  writer: number;
  state: unknown;
}

/** Decodes a stored value (layout above); throws NfsError STATE on bytes that do not decode. */
export function decodeStored(nf: NetworkFunction<unknown>, bytes: Uint8Array): StoredFlow {
  const r = new ByteReader(bytes);
  const expected = r.u53();
  const writer = r.u53();
  return { expected, writer, state: nf.codec.decodeFull(r) };
}

function openStore(spec: RemoteStateSpec['redis']) {
  // Values and keys are bytes: the NF codec's output and the packed flow key.
  return createClient({ socket: { host: spec.host, port: spec.port } }).withTypeMapping({
    [RESP_TYPES.BLOB_STRING]: Buffer,
  });
}

export class RemoteStateNf {
  readonly counters = new RemoteStateCounters();
  private readonly busy = new FlowTable<Busy>();
  private readonly stamp = new StampView();
  private readonly pkt = new Packet();
  private readonly global = new CrdtGlobalState(new LocalGlobalState(), { replica: 0 });
  private readonly nf: NetworkFunction<unknown>;
  private readonly ctx: PacketContext;
  private readonly writer = new ByteWriter(1024);
  private readonly store: ReturnType<typeof openStore>;
  /** As large as an nfstate instance's: a window of packets arrives in one burst. */
  private readonly input = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 * 1024 * 1024 });
  private readonly output = dgram.createSocket('udp4');
  private started: Promise<{ port: number }> | undefined;
  private stopping: Promise<void> | undefined;
  /** Set while `stop` waits for the flows in the store's hands to finish. */
  private drained: (() => void) | undefined;
  private failures = 0;

  constructor(
    private readonly spec: RemoteStateSpec,
    private readonly logger: Logger,
  ) {
    this.nf = createNf(spec.nf.type, spec.nf.config, this.global);
    this.ctx = new PacketContext(this.global, (event) => {
      this.counters.events++;
      logger.info('nf event', event);
    });
    this.store = openStore(spec.redis);
    this.store.on('error', (err: unknown) => {
      this.fail('redis connection', err);
    });
    this.input.on('message', (msg) => {
      this.receive(msg);
    });
    // A refused send shows up as a packet that never reaches the egress, as it does from an nfstate worker;
    // a failed bind rejects `start`.
    this.input.on('error', () => undefined);
    this.output.on('error', () => undefined);
  }

  /** Connects to Redis and binds the data port; resolves with the port. */
  start(): Promise<{ port: number }> {
    return (this.started ??= (async () => {
      await this.store.connect();
      this.output.connect(this.spec.egress.port, this.spec.egress.host);
      this.input.bind(this.spec.port, this.spec.host);
      await Promise.all([once(this.output, 'connect'), once(this.input, 'listening')]);
      return { port: this.input.address().port };
    })());
  }

  /** Takes no more packets, lets those in the store's hands finish (up to STOP_TIMEOUT_MS), closes. */
  stop(): Promise<void> {
    return (this.stopping ??= (async () => {
      await this.started?.catch(() => undefined);
      this.input.close();
      if (this.busy.size > 0) {
        const drained = new Promise<void>((resolve) => (this.drained = resolve));
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, STOP_TIMEOUT_MS)));
        await Promise.race([drained, late]);
        clearTimeout(timer);
      }
      if (this.store.isOpen) this.store.destroy();
      this.output.close();
    })());
  }

  /** One stamped datagram. Never throws on bad input: it is counted by reason and dropped. */
  private receive(msg: Buffer): void {
    this.counters.received++;
    const stamp = this.stamp;
    const r = stamp.parse(msg, 0, msg.length);
    if (r !== DropReason.NONE) return this.drop(r);
    if (!stamp.hasStamp || stamp.seq === 0) return this.drop(DropReason.BAD_HEADER);
    const pr = this.pkt.parse(msg, stamp.innerOffset, stamp.innerLength);
    if (pr !== DropReason.NONE) return this.drop(pr);
    const busy = this.busy.getFlow(this.pkt);
    if (busy !== undefined) {
      busy.queue.push(msg);
      return;
    }
    const key = flowKeyOf(this.pkt);
    const flow: Busy = { key, hash: flowHashOf(this.pkt), storeKey: storeKey(key), queue: [] };
    this.busy.set(key, flow);
    void this.serve(flow, msg);
  }

  /** Runs a flow's packets one after the other until none is queued, then lets the flow go. */
  private async serve(flow: Busy, first: Buffer): Promise<void> {
    for (let msg: Buffer | undefined = first; msg !== undefined; msg = flow.queue.shift()) {
      try {
        await this.step(flow, msg);
      } catch (err) {
        this.counters.failed++;
        this.fail('packet step', err);
      }
    }
    this.busy.delete(flow.key);
    if (this.busy.size === 0) this.drained?.();
  }

  /** Read, process, write, forward: one packet's whole life here. */
  private async step(flow: Busy, msg: Buffer): Promise<void> {
    const stored = await this.store.get(flow.storeKey);
    // Other packets re-pointed the views while this one waited; it parsed before, so it parses again.
    const stamp = this.stamp;
    stamp.parse(msg, 0, msg.length);
    this.pkt.parse(msg, stamp.innerOffset, stamp.innerLength);
    const seq = stamp.seq;
    const was =
      stored === null
        ? { expected: 1, writer: writerOf(flow.key, Math.round(stamp.timeMs * 1000)), state: undefined }
        : decodeStored(this.nf, stored);
    if (seq < was.expected) {
      this.drop(DropReason.DUPLICATE);
      return;
    }
    this.ctx.set(flow.key, flow.hash, seq, stamp.timeMs);
    this.global.bind(was.writer, seq);
    let state: unknown;
    let verdict: Verdict;
    try {
      state = was.state ?? this.nf.initFlow(this.pkt, this.ctx);
      verdict = this.nf.process(this.pkt, state, this.ctx);
    } finally {
      this.global.unbind();
    }
    this.counters.processed++;
    const w = this.writer;
    w.reset();
    w.u53(seq + 1);
    w.u53(was.writer);
    this.nf.codec.encodeFull(state, w);
    // A copy: the writer is reused by the next packet before this command is written to the socket.
    await this.store.set(flow.storeKey, Buffer.from(w.view()), {
      expiration: { type: 'PX', value: this.spec.flowIdleMs },
    });
    if (verdict === Verdict.FORWARD) {
      this.counters.forwarded++;
      this.output.send(msg);
    } else {
      this.counters.nfDropped++;
    }
  }

  private drop(reason: DropReason): void {
    this.counters.drops[reason]!++;
  }

  /** Logs the first failure and every thousandth after it: a store that went away must not flood the log. */
  private fail(what: string, err: unknown): void {
    if (this.failures++ % 1000 === 0)
      this.logger.warn(`remote-state: ${what} failed`, {
        error: err instanceof Error ? err.message : String(err),
        failures: this.failures,
      });
  }
}
