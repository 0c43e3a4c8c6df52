/**
 * Intrusion detection, passive (every packet is forwarded): payload signatures matched by one
 * Aho–Corasick automaton, streaming across the packets of each direction of a flow; port scans (one
 * source reaching many distinct destination ports) and heavy hitters (one source sending many bytes)
 * detected across flows through global state. Findings are raised as events.
 *
 *   ids:
 *     signatures:                       # absent: the built-in set below
 *       - { id: 1, name: 'passwd file', pattern: '/etc/passwd' }
 *       - { id: 2, name: 'NOP sled', hex: '9090909090909090' }
 *     scanPorts: 20                     # distinct TCP/UDP destination ports per source
 *     heavyBytes: 10000000              # bytes per source
 *     logLimit: 4096                    # per-flow packet records (and signature hits) kept
 *
 * The per-flow state is a log on purpose: one record per packet and one per signature hit, so that a
 * batch's delta is exactly the records appended since the batch's mark. Each log keeps its newest
 * `logLimit` entries in a ring:
 *
 *   rec (Float64Array, 4 slots per record):  [seq, timeMs, length, matches] [seq, …] …
 *   hits (Float64Array, 2 slots per hit):    [seq, signatureId] …
 *   record i (0-based, counting every record ever appended) lives at i % logLimit; the ring starts
 *   at 8 entries and doubles up to logLimit, so its size is a function of the count alone.
 */
import { IpProto, Verdict } from '../types.js';
import type {
  FlowContext,
  GlobalState,
  NetworkFunction,
  PacketView,
  SharedCounters,
  SharedSets,
  StateCodec,
} from '../types.js';
import { ErrorCode, NfsError } from '../errors.js';
import { flowKeyString, ipToString } from '../packet/flow-key.js';
import type { ByteReader, ByteWriter } from '../state/bytes.js';
import { AhoCorasick, type MatchSink } from './aho-corasick.js';
import { ConfigReader, configError, isRecord } from './config.js';

export const IDS_PORTS = 'ids.ports';
export const IDS_BYTES = 'ids.bytes';

export interface Signature {
  readonly id: number;
  readonly name: string;
  readonly bytes: Uint8Array;
}

const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const hex = (s: string): Uint8Array => Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));

/** Well-known attack markers; a starting point, not a rule set to rely on. */
export const defaultSignatures: readonly Signature[] = [
  { id: 1001, name: 'path traversal: /etc/passwd', bytes: text('/etc/passwd') },
  { id: 1002, name: 'path traversal: ../../', bytes: text('../../') },
  { id: 1003, name: 'windows shell: cmd.exe', bytes: text('cmd.exe') },
  { id: 1004, name: 'unix shell: /bin/sh', bytes: text('/bin/sh') },
  { id: 1005, name: 'sql injection: SELECT * FROM', bytes: text('SELECT * FROM') },
  { id: 1006, name: 'sql injection: UNION SELECT', bytes: text('UNION SELECT') },
  { id: 1007, name: 'x86 NOP sled', bytes: hex('9090909090909090') },
  { id: 1008, name: 'shellshock: () { :;};', bytes: text('() { :;};') },
  { id: 1009, name: 'log4shell: ${jndi:', bytes: text('${jndi:') },
  { id: 1010, name: 'cross-site scripting: <script>', bytes: text('<script>') },
  { id: 1011, name: 'php webshell: eval(base64_decode(', bytes: text('eval(base64_decode(') },
];

export interface IdsConfig {
  readonly signatures: readonly Signature[];
  readonly scanPorts: number;
  readonly heavyBytes: number;
  readonly logLimit: number;
}

const REC = 4;
const HIT = 2;
const FIRST_CAPACITY = 8;

/** The ring's size in entries after `count` appends: a pure function of the count, so replicas agree. */
function capacityFor(count: number, limit: number): number {
  let c = Math.min(FIRST_CAPACITY, limit);
  while (c < count && c < limit) c = Math.min(c * 2, limit);
  return c;
}

export class IdsState {
  packets = 0;
  bytes = 0;
  lastSeen = 0;
  initIp = 0;
  initPort = 0;
  /** Automaton nodes where each direction's byte stream left off. */
  nodeFwd = 0;
  nodeRev = 0;
  /** Records and hits ever appended (the rings keep the newest logLimit of each). */
  recTotal = 0;
  rec: Float64Array;
  hitTotal = 0;
  hits: Float64Array;

  constructor(logLimit: number) {
    this.rec = new Float64Array(capacityFor(0, logLimit) * REC);
    this.hits = new Float64Array(capacityFor(0, logLimit) * HIT);
  }
}

