/**
 * Source NAT: connections that internal hosts open get the public address and a port from a pool
 * shared by every instance (`nat.port`), and replies addressed to that public port are translated back.
 *
 *   nat: { publicIp: '203.0.113.1', portFirst: 1024, portLast: 65535, internal: '10.0.0.0/8' }
 *
 * A flow is classified once, by its first packet:
 * - outbound: the source is internal. The flow acquires a port; each packet from the initiator leaves
 *   with source publicIp:port, and each reply, addressed to publicIp:port by the remote end, gets its
 *   destination rewritten back to the initiator. The switch stamps such replies as part of the flow
 *   (`replyOwner`: the port's holder in global state), so they reach the instance that holds it. Packets
 *   of the opposite direction that already carry the internal address (a traffic generator's view of the
 *   reply) pass unchanged.
 * - inbound: addressed to publicIp, and the port's owner is a connection with this packet's sender as
 *   its remote end (address- and port-dependent filtering, RFC 4787): a reply the switch could not yet
 *   tell apart (the port's claim had not reached it). Each packet from the sender gets its destination
 *   rewritten to the internal endpoint. The lookup goes through `global.decide`, so an oracle replaying
 *   the traffic sees the same answer the deployment saw.
 * - rejected: anything else, or an exhausted pool. Every packet of the flow is dropped.
 *
 * ICMP echo uses its identifier as the port. Other ICMP messages and other protocols have no port:
 * outbound ones get only their source address rewritten, and inbound ones are rejected.
 */
import { IpProto, Verdict } from '../types.js';
import type {
  FlowContext,
  FlowKey,
  GlobalState,
  NetworkFunction,
  PacketView,
  SharedPool,
  StateCodec,
} from '../types.js';
import type { ByteReader, ByteWriter } from '../state/bytes.js';
import { ConfigReader, configError } from './config.js';

export const NAT_PORT_POOL = 'nat.port';
/** The decision behind an inbound flow: internalIp * 65536 + internalPort, or -1 for no mapping. */
export const NAT_INBOUND_DECISION = 'nat.inbound';

export const NatRole = { OUTBOUND: 0, INBOUND: 1, REJECTED: 2 } as const;
export type NatRole = (typeof NatRole)[keyof typeof NatRole];

export interface NatConfig {
  readonly publicIp: number;
  readonly portFirst: number;
  readonly portLast: number;
  readonly internalNetwork: number;
  readonly internalMask: number;
}

export class NatState {
  role: NatRole = NatRole.REJECTED;
  /** The first packet's source, before translation: packets from it are the initiator's direction. */
  initIp = 0;
  initPort = 0;
  /** The public port: held from the pool when outbound, the one addressed when inbound; -1 for none. */
  extPort = -1;
  /** Inbound flows: the internal endpoint the public port maps to. */
  innerIp = 0;
  innerPort = 0;
  packets = 0;
  bytes = 0;
  lastSeen = 0;
}

export function parseNatConfig(config: Record<string, unknown>): NatConfig {
  const c = new ConfigReader('', config);
  const publicIp = c.ipv4('publicIp', '203.0.113.1');
  const portFirst = c.integer('portFirst', 1024, 1, 65535);
  const portLast = c.integer('portLast', 65535, 1, 65535);
  if (portLast < portFirst)
    throw configError('portLast', `must be >= portFirst (${portFirst}), got ${portLast}`);
  const internal = c.cidr('internal', '10.0.0.0/8');
  c.done();
  return { publicIp, portFirst, portLast, internalNetwork: internal.network, internalMask: internal.mask };
}

/** Whether this packet has a port (or echo identifier) that NAT can translate. */
function hasPort(pkt: PacketView): boolean {
  const p = pkt.proto;
  if (p === IpProto.TCP || p === IpProto.UDP) return true;
  return p === IpProto.ICMP && (pkt.icmpType === 0 || pkt.icmpType === 8);
}

class NatCodec implements StateCodec<NatState> {
  encodeFull(s: NatState, w: ByteWriter): void {
    w.u8(s.role);
    w.u32(s.initIp);
    w.u16(s.initPort);
    w.u32(s.extPort + 1);
    w.u32(s.innerIp);
    w.u16(s.innerPort);
    w.u53(s.packets);
    w.u53(s.bytes);
    w.f64(s.lastSeen);
  }

  decodeFull(r: ByteReader): NatState {
    const s = new NatState();
    const role = r.u8();
    s.role = role === NatRole.OUTBOUND || role === NatRole.INBOUND ? role : NatRole.REJECTED;
    s.initIp = r.u32();
    s.initPort = r.u16();
    s.extPort = r.u32() - 1;
    s.innerIp = r.u32();
    s.innerPort = r.u16();
    s.packets = r.u53();
    s.bytes = r.u53();
    s.lastSeen = r.f64();
    return s;
  }

  /** The mapping is fixed at the flow's start, so only the counters ever change. */
  mark(s: NatState): number {
    return s.packets;
  }

  encodeDelta(s: NatState, _since: number, w: ByteWriter): void {
    w.u53(s.packets);
    w.u53(s.bytes);
    w.f64(s.lastSeen);
  }

  applyDelta(s: NatState, r: ByteReader): void {
    // Read everything before assigning, so a truncated delta leaves the state as it was.
    const packets = r.u53();
    const bytes = r.u53();
    s.lastSeen = r.f64();
    s.packets = packets;
    s.bytes = bytes;
  }
}

