/**
 * L4 load balancer: connections to a virtual IP are spread over backends, and every packet of a
 * connection goes to the backend chosen for it (connection affinity).
 *
 *   lb:
 *     vip: 198.51.100.10
 *     port: 80                      # only this port; absent: every port of the VIP
 *     backends: ['10.1.0.1:8080', '10.1.0.2:8080', '10.1.0.3']   # no port: keep the client's
 *     algorithm: maglev             # or least-connections
 *     tableSize: 65537              # Maglev table, a prime
 *
 * The choice goes through `global.decide('lb.backend', …)`, so an oracle replays the deployment's
 * choices. least-connections reads the shared `lb.conns` counters (open connections per backend
 * index); maglev hashes the 5-tuple into a Maglev table and needs no shared state to choose, although
 * it keeps `lb.conns` too. A flow is classified by its first packet:
 * - client: TCP or UDP to vip(:port). Packets from the client get their destination rewritten to the
 *   backend. The opposite direction of the same 5-tuple already comes from vip:port and passes as is.
 * - reply: from a backend's address (and port, if it has one) to anyone. This is the backend's answer
 *   on its own 5-tuple; its source is rewritten to the VIP (and to `port` when configured, else the
 *   source port is kept).
 * - rejected: anything else; every packet is dropped.
 */
import { IpProto, Verdict } from '../types.js';
import type {
  FlowContext,
  GlobalState,
  NetworkFunction,
  PacketView,
  SharedCounters,
  StateCodec,
} from '../types.js';
import { flowHash } from '../packet/flow-key.js';
import type { ByteReader, ByteWriter } from '../state/bytes.js';
import { ConfigReader, configError, ipv4At } from './config.js';
import { isPrime, Maglev } from '../switch/maglev.js';

export const LB_BACKEND_DECISION = 'lb.backend';
export const LB_CONNS = 'lb.conns';

export const LbRole = { CLIENT: 0, REPLY: 1, REJECTED: 2 } as const;
export type LbRole = (typeof LbRole)[keyof typeof LbRole];

export const lbAlgorithms = ['maglev', 'least-connections'] as const;
export type LbAlgorithm = (typeof lbAlgorithms)[number];

export interface LbConfig {
  readonly vip: number;
  /** -1: every port. */
  readonly port: number;
  readonly backendIp: Uint32Array;
  /** 0: keep the client's destination port. */
  readonly backendPort: Uint16Array;
  readonly backendNames: readonly string[];
  readonly algorithm: LbAlgorithm;
  readonly tableSize: number;
}

export class LbState {
  role: LbRole = LbRole.REJECTED;
  /** Index into the config's backends; -1 for none. */
  backend = -1;
  /** The first packet's source: packets from it are the initiator's direction. */
  initIp = 0;
  initPort = 0;
  packets = 0;
  bytes = 0;
  lastSeen = 0;
  /** TCP teardown seen: 1 initiator FIN, 2 responder FIN, 4 RST. */
  closeFlags = 0;

  /** Both FINs or a RST: the connection is over, and the flow only waits to be released. */
  get closed(): boolean {
    return (this.closeFlags & 4) !== 0 || (this.closeFlags & 3) === 3;
  }
}

export function parseLbConfig(config: Record<string, unknown>): LbConfig {
  const c = new ConfigReader('', config);
  const vip = c.ipv4('vip', '198.51.100.10');
  const port = c.optionalInteger('port', 1, 65535) ?? -1;
  const list = c.raw('backends');
  if (!Array.isArray(list) || list.length === 0) {
    throw configError('backends', `must be a non-empty list such as ['10.1.0.1:8080']`);
  }
  if (list.length > 0xffff) throw configError('backends', `at most 65535 backends, got ${list.length}`);
  const backendIp = new Uint32Array(list.length);
  const backendPort = new Uint16Array(list.length);
  const backendNames: string[] = [];
  list.forEach((entry: unknown, i) => {
    const path = `backends[${i}]`;
    if (typeof entry !== 'string')
      throw configError(path, `must be 'ip' or 'ip:port', got ${JSON.stringify(entry)}`);
    const m = /^([0-9.]+)(?::(\d{1,5}))?$/.exec(entry.trim());
    if (m === null) throw configError(path, `'${entry}' is not 'ip' or 'ip:port'`);
    backendIp[i] = ipv4At(path, m[1]);
    const p = m[2] === undefined ? 0 : Number(m[2]);
    if (m[2] !== undefined && (p < 1 || p > 65535)) throw configError(path, `port ${p} is not in [1, 65535]`);
    backendPort[i] = p;
    backendNames.push(entry.trim());
  });
  const algorithm = c.oneOf('algorithm', 'maglev', lbAlgorithms);
  const tableSize = c.integer('tableSize', 65537, 1, 1 << 20);
  if (!isPrime(tableSize) || tableSize < list.length) {
    throw configError('tableSize', `must be a prime >= the number of backends, got ${tableSize}`);
  }
  c.done();
  return { vip, port, backendIp, backendPort, backendNames, algorithm, tableSize };
}

/**
 * Layout, 34 bytes in full:
 *   u8 role | u16 backend+1 | u32 initIp | u16 initPort | u8 closeFlags | u53 packets | u53 bytes | f64 lastSeen
 * The role, backend and initiator are fixed at the flow's start, so a delta is the last four (25 bytes).
 */
class LbCodec implements StateCodec<LbState> {
  encodeFull(s: LbState, w: ByteWriter): void {
    w.u8(s.role);
    w.u16(s.backend + 1);
    w.u32(s.initIp);
    w.u16(s.initPort);
    this.encodeDelta(s, 0, w);
  }

