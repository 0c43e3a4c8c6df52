/** A flow's entry in a FlowProcessor (processor.ts), its part in a move, and the processor's counters. */
import type { FlowKey } from '../types.js';
import { dropReasonName } from '../types.js';
import type { Guarantee } from './guarantee.js';

export interface Held {
  seq: number;
  buf: Uint8Array;
  offset: number;
  length: number;
}

/** Where a flow is in a move (see `expect`, `freeze`, `install`, `handOver`). */
export const MoveState = { NONE: 0, INCOMING: 1, OUTGOING: 2 } as const;
export type MoveState = (typeof MoveState)[keyof typeof MoveState];

/**
 * A flow's part in a move while it lasts. At the source: whether the re-point is under way. At the
 * destination after the install: whether the source's hand-over may still come — until then an
 * order-preserving destination does not give up on the gap the source's packets will fill, and a loss-free
 * one keeps the window of sequence numbers the switch's packets skipped, one bit each for those processed.
 *
 *   lateFrom                 lateTo = the switch's first packet here
 *      |  1  0  1  1  0  …  |  processed normally from here on (flow.expected)
 */
export class MoveTrack {
  /** Source: the controller is re-pointing the switch, so parking may exceed `maxHeld` (up to twice it). */
  committed = false;
  /** Source: not committed by then (clock ms), the move is given up and the flow resumes here. */
  frozenUntil = Infinity;
  /** Destination: installed, the source's packets may still come. */
  catchingUp = false;
  /** Order-preserving destination: until then (clock ms) a gap is not skipped; the gap timeout runs after. */
  waitUntil = 0;
  late: Uint8Array | undefined = undefined;
  lateFrom = 0;
  lateTo = 0;
  /** Late sequence numbers not yet seen. */
  lateLeft = 0;
  constructor(readonly guarantee: Guarantee) {}
}

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
  /** Set only while the flow moves. */
  track: MoveTrack | undefined = undefined;
  /** After-replication mode: this batch's output, as (buffer, offset, length) triples. */
  out: (Uint8Array | number)[] = [];
  /**
   * The flow's incarnation here: the ingress time (µs) of the packet its state began with, or of the move
   * that brought it. Replication carries it, so that a failover's successor replays the flow's packets as
   * the same writer of eventual global state (`writer`), whose updates then count once.
   */
  born = 0;
  writer = 0;
  /** Its first packet waits for a strong global decision: every packet is parked until `decided`. */
  deciding = false;

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
  /** New flows that waited for a strong global decision before their first packet could run. */
  deciding = 0;
  /** Packets parked during moves, and end-of-move markers for flows not moving here. */
  parked = 0;
  strayMarkers = 0;
  /** Moves the source took back because its parked packets reached the bound before the re-point. */
  moveOverflows = 0;
  /** Moves the source took back because no commit came before the move's deadline. */
  moveTimeouts = 0;
  /** Packets a loss-free destination processed behind later ones (the source's, forwarded). */
  lateProcessed = 0;
  readonly drops = new Float64Array(dropReasonName.length);
}
