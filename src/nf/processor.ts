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
import { flowHash, flowKeyOf, flowKeyString, flowHashOf } from '../packet/flow-key.js';
import { FlowTable } from '../packet/flow-table.js';
import { Packet } from '../packet/packet.js';
import { ByteReader, ByteWriter } from '../state/bytes.js';
import type { FlowDigest, RunDigest } from '../state/digest.js';
import { flowDigestOf } from '../state/digest.js';
import { TimerWheel } from '../timer-wheel.js';
import type { Clock, FlowKey, GlobalState, NetworkFunction, NfEvent } from '../types.js';
import { DropReason, Verdict } from '../types.js';
import { StampFlag, StampView, type FlowFields } from '../wire/geneve.js';
import { PacketContext } from './context.js';
import { writerOf } from '../state/crdt/index.js';
import { DECISION_PENDING } from '../state/global-strong.js';
import {
  FlowEntry,
  MoveState,
  MoveTrack,
  ProcessorCounters,
  type FrozenFlow,
  type Held,
} from './flow-entry.js';
import type { Guarantee } from './guarantee.js';

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

export class FlowProcessor {
  readonly counters = new ProcessorCounters();
  readonly flows = new FlowTable<FlowEntry>();
  private readonly stamp = new StampView();
  private readonly pkt = new Packet();
  /** The connection a packet's flow option names, filled in place. */
  private readonly named: FlowFields = { srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 };
  private readonly ctx: PacketContext;
  private readonly delta = new ByteWriter(1024);
  private openBatches: FlowEntry[] = [];
  /** After-replication mode: output of batches closed since the last `takeCommitted`, in order. */
  private closedOut: (Uint8Array | number)[] = [];
  private readonly holdOutput: boolean;
  /** Whether the datagram being received stays unchanged after `receive` returns. */
  private lasting = false;
  private gapWatch: FlowEntry[] = [];
  /** Flows frozen for a move and not yet committed: each is given up at its deadline. */
  private frozen: FlowEntry[] = [];
  private readonly idle: TimerWheel<FlowEntry>;
  onBatch: BatchSink | undefined;
  /** A flow left (idle, or moved away): replicas of it can go too. Called after its last batch. */
  onEnd: ((flow: FlowEntry) => void) | undefined;
  /**
   * A moving flow's end-of-move marker arrived (at `buf[offset, offset+length)`, valid during the call):
   * every packet the switch sent here is parked. The callee forwards them and then the marker (`handOver`)
   * to the destination.
   */
  onMarker: ((key: FlowKey, buf: Uint8Array, offset: number, length: number) => void) | undefined;
  /** This instance's fencing token, written into every packet it emits (see StampView.emitter). */
  emitter = 0;

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

  /**
   * One stamped datagram. Never throws on bad input: it is counted by reason and dropped. `lasting`: the
   * bytes stay as they are after the call (a transferred batch), so a packet that has to wait is kept by
   * reference; otherwise (a socket's receive buffer, reused for the next batch) it is copied.
   */
  receive(buf: Uint8Array, offset: number, length: number, lasting = false): void {
    this.counters.received++;
    this.lasting = lasting;
    const stamp = this.stamp;
    const r = stamp.parse(buf, offset, length);
    if (r !== DropReason.NONE) return this.drop(r);
    if (!stamp.hasStamp || stamp.seq === 0) return this.drop(DropReason.BAD_HEADER);
    const pr = this.pkt.parse(buf, stamp.innerOffset, stamp.innerLength);
    if (pr !== DropReason.NONE) return this.drop(pr);
    const now = this.clock.now();
    // A reply to a translated address names its connection (the switch resolved it): that is its flow.
    const id: FlowKey = stamp.hasFlow ? stamp.flowInto(this.named, this.pkt.proto) : this.pkt;
    let flow = this.flows.getFlow(id);
    if ((stamp.flags & StampFlag.END_OF_MOVE) !== 0) {
      // A forwarded marker comes from a move's source after its parked packets: nothing more of the flow
      // comes from there. Only the switch's own marker ends a move here.
      const forwarded = (stamp.flags & StampFlag.FORWARDED) !== 0;
      if (forwarded && flow?.track?.catchingUp === true) this.caughtUp(flow);
      else if (!forwarded && flow?.move === MoveState.OUTGOING)
        this.onMarker?.(flow.key, buf, offset, length);
      else this.counters.strayMarkers++;
      return;
    }
    if (flow === undefined) {
      const key = flowKeyOf(id);
      flow = new FlowEntry(key, flowHashOf(key));
      this.flows.set(key, flow);
      this.counters.flowsCreated++;
      this.idle.add(flow, now + this.options.flowIdleMs);
    }
    flow.lastActive = now;
    const seq = stamp.seq;
    if (flow.move === MoveState.INCOMING || flow.deciding) return this.park(flow, seq, buf, offset, length);
    if (flow.track?.catchingUp === true && this.catchUp(flow, buf, offset, length)) return;
    if (seq < flow.expected) return this.drop(DropReason.DUPLICATE);
    if (flow.move === MoveState.OUTGOING) return this.park(flow, seq, buf, offset, length);
    if (seq > flow.expected) return this.hold(flow, seq, buf, offset, length, now);
    if (this.run(flow)) this.drain(flow);
    else this.park(flow, seq, buf, offset, length);
  }

