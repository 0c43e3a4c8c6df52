/**
 * The per-worker core of an NF instance: takes stamped packets in any order, releases each flow's
 * packets to the NF strictly in stamp order, closes batches, and expires idle flows. It owns no thread
 * and no socket, so tests drive it directly and the worker thread only feeds it.
 *
 *   const p = new FlowProcessor(nf, global, options, (buf, off, len) => socket.send(buf, off, len), clock);
 *   p.receive(datagram, 0, datagram.length); // any order
 *   p.tick(clock.now());                      // batch timeouts, gap timeouts, idle flows
 *
 * Invariants:
 * - A flow's packets reach `process` exactly once each, in sequence order 1, 2, 3 …; a duplicate or a
 *   sequence number already passed is dropped and counted.
 * - An out-of-order packet waits in its flow's hold list (bounded by `maxHeld`); a gap that does not
 *   fill within `gapTimeoutMs` is skipped and counted, never waited on forever.
 * - A batch closes after `batchSize` packets or `batchTimeoutMs`, whichever is first, and emits the
 *   flow's state delta since the previous batch.
 */
import { flowHash, flowKeyOf, flowKeyString, packetFlowHash } from '../packet/flow-key.js';
import { FlowTable } from '../packet/flow-table.js';
import { Packet } from '../packet/packet.js';
import { ByteReader, ByteWriter } from '../state/bytes.js';
import type { FlowDigest, RunDigest } from '../state/digest.js';
import { stateDigest } from '../state/digest.js';
import { TimerWheel } from '../timer-wheel.js';
import type { Clock, FlowKey, GlobalState, NetworkFunction, NfEvent } from '../types.js';
import { DropReason, Verdict } from '../types.js';
import { StampFlag, StampView } from '../wire/geneve.js';
import { PacketContext } from './context.js';

export interface ProcessorOptions {
  /**
   * `immediate`: a processed packet leaves at once. `after-replication` (output commit): it waits until
   * the batch it belongs to has closed and been acknowledged by the peers (see `takeCommitted`).
   */
  release?: 'immediate' | 'after-replication';
  batchSize: number;
  batchTimeoutMs: number;
  maxHeld: number;
  gapTimeoutMs: number;
  flowIdleMs: number;
}

/** Sends one processed packet (the whole stamped datagram, inner packet rewritten in place). */
export type Emit = (buf: Uint8Array, offset: number, length: number) => void;

/**
 * Receives a flow's closed batch: at version 1 its full state, after that its delta since the previous
 * batch. The bytes are valid during the call only.
 */
export type BatchSink = (flow: FlowEntry, version: number, bytes: Uint8Array, full: boolean) => void;

interface Held {
  seq: number;
  buf: Uint8Array;
  offset: number;
  length: number;
}

/** Where a flow is in a move (see `expect`, `freeze`, `install`, `handOver`). */
export const MoveState = { NONE: 0, INCOMING: 1, OUTGOING: 2 } as const;
export type MoveState = (typeof MoveState)[keyof typeof MoveState];

/** What a move's source hands over: the flow's state and where its sequence stands. */
export interface FrozenFlow {
  version: number;
  /** The next sequence number the destination must process. */
  expected: number;
  state: Uint8Array;
  /** Bytes of the delta of the batch the freeze closed: what an intra-cluster destination lacks. */
  lastDelta: number;
}

export class FlowEntry {
  state: unknown = undefined;
  move: MoveState = MoveState.NONE;
  /** The next sequence number to process. */
  expected = 1;
  held: Held[] = [];
  heldSince = 0;
  batchCount = 0;
  batchOpenedAt = 0;
  /** Batches closed so far: the version a replica of this flow is at. */
  version = 0;
  mark = 0;
  lastActive = 0;
  forwarded = 0;
  /** After-replication mode: this batch's output, as (buffer, offset, length) triples. */
  out: (Uint8Array | number)[] = [];

