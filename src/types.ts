/**
 * The contracts between nfstate's layers, in one place: flows, packets, the NF API, state codecs,
 * global state, clock and metrics. Implementations live in their own folders; each contract has an
 * in-memory implementation for tests and for the embedded single-machine default.
 */
import type { ByteReader, ByteWriter } from './state/bytes.js';

/** IPv4 protocol numbers nfstate understands. */
export const IpProto = { ICMP: 1, TCP: 6, UDP: 17 } as const;

/**
 * A connection's 5-tuple, IPv4 addresses as unsigned 32-bit numbers. Built once per flow (never per
 * packet). Both directions of a connection have the same canonical key (see packet/flow-key.ts).
 */
export interface FlowKey {
  readonly srcIp: number;
  readonly dstIp: number;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly proto: number;
}

/** Why a packet or frame was dropped. Counters are kept per reason. */
export const DropReason = {
  NONE: 0,
  TRUNCATED: 1,
  BAD_LENGTH: 2,
  BAD_VERSION: 3,
  BAD_CHECKSUM: 4,
  BAD_HEADER: 5,
  UNSUPPORTED: 6,
  DUPLICATE: 7,
  GAP_TIMEOUT: 8,
  BUFFER_FULL: 9,
  POLICY: 10,
  STALE_EPOCH: 11,
  /** Parked at a move's source and dropped there: the move's guarantee was `none`. */
  MOVE_DISCARDED: 12,
  /** A VXLAN frame whose VNI names no host network of the edge. */
  UNKNOWN_VNI: 13,
  /** An Ethernet frame that carries neither IPv4 nor ARP (IPv6, VLAN-tagged, LLDP …). */
  NOT_IPV4: 14,
  /** A packet for an address that no host network of the edge holds, or whose host never answered ARP. */
  NO_ROUTE: 15,
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];
export const dropReasonName: readonly string[] = Object.entries(DropReason)
  .sort((a, b) => a[1] - b[1])
  .map(([name]) => name.toLowerCase());

/**
 * A reusable, zero-copy view of one IPv4 packet inside a larger buffer. `parse` re-points it at new
 * bytes and validates them; getters read fields in place; setters rewrite in place and keep the IPv4
 * and L4 checksums correct by incremental update (RFC 1624).
 */
export interface PacketView {
  readonly buf: Uint8Array;
  readonly offset: number;
  readonly length: number;
  /** Re-point at buf[offset, offset+length) and validate; returns DropReason.NONE when valid. */
  parse(buf: Uint8Array, offset: number, length: number): DropReason;
  readonly proto: number;
  readonly srcIp: number;
  readonly dstIp: number;
  readonly ttl: number;
  /** 0 for ICMP. */
  readonly srcPort: number;
  readonly dstPort: number;
  /** TCP flags byte (FIN=1 SYN=2 RST=4 PSH=8 ACK=16); 0 for other protocols. */
  readonly tcpFlags: number;
  /** Absolute offset of the L4 payload in buf, and its length. */
  readonly payloadOffset: number;
  readonly payloadLength: number;
  /** ICMP type and code (0 otherwise). */
  readonly icmpType: number;
  readonly icmpCode: number;
  setSrcIp(ip: number): void;
  setDstIp(ip: number): void;
  setSrcPort(port: number): void;
  setDstPort(port: number): void;
}

/** What `process` decided for a packet. A forwarded packet may have been rewritten in place. */
export const Verdict = { FORWARD: 0, DROP: 1 } as const;
export type Verdict = (typeof Verdict)[keyof typeof Verdict];

/**
 * Encodes a flow's state in full and as deltas. `mark(state)` is a cheap position (for example a log
 * length) taken when a batch closes; `encodeDelta(state, mark)` writes what changed since that mark, and
 * `applyDelta` applies it to a copy that was at that mark. Invariant, tested for every NF:
 *   applyDelta(decodeFull(full@m), encodeDelta(s, m)) equals s.
 */
export interface StateCodec<S> {
  encodeFull(state: S, w: ByteWriter): void;
  decodeFull(r: ByteReader): S;
  mark(state: S): number;
  encodeDelta(state: S, since: number, w: ByteWriter): void;
  applyDelta(state: S, r: ByteReader): void;
}

/** A structured event an NF raises (an IDS alert); rare, so it may allocate. */
export interface NfEvent {
  readonly type: string;
  readonly [field: string]: string | number | boolean;
}

/**
 * Per-packet context. One object per worker, re-filled before each `process` call, so NFs must not keep
 * it. Everything an NF may depend on besides the packet and its flow state comes from here, which is what
 * makes processing deterministic and replay exact.
 */
