/**
 * The compliance suite every NF must pass, built-in or written by a user (`nf.module`): random interleaved
 * packet sequences over a few flows, checked for
 * - full codec round trip: decodeFull(encodeFull(s)) equals s;
 * - the delta invariant at random marks: applyDelta(decodeFull(full@m), encodeDelta(s, m)) equals s, and a
 *   truncated delta throws NfsError and leaves the replica as it was;
 * - determinism: the same packets from fresh state and global state give the same verdicts, bytes,
 *   events, flow states and global state (what replay after a failover and the oracle rely on);
 * - robustness: odd but parseable packets (random fields, other protocols, IP options) never throw.
 * Each check throws with the smallest failing sequence fast-check found, and the seed that replays it.
 *
 *   import { checkCompliance } from 'nfstate/testing';
 *   checkCompliance({ label: 'meter', create: (g) => createMeter({ rate: 10 }, g), ips: ['10.0.0.1', '192.0.2.1'], ports: [53, 80] });
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { NfsError } from '../errors.js';
import { buildIcmp, buildTcp, buildUdp, TcpFlag } from '../packet/build.js';
import { checksum } from '../packet/checksum.js';
import { flowKeyString } from '../packet/flow-key.js';
import { Packet } from '../packet/packet.js';
import { ByteReader } from '../state/bytes.js';
import { LocalGlobalState } from '../state/global-local.js';
import { DropReason, type GlobalState, type NetworkFunction } from '../types.js';
import { decodeFull, Driver, encodeFull, ip, type Flow, writer } from './driver.js';

/** An NF under test, and the addresses and ports its random packets are drawn from. */
export interface ComplianceSubject {
  /** Names the NF in failures. */
  readonly label: string;
  /** A fresh NF on `global`; called for every run, as each instance and the oracle build their own. */
  create(global: GlobalState): NetworkFunction<unknown>;
  /** Include the addresses and ports the NF's config treats specially (its networks, VIPs, pools). */
  readonly ips: readonly string[];
  readonly ports: readonly number[];
}

export interface ComplianceOptions {
  /** Random sequences per check (default 150 and 100). */
  numRuns?: number;
  /** Stop a check's search after this long, passing with the runs done (default 250 and 100 ms). */
  timeLimitMs?: number;
  /** Replays a failure that a previous run reported. */
  seed?: number;
}

const { SYN, ACK, FIN, RST, PSH } = TcpFlag;
const snippets = ['/etc/passwd', '/etc/pa', 'sswd', 'cmd.exe', 'SELECT * ', 'FROM t', '<script>'].map((s) =>
  new TextEncoder().encode(s),
);

interface FlowSpec {
  a: string;
  ap: number;
  b: string;
  bp: number;
  proto: 'tcp' | 'udp' | 'icmp';
}

interface Step {
  flow: number;
  rev: boolean;
  flags: number;
  payload: Uint8Array;
  dt: number;
  snap: boolean;
  release: boolean;
}

function planOf(e: ComplianceSubject) {
  const flow = fc.record<FlowSpec>({
    a: fc.constantFrom(...e.ips),
    ap: fc.constantFrom(...e.ports),
    b: fc.constantFrom(...e.ips),
    bp: fc.constantFrom(...e.ports),
    proto: fc.constantFrom('tcp', 'udp', 'icmp'),
  });
  const step = fc.record<Step>({
    flow: fc.nat(3),
    rev: fc.boolean(),
    flags: fc.constantFrom(SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, FIN, RST, RST | ACK, 0),
    payload: fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.constantFrom(...snippets)),
    dt: fc.oneof(fc.integer({ min: 0, max: 50 }), fc.constantFrom(800, 1200, 6000)),
    snap: fc.boolean(),
    release: fc.integer({ min: 0, max: 24 }).map((x) => x === 0),
  });
  return fc.record({
    flows: fc.array(flow, { minLength: 1, maxLength: 4 }),
    steps: fc.array(step, { minLength: 1, maxLength: 50 }),
  });
}

const scratch = new Uint8Array(2048);