  constructor(
    readonly key: FlowKey,
    readonly hash: number,
  ) {}
}

export class ProcessorCounters {
  received = 0;
  processed = 0;
  forwarded = 0;
  /** Packets the NF itself dropped (policy): not a loss. */
  nfDropped = 0;
  held = 0;
  /** Sequence numbers skipped because their gap never filled. */
  gapSkipped = 0;
  batches = 0;
  deltaBytes = 0;
  flowsCreated = 0;
  flowsExpired = 0;
  events = 0;
  /** Packets parked during moves, and end-of-move markers for flows not moving here. */
  parked = 0;
  strayMarkers = 0;
  readonly drops = new Float64Array(16);
}

export class FlowProcessor {
  readonly counters = new ProcessorCounters();
  readonly flows = new FlowTable<FlowEntry>();
  private readonly stamp = new StampView();
  private readonly pkt = new Packet();
  private readonly ctx: PacketContext;
  private readonly delta = new ByteWriter(1024);
  private openBatches: FlowEntry[] = [];
  /** After-replication mode: output of batches closed since the last `takeCommitted`, in order. */
  private closedOut: (Uint8Array | number)[] = [];
  private readonly holdOutput: boolean;
  private gapWatch: FlowEntry[] = [];
  private readonly idle: TimerWheel<FlowEntry>;
  onBatch: BatchSink | undefined;
  /** A flow left (idle, or moved away): replicas of it can go too. Called after its last batch. */
  onEnd: ((flow: FlowEntry) => void) | undefined;
  /**
   * A moving flow's end-of-move marker arrived: every packet the switch sent here is parked. The callee
   * forwards them (`handOver`) to the destination.
   */
  onMarker: ((key: FlowKey) => void) | undefined;

  constructor(
    private readonly nf: NetworkFunction<unknown>,
    private readonly global: GlobalState,
    private readonly options: ProcessorOptions,
    private readonly emit: Emit,
    private readonly clock: Clock,
    onEvent: (event: NfEvent) => void = () => undefined,
  ) {
    this.ctx = new PacketContext(global, (event) => {
      this.counters.events++;
      onEvent(event);
    });
    this.holdOutput = options.release === 'after-replication';
    this.idle = new TimerWheel<FlowEntry>(Math.max(1, Math.min(1000, options.flowIdleMs / 8)), 64);
  }

  /** One stamped datagram. Never throws on bad input: it is counted by reason and dropped. */
  receive(buf: Uint8Array, offset: number, length: number): void {
    this.counters.received++;
    const stamp = this.stamp;
    const r = stamp.parse(buf, offset, length);
    if (r !== DropReason.NONE) return this.drop(r);
    if (!stamp.hasStamp || stamp.seq === 0) return this.drop(DropReason.BAD_HEADER);
    const pr = this.pkt.parse(buf, stamp.innerOffset, stamp.innerLength);
    if (pr !== DropReason.NONE) return this.drop(pr);
    const now = this.clock.now();
    let flow = this.flows.getPacket(this.pkt);
    if ((stamp.flags & StampFlag.END_OF_MOVE) !== 0) {
      if (flow?.move === MoveState.OUTGOING) this.onMarker?.(flow.key);
      else this.counters.strayMarkers++;
      return;
    }
    if (flow === undefined) {
      const key = flowKeyOf(this.pkt);
      flow = new FlowEntry(key, packetFlowHash(this.pkt));
      this.flows.set(key, flow);
      this.counters.flowsCreated++;
      this.idle.add(flow, now + this.options.flowIdleMs);
    }
    flow.lastActive = now;
    const seq = stamp.seq;
    if (flow.move === MoveState.INCOMING) return this.park(flow, seq, buf, offset, length);
    if (seq < flow.expected) return this.drop(DropReason.DUPLICATE);
    if (flow.move === MoveState.OUTGOING) return this.park(flow, seq, buf, offset, length);
    if (seq > flow.expected) return this.hold(flow, seq, buf, offset, length, now);
    this.run(flow);
    this.drain(flow);
  }