export interface FlowContext {
  /** The flow's canonical key. */
  readonly key: FlowKey;
  /** The packet's flow sequence number (1, 2, 3 …). */
  readonly seq: number;
  /** The packet's ingress time from its stamp, in milliseconds since the Unix epoch (fractional). */
  readonly now: number;
  /** Deterministic uniform [0, 1), seeded by flow and sequence number. */
  random(): number;
  readonly global: GlobalState;
  emit(event: NfEvent): void;
}

/**
 * Pool of integers (NAT ports, LB slots) shared by many flows. An allocation belongs to one flow for its
 * lifetime. Strongly consistent: every instance sees the same owner for a value.
 */
export interface SharedPool {
  /** A free value for `owner`, or -1 when the pool is exhausted. The same owner asking again gets the same value. */
  acquire(owner: FlowKey): number;
  release(value: number): void;
  /** The flow that holds `value`, or undefined. */
  ownerOf(value: number): FlowKey | undefined;
  readonly size: number;
  readonly inUse: number;
}

/** Commutative per-key counters (eventual: updates commute, so merge order does not matter). */
export interface SharedCounters {
  add(key: number, delta: number): number;
  get(key: number): number;
}

/** Per-key sets of distinct small integers (eventual: set union). */
export interface SharedSets {
  /** Adds `member` to the set at `key`; returns the set's size afterwards. */
  add(key: number, member: number): number;
  size(key: number): number;
}

/**
 * State shared by many flows. NFs resolve handles once, at construction; the hot path only calls the
 * handles. Pools are strong; counters and sets are eventual. This implementation is
 * process-local (state/global-local.ts); CRDT and etcd-backed ones implement the same interface.
 */
export interface GlobalState {
  pool(name: string, first: number, last: number): SharedPool;
  counters(name: string): SharedCounters;
  sets(name: string): SharedSets;
  /**
   * A per-flow choice that depends on state shared by many flows (an LB backend by least connections).
   * Runs `choose` once; the oracle's implementation returns the choice the deployment made instead.
   */
  decide(name: string, key: FlowKey, choose: () => number): number;
  /**
   * The runtime names the flow packet the NF is about to run — `writer`, the flow's incarnation here
   * (crdt/pn-counter.ts writerOf), and its sequence number — and `unbind`s after the call, so that the
   * eventual updates the call makes count once even when a successor replays the packet after a
   * failover. Process-local state has nothing to do with it.
   */
  bind(writer: number, seq: number): void;
  unbind(): void;
  /** A deterministic dump of everything, for comparison against the oracle. */
  snapshot(): GlobalSnapshot;
}

export interface GlobalSnapshot {
  pools: Record<string, { value: number; owner: string }[]>;
  counters: Record<string, Record<string, number>>;
  sets: Record<string, Record<string, number[]>>;
}

/** A network function. `S` is its per-flow state. */
export interface NetworkFunction<S> {
  readonly name: string;
  /** A new flow, seen first through `pkt` (whose direction is the initiator's). */
  initFlow(pkt: PacketView, ctx: FlowContext): S;
  process(pkt: PacketView, state: S, ctx: FlowContext): Verdict;
  /** The flow ended (idle timeout or close): give back what it holds in global state. */
  releaseFlow(state: S, ctx: FlowContext): void;
  readonly codec: StateCodec<S>;
  /** Allocations this flow's state holds from shared pools, for the oracle and the allocation checks. */
  allocations(state: S): Record<string, number>;
  /**
   * For an NF that rewrites addresses (a NAT): the connection whose state translates `pkt`, a packet from
   * outside addressed to a translated endpoint, as global state knows it. `null`: `pkt` is addressed to a
   * translated endpoint that no connection holds (yet: the switch waits a moment for the log); undefined:
   * it is addressed to nothing this NF translates. The switch stamps such a packet as part of that
   * connection, so both directions of a connection reach the instance that holds its state.
   */
  replyOwner?(pkt: PacketView): FlowKey | null | undefined;
  /** For a composite NF (a chain): each NF that has seen the flow and its part of the state. */
  parts?(state: S): readonly NfPart[];
}

export interface NfPart {
  readonly nf: NetworkFunction<unknown>;
  readonly state: unknown;
}

/** Builds an NF from its validated config section and its collaborators. */
export type NfFactory = (config: Record<string, unknown>, global: GlobalState) => NetworkFunction<unknown>;

/** Milliseconds since the Unix epoch, fractional; injected so tests can drive time. */
export interface Clock {
  now(): number;
}

export interface Logger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * A metric source: plain fields read at scrape time, so counting costs one increment on the hot path.
 * `collect` appends samples: [name, labels, value].
 */
export interface MetricSource {
  collect(out: MetricSample[]): void;
}
export type MetricSample = readonly [name: string, labels: Record<string, string>, value: number];