function appendRecord(
  s: IdsState,
  limit: number,
  seq: number,
  timeMs: number,
  length: number,
  matches: number,
): void {
  const i = s.recTotal;
  if (i * REC >= s.rec.length && s.rec.length < limit * REC)
    s.rec = grow(s.rec, capacityFor(i + 1, limit) * REC);
  const at = (i % limit) * REC;
  const r = s.rec;
  r[at] = seq;
  r[at + 1] = timeMs;
  r[at + 2] = length;
  r[at + 3] = matches;
  s.recTotal = i + 1;
}

function appendHit(s: IdsState, limit: number, seq: number, signatureId: number): void {
  const i = s.hitTotal;
  if (i * HIT >= s.hits.length && s.hits.length < limit * HIT) {
    s.hits = grow(s.hits, capacityFor(i + 1, limit) * HIT);
  }
  const at = (i % limit) * HIT;
  s.hits[at] = seq;
  s.hits[at + 1] = signatureId;
  s.hitTotal = i + 1;
}

function grow(a: Float64Array, size: number): Float64Array {
  const b = new Float64Array(size);
  b.set(a);
  return b;
}

export function parseIdsConfig(config: Record<string, unknown>): IdsConfig {
  const c = new ConfigReader('', config);
  const list = c.raw('signatures');
  let signatures: readonly Signature[] = defaultSignatures;
  if (list !== undefined) {
    if (!Array.isArray(list))
      throw configError('signatures', 'must be a list of { id, name, pattern | hex }');
    const ids = new Set<number>();
    signatures = list.map((entry: unknown, i): Signature => {
      const path = `signatures[${i}]`;
      if (!isRecord(entry)) throw configError(path, 'must be an object { id, name, pattern | hex }');
      const sc = new ConfigReader(path, entry);
      const id = sc.integer('id', undefined, 0, 0xffffffff);
      if (ids.has(id)) throw configError(`${path}.id`, `${id} is used by an earlier signature`);
      ids.add(id);
      const name = sc.raw('name');
      if (typeof name !== 'string' || name === '')
        throw configError(`${path}.name`, 'must be a non-empty string');
      const pattern = sc.raw('pattern');
      const h = sc.raw('hex');
      let bytes: Uint8Array;
      if (pattern !== undefined && h !== undefined) throw configError(path, 'give pattern or hex, not both');
      if (typeof pattern === 'string' && pattern !== '') bytes = text(pattern);
      else if (pattern !== undefined) throw configError(`${path}.pattern`, 'must be a non-empty string');
      else if (typeof h === 'string' && /^([0-9a-fA-F]{2})+$/.test(h)) bytes = hex(h);
      else if (h !== undefined)
        throw configError(`${path}.hex`, `must be pairs of hex digits such as 'deadbeef'`);
      else throw configError(path, 'needs a pattern (text) or hex (bytes)');
      sc.done();
      return { id, name, bytes };
    });
  }
  const scanPorts = c.integer('scanPorts', 20, 1, 65536);
  const heavyBytes = c.integer('heavyBytes', 10_000_000, 1, Number.MAX_SAFE_INTEGER);
  const logLimit = c.integer('logLimit', 4096, 1, 1 << 20);
  c.done();
  return { signatures, scanPorts, heavyBytes, logLimit };
}

/**
 * Full encoding:
 *   u53 packets | u53 bytes | f64 lastSeen | u32 initIp | u16 initPort | u32 nodeFwd | u32 nodeRev
 *   | u53 recTotal | u32 n | n × (u53 seq | f64 timeMs | u32 length | u32 matches)      oldest first
 *   | u53 hitTotal | u32 k | k × (u53 seq | u32 signatureId)                             oldest first
 * A delta starts with u8 kind: 1 is followed by a full encoding (when the records since the mark no
 * longer fit the ring); 0 by the counters and nodes, then only what was appended since the mark:
 *   u53 packets | u53 bytes | f64 lastSeen | u32 nodeFwd | u32 nodeRev
 *   | u53 recTotal | u32 n | n records | u53 hitTotal | u32 k | k hits
 * where n = recTotal − mark, and k is the sum of the `matches` of those n records.
 */
class IdsCodec implements StateCodec<IdsState> {
  constructor(
    private readonly limit: number,
    private readonly nodes: number,
  ) {}

  encodeFull(s: IdsState, w: ByteWriter): void {
    w.u53(s.packets);
    w.u53(s.bytes);
    w.f64(s.lastSeen);
    w.u32(s.initIp);
    w.u16(s.initPort);
    w.u32(s.nodeFwd);
    w.u32(s.nodeRev);
    this.writeLogs(s, Math.min(s.recTotal, this.limit), Math.min(s.hitTotal, this.limit), w);
  }