  /** Time-driven work: batch timeouts, gaps that never filled, idle flows. */
  tick(now: number): void {
    if (this.openBatches.length > 0) {
      const open = this.openBatches;
      let kept = 0;
      for (const flow of open) {
        if (flow.batchCount === 0) continue;
        if (now - flow.batchOpenedAt >= this.options.batchTimeoutMs) this.closeBatch(flow);
        else open[kept++] = flow;
      }
      open.length = kept;
    }
    if (this.gapWatch.length > 0) {
      const watch = this.gapWatch;
      let kept = 0;
      for (const flow of watch) {
        if (flow.held.length === 0) continue;
        if (now - flow.heldSince >= this.options.gapTimeoutMs) this.skipGap(flow);
        if (flow.held.length > 0) watch[kept++] = flow;
      }
      watch.length = kept;
    }
    this.idle.advance(now, (flow) => {
      // A flow that moved away (or whose move was called off) left the table; a new one may have its key.
      if (!this.owns(flow)) return;
      const deadline = flow.lastActive + this.options.flowIdleMs;
      if (deadline > now || flow.held.length > 0 || flow.move !== MoveState.NONE) {
        this.idle.add(flow, Math.max(deadline, now + 1));
      } else this.expire(flow);
    });
  }

  /** Closes every open batch now (before a snapshot or a stop). */
  flushBatches(): void {
    for (const flow of this.openBatches) if (flow.batchCount > 0) this.closeBatch(flow);
    this.openBatches.length = 0;
  }

  /** Per-flow digests and this worker's global state, for comparison with the oracle. */
  digest(): RunDigest {
    const flows: FlowDigest[] = [];
    for (const [key, flow] of this.flows.entries()) {
      if (flow.state === undefined) continue;
      flows.push({
        flow: flowKeyString(key),
        packets: flow.expected - 1,
        forwarded: flow.forwarded,
        digest: stateDigest(this.nf, flow.state),
        allocations: this.nf.allocations(flow.state),
      });
    }
    return { flows, global: this.global.snapshot() };
  }

  private drop(reason: DropReason): void {
    this.counters.drops[reason]!++;
  }

  private hold(
    flow: FlowEntry,
    seq: number,
    buf: Uint8Array,
    offset: number,
    length: number,
    now: number,
  ): void {
    const held = flow.held;
    let at = held.length;
    while (at > 0 && held[at - 1]!.seq > seq) at--;
    if (at > 0 && held[at - 1]!.seq === seq) return this.drop(DropReason.DUPLICATE);
    if (held.length === 0) {
      flow.heldSince = now;
      this.gapWatch.push(flow);
    }
    held.splice(at, 0, { seq, buf, offset, length });
    this.counters.held++;
    // A full hold list means the gap is not going to fill in time: skip it rather than drop what we hold.
    if (held.length > this.options.maxHeld) this.skipGap(flow);
  }

  private skipGap(flow: FlowEntry): void {
    const first = flow.held[0];
    if (first === undefined) return;
    this.counters.gapSkipped += first.seq - flow.expected;
    this.counters.drops[DropReason.GAP_TIMEOUT]!++;
    flow.expected = first.seq;
    this.drain(flow);
    flow.heldSince = this.clock.now();
  }

  private drain(flow: FlowEntry): void {
    const held = flow.held;
    let n = 0;
    while (n < held.length && held[n]!.seq === flow.expected) {
      const h = held[n++]!;
      // The views still point at the packet that arrived last; re-point them at the held one.
      this.stamp.parse(h.buf, h.offset, h.length);
      this.pkt.parse(h.buf, this.stamp.innerOffset, this.stamp.innerLength);
      this.run(flow);
    }
    if (n > 0) held.splice(0, n);
  }