  /** Whether time-driven work other than idle flows waits: open batches, gaps, freezes. */
  get waiting(): boolean {
    return this.openBatches.length > 0 || this.gapWatch.length > 0 || this.frozen.length > 0;
  }

  /** Time-driven work: batch timeouts, gaps that never filled, idle flows. */
  tick(now: number): void {
    if (this.frozen.length > 0) this.expireFreezes(now);
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
        // A flow waiting for a decision has no gap; it comes back here when it resumes.
        if (flow.held.length === 0 || flow.deciding) continue;
        // The source's packets are on their way after a move: the gap clock starts once they are overdue.
        const since =
          flow.track?.catchingUp === true ? Math.max(flow.heldSince, flow.track.waitUntil) : flow.heldSince;
        if (now - since >= this.options.gapTimeoutMs) this.skipGap(flow);
        if (flow.held.length > 0) watch[kept++] = flow;
      }
      watch.length = kept;
    }
    this.idle.advance(now, (flow) => {
      // A flow that moved away (or whose move was called off) left the table; a new one may have its key.
      if (!this.owns(flow)) return;
      const deadline = flow.lastActive + this.options.flowIdleMs;
      // An expected flow that never got its state is the leftover of a move called off: it goes quietly.
      if (deadline <= now && flow.move === MoveState.INCOMING && flow.state === undefined) {
        this.forget(flow.key);
      } else if (deadline > now || flow.held.length > 0 || flow.move !== MoveState.NONE) {
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
        ...flowDigestOf(this.nf, flow.state),
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
    held.splice(at, 0, this.keep(seq, buf, offset, length));
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
      const h = held[n]!;
      // The views still point at the packet that arrived last; re-point them at the held one.
      this.stamp.parse(h.buf, h.offset, h.length);
      this.pkt.parse(h.buf, this.stamp.innerOffset, this.stamp.innerLength);
      if (!this.run(flow)) break;
      n++;
    }
    if (n > 0) held.splice(0, n);
  }

  /**
   * Processes the packet the views point at, which is the flow's next one. False when the packet waits for
   * a strong global decision (state/global-strong.ts; a new flow's first packet, or in a chain the first
   * packet to reach a deciding NF): the flow is `deciding`, and the packet runs again on `decided`.
   */
  private run(flow: FlowEntry): boolean {
    const stamp = this.stamp;
    const ctx = this.ctx;
    ctx.set(flow.key, flow.hash, stamp.seq, stamp.timeMs);
    if (flow.state === undefined) this.incarnate(flow, Math.round(stamp.timeMs * 1000));
    this.global.bind(flow.writer, stamp.seq);
    let verdict: Verdict;
    try {
      flow.state ??= this.nf.initFlow(this.pkt, ctx);
      // A chain makes an NF's part when a packet first reaches it, so a decision can hold up a later packet.
      verdict = this.nf.process(this.pkt, flow.state, ctx);
    } catch (err) {
      if (err !== DECISION_PENDING) throw err;
      flow.deciding = true;
      this.counters.deciding++;
      return false;
    } finally {
      this.global.unbind();
    }
    flow.expected = stamp.seq + 1;
    this.counters.processed++;
    if (verdict === Verdict.FORWARD) {
      this.counters.forwarded++;
      flow.forwarded++;
      stamp.setEmitter(this.emitter);
      const at = stamp.innerOffset - stamp.headerLength;
      const length = stamp.headerLength + stamp.innerLength;
      // Held output keeps a reference into the batch buffer the packet came in: no copy.
      if (this.holdOutput) {
        if (this.lasting) flow.out.push(this.pkt.buf, at, length);
        else flow.out.push(this.pkt.buf.slice(at, at + length), 0, length);
      } else this.emit(this.pkt.buf, at, length);
    } else {
      this.counters.nfDropped++;
    }
    if (flow.batchCount++ === 0) {
      flow.batchOpenedAt = this.clock.now();
      this.openBatches.push(flow);
    }
    if (flow.batchCount >= this.options.batchSize) this.closeBatch(flow);
    return true;
  }

  /** The strong global decision a new flow waited for is here: its packets run from the first. */
  decided(key: FlowKey): void {
    const flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow?.deciding !== true) return;
    flow.deciding = false;
    this.resume(flow);
  }

  /** Whether this worker holds the flow's state. */
  has(key: FlowKey): boolean {
    return this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto)?.state !== undefined;
  }

  /** Move destination: hold every packet of `key` (no gap skipping) until `install` gives it a state. */
  expect(key: FlowKey, guarantee: Guarantee = 'order-preserving'): void {
    const flow = this.entry(key);
    flow.move = MoveState.INCOMING;
    flow.track = new MoveTrack(guarantee);
  }

  /**
   * Move source: closes the flow's batch (so its last changes go to the replicas), stops processing it —
   * its packets are parked from now on — and returns its full state. Undefined for a flow this worker does
   * not own, that is already moving, that waits for a strong global decision (in a chain, its state already
   * holds the parts of the NFs before the deciding one, but the packet that waits is in none of the move's
   * hand-overs), or that is still taking in a loss-free move's late packets (until that move's wait is
   * over). Not committed within `timeoutMs`, the move is given up here: the flow resumes, and
   * a later commit fails, so the switch is never re-pointed to a flow that moved on.
   */
  freeze(
    key: FlowKey,
    guarantee: Guarantee = 'order-preserving',
    timeoutMs = Infinity,
  ): FrozenFlow | undefined {
    const flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow?.state === undefined || flow.deciding || flow.move !== MoveState.NONE) return undefined;
    if (flow.track?.late !== undefined && this.clock.now() < flow.track.waitUntil) return undefined;
    let lastDelta = 0;
    if (flow.batchCount > 0) lastDelta = this.closeBatch(flow);
    flow.move = MoveState.OUTGOING;
    flow.track = new MoveTrack(guarantee);
    flow.track.frozenUntil = this.clock.now() + timeoutMs;
    if (timeoutMs !== Infinity) this.frozen.push(flow);
    const w = this.delta;
    w.reset();
    this.nf.codec.encodeFull(flow.state, w);
    return { version: flow.version, expected: flow.expected, state: w.view().slice(), lastDelta };
  }

  /**
   * Move source, just before the switch is re-pointed: true if the flow is still frozen here. False when its
   * parked packets reached the bound first and it took the flow back (see `park`): the move must abort.
   */
  commit(key: FlowKey): boolean {
    const flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow?.move !== MoveState.OUTGOING || flow.track === undefined) return false;
    flow.track.committed = true;
    return true;
  }

  /**
   * Move destination: the flow's state arrived. Processing resumes at `expected`; parked packets below it
   * are duplicates, the rest run as the move's guarantee (given to `expect`) says. Order-preserving, a gap
   * below the switch's packets is the source's to fill: it is not skipped for `waitMs` (how long the source
   * may take to hand over), then the gap timeout runs as usual. The state goes to this instance's own peers
   * at once.
   */
  install(key: FlowKey, state: Uint8Array, expected: number, waitMs = 0): boolean {
    const before = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    // Only a flow this instance expects: an install that arrives after its move was called off (the
    // controller gave up on it at its deadline, and the abort came first) would leave a second owner.
    if (before?.move !== MoveState.INCOMING || before.track === undefined) return false;
    const track = before.track;
    // A new incarnation: the source's updates to eventual global state stay its own writer's.
    const flow = this.adopt(key, state, expected, Math.round(this.clock.now() * 1000));
    flow.track = track;
    track.catchingUp = true;
    track.waitUntil = this.clock.now() + waitMs;
    // The switch's packets already wait past a gap: without order to keep, start with them now.
    const first = flow.held[0];
    if (first !== undefined && track.guarantee !== 'order-preserving') {
      this.jump(flow, track, first.seq);
      this.drain(flow);
    }
    return true;
  }

  /**
   * This instance owns the flow from now on, with `state`, which covers every packet before `expected`:
   * the state a move installs, or a failed instance's replica that its successor takes over (the kept
   * copies of the packets since then follow as ordinary packets). What the flow already holds here runs
   * from `expected` on. This instance's own peers learn the flow at once, as version 1 of its life here.
   */
  adopt(key: FlowKey, state: Uint8Array, expected: number, born: number): FlowEntry {
    const flow = this.entry(key);
    flow.state = this.nf.codec.decodeFull(new ByteReader(state));
    flow.mark = this.nf.codec.mark(flow.state);
    flow.expected = expected;
    this.incarnate(flow, born);
    flow.deciding = false;
    flow.move = MoveState.NONE;
    flow.track = undefined;
    flow.batchCount = 0;
    flow.version = 1;
    this.onBatch?.(flow, 1, state, true);
    this.resume(flow);
    return flow;
  }

  /**
   * Move source, after the end-of-move marker (`marker`; absent when the hand-over is forced): hands every
   * parked packet, in stamp order, then the marker, to `forward` (the destination) — or, under `none`,
   * drops them, counted — and forgets the flow without releasing what it holds: the state lives on
   * elsewhere. Returns how many packets it had parked.
   */
  handOver(key: FlowKey, forward: Emit, marker?: Uint8Array): number {
    const flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow?.move !== MoveState.OUTGOING) return 0;
    const held = flow.held;
    const n = held.length;
    if (flow.track?.guarantee === 'none') {
      this.counters.drops[DropReason.MOVE_DISCARDED]! += n;
    } else {
      for (const h of held) {
        this.stamp.parse(h.buf, h.offset, h.length);
        this.stamp.setFlags(this.stamp.flags | StampFlag.FORWARDED);
        forward(h.buf, h.offset, h.length);
      }
      // After the packets, on the same path: a loss-free destination learns that nothing more comes.
      if (marker !== undefined && this.stamp.parse(marker, 0, marker.length) === DropReason.NONE) {
        this.stamp.setFlags(this.stamp.flags | StampFlag.FORWARDED);
        forward(marker, 0, marker.length);
      }
    }
    held.length = 0;
    flow.track = undefined;
    this.flows.delete(flow.key);
    this.onEnd?.(flow);
    return n;
  }

  /** A move that cannot finish, at its source: the flow resumes where it stopped. */
  abort(key: FlowKey): void {
    const flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow?.move !== MoveState.OUTGOING) return;
    flow.move = MoveState.NONE;
    flow.track = undefined;
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
    flow.track = undefined;
    this.flows.delete(flow.key);
    if (flow.state !== undefined) this.onEnd?.(flow);
  }

  private owns(flow: FlowEntry): boolean {
    const k = flow.key;
    return this.flows.get(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto) === flow;
  }

  /** Gives up the moves whose commit did not come in time (see `freeze`). */
  private expireFreezes(now: number): void {
    const frozen = this.frozen;
    let kept = 0;
    for (const flow of frozen) {
      const track = flow.track;
      if (flow.move !== MoveState.OUTGOING || track === undefined || track.committed) continue;
      if (now < track.frozenUntil) {
        frozen[kept++] = flow;
        continue;
      }
      this.counters.moveTimeouts++;
      flow.move = MoveState.NONE;
      flow.track = undefined;
      this.resume(flow);
    }
    frozen.length = kept;
  }

  /**
   * Parks a packet of a moving flow, in stamp order, bounded like the hold list. A source whose bound is
   * reached before the re-point takes the flow back rather than drop a packet; once the re-point is under
   * way, it may park twice as many (only packets stamped before the switch changed still come).
   */
  /** A packet that waits: by reference where the bytes last, else a copy (see receive). */
  private keep(seq: number, buf: Uint8Array, offset: number, length: number): Held {
    if (this.lasting) return { seq, buf, offset, length };
    return { seq, buf: buf.slice(offset, offset + length), offset: 0, length };
  }

  private park(flow: FlowEntry, seq: number, buf: Uint8Array, offset: number, length: number): void {
    const held = flow.held;
    let at = held.length;
    while (at > 0 && held[at - 1]!.seq > seq) at--;
    if (at > 0 && held[at - 1]!.seq === seq) return this.drop(DropReason.DUPLICATE);
    const committed = flow.track?.committed === true;
    if (held.length >= (committed ? 2 : 1) * this.options.maxHeld) {
      if (flow.move !== MoveState.OUTGOING || committed) return this.drop(DropReason.BUFFER_FULL);
      held.splice(at, 0, this.keep(seq, buf, offset, length));
      this.counters.moveOverflows++;
      flow.move = MoveState.NONE;
      flow.track = undefined;
      this.resume(flow);
      return;
    }
    held.splice(at, 0, this.keep(seq, buf, offset, length));
    this.counters.parked++;
  }

  /**
   * A loss-free or none destination catching up with its source. True when the packet was dealt with here;
   * false when it goes the ordinary way (after a jump, if it is the switch's first past a gap).
   */
  private catchUp(flow: FlowEntry, buf: Uint8Array, offset: number, length: number): boolean {
    const track = flow.track!;
    if (track.guarantee === 'order-preserving') return false;
    const seq = this.stamp.seq;
    if (track.late !== undefined && seq >= track.lateFrom && seq < track.lateTo) {
      this.runLate(flow, track, seq);
      return true;
    }
    if (seq > flow.expected && (this.stamp.flags & StampFlag.FORWARDED) === 0 && track.late === undefined) {
      this.jump(flow, track, seq);
      // Forwarded packets that came before it, past a sequence number the source never had, are late too.
      const held = flow.held;
      let n = 0;
      while (n < held.length && held[n]!.seq < seq) n++;
      if (n > 0) {
        const late = held.splice(0, n);
        for (const h of late) {
          this.stamp.parse(h.buf, h.offset, h.length);
          this.pkt.parse(h.buf, this.stamp.innerOffset, this.stamp.innerLength);
          if (flow.track !== undefined) this.runLate(flow, flow.track, h.seq);
        }
        // The views pointed at the late packets; back to the one that arrived.
        this.stamp.parse(buf, offset, length);
        this.pkt.parse(buf, this.stamp.innerOffset, this.stamp.innerLength);
      }
    } else if (track.guarantee === 'none') {
      flow.track = undefined;
    }
    return false;
  }

  /**
   * The destination's first packet from the switch is `first`, past sequence numbers only the source can
   * fill. `none` skips them for good; `loss-free` remembers them (as many as the source can have parked) and
   * processes each when it comes.
   */
  private jump(flow: FlowEntry, track: MoveTrack, first: number): void {
    if (track.guarantee === 'loss-free') {
      const from = Math.max(flow.expected, first - 2 * this.options.maxHeld);
      track.late = new Uint8Array((first - from + 7) >>> 3);
      track.lateFrom = from;
      track.lateTo = first;
      track.lateLeft = first - from;
    } else {
      flow.track = undefined;
    }
    flow.expected = first;
  }

  /** Processes a late packet (the views point at it) behind later ones, once. */
  private runLate(flow: FlowEntry, track: MoveTrack, seq: number): void {
    const i = seq - track.lateFrom;
    const bit = 1 << (i & 7);
    const late = track.late!;
    if ((late[i >>> 3]! & bit) !== 0) return this.drop(DropReason.DUPLICATE);
    late[i >>> 3]! |= bit;
    this.counters.lateProcessed++;
    const next = flow.expected;
    this.run(flow);
    flow.expected = next;
    if (--track.lateLeft === 0) this.caughtUp(flow);
  }

  /**
   * A loss-free or none destination has everything its source will hand over: the flow is an ordinary one
   * again. Late sequence numbers the source never had were lost before the move; they count as a gap.
   */
  private caughtUp(flow: FlowEntry): void {
    const track = flow.track;
    if (track === undefined) return;
    flow.track = undefined;
    this.counters.gapSkipped += track.lateLeft;
    // The source's packets were never copied to this instance's secondary, only the switch's since the
    // re-point: replicate them now rather than at the batch's end, so that a failure here cannot lose them.
    if (flow.batchCount > 0) this.closeBatch(flow);
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

  /** The flow's entry, made (with no state yet) if this worker has none. */
  private entry(key: FlowKey): FlowEntry {
    let flow = this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (flow === undefined) {
      flow = new FlowEntry(key, flowHash(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto));
      this.flows.set(key, flow);
      this.counters.flowsCreated++;
      flow.lastActive = this.clock.now();
      this.idle.add(flow, flow.lastActive + this.options.flowIdleMs);
    }
    return flow;
  }

  private incarnate(flow: FlowEntry, born: number): void {
    flow.born = born;
    flow.writer = writerOf(flow.key, born);
  }

  private expire(flow: FlowEntry): void {
    if (flow.batchCount > 0) this.closeBatch(flow);
    if (flow.state !== undefined) {
      this.ctx.set(flow.key, flow.hash, flow.expected, this.clock.now());
      // As if it were the flow's next packet: a successor that replays the flow and releases it counts
      // the release the same way, once.
      this.global.bind(flow.writer, flow.expected);
      this.nf.releaseFlow(flow.state, this.ctx);
      this.global.unbind();
    }
    this.flows.delete(flow.key);
    this.counters.flowsExpired++;
    this.onEnd?.(flow);
  }
}