  decodeFull(r: ByteReader): IdsState {
    const s = new IdsState(this.limit);
    s.packets = r.u53();
    s.bytes = r.u53();
    s.lastSeen = r.f64();
    s.initIp = r.u32();
    s.initPort = r.u16();
    s.nodeFwd = this.node(r.u32());
    s.nodeRev = this.node(r.u32());
    this.readLogs(s, r);
    return s;
  }

  mark(s: IdsState): number {
    return s.recTotal;
  }

  encodeDelta(s: IdsState, since: number, w: ByteWriter): void {
    if (!Number.isInteger(since) || since < 0 || since > s.recTotal) {
      throw new NfsError(
        ErrorCode.STATE,
        `ids: mark ${since} is not a record count of this flow (${s.recTotal})`,
      );
    }
    const n = s.recTotal - since;
    let k = 0;
    if (n <= this.limit) {
      for (let i = since; i < s.recTotal; i++) k += s.rec[(i % this.limit) * REC + 3]!;
    }
    if (n > this.limit || k > this.limit || k > s.hitTotal) {
      w.u8(1);
      this.encodeFull(s, w);
      return;
    }
    w.u8(0);
    w.u53(s.packets);
    w.u53(s.bytes);
    w.f64(s.lastSeen);
    w.u32(s.nodeFwd);
    w.u32(s.nodeRev);
    this.writeLogs(s, n, k, w);
  }

  /**
   * Validates the whole delta before changing anything (a first pass over the reader), so a delta
   * that is truncated or cut at another mark throws and leaves the state as it was.
   */
  applyDelta(s: IdsState, r: ByteReader): void {
    const kind = r.u8();
    if (kind === 1) {
      Object.assign(s, this.decodeFull(r));
      return;
    }
    if (kind !== 0) throw new NfsError(ErrorCode.STATE, `ids: unknown delta kind ${kind}`);
    const start = r.offset;
    this.readDelta(s, r, false);
    r.offset = start;
    this.readDelta(s, r, true);
  }

  private readDelta(s: IdsState, r: ByteReader, apply: boolean): void {
    const limit = this.limit;
    const packets = r.u53();
    const bytes = r.u53();
    const lastSeen = r.f64();
    const nodeFwd = this.node(r.u32());
    const nodeRev = this.node(r.u32());
    const recTotal = r.u53();
    const n = r.u32();
    if (n > limit || recTotal - n !== s.recTotal) {
      throw new NfsError(
        ErrorCode.STATE,
        `ids: delta of ${n} records up to ${recTotal} does not apply to a flow at record ${s.recTotal}`,
      );
    }
    for (let i = 0; i < n; i++) {
      const seq = r.u53();
      const timeMs = r.f64();
      const length = r.u32();
      const matches = r.u32();
      if (apply) appendRecord(s, limit, seq, timeMs, length, matches);
    }
    const hitTotal = r.u53();
    const k = r.u32();
    if (k > limit || hitTotal - k !== s.hitTotal) {
      throw new NfsError(
        ErrorCode.STATE,
        `ids: delta of ${k} hits up to ${hitTotal} does not apply to a flow at hit ${s.hitTotal}`,
      );
    }
    for (let i = 0; i < k; i++) {
      const seq = r.u53();
      const signatureId = r.u32();
      if (apply) appendHit(s, limit, seq, signatureId);
    }
    if (apply) {
      s.packets = packets;
      s.bytes = bytes;
      s.lastSeen = lastSeen;
      s.nodeFwd = nodeFwd;
      s.nodeRev = nodeRev;
    }
  }

  private writeLogs(s: IdsState, n: number, k: number, w: ByteWriter): void {
    const limit = this.limit;
    w.u53(s.recTotal);
    w.u32(n);
    for (let i = s.recTotal - n; i < s.recTotal; i++) {
      const at = (i % limit) * REC;
      w.u53(s.rec[at]!);
      w.f64(s.rec[at + 1]!);
      w.u32(s.rec[at + 2]!);
      w.u32(s.rec[at + 3]!);
    }
    w.u53(s.hitTotal);
    w.u32(k);
    for (let i = s.hitTotal - k; i < s.hitTotal; i++) {
      const at = (i % limit) * HIT;
      w.u53(s.hits[at]!);
      w.u32(s.hits[at + 1]!);
    }
  }