function build(f: FlowSpec, s: Step): Uint8Array {
  const [src, sp, dst, dp] = s.rev ? [f.b, f.bp, f.a, f.ap] : [f.a, f.ap, f.b, f.bp];
  const base = { srcIp: ip(src), dstIp: ip(dst), payload: s.payload };
  let n: number;
  if (f.proto === 'tcp')
    n = buildTcp(scratch, 0, { ...base, srcPort: sp, dstPort: dp, seq: 1, ack: 1, flags: s.flags });
  else if (f.proto === 'udp') n = buildUdp(scratch, 0, { ...base, srcPort: sp, dstPort: dp });
  // Echo request one way, reply the other; the identifier is the initiator's port.
  else n = buildIcmp(scratch, 0, { ...base, type: s.rev ? 0 : 8, code: 0, id: f.ap, seq: 1 });
  return scratch.slice(0, n);
}

interface Snap {
  mark: number;
  full: Uint8Array;
}

function run(e: ComplianceSubject, plan: { flows: FlowSpec[]; steps: Step[] }) {
  const global = new LocalGlobalState();
  const nf = e.create(global);
  const d = new Driver<unknown>(nf, global);
  const snaps = new Map<Flow<unknown>, Snap[]>();
  const outputs: unknown[] = [];
  for (const s of plan.steps) {
    const bytes = build(plan.flows[s.flow % plan.flows.length]!, s);
    if (s.release) {
      const f = d.flowOf(bytes);
      if (f !== undefined) d.release(f);
    }
    const r = d.send(bytes, s.dt);
    outputs.push([r.verdict, r.bytes, r.events]);
    if (s.snap) {
      let list = snaps.get(r.flow);
      if (list === undefined) snaps.set(r.flow, (list = []));
      list.push({ mark: nf.codec.mark(r.state), full: encodeFull(nf, r.state) });
    }
  }
  return { nf, d, snaps, outputs, global };
}

function checkCodec(
  nf: NetworkFunction<unknown>,
  flows: Iterable<Flow<unknown>>,
  snaps: Map<Flow<unknown>, Snap[]>,
) {
  for (const flow of flows) {
    const s = flow.state;
    assert.deepStrictEqual(decodeFull(nf, encodeFull(nf, s)), s, 'full round trip');
    for (const { mark, full } of snaps.get(flow) ?? []) {
      const w = writer();
      nf.codec.encodeDelta(s, mark, w);
      const replica = decodeFull(nf, full);
      const r = new ByteReader(w.view());
      nf.codec.applyDelta(replica, r);
      assert.equal(r.remaining, 0, 'applyDelta reads the whole delta');
      assert.deepStrictEqual(replica, s, `delta from mark ${mark}`);
      // A truncated delta throws and leaves the replica as it was.
      const cut = decodeFull(nf, full);
      assert.throws(() => {
        nf.codec.applyDelta(cut, new ByteReader(w.view().subarray(0, w.length - 1)));
      }, NfsError);
      assert.deepStrictEqual(cut, decodeFull(nf, full));
    }
    for (const [name, v] of Object.entries(nf.allocations(s))) {
      assert.equal(typeof name, 'string');
      assert.ok(Number.isInteger(v));
    }
  }
}

/** Codec round trips, the delta invariant and determinism on random packet sequences. */
export function checkCodecAndDeterminism(subject: ComplianceSubject, options: ComplianceOptions = {}): void {
  holds(
    subject,
    fc.property(planOf(subject), (plan) => {
      const one = run(subject, plan);
      checkCodec(one.nf, one.d.flows.values(), one.snaps);
      const two = run(subject, plan);
      assert.deepStrictEqual(two.outputs, one.outputs);
      assert.deepStrictEqual(two.global.snapshot(), one.global.snapshot());
      assert.deepStrictEqual([...two.d.flows.keys()], [...one.d.flows.keys()]);
      for (const [k, f] of one.d.flows) assert.deepStrictEqual(two.d.flows.get(k)!.state, f.state);
      for (const f of one.d.flows.values()) one.d.release(f);
    }),
    runParameters(options, 150, 250),
  );
}

const probe = new Packet();

/** An IPv4 packet of any protocol number, with a random payload, optional options, valid checksum. */
function rawIpv4(
  proto: number,
  src: number,
  dst: number,
  ttl: number,
  options: Uint8Array,
  payload: Uint8Array,
) {
  const hdr = 20 + options.length;
  const b = new Uint8Array(hdr + payload.length);
  b[0] = 0x40 | (hdr >> 2);
  b[2] = b.length >> 8;
  b[3] = b.length & 0xff;
  b[8] = ttl;
  b[9] = proto;
  new DataView(b.buffer).setUint32(12, src);
  new DataView(b.buffer).setUint32(16, dst);
  b.set(options, 20);
  b.set(payload, hdr);
  const c = checksum(b, 0, hdr);
  b[10] = c >> 8;
  b[11] = c & 0xff;
  return b;
}

