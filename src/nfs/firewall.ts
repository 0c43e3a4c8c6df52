/**
 * Stateful firewall: the first packet of a connection is matched against an ordered rule list (first
 * match wins, else the default), and the verdict then holds for the whole connection, both directions,
 * while a TCP state machine or an idle timer tracks whether the connection is still alive.
 *
 *   firewall:
 *     rules:
 *       - { action: allow, src: 10.0.0.0/8, proto: tcp, dstPort: '80' }
 *       - { action: deny, dst: 192.0.2.0/24 }
 *       - { action: allow, proto: udp, dstPort: '1000-2000' }
 *     default: deny
 *     strict: true          # drop TCP connections not seen from their SYN
 *     udpIdleMs: 30000      # UDP and ICMP pseudo-connections
 *     tcpIdleMs: 300000
 *     timeWaitMs: 120000
 *
 * A connection ends by RST, by TIME_WAIT running out, or by idling past its timeout. The next packet
 * of the flow then starts a new connection (its sender becomes the initiator) and meets the rules
 * again; in strict mode a TCP packet can only start one if it is a SYN without ACK.
 */
import { IpProto, Verdict } from '../types.js';
import type { FlowContext, NetworkFunction, PacketView, StateCodec } from '../types.js';
import { ErrorCode, NfsError } from '../errors.js';
import type { ByteReader, ByteWriter } from '../state/bytes.js';
import { ConfigReader, cidrAt, configError, isRecord } from './config.js';

const FIN = 1;
const SYN = 2;
const RST = 4;
const ACK = 16;

/** FirewallState.fins bits: whose FIN has been seen, and whether the second one was the initiator's. */
const FIN_INIT = 1;
const FIN_RESP = 2;
const FIN_BOTH = 3;
const LAST_FIN_INIT = 4;

/**
 * The connection as a middlebox sees it. Each FIN_WAIT/CLOSE_WAIT names whose FIN came first
 * (initiator's / responder's); after both FINs it is LAST_ACK if the second FIN also acknowledged the
 * first, else CLOSING (simultaneous close), and TIME_WAIT once the last FIN is acknowledged.
 * UDP and ICMP use NEW (only the initiator has spoken) and ESTABLISHED (the responder answered).
 */
export const ConnState = {
  NONE: 0,
  SYN_SENT: 1,
  SYN_RECEIVED: 2,
  ESTABLISHED: 3,
  FIN_WAIT: 4,
  CLOSE_WAIT: 5,
  CLOSING: 6,
  LAST_ACK: 7,
  TIME_WAIT: 8,
  CLOSED: 9,
  NEW: 10,
} as const;
export type ConnState = (typeof ConnState)[keyof typeof ConnState];
export const connStateName: readonly string[] = Object.entries(ConnState)
  .sort((a, b) => a[1] - b[1])
  .map(([name]) => name.toLowerCase());

const PROTO_ANY = 0;
const ACTION_ALLOW = 1;
const ACTION_DENY = 0;

/** The rule list as parallel typed arrays, one slot per rule, so matching reads no objects. */
export interface CompiledRules {
  readonly count: number;
  readonly action: Uint8Array;
  readonly proto: Uint8Array;
  readonly srcNet: Uint32Array;
  readonly srcMask: Uint32Array;
  readonly dstNet: Uint32Array;
  readonly dstMask: Uint32Array;
  /** Whether the rule names ports; such a rule matches only TCP and UDP. */
  readonly hasPorts: Uint8Array;
  readonly portLo: Uint16Array;
  readonly portHi: Uint16Array;
}

export interface FirewallConfig {
  readonly rules: CompiledRules;
  readonly defaultAllow: boolean;
  readonly strict: boolean;
  readonly udpIdleMs: number;
  readonly tcpIdleMs: number;
  readonly timeWaitMs: number;
}

export class FirewallState {
  /** Whether the current connection was allowed when it started. */
  allowed = false;
  /** The rule that decided, or -1 for the default. */
  rule = -1;
  conn: ConnState = ConnState.NONE;
  /** FINs seen: 1 the initiator's, 2 the responder's, 4 set when the initiator's came second. */
  fins = 0;
  /** The endpoint that started the current connection. */
  initIp = 0;
  initPort = 0;
  /** When the current connection started, and the last packet of the flow. */
  startedAt = 0;
  lastSeen = 0;
  /** Per direction: initiator → responder ("fwd") and back ("rev"). Dropped packets are counted too. */
  pktsFwd = 0;
  pktsRev = 0;
  bytesFwd = 0;
  bytesRev = 0;
  dropped = 0;
  /** Times the rules were consulted: once per connection, plus once per packet strict mode refused. */
  evaluations = 0;
}

