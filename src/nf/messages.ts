/**
 * What an NF instance's main thread and its workers say to each other. Packets never travel as
 * messages one by one: the main thread packs a batch of datagrams into one ArrayBuffer and transfers it.
 *
 * Batch layout (records back to back, no padding):
 *
 *   +--------+----------------------+--------+----------------------+ ...
 *   | u16 n  |  n bytes: datagram   | u16 n  |  n bytes: datagram   |
 *   +--------+----------------------+--------+----------------------+ ...
 */
import type { RunDigest } from '../state/digest.js';
import type { FlowKey } from '../types.js';
import type { FrozenFlow, ProcessorOptions } from './processor.js';

export interface WorkerInit {
  index: number;
  nf: { type: string; config: Record<string, unknown> };
  options: ProcessorOptions;
  egress: { host: string; port: number };
  /** This worker's share of pools that must be unique across the deployment. */
  partition: { index: number; count: number };
  /** Float64 counters the worker publishes every tick and the main thread reads at scrape time. */
  counters: SharedArrayBuffer;
  instance: string;
  /** Whether closed batches are shipped to the main thread for replication to the cluster. */
  replicate: boolean;
}

export type ToWorker =
  | ArrayBuffer
  | { type: 'digest' }
  | { type: 'stop' }
  /** After-replication release: the peers acknowledged every records block up to `ship`. */
  | { type: 'commit'; ship: number }
  /** A peer asked for this flow's full state (its replica has a gap). */
  | { type: 'resend'; key: FlowKey }
  /** A step of a flow move (see FlowProcessor.expect/freeze/install/abort); answered by `moved`. */
  | {
      type: 'move';
      id: number;
      op: MoveOp;
      key: FlowKey;
      to?: { host: string; port: number };
      state?: Uint8Array;
      expected?: number;
    };

export type MoveOp = 'expect' | 'freeze' | 'install' | 'abort' | 'forget';
export type FromWorker =
  | { type: 'ready' }
  | { type: 'digest'; digest: RunDigest }
  | { type: 'stopped' }
  /** Replication records of the batches closed since the last message (layout: nf/replication.ts). */
  | { type: 'records'; records: ArrayBuffer; ship: number }
  /** The answer to a `move` step; `frozen` for a freeze, `ok` false when the flow was not in a state to move. */
  | { type: 'moved'; id: number; ok: boolean; frozen?: FrozenFlow }
  /** A moving flow's end-of-move marker arrived and its parked packets went to the destination. */
  | { type: 'handedOver'; key: FlowKey; forwarded: number };

/** The order of the counters in a worker's shared Float64Array; drops by reason follow them. */
export const WORKER_COUNTERS = [
  'received',
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
  'flows',
] as const;
export const DROPS_AT = WORKER_COUNTERS.length;
export const COUNTER_SLOTS = DROPS_AT + 16;