  /** Processes the packet the views point at, which is the flow's next one. */
  private run(flow: FlowEntry): void {
    const stamp = this.stamp;
    const ctx = this.ctx;
    ctx.set(flow.key, flow.hash, stamp.seq, stamp.timeMs);
    flow.state ??= this.nf.initFlow(this.pkt, ctx);
    const verdict = this.nf.process(this.pkt, flow.state, ctx);
    flow.expected = stamp.seq + 1;
    this.counters.processed++;
    if (verdict === Verdict.FORWARD) {
      this.counters.forwarded++;
      flow.forwarded++;
      const at = stamp.innerOffset - stamp.headerLength;
      const length = stamp.headerLength + stamp.innerLength;
      // Held output keeps a reference into the batch buffer the packet came in: no copy.
      if (this.holdOutput) flow.out.push(this.pkt.buf, at, length);
      else this.emit(this.pkt.buf, at, length);
    } else {
      this.counters.nfDropped++;
    }
    if (flow.batchCount++ === 0) {
      flow.batchOpenedAt = this.clock.now();
      this.openBatches.push(flow);
    }
    if (flow.batchCount >= this.options.batchSize) this.closeBatch(flow);
  }

  /** Move destination: hold every packet of `key` (no gap skipping) until `install` gives it a state. */
  expect(key: FlowKey): void {
    let flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow === undefined) {
      flow = new FlowEntry(key, flowHash(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto));
      this.flows.set(key, flow);
      this.counters.flowsCreated++;
      flow.lastActive = this.clock.now();
      this.idle.add(flow, flow.lastActive + this.options.flowIdleMs);
    }
    flow.move = MoveState.INCOMING;
  }

  /**
   * Move source: closes the flow's batch (so its last changes go to the replicas), stops processing it —
   * its packets are parked from now on — and returns its full state. Undefined for a flow this worker does
   * not own or that is already moving.
   */
  freeze(key: FlowKey): FrozenFlow | undefined {
    const flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow?.state === undefined || flow.move !== MoveState.NONE) return undefined;
    let lastDelta = 0;
    if (flow.batchCount > 0) lastDelta = this.closeBatch(flow);
    flow.move = MoveState.OUTGOING;
    const w = this.delta;
    w.reset();
    this.nf.codec.encodeFull(flow.state, w);
    return { version: flow.version, expected: flow.expected, state: w.view().slice(), lastDelta };
  }

  /**
   * Move destination: the flow's state arrived. Processing resumes at `expected`; parked packets below it
   * are duplicates, the rest run in stamp order. The state goes to this instance's own peers at once.
   */
  install(key: FlowKey, state: Uint8Array, expected: number): void {
    this.expect(key);
    const flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto)!;
    flow.state = this.nf.codec.decodeFull(new ByteReader(state));
    flow.mark = this.nf.codec.mark(flow.state);
    flow.expected = expected;
    flow.move = MoveState.NONE;
    // This instance's own peers learn the flow at once, as version 1 of its life here.
    flow.version = 1;
    this.onBatch?.(flow, 1, state, true);
    this.resume(flow);
  }

  /**
   * Move source, after the end-of-move marker: hands every parked packet, in stamp order, to `forward` (the
   * destination), and forgets the flow without releasing what it holds — the state lives on elsewhere.
   * Returns how many packets were forwarded.
   */
  handOver(key: FlowKey, forward: Emit): number {
    const flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow?.move !== MoveState.OUTGOING) return 0;
    const held = flow.held;
    for (const h of held) {
      this.stamp.parse(h.buf, h.offset, h.length);
      this.stamp.setFlags(this.stamp.flags | StampFlag.FORWARDED);
      forward(h.buf, h.offset, h.length);
    }
    const n = held.length;
    held.length = 0;
    this.flows.delete(flow.key);
    this.onEnd?.(flow);
    return n;
  }

  /** A move that cannot finish, at its source: the flow resumes where it stopped. */
  abort(key: FlowKey): void {
    const flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow?.move !== MoveState.OUTGOING) return;
    flow.move = MoveState.NONE;
    this.resume(flow);
  }

  /**
   * A move that cannot finish, at its destination: the flow goes, installed or not (no packet of it was
   * routed here yet), without releasing what its state holds — the source still owns it.
   */
  forget(key: FlowKey): void {
    const flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow === undefined) return;
    flow.held.length = 0;
    flow.batchCount = 0;
    this.flows.delete(flow.key);
    if (flow.state !== undefined) this.onEnd?.(flow);
  }

  private owns(flow: FlowEntry): boolean {
    const k = flow.key;
    return this.flows.get(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto) === flow;
  }

  /** Parks a packet of a moving flow, in stamp order, bounded like the hold list. */
  private park(flow: FlowEntry, seq: number, buf: Uint8Array, offset: number, length: number): void {
    const held = flow.held;
    let at = held.length;
    while (at > 0 && held[at - 1]!.seq > seq) at--;
    if (at > 0 && held[at - 1]!.seq === seq) return this.drop(DropReason.DUPLICATE);
    if (held.length >= this.options.maxHeld) return this.drop(DropReason.BUFFER_FULL);
    held.splice(at, 0, { seq, buf, offset, length });
    this.counters.parked++;
  }

  /** Runs what a flow can run after it stopped moving; the rest waits for its gap as usual. */
  private resume(flow: FlowEntry): void {
    const held = flow.held;
    let dups = 0;
    while (dups < held.length && held[dups]!.seq < flow.expected) dups++;
    if (dups > 0) {
      held.splice(0, dups);
      this.counters.drops[DropReason.DUPLICATE]! += dups;
    }
    this.drain(flow);
    if (held.length > 0) {
      flow.heldSince = this.clock.now();
      this.gapWatch.push(flow);
    }
  }

  /**
   * A peer lacks this flow's history: closes its open batch (so that the version is exact), then hands its
   * full state to `onBatch` at the flow's current version. Returns false for a flow this worker lacks.
   */
  resend(key: FlowKey): boolean {
    const flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow?.state === undefined) return false;
    if (flow.batchCount > 0) this.closeBatch(flow);
    const w = this.delta;
    w.reset();
    this.nf.codec.encodeFull(flow.state, w);
    this.onBatch?.(flow, flow.version, w.view(), true);
    return true;
  }

  /**
   * After-replication mode: hands over the output of every batch closed since the last call, as
   * (buffer, offset, length) triples in release order. The caller sends them once the records of those
   * batches are acknowledged.
   */
  takeCommitted(): (Uint8Array | number)[] {
    const out = this.closedOut;
    this.closedOut = [];
    return out;
  }

  /** Closes the flow's batch; returns the bytes of the record it produced. */
  private closeBatch(flow: FlowEntry): number {
    flow.batchCount = 0;
    if (flow.out.length > 0) {
      for (const x of flow.out) this.closedOut.push(x);
      flow.out.length = 0;
    }
    if (flow.state === undefined) return 0;
    const w = this.delta;
    w.reset();
    // A flow's first batch carries its full state: a peer has nothing yet to apply a delta to.
    if (flow.version === 0) this.nf.codec.encodeFull(flow.state, w);
    else this.nf.codec.encodeDelta(flow.state, flow.mark, w);
    flow.mark = this.nf.codec.mark(flow.state);
    flow.version++;
    this.counters.batches++;
    this.counters.deltaBytes += w.length;
    this.onBatch?.(flow, flow.version, w.view(), flow.version === 1);
    return w.length;
  }

  private expire(flow: FlowEntry): void {
    if (flow.batchCount > 0) this.closeBatch(flow);
    if (flow.state !== undefined) {
      this.ctx.set(flow.key, flow.hash, flow.expected, this.clock.now());
      this.nf.releaseFlow(flow.state, this.ctx);
    }
    this.flows.delete(flow.key);
    this.counters.flowsExpired++;
    this.onEnd?.(flow);
  }
}