function parsePortRange(path: string, v: unknown): [number, number] {
  if (typeof v === 'number') v = String(v);
  if (typeof v !== 'string') throw configError(path, `must be a port '80' or a range '1000-2000'`);
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(v.trim());
  if (m === null) throw configError(path, `'${v}' is not a port '80' or a range '1000-2000'`);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo > 65535 || hi > 65535 || lo > hi) throw configError(path, `'${v}' is not a range within 0-65535`);
  return [lo, hi];
}

const PROTOS: Readonly<Record<string, number>> = {
  any: PROTO_ANY,
  tcp: IpProto.TCP,
  udp: IpProto.UDP,
  icmp: IpProto.ICMP,
};

export function compileRules(rules: unknown): CompiledRules {
  if (rules !== undefined && !Array.isArray(rules)) throw configError('rules', 'must be a list of rules');
  const list: unknown[] = rules ?? [];
  const n = list.length;
  const out = {
    count: n,
    action: new Uint8Array(n),
    proto: new Uint8Array(n),
    srcNet: new Uint32Array(n),
    srcMask: new Uint32Array(n),
    dstNet: new Uint32Array(n),
    dstMask: new Uint32Array(n),
    hasPorts: new Uint8Array(n),
    portLo: new Uint16Array(n),
    portHi: new Uint16Array(n),
  };
  for (let i = 0; i < n; i++) {
    const path = `rules[${i}]`;
    const rule = list[i];
    if (!isRecord(rule))
      throw configError(path, 'must be an object such as { action: allow, dst: 10.0.0.0/8 }');
    const c = new ConfigReader(path, rule);
    out.action[i] = c.oneOf('action', 'allow', ['allow', 'deny']) === 'allow' ? ACTION_ALLOW : ACTION_DENY;
    if (rule.action === undefined) throw configError(`${path}.action`, `is required (allow or deny)`);
    const src = c.raw('src');
    if (src !== undefined) {
      const cidr = cidrAt(`${path}.src`, src);
      out.srcNet[i] = cidr.network;
      out.srcMask[i] = cidr.mask;
    }
    const dst = c.raw('dst');
    if (dst !== undefined) {
      const cidr = cidrAt(`${path}.dst`, dst);
      out.dstNet[i] = cidr.network;
      out.dstMask[i] = cidr.mask;
    }
    const proto = c.oneOf('proto', 'any', ['any', 'tcp', 'udp', 'icmp']);
    out.proto[i] = PROTOS[proto] ?? PROTO_ANY;
    const ports = c.raw('dstPort');
    if (ports !== undefined) {
      if (proto === 'icmp') throw configError(`${path}.dstPort`, 'ICMP has no ports');
      const [lo, hi] = parsePortRange(`${path}.dstPort`, ports);
      out.hasPorts[i] = 1;
      out.portLo[i] = lo;
      out.portHi[i] = hi;
    }
    c.done();
  }
  return out;
}

export function parseFirewallConfig(config: Record<string, unknown>): FirewallConfig {
  const c = new ConfigReader('', config);
  const rules = compileRules(c.raw('rules'));
  const defaultAllow = c.oneOf('default', 'allow', ['allow', 'deny']) === 'allow';
  const strict = c.boolean('strict', false);
  const day = 86_400_000;
  const udpIdleMs = c.integer('udpIdleMs', 30_000, 1, day);
  const tcpIdleMs = c.integer('tcpIdleMs', 300_000, 1, day);
  const timeWaitMs = c.integer('timeWaitMs', 120_000, 0, day);
  c.done();
  return { rules, defaultAllow, strict, udpIdleMs, tcpIdleMs, timeWaitMs };
}

/**
 * Every packet may move the state machine, and a new connection replaces the verdict and the
 * initiator, so a delta carries all of the state: 77 bytes, the same as the full encoding.
 *
 *   u8 allowed | u32 rule+1 | u8 conn | u8 fins | u32 initIp | u16 initPort | f64 startedAt
 *   | f64 lastSeen | u53 pktsFwd | u53 pktsRev | u53 bytesFwd | u53 bytesRev | u53 dropped
 *   | u53 evaluations
 */
