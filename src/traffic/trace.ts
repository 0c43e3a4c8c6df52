/**
 * Synthetic traffic: F flows from clients in 10.0.0.0/8 to one service address, each with N packets,
 * interleaved in a deterministic order from a seed. The same options always give the same packets in the
 * same order, so a run can be compared with another or with the oracle.
 *
 *   const trace = new SyntheticTrace({ flows: 100, packets: 50, payload: 64, proto: 'udp', seed: 1 });
 *   for (let i = 0; i < trace.total; i++) { const n = trace.write(i, buf, off); send(buf, off, n); }
 *
 * The defaults suit every built-in NF's default config: the clients are NAT-internal, the service is the
 * LB's virtual IP, the firewall allows 10.0.0.0/8, and about one flow in eight carries an IDS signature.
 */
import { ErrorCode, NfsError } from '../errors.js';
import { buildTcp, buildUdp, TcpFlag } from '../packet/build.js';
import { canonicalKey, parseIpv4 } from '../packet/flow-key.js';
import type { FlowKey } from '../types.js';
import { IpProto } from '../types.js';

export interface TraceOptions {
  flows: number;
  packets: number;
  /** Payload bytes per packet. */
  payload: number;
  proto: 'udp' | 'tcp';
  /** 0 = uniform; k > 1 = about 5% of flows send k times as many packets, k times as fast. */
  skew: number;
  /** Which flows are the heavy ones under skew (default: the first 5 %). */
  heavy?: readonly number[];
  seed: number;
  dst: string;
  dstPort: number;
}

export const DEFAULT_TRACE: TraceOptions = {
  flows: 100,
  packets: 100,
  payload: 64,
  proto: 'udp',
  skew: 0,
  seed: 1,
  dst: '198.51.100.10',
  dstPort: 80,
};

/** Signature text the IDS ships with; carried by some flows so that detection runs on the demo path. */
const MARKER = new TextEncoder().encode('/etc/passwd');

function mix(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

export class SyntheticTrace {
  readonly total: number;
  /** For packet i of the trace: its flow and its index within the flow. */
  private readonly flowOf: Uint32Array;
  private readonly indexOf: Uint32Array;
  private readonly counts: Uint32Array;
  private readonly srcIp: Uint32Array;
  private readonly srcPort: Uint16Array;
  private readonly dstIp: number;
  private readonly payload: Uint8Array;

  constructor(readonly options: TraceOptions) {
    const { flows, packets, payload, skew } = options;
    if (!Number.isInteger(flows) || flows < 1)
      throw new NfsError(ErrorCode.USAGE, `--flows: must be >= 1 (got ${flows})`);
    if (!Number.isInteger(packets) || packets < 1) {
      throw new NfsError(ErrorCode.USAGE, `--packets: must be >= 1 (got ${packets})`);
    }
    if (!Number.isInteger(payload) || payload < 0 || payload > 1400) {
      throw new NfsError(ErrorCode.USAGE, `--payload: must be 0..1400 bytes (got ${payload})`);
    }
    this.dstIp = parseIpv4(options.dst);
    this.counts = new Uint32Array(flows);
    this.srcIp = new Uint32Array(flows);
    this.srcPort = new Uint16Array(flows);
    const heavy = new Set(
      skew <= 1
        ? []
        : (options.heavy ?? Array.from({ length: Math.max(1, Math.round(flows * 0.05)) }, (_, f) => f)),
    );
    const weight = new Uint32Array(flows);
    let total = 0;
    for (let f = 0; f < flows; f++) {
      const h = mix(options.seed * 0x9e3779b1 + f);
      // 10.x.y.z with distinct hosts per flow index; ports vary with the seed.
      this.srcIp[f] = (0x0a000000 | ((f + 1) & 0xffffff)) >>> 0;
      this.srcPort[f] = 1024 + (h % 60000);
      weight[f] = heavy.has(f) ? Math.round(skew) : 1;
      this.counts[f] = packets * weight[f]!;
      total += this.counts[f]!;
    }
    this.total = total;
    this.flowOf = new Uint32Array(total);
    this.indexOf = new Uint32Array(total);
    // Weighted round robin: each round a flow sends as many packets as its weight, so a heavy flow runs
    // as long as the others at k times their rate.
    let at = 0;
    for (let round = 0; round < packets; round++) {
      for (let f = 0; f < flows; f++) {
        for (let j = 0; j < weight[f]!; j++) {
          this.flowOf[at] = f;
          this.indexOf[at] = round * weight[f]! + j;
          at++;
        }
      }
    }
    this.payload = new Uint8Array(payload);
  }

  /** Flow f's canonical key. */
  flowKey(f: number): FlowKey {
    const proto = this.options.proto === 'udp' ? IpProto.UDP : IpProto.TCP;
    return canonicalKey(this.srcIp[f]!, this.dstIp, this.srcPort[f]!, this.options.dstPort, proto);
  }

  /** Packets of flow f. */
  packetsOf(f: number): number {
    return this.counts[f]!;
  }

  /** Writes packet i of the trace (an IPv4 packet) at buf[offset…]; returns its length. */
  write(i: number, buf: Uint8Array, offset: number): number {
    const f = this.flowOf[i]!;
    const k = this.indexOf[i]!;
    const p = this.payload;
    const h = mix(this.options.seed ^ Math.imul(f + 1, 0x85ebca6b) ^ Math.imul(k + 1, 0xc2b2ae35));
    // Payload: flow and packet index, then filler bytes; flows with f % 8 == 3 carry the IDS marker once.
    for (let j = 0; j < p.length; j++) p[j] = (h >>> ((j & 3) * 8)) & 0x7f;
    if (p.length >= 8) {
      p[0] = f >>> 24;
      p[1] = (f >>> 16) & 0xff;
      p[2] = (f >>> 8) & 0xff;
      p[3] = f & 0xff;
      p[4] = k >>> 24;
      p[5] = (k >>> 16) & 0xff;
      p[6] = (k >>> 8) & 0xff;
      p[7] = k & 0xff;
    }
    if (f % 8 === 3 && k === 1 && p.length >= 8 + MARKER.length) p.set(MARKER, 8);
    const common = {
      srcIp: this.srcIp[f]!,
      dstIp: this.dstIp,
      srcPort: this.srcPort[f]!,
      dstPort: this.options.dstPort,
    };
    if (this.options.proto === 'udp') return buildUdp(buf, offset, { ...common, payload: p });
    const last = k === this.counts[f]! - 1;
    const flags = k === 0 ? TcpFlag.SYN : last ? TcpFlag.FIN | TcpFlag.ACK : TcpFlag.PSH | TcpFlag.ACK;
    return buildTcp(buf, offset, {
      ...common,
      seq: (h + k * p.length) >>> 0,
      ack: 1,
      flags,
      payload: k === 0 ? p.subarray(0, 0) : p,
    });
  }
}