/** Odd but parseable packets never throw, and the state they leave still round-trips. */
export function checkRobustness(e: ComplianceSubject, options: ComplianceOptions = {}): void {
  const addr = fc.oneof(fc.constantFrom(...e.ips.map(ip)), fc.integer({ min: 0, max: 0xffffffff }));
  const port = fc.oneof(fc.constantFrom(...e.ports), fc.integer({ min: 0, max: 65535 }));
  const packet = fc
    .record({
      kind: fc.constantFrom('tcp', 'udp', 'icmp', 'raw'),
      proto: fc.integer({ min: 0, max: 255 }),
      src: addr,
      dst: addr,
      sp: port,
      dp: port,
      flags: fc.integer({ min: 0, max: 255 }),
      icmpType: fc.integer({ min: 0, max: 255 }),
      ttl: fc.integer({ min: 0, max: 255 }),
      options: fc.nat(10).map((n) => new Uint8Array(n * 4).fill(1)),
      payload: fc.oneof(fc.uint8Array({ maxLength: 120 }), fc.constantFrom(...snippets)),
      dt: fc.oneof(fc.nat(100), fc.integer({ min: 0, max: 1e9 })),
    })
    .map((p) => {
      const b = new Uint8Array(2048);
      const ipSpec = { srcIp: p.src, dstIp: p.dst, ttl: p.ttl, ipOptions: p.options, payload: p.payload };
      let n: number;
      if (p.kind === 'tcp')
        n = buildTcp(b, 0, { ...ipSpec, srcPort: p.sp, dstPort: p.dp, seq: 7, ack: 9, flags: p.flags });
      else if (p.kind === 'udp') n = buildUdp(b, 0, { ...ipSpec, srcPort: p.sp, dstPort: p.dp });
      else if (p.kind === 'icmp') {
        n = buildIcmp(b, 0, {
          srcIp: p.src,
          dstIp: p.dst,
          type: p.icmpType,
          code: p.flags,
          id: p.sp,
          seq: 1,
          payload: p.payload,
        });
      } else return { bytes: rawIpv4(p.proto, p.src, p.dst, p.ttl, p.options, p.payload), dt: p.dt };
      return { bytes: b.slice(0, n), dt: p.dt };
    });
  holds(
    e,
    fc.property(fc.array(packet, { minLength: 1, maxLength: 30 }), (packets) => {
      const global = new LocalGlobalState();
      const nf = e.create(global);
      const d = new Driver<unknown>(nf, global);
      for (const p of packets) {
        // A raw packet that names TCP, UDP or ICMP without their header fails parsing, as it should.
        if (probe.parse(p.bytes, 0, p.bytes.length) === DropReason.NONE) d.send(p.bytes, p.dt);
      }
      checkCodec(nf, d.flows.values(), new Map());
      for (const f of d.flows.values()) {
        assert.ok(typeof flowKeyString(f.key) === 'string');
        d.release(f);
      }
    }),
    runParameters(options, 100, 100),
  );
}

/** Both checks. */
export function checkCompliance(subject: ComplianceSubject, options: ComplianceOptions = {}): void {
  checkCodecAndDeterminism(subject, options);
  checkRobustness(subject, options);
}

/**
 * Runs a property; a failure names the NF and says what broke (the assertion that failed inside, which
 * fast-check's own message leaves out), then the counterexample and the seed to replay it with.
 */
function holds<T>(subject: ComplianceSubject, property: fc.IProperty<T>, params: fc.Parameters<T>): void {
  try {
    fc.assert(property, params);
  } catch (err) {
    const inner = (err as Error).cause;
    const what = inner instanceof Error ? inner.message : String(inner);
    throw new Error(`${subject.label}: ${what}\n${(err as Error).message}`, { cause: err });
  }
}

function runParameters<T>(o: ComplianceOptions, runs: number, ms: number): fc.Parameters<T> {
  return {
    numRuns: o.numRuns ?? runs,
    plugins: [fc.interruptAfterTimeLimit(o.timeLimitMs ?? ms) as fc.Plugin<T>],
    ...(o.seed === undefined ? {} : { seed: o.seed }),
  };
}
