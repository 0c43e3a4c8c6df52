/**
 * What the controller keeps and answers: the instances it registered, and its records of moves and
 * failovers (GET /instances, /moves, /failovers), shared by the controller's parts (controller.ts,
 * mover.ts), the journal a standby carries on from, and the launchers and benchmarks that read them.
 */
import type { ErrorCode } from '../errors.js';
import type { Guarantee } from '../nf/guarantee.js';
import type { LoadReport } from './load-report.js';

/** Where a role's admin API is. */
export interface AdminAddress {
  host: string;
  admin: number;
}

export interface InstanceInfo {
  id: string;
  host: string;
  /** Data port (stamped packets, copies as a secondary). */
  port: number;
  /** Each worker thread's own data port, in order: the switch sends a flow's packets to its worker. */
  workers: number[];
  /** Replication port (peers' batches). */
  replication: number;
  /** Admin HTTP port. */
  admin: number;
}

export interface Registered extends InstanceInfo {
  load: LoadReport | undefined;
  reportedAt: number;
  /** The last load report's sequence number: an older one is a replay. */
  reportSeq: number;
  /** The cluster configuration this instance has acknowledged. */
  configured: boolean;
  /** When it registered, and when it became live for new flows (clock ms; undefined until then). */
  registeredAt: number;
  liveAt: number | undefined;
  /** Proves a liveness connection comes from the instance that registered (it got this in the answer). */
  token: string;
  /** Its fencing token: written into every packet it emits, so that the egress can drop them once it failed. */
  emitter: number;
}

/**
 * Starts NF instances when asked (POST /instances); they then register like any other. The local launcher
 * is one: it forked the controller and starts instances next to it.
 */
export interface Provisioner {
  /** Starts `count` instances (on `host`, when given); resolves with their ids once each has registered. */
  add(count: number, host: string | undefined): Promise<string[]>;
}

export interface FlowOwner {
  flow: string;
  owner: string | null;
  packets: number;
}

/** The steps of a move that its record times (mover.ts). */
export type MoveStep = 'frozen' | 'installed' | 'repointed' | 'handed_over';

/** The steps of a failover that its record times (failover.ts). */
export type FailoverStep = 'fenced' | 'listed' | 'egress' | 'takeover' | 'repointed';

/** One failover, as GET /failovers lists it (times in clock ms). */
export interface FailoverRecord {
  id: string;
  /** The instance that took its flows over; null when there was none. */
  successor: string | null;
  declared_at: number;
  /** From its last sign of life to the declaration. */
  detect_ms: number;
  flows: number;
  with_state: number;
  replayed: number;
  gaps: number;
  /** The successor's part: decoding the replicas and replaying the copies; when it had done so. */
  takeover_ms: number;
  took_over_at: number;
  /** When the switch sent its flows to the successor; from the last sign of life to then. */
  recovered_at: number;
  recover_ms: number;
  /** The instance started in its place, once it has joined. */
  replacement: string | null;
  /**
   * Where the time went, each step's duration in ms: `fenced` (steps 1 and 2), `listed` (the switch's
   * flows and clock), `egress` (step 3), `takeover` (step 4, the calls included), `repointed` (step 5).
   */
  steps_ms?: Partial<Record<FailoverStep, number>>;
  error?: string;
  /**
   * Set when step 6 still failed after every retry (its cluster's configuration, the ingress's secondaries):
   * the survivors may still count it as a peer, and flows whose secondary it was may have no replica until
   * the next change of membership reconfigures them.
   */
  reconfigure_error?: string;
}

/** A successor's answer to POST /takeover (NfInstance.takeOver). */
export interface TakeoverAnswer {
  flows: number;
  with_state: number;
  replayed: number;
  gaps: number;
  ms: number;
}

export interface MoveRecord {
  flow: string;
  from: string;
  to: string;
  guarantee: Guarantee;
  /** Inside one cluster: only the changes since the last replicated batch travel. */
  intra: boolean;
  state_bytes: number;
  /** Packets the source parked: forwarded to the destination, or dropped under `none`. */
  buffered: number;
  /** The whole exchange this flow moved in (every flow of one source in one request): its figures are theirs. */
  duration_ms: number;
  /**
   * Where that time went, each step's duration in ms: `frozen` (the destination told to expect the flows,
   * the source's freeze, which waits for its peers' acknowledgements inside a cluster), `installed` (the
   * destination's install and the source's commit), `repointed` (the switch's rules), `handed_over` (the
   * end-of-move markers, then the source's parked packets). A step not reached is absent.
   */
  steps_ms?: Partial<Record<MoveStep, number>>;
  /** Flows moved in that exchange. */
  group: number;
  aborted: boolean;
  /** Not attempted: the flow was already moving, already there, or owned by no known instance. */
  refused?: boolean;
  error?: string;
  code?: ErrorCode;
}

/** What a source's freeze answers per flow (null: not there to move). */
export interface Frozen {
  version: number;
  expected: number;
  last_delta_bytes: number;
  full_bytes: number;
  state?: string;
}

export function emptyRecord(flow: string, from: string, to: string, guarantee: Guarantee): MoveRecord {
  return {
    flow,
    from,
    to,
    guarantee,
    intra: false,
    state_bytes: 0,
    buffered: 0,
    duration_ms: 0,
    group: 0,
    aborted: false,
  };
}