export class Nat implements NetworkFunction<NatState> {
  readonly name = 'nat';
  readonly codec: StateCodec<NatState> = new NatCodec();
  readonly config: NatConfig;
  private readonly pool: SharedPool;
  private readonly global: GlobalState;
  /** The inbound lookup, made once; it reads the pending* fields set just before `decide` runs it. */
  private readonly lookupInbound: () => number;
  private pendingIp = 0;
  private pendingPort = 0;
  private pendingExt = 0;
  private pendingProto = 0;

  constructor(config: NatConfig, global: GlobalState) {
    this.config = config;
    this.global = global;
    this.pool = global.pool(NAT_PORT_POOL, config.portFirst, config.portLast);
    this.lookupInbound = () => this.findInbound();
  }

  initFlow(pkt: PacketView, ctx: FlowContext): NatState {
    const s = new NatState();
    s.initIp = pkt.srcIp;
    s.initPort = pkt.srcPort;
    const cfg = this.config;
    if ((pkt.srcIp & cfg.internalMask) >>> 0 === cfg.internalNetwork) {
      if (hasPort(pkt)) {
        const port = this.pool.acquire(ctx.key);
        if (port < 0) return s;
        s.extPort = port;
      }
      s.role = NatRole.OUTBOUND;
    } else if (pkt.dstIp === cfg.publicIp && hasPort(pkt)) {
      this.pendingIp = pkt.srcIp;
      this.pendingPort = pkt.srcPort;
      this.pendingExt = pkt.dstPort;
      this.pendingProto = pkt.proto;
      const inner = this.global.decide(NAT_INBOUND_DECISION, ctx.key, this.lookupInbound);
      s.extPort = pkt.dstPort;
      if (inner >= 0) {
        s.role = NatRole.INBOUND;
        s.innerIp = Math.floor(inner / 65536) >>> 0;
        s.innerPort = inner % 65536;
      }
    }
    return s;
  }

  process(pkt: PacketView, s: NatState, ctx: FlowContext): Verdict {
    s.packets++;
    s.bytes += pkt.length;
    s.lastSeen = ctx.now;
    if (s.role === NatRole.REJECTED) return Verdict.DROP;
    if (pkt.srcIp !== s.initIp || pkt.srcPort !== s.initPort) {
      if (
        s.role === NatRole.OUTBOUND &&
        s.extPort >= 0 &&
        pkt.dstIp === this.config.publicIp &&
        pkt.dstPort === s.extPort &&
        hasPort(pkt)
      ) {
        pkt.setDstIp(s.initIp);
        pkt.setDstPort(s.initPort);
      }
      return Verdict.FORWARD;
    }
    if (s.role === NatRole.OUTBOUND) {
      pkt.setSrcIp(this.config.publicIp);
      if (s.extPort >= 0) pkt.setSrcPort(s.extPort);
    } else {
      pkt.setDstIp(s.innerIp);
      pkt.setDstPort(s.innerPort);
    }
    return Verdict.FORWARD;
  }

  releaseFlow(s: NatState): void {
    if (s.role === NatRole.OUTBOUND && s.extPort >= 0) this.pool.release(s.extPort);
  }

  allocations(s: NatState): Record<string, number> {
    if (s.role === NatRole.OUTBOUND) return s.extPort >= 0 ? { [NAT_PORT_POOL]: s.extPort } : {};
    if (s.role === NatRole.INBOUND) return { [NAT_INBOUND_DECISION]: s.innerIp * 65536 + s.innerPort };
    // A rejected inbound flow still records that the lookup failed, so a replay rejects it too.
    return s.extPort >= 0 ? { [NAT_INBOUND_DECISION]: -1 } : {};
  }

  /**
   * The connection that holds the public port `pkt` is addressed to, when `pkt` comes from its remote end;
   * null when no connection holds that port.
   */
  replyOwner(pkt: PacketView): FlowKey | null | undefined {
    if (pkt.dstIp !== this.config.publicIp || !hasPort(pkt)) return undefined;
    const owner = this.pool.ownerOf(pkt.dstPort);
    if (owner === undefined) return null;
    return remoteEnd(owner, pkt.proto, pkt.srcIp, pkt.srcPort) < 0 ? undefined : owner;
  }

  /** The internal endpoint behind pendingExt, if its owner's remote end is the pending sender. */
  private findInbound(): number {
    const owner = this.pool.ownerOf(this.pendingExt);
    return owner === undefined ? -1 : remoteEnd(owner, this.pendingProto, this.pendingIp, this.pendingPort);
  }
}

/**
 * Where `ip:port` is one end of the connection `owner` (a holder of a public port): the other end, the
 * internal one, as internalIp * 65536 + internalPort; -1 when it is not. ICMP echo replies carry the
 * public identifier, not the original one, so only the address is compared.
 */
function remoteEnd(owner: FlowKey, proto: number, ip: number, port: number): number {
  if (owner.proto !== proto) return -1;
  const anyPort = proto === IpProto.ICMP;
  if (owner.srcIp === ip && (anyPort || owner.srcPort === port)) return owner.dstIp * 65536 + owner.dstPort;
  if (owner.dstIp === ip && (anyPort || owner.dstPort === port)) return owner.srcIp * 65536 + owner.srcPort;
  return -1;
}

export function createNat(config: Record<string, unknown>, global: GlobalState): Nat {
  return new Nat(parseNatConfig(config), global);
}