class FirewallCodec implements StateCodec<FirewallState> {
  encodeFull(s: FirewallState, w: ByteWriter): void {
    this.encodeDelta(s, 0, w);
  }

  decodeFull(r: ByteReader): FirewallState {
    const s = new FirewallState();
    s.allowed = r.u8() === 1;
    s.rule = r.u32() - 1;
    s.conn = toConnState(r.u8());
    s.fins = r.u8() & 7;
    s.initIp = r.u32();
    s.initPort = r.u16();
    s.startedAt = r.f64();
    s.lastSeen = r.f64();
    s.pktsFwd = r.u53();
    s.pktsRev = r.u53();
    s.bytesFwd = r.u53();
    s.bytesRev = r.u53();
    s.dropped = r.u53();
    s.evaluations = r.u53();
    return s;
  }

  mark(s: FirewallState): number {
    return s.pktsFwd + s.pktsRev;
  }

  encodeDelta(s: FirewallState, _since: number, w: ByteWriter): void {
    w.u8(s.allowed ? 1 : 0);
    w.u32(s.rule + 1);
    w.u8(s.conn);
    w.u8(s.fins);
    w.u32(s.initIp);
    w.u16(s.initPort);
    w.f64(s.startedAt);
    w.f64(s.lastSeen);
    w.u53(s.pktsFwd);
    w.u53(s.pktsRev);
    w.u53(s.bytesFwd);
    w.u53(s.bytesRev);
    w.u53(s.dropped);
    w.u53(s.evaluations);
  }

  /** Decoded whole first, so a truncated or invalid delta leaves the state as it was. */
  applyDelta(s: FirewallState, r: ByteReader): void {
    Object.assign(s, this.decodeFull(r));
  }
}

function toConnState(v: number): ConnState {
  if (v > ConnState.NEW) throw new NfsError(ErrorCode.STATE, `firewall: bad connection state ${v}`);
  return v as ConnState;
}

export class Firewall implements NetworkFunction<FirewallState> {
  readonly name = 'firewall';
  readonly codec: StateCodec<FirewallState> = new FirewallCodec();
  readonly config: FirewallConfig;

  constructor(config: FirewallConfig) {
    this.config = config;
  }

  initFlow(pkt: PacketView, ctx: FlowContext): FirewallState {
    const s = new FirewallState();
    s.conn = ConnState.CLOSED;
    s.lastSeen = ctx.now;
    return s;
  }

  process(pkt: PacketView, s: FirewallState, ctx: FlowContext): Verdict {
    const now = ctx.now;
    const proto = pkt.proto;
    const flags = pkt.tcpFlags;
    if (this.ended(s, proto, flags, now)) this.start(pkt, s, now);
    s.lastSeen = now;
    const fwd = pkt.srcIp === s.initIp && pkt.srcPort === s.initPort;
    if (fwd) {
      s.pktsFwd++;
      s.bytesFwd += pkt.length;
    } else {
      s.pktsRev++;
      s.bytesRev += pkt.length;
    }
    if (!s.allowed) {
      s.dropped++;
      return Verdict.DROP;
    }
    if (proto === IpProto.TCP) {
      if (!this.trackTcp(s, flags, fwd)) {
        s.dropped++;
        return Verdict.DROP;
      }
    } else if (!fwd && s.conn === ConnState.NEW) {
      s.conn = ConnState.ESTABLISHED;
    }
    return Verdict.FORWARD;
  }

  releaseFlow(): void {
    // Nothing global: the firewall's state is all per flow.
  }

  allocations(): Record<string, number> {
    return {};
  }

  /**
   * Whether the flow's current connection is over, so that this packet starts a new one. A denied
   * connection stays denied until it idles out: otherwise the responder's side could re-roll the rules
   * with any packet.
   */
  private ended(s: FirewallState, proto: number, flags: number, now: number): boolean {
    const c = s.conn;
    if (c === ConnState.CLOSED) return true;
    // Strict mode refused the last packet as a start; the next one may be a proper SYN.
    if (c === ConnState.NONE && s.allowed) return true;
    const idle = now - s.lastSeen;
    if (proto !== IpProto.TCP) return idle > this.config.udpIdleMs;
    if (c === ConnState.TIME_WAIT) return idle > this.config.timeWaitMs || (flags & (SYN | ACK)) === SYN;
    return idle > this.config.tcpIdleMs;
  }

