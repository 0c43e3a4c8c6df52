/**
 * What an NF instance's main thread and its workers say to each other. Packets never travel as
 * messages one by one. The switch sends each worker its flows' packets at the worker's own port; what
 * reaches the main thread for a worker (a replay, a moved flow's parked packets) it packs into one
 * ArrayBuffer per batch and transfers.
 *
 * Batch layout (records back to back, no padding):
 *
 *   +--------+----------------------+--------+----------------------+ ...
 *   | u16 n  |  n bytes: datagram   | u16 n  |  n bytes: datagram   |
 *   +--------+----------------------+--------+----------------------+ ...
 */
import type { RunDigest } from '../state/digest.js';
import type { StrongRequest } from '../state/global-strong.js';
import { ErrorCode, NfsError } from '../errors.js';
import { dropReasonName, type FlowKey } from '../types.js';
import type { FrozenFlow } from './flow-entry.js';
import type { Guarantee } from './guarantee.js';
import type { ProcessorOptions } from './processor.js';

export interface WorkerInit {
  index: number;
  nf: { type: string; config: Record<string, unknown> };
  options: ProcessorOptions;
  egress: { host: string; port: number };
  /** The address and port (0: any) the worker's own socket binds: the switch sends its flows there. */
  host: string;
  port: number;
  /**
   * Pools are strong (a mirror of the deployment's log, kept by the main thread: state/global-strong.ts),
   * or, without a log, this worker's share of each pool (`partition`).
   */
  strong: boolean;
  partition: { index: number; count: number };
  /** Float64 counters the worker publishes every tick and the main thread reads at scrape time. */
  counters: SharedArrayBuffer;
  instance: string;
  /** Whether closed batches are shipped to the main thread for replication to the cluster. */
  replicate: boolean;
  /** This worker's replica id for eventual global state, unique in the deployment (0 … 1023). */
  replica: number;
}

export type ToWorker =
  | ArrayBuffer
  | { type: 'digest' }
  | { type: 'stop' }
  /** Close every open batch and ship the records now. */
  | { type: 'flush' }
  /** Ship the whole eventual global state now (open batches stay open). */
  | { type: 'share' }
  /** Eventual global state from another worker or instance (CrdtGlobalState encodings) to join. */
  | { type: 'merge'; states: ArrayBuffer[] }
  /** This instance's fencing token from the controller, for every packet it emits from now on. */
  | { type: 'emitter'; token: number }
  /** After-replication release: the peers acknowledged every records block up to `ship`. */
  | { type: 'commit'; ship: number }
  /** A peer asked for this flow's full state (its replica has a gap). */
  | { type: 'resend'; key: FlowKey }
  /** Strong pools: the updates that applied since the last message, in log order, then claims' outcomes. */
  | { type: 'strong'; log: Uint8Array[]; answers: StrongAnswer[] }
  /**
   * A connection to a cluster peer came up (replication.ts, catch-up `round`): answered by `snapshot` parts,
   * the full state of every flow of this worker.
   */
  | { type: 'snapshot'; peer: string; round: number }
  /**
   * A step of a move of one or more flows (see FlowProcessor.expect/freeze/commit/install/handOver/abort/
   * forget); answered by one `moved` with a result per flow, in order.
   */
  | {
      type: 'move';
      id: number;
      op: MoveOp;
      flows: MoveFlow[];
      guarantee?: Guarantee;
      to?: { host: string; port: number };
      /**
       * Freeze: the destination's secondary, which gets a copy of each packet handed over, as it gets the
       * switch's copies of the packets after the re-point.
       */
      copyTo?: { host: string; port: number };
      /** Install: how long the source may take to hand over (see FlowProcessor.install). */
      waitMs?: number;
      /** Freeze: how long the move may take to commit before the source gives it up (FlowProcessor.freeze). */
      deadlineMs?: number;
    };

/** `handOver` forces a frozen flow's hand-over when its end-of-move marker has not come. */
export type MoveOp = 'expect' | 'freeze' | 'commit' | 'install' | 'handOver' | 'abort' | 'forget' | 'adopt';

/**
 * One flow of a move step: its state and next sequence number for an install. A failover's `adopt` takes
 * the state (when a replica was usable) and then the kept copies to replay (`replay`, laid out like a batch).
 */
export interface MoveFlow {
  key: FlowKey;
  state?: Uint8Array;
  expected?: number;
  born?: number;
  replay?: Uint8Array;
}

/** One flow's answer to a move step: `frozen` for a freeze, `parked` for a hand-over. */
export interface MoveResult {
  ok: boolean;
  frozen?: FrozenFlow;
  parked?: number;
}
/** What a worker's claim came to: the value, or -1 for none (exhausted, or not decided in time). */
export interface StrongAnswer {
  pool: string;
  owner: string;
  incarnation: number;
  value: number;
}

export type FromWorker =
  /** Started; the switch may send this worker's flows to `port`. */
  | { type: 'ready'; port: number }
  /** Claims and releases of strong pools that this worker's flows asked for, oldest first. */
  | { type: 'strong'; requests: readonly StrongRequest[] }
  | { type: 'digest'; digest: RunDigest }
  | { type: 'stopped' }
  /**
   * Replication records of the batches closed since the last message (layout: nf/replication.ts); `global`
   * is the eventual global state among them (a delta, or all of it), for the instance's other workers.
   */
  | { type: 'records'; records: ArrayBuffer; ship: number; global?: ArrayBuffer }
  /**
   * Part of catch-up `round` for `peer`: full-state records (same layout) of this worker's flows at their
   * current versions, sent after every records message that came before; `last` on the final part.
   */
  | { type: 'snapshot'; peer: string; round: number; records: ArrayBuffer; last: boolean }
  /** The answer to a `move` step; a result's `ok` is false when its flow was not in a state for that step. */
  | { type: 'moved'; id: number; results: MoveResult[] }
  /** A moving flow's end-of-move marker arrived and its parked packets went to the destination (or, under `none`, were dropped). */
  | { type: 'handedOver'; key: FlowKey; parked: number };

/**
 * The order of the counters in a worker's shared Float64Array; drops by reason follow them. Each is exported
 * as `nfstate_nf_<name in snake case>_total` (`flows`: `nfstate_nf_flows`, a gauge). `sendErrors` counts
 * the output and parked packets its sockets could not send; `handed`, the datagrams of `received` that came
 * in the main thread's transfers rather than at the worker's port.
 */
export const WORKER_COUNTERS = [
  'received',
  'handed',
  'processed',
  'forwarded',
  'nfDropped',
  'held',
  'gapSkipped',
  'batches',
  'deltaBytes',
  'flowsCreated',
  'flowsExpired',
  'events',
  'deciding',
  'moveOverflows',
  'moveTimeouts',
  'lateProcessed',
  'flows',
  'sendErrors',
] as const;
export const DROPS_AT = WORKER_COUNTERS.length;
export const COUNTER_SLOTS = DROPS_AT + dropReasonName.length;

/** Worker threads per instance, at most: also how many worker ports an instance may name. */
export const MAX_THREADS = 64;

/** A list of worker ports (`field` names it in the error), or a CONFIG error; absent is none. */
export function workerPorts(v: unknown, field: string): number[] {
  const ports = v ?? [];
  const port = (p: unknown): boolean => typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;
  if (!Array.isArray(ports) || ports.length > MAX_THREADS || !ports.every(port))
    throw new NfsError(
      ErrorCode.CONFIG,
      `${field}: must be a list of at most ${MAX_THREADS} port numbers 1..65535`,
    );
  return ports as number[];
}