  decodeFull(r: ByteReader): LbState {
    const s = new LbState();
    const role = r.u8();
    s.role = role === LbRole.CLIENT || role === LbRole.REPLY ? role : LbRole.REJECTED;
    s.backend = r.u16() - 1;
    s.initIp = r.u32();
    s.initPort = r.u16();
    this.applyDelta(s, r);
    return s;
  }

  mark(s: LbState): number {
    return s.packets;
  }

  encodeDelta(s: LbState, _since: number, w: ByteWriter): void {
    w.u8(s.closeFlags);
    w.u53(s.packets);
    w.u53(s.bytes);
    w.f64(s.lastSeen);
  }

  applyDelta(s: LbState, r: ByteReader): void {
    // Read everything before assigning, so a truncated delta leaves the state as it was.
    const closeFlags = r.u8() & 7;
    const packets = r.u53();
    const bytes = r.u53();
    s.lastSeen = r.f64();
    s.closeFlags = closeFlags;
    s.packets = packets;
    s.bytes = bytes;
  }
}

export class LoadBalancer implements NetworkFunction<LbState> {
  readonly name = 'lb';
  readonly codec: StateCodec<LbState> = new LbCodec();
  readonly config: LbConfig;
  /** Undefined for least-connections. */
  readonly maglev: Maglev | undefined;
  private readonly global: GlobalState;
  private readonly conns: SharedCounters;
  /** The chooser handed to `decide`, made once; it reads `pendingHash` set just before. */
  private readonly choose: () => number;
  private pendingHash = 0;

  constructor(config: LbConfig, global: GlobalState) {
    this.config = config;
    this.global = global;
    this.conns = global.counters(LB_CONNS);
    if (config.algorithm === 'maglev') {
      const maglev = new Maglev(config.backendNames, config.tableSize);
      this.maglev = maglev;
      this.choose = () => maglev.lookup(this.pendingHash);
    } else {
      this.maglev = undefined;
      this.choose = () => this.leastConnections();
    }
  }

  initFlow(pkt: PacketView, ctx: FlowContext): LbState {
    const s = new LbState();
    s.initIp = pkt.srcIp;
    s.initPort = pkt.srcPort;
    const cfg = this.config;
    const proto = pkt.proto;
    if (proto !== IpProto.TCP && proto !== IpProto.UDP) return s;
    if (pkt.dstIp === cfg.vip && (cfg.port < 0 || pkt.dstPort === cfg.port)) {
      const k = ctx.key;
      this.pendingHash = flowHash(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto);
      // Maglev chooses from the 5-tuple alone, the same wherever it runs; least connections reads shared
      // counts, which a replay elsewhere would find changed, so that choice is the log's (`decide`).
      let b =
        this.maglev === undefined ? this.global.decide(LB_BACKEND_DECISION, k, this.choose) : this.choose();
      // A decision from elsewhere that this config cannot honour (a different backend list).
      if (!Number.isInteger(b) || b < 0 || b >= cfg.backendIp.length) b = this.choose();
      s.role = LbRole.CLIENT;
      s.backend = b;
      this.conns.add(b, 1);
      return s;
    }
    const b = this.backendAt(pkt.srcIp, pkt.srcPort);
    if (b >= 0) {
      s.role = LbRole.REPLY;
      s.backend = b;
    }
    return s;
  }

  process(pkt: PacketView, s: LbState, ctx: FlowContext): Verdict {
    s.packets++;
    s.bytes += pkt.length;
    s.lastSeen = ctx.now;
    if (s.role === LbRole.REJECTED) return Verdict.DROP;
    const fwd = pkt.srcIp === s.initIp && pkt.srcPort === s.initPort;
    const flags = pkt.tcpFlags;
    if ((flags & 5) !== 0) s.closeFlags |= (flags & 4) !== 0 ? 4 : fwd ? 1 : 2;
    if (!fwd) return Verdict.FORWARD;
    const cfg = this.config;
    if (s.role === LbRole.CLIENT) {
      pkt.setDstIp(cfg.backendIp[s.backend]!);
      const port = cfg.backendPort[s.backend]!;
      if (port !== 0) pkt.setDstPort(port);
    } else {
      pkt.setSrcIp(cfg.vip);
      if (cfg.port >= 0) pkt.setSrcPort(cfg.port);
    }
    return Verdict.FORWARD;
  }

  releaseFlow(s: LbState): void {
    if (s.role === LbRole.CLIENT && s.backend >= 0) this.conns.add(s.backend, -1);
  }

  allocations(s: LbState): Record<string, number> {
    return s.role === LbRole.CLIENT ? { [LB_BACKEND_DECISION]: s.backend } : {};
  }

  /** The backend with the fewest open connections; ties go to the lowest index, for determinism. */
  private leastConnections(): number {
    const n = this.config.backendIp.length;
    let best = 0;
    let bestLoad = this.conns.get(0);
    for (let i = 1; i < n; i++) {
      const load = this.conns.get(i);
      if (load < bestLoad) {
        best = i;
        bestLoad = load;
      }
    }
    return best;
  }

  private backendAt(ip: number, port: number): number {
    const cfg = this.config;
    for (let i = 0; i < cfg.backendIp.length; i++) {
      if (cfg.backendIp[i] === ip && (cfg.backendPort[i] === 0 || cfg.backendPort[i] === port)) return i;
    }
    return -1;
  }
}

export function createLb(config: Record<string, unknown>, global: GlobalState): LoadBalancer {
  return new LoadBalancer(parseLbConfig(config), global);
}
