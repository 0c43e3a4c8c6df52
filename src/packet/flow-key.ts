/**
 * Flow identity: a direction-independent hash of the 5-tuple (for steering flows to workers and for the
 * flow table), the canonical FlowKey both directions share, and text forms for config, logs and the
 * CLI (addresses, CIDR blocks, `udp 10.0.0.1:1234 10.0.0.2:80`).
 *
 *   flowHash(a, b, 1234, 80, IpProto.TCP) === flowHash(b, a, 80, 1234, IpProto.TCP); // true
 *   const key = parseFlowKeyString('tcp 10.0.0.1:1234 10.0.0.2:80');
 *   inCidr(parseIpv4('10.1.2.3'), parseCidr('10.0.0.0/8')); // true
 *
 * The hash functions allocate nothing; the key and text functions build objects and strings, once per
 * flow or per config entry.
 */
import { ErrorCode, NfsError } from '../errors.js';
import { IpProto, type FlowKey } from '../types.js';

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

/** One murmur3_32 body step: mixes the 32-bit word `k` into the running hash `h`. */
export function mix(h: number, k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** murmur3's finalizer: every input bit affects every output bit, so low bits alone make good buckets. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Whether (ipA, portA) sorts before or equal to (ipB, portB): the canonical source comes first. */
function endpointFirst(ipA: number, portA: number, ipB: number, portB: number): boolean {
  return ipA >>> 0 < ipB >>> 0 || (ipA >>> 0 === ipB >>> 0 && portA <= portB);
}

/**
 * An unsigned 32-bit hash of the 5-tuple that is the same for both directions: murmur3_32 over the
 * endpoints in canonical order.
 */
export function flowHash(
  srcIp: number,
  dstIp: number,
  srcPort: number,
  dstPort: number,
  proto: number,
): number {
  let loIp = srcIp;
  let hiIp = dstIp;
  let loPort = srcPort;
  let hiPort = dstPort;
  if (!endpointFirst(srcIp, srcPort, dstIp, dstPort)) {
    loIp = dstIp;
    hiIp = srcIp;
    loPort = dstPort;
    hiPort = srcPort;
  }
  let h = mix(0, loIp);
  h = mix(h, hiIp);
  h = mix(h, ((loPort & 0xffff) << 16) | (hiPort & 0xffff));
  h = mix(h, proto & 0xff);
  return fmix32(h ^ 16);
}

/** The hash of a flow named by its 5-tuple: a key, or a parsed packet (a PacketView is a FlowKey). */
export function flowHashOf(flow: FlowKey): number {
  return flowHash(flow.srcIp, flow.dstIp, flow.srcPort, flow.dstPort, flow.proto);
}

/** The key both directions share: the endpoint with the lower (ip, port) becomes the source. */
export function canonicalKey(
  srcIp: number,
  dstIp: number,
  srcPort: number,
  dstPort: number,
  proto: number,
): FlowKey {
  return endpointFirst(srcIp, srcPort, dstIp, dstPort)
    ? { srcIp: srcIp >>> 0, dstIp: dstIp >>> 0, srcPort, dstPort, proto }
    : { srcIp: dstIp >>> 0, dstIp: srcIp >>> 0, srcPort: dstPort, dstPort: srcPort, proto };
}

/** The canonical key of a flow named by its 5-tuple: a parsed packet's, or another key. */
export function flowKeyOf(flow: FlowKey): FlowKey {
  return canonicalKey(flow.srcIp, flow.dstIp, flow.srcPort, flow.dstPort, flow.proto);
}

/** Whether `a` and `b` name the same connection, in either direction. */
export function sameFlow(a: FlowKey, b: FlowKey): boolean {
  if (a.proto !== b.proto) return false;
  return (
    (a.srcIp === b.srcIp && a.dstIp === b.dstIp && a.srcPort === b.srcPort && a.dstPort === b.dstPort) ||
    (a.srcIp === b.dstIp && a.dstIp === b.srcIp && a.srcPort === b.dstPort && a.dstPort === b.srcPort)
  );
}

const PROTO_NAMES: Readonly<Record<number, string>> = {
  [IpProto.ICMP]: 'icmp',
  [IpProto.TCP]: 'tcp',
  [IpProto.UDP]: 'udp',
};
const PROTO_NUMBERS: Readonly<Record<string, number>> = {
  icmp: IpProto.ICMP,
  tcp: IpProto.TCP,
  udp: IpProto.UDP,
};

/** `udp 10.0.0.1:1234 10.0.0.2:80`; protocols other than tcp, udp and icmp appear as their number. */
export function flowKeyString(key: FlowKey): string {
  const proto = PROTO_NAMES[key.proto] ?? String(key.proto);
  return `${proto} ${ipToString(key.srcIp)}:${key.srcPort} ${ipToString(key.dstIp)}:${key.dstPort}`;
}

const DECIMAL = /^(?:0|[1-9][0-9]*)$/;

/** A decimal integer in [0, max] with no sign, spaces or leading zeros; -1 otherwise. */
function parseDecimal(s: string, max: number): number {
  if (s.length > 10 || !DECIMAL.test(s)) return -1;
  const n = Number(s);
  return n <= max ? n : -1;
}

function parseEndpoint(s: string, whole: string): [ip: number, port: number] {
  const colon = s.lastIndexOf(':');
  if (colon < 0) throw new NfsError(ErrorCode.CONFIG, `flow key '${whole}': endpoint '${s}' lacks ':port'`);
  const port = parseDecimal(s.slice(colon + 1), 0xffff);
  if (port < 0) throw new NfsError(ErrorCode.CONFIG, `flow key '${whole}': bad port in '${s}'`);
  return [parseIpv4(s.slice(0, colon)), port];
}

/**
 * The inverse of flowKeyString: the key exactly as written (not canonicalized). Throws NfsError CONFIG
 * on anything else.
 */
export function parseFlowKeyString(s: string): FlowKey {
  const parts = s.split(' ');
  if (parts.length !== 3) {
    throw new NfsError(ErrorCode.CONFIG, `flow key '${s}': expected '<proto> <ip>:<port> <ip>:<port>'`);
  }
  const [protoText, srcText, dstText] = parts as [string, string, string];
  const proto = PROTO_NUMBERS[protoText] ?? parseDecimal(protoText, 0xff);
  if (proto < 0) throw new NfsError(ErrorCode.CONFIG, `flow key '${s}': bad protocol '${protoText}'`);
  const [srcIp, srcPort] = parseEndpoint(srcText, s);
  const [dstIp, dstPort] = parseEndpoint(dstText, s);
  return { srcIp, dstIp, srcPort, dstPort, proto };
}

/** Dotted-quad text of an address held as an unsigned 32-bit number. */
export function ipToString(n: number): string {
  return `${(n >>> 24) & 0xff}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

/**
 * A strict dotted quad ('10.0.0.1') as an unsigned 32-bit number. Leading zeros are refused because
 * some tools read them as octal. Throws NfsError CONFIG naming the bad text.
 */
export function parseIpv4(s: string): number {
  const parts = s.split('.');
  if (parts.length === 4) {
    let n = 0;
    let ok = true;
    for (const part of parts) {
      const octet = parseDecimal(part, 255);
      if (octet < 0) ok = false;
      n = n * 256 + octet;
    }
    if (ok) return n;
  }
  throw new NfsError(ErrorCode.CONFIG, `'${s}' is not a dotted-quad IPv4 address`);
}

/** An IPv4 prefix: `network` has its host bits cleared; `mask` is the netmask as an unsigned number. */
export interface Cidr {
  readonly network: number;
  readonly mask: number;
  readonly bits: number;
}

/** `10.0.0.0/8`, or a bare address as /32. Host bits in the address are cleared ('10.1.2.3/8' is 10/8). */
export function parseCidr(s: string): Cidr {
  const slash = s.indexOf('/');
  const ip = parseIpv4(slash < 0 ? s : s.slice(0, slash));
  const bits = slash < 0 ? 32 : parseDecimal(s.slice(slash + 1), 32);
  if (bits < 0) throw new NfsError(ErrorCode.CONFIG, `'${s}' has a bad prefix length (expected /0 to /32)`);
  // A shift by 32 is a shift by 0 in JavaScript, so /0 needs its own case.
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return { network: (ip & mask) >>> 0, mask, bits };
}

export function inCidr(ip: number, cidr: Cidr): boolean {
  return (ip & cidr.mask) >>> 0 === cidr.network;
}