  /** A new connection with this packet's sender as initiator: the rules decide whether it may pass. */
  private start(pkt: PacketView, s: FirewallState, now: number): void {
    s.initIp = pkt.srcIp;
    s.initPort = pkt.srcPort;
    s.startedAt = now;
    s.fins = 0;
    s.evaluations++;
    const rule = this.match(pkt);
    s.rule = rule;
    s.allowed = rule < 0 ? this.config.defaultAllow : this.config.rules.action[rule] === ACTION_ALLOW;
    s.conn = pkt.proto === IpProto.TCP ? ConnState.NONE : ConnState.NEW;
  }

  private match(pkt: PacketView): number {
    const r = this.config.rules;
    const src = pkt.srcIp;
    const dst = pkt.dstIp;
    const proto = pkt.proto;
    const port = pkt.dstPort;
    const ported = proto === IpProto.TCP || proto === IpProto.UDP;
    for (let i = 0; i < r.count; i++) {
      if ((src & r.srcMask[i]!) >>> 0 !== r.srcNet[i]) continue;
      if ((dst & r.dstMask[i]!) >>> 0 !== r.dstNet[i]) continue;
      const p = r.proto[i]!;
      if (p !== PROTO_ANY && p !== proto) continue;
      if (r.hasPorts[i] === 1 && (!ported || port < r.portLo[i]! || port > r.portHi[i]!)) continue;
      return i;
    }
    return -1;
  }

  /** Advances the TCP state machine; false when strict mode refuses the packet. */
  private trackTcp(s: FirewallState, flags: number, fwd: boolean): boolean {
    if ((flags & RST) !== 0) {
      if (s.conn === ConnState.NONE && this.config.strict) return false;
      s.conn = ConnState.CLOSED;
      return true;
    }
    const syn = (flags & SYN) !== 0;
    const ack = (flags & ACK) !== 0;
    switch (s.conn) {
      case ConnState.NONE:
        if (syn && !ack) {
          s.conn = ConnState.SYN_SENT;
          return true;
        }
        // A first packet that is not a bare SYN: mid-stream, or a responder's SYN+ACK seen alone.
        if (this.config.strict) return false;
        s.conn = ConnState.ESTABLISHED;
        break;
      case ConnState.SYN_SENT:
        if (!fwd && syn) s.conn = ConnState.SYN_RECEIVED;
        return true;
      case ConnState.SYN_RECEIVED:
        // Either side's bare ACK completes it: the initiator's normally, the responder's after a
        // simultaneous open.
        if (syn || !ack) return true;
        s.conn = ConnState.ESTABLISHED;
        break;
      default:
        break;
    }
    if ((flags & FIN) !== 0 && this.onFin(s, fwd, ack)) return true;
    if (ack) this.onAck(s, fwd);
    return true;
  }

  /** Records a FIN; false when it is a retransmission (which then counts only as an ACK). */
  private onFin(s: FirewallState, fwd: boolean, ack: boolean): boolean {
    const bit = fwd ? FIN_INIT : FIN_RESP;
    if ((s.fins & bit) !== 0) return false;
    s.fins |= bit;
    if ((s.fins & FIN_BOTH) !== FIN_BOTH) {
      s.conn = fwd ? ConnState.FIN_WAIT : ConnState.CLOSE_WAIT;
      return true;
    }
    s.conn = ack ? ConnState.LAST_ACK : ConnState.CLOSING;
    if (fwd) s.fins |= LAST_FIN_INIT;
    return true;
  }

  /** The ACK of the second FIN, from the side that did not send it, ends the close. */
  private onAck(s: FirewallState, fwd: boolean): void {
    if (s.conn === ConnState.LAST_ACK) {
      if (fwd !== ((s.fins & LAST_FIN_INIT) !== 0)) s.conn = ConnState.TIME_WAIT;
    } else if (s.conn === ConnState.CLOSING) {
      s.conn = ConnState.TIME_WAIT;
    }
  }
}

export function createFirewall(config: Record<string, unknown>): Firewall {
  return new Firewall(parseFirewallConfig(config));
}