  /** Reads the two log sections of a full encoding into a fresh state. */
  private readLogs(s: IdsState, r: ByteReader): void {
    const limit = this.limit;
    const recTotal = r.u53();
    const n = r.u32();
    if (n > limit || n > recTotal) throw new NfsError(ErrorCode.STATE, `ids: ${n} records of ${recTotal}`);
    s.recTotal = recTotal - n;
    s.rec = new Float64Array(capacityFor(s.recTotal, limit) * REC);
    for (let i = 0; i < n; i++) appendRecord(s, limit, r.u53(), r.f64(), r.u32(), r.u32());
    const hitTotal = r.u53();
    const k = r.u32();
    if (k > limit || k > hitTotal) throw new NfsError(ErrorCode.STATE, `ids: ${k} hits of ${hitTotal}`);
    s.hitTotal = hitTotal - k;
    s.hits = new Float64Array(capacityFor(s.hitTotal, limit) * HIT);
    for (let i = 0; i < k; i++) appendHit(s, limit, r.u53(), r.u32());
  }

  private node(v: number): number {
    if (v >= this.nodes) throw new NfsError(ErrorCode.STATE, `ids: automaton node ${v} out of range`);
    return v;
  }
}

export class Ids implements NetworkFunction<IdsState>, MatchSink {
  readonly name = 'ids';
  readonly codec: StateCodec<IdsState>;
  readonly config: IdsConfig;
  readonly automaton: AhoCorasick;
  private readonly ports: SharedSets;
  private readonly sourceBytes: SharedCounters;
  /** Per-signature stamp of the last packet it matched in, so a packet reports each signature once. */
  private readonly matchedIn: Float64Array;
  private packetStamp = 0;
  /** The packet being scanned, for onMatch. Valid only inside process. */
  private curState: IdsState | undefined;
  private curCtx: FlowContext | undefined;
  private curMatches = 0;

  constructor(config: IdsConfig, global: GlobalState) {
    this.config = config;
    this.automaton = new AhoCorasick(config.signatures.map((sig) => sig.bytes));
    this.codec = new IdsCodec(config.logLimit, this.automaton.nodes);
    this.ports = global.sets(IDS_PORTS);
    this.sourceBytes = global.counters(IDS_BYTES);
    this.matchedIn = new Float64Array(config.signatures.length);
  }

  initFlow(pkt: PacketView, ctx: FlowContext): IdsState {
    const s = new IdsState(this.config.logLimit);
    s.initIp = pkt.srcIp;
    s.initPort = pkt.srcPort;
    const proto = pkt.proto;
    if (proto === IpProto.TCP || proto === IpProto.UDP) {
      const src = pkt.srcIp;
      const before = this.ports.size(src);
      const after = this.ports.add(src, pkt.dstPort);
      const limit = this.config.scanPorts;
      if (before < limit && after >= limit)
        ctx.emit({ type: 'portscan', src: ipToString(src), ports: after });
    }
    return s;
  }

  process(pkt: PacketView, s: IdsState, ctx: FlowContext): Verdict {
    const length = pkt.length;
    s.packets++;
    s.bytes += length;
    s.lastSeen = ctx.now;

    const src = pkt.srcIp;
    const total = this.sourceBytes.add(src, length);
    const heavy = this.config.heavyBytes;
    if (total >= heavy && total - length < heavy) {
      ctx.emit({ type: 'heavy-hitter', src: ipToString(src), bytes: total });
    }

    const fwd = src === s.initIp && pkt.srcPort === s.initPort;
    this.curState = s;
    this.curCtx = ctx;
    this.curMatches = 0;
    this.packetStamp++;
    const from = pkt.payloadOffset;
    const to = from + pkt.payloadLength;
    if (fwd) s.nodeFwd = this.automaton.scan(pkt.buf, from, to, s.nodeFwd, this);
    else s.nodeRev = this.automaton.scan(pkt.buf, from, to, s.nodeRev, this);
    appendRecord(s, this.config.logLimit, ctx.seq, ctx.now, length, this.curMatches);
    this.curState = undefined;
    this.curCtx = undefined;
    return Verdict.FORWARD;
  }

  onMatch(pattern: number): void {
    if (this.matchedIn[pattern] === this.packetStamp) return;
    this.matchedIn[pattern] = this.packetStamp;
    const s = this.curState!;
    const ctx = this.curCtx!;
    const sig = this.config.signatures[pattern]!;
    this.curMatches++;
    appendHit(s, this.config.logLimit, ctx.seq, sig.id);
    ctx.emit({ type: 'signature', id: sig.id, name: sig.name, flow: flowKeyString(ctx.key), seq: ctx.seq });
  }

  releaseFlow(): void {
    // The per-source sets and counters outlive flows: a scan spans many of them.
  }

  allocations(): Record<string, number> {
    return {};
  }
}

export function createIds(config: Record<string, unknown>, global: GlobalState): Ids {
  return new Ids(parseIdsConfig(config), global);
}
