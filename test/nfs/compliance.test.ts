/**
 * One suite for every NF: random interleaved packet sequences over a few flows, checked for
 * - full codec round trip: decodeFull(encodeFull(s)) equals s;
 * - the delta invariant at random marks: applyDelta(decodeFull(full@m), encodeDelta(s, m)) equals s;
 * - determinism: the same packets from fresh state and global state give the same verdicts, bytes,
 *   events, flow states and global state;
 * - robustness: odd but parseable packets (random fields, other protocols, IP options) never throw.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { buildIcmp, buildTcp, buildUdp, TcpFlag } from '../../src/packet/build.js';
import { checksum } from '../../src/packet/checksum.js';
import { flowKeyString } from '../../src/packet/flow-key.js';
import { createNf } from '../../src/nfs/index.js';
import { ByteReader } from '../../src/state/bytes.js';
import { LocalGlobalState } from '../../src/state/global-local.js';
import { Packet } from '../../src/packet/packet.js';
import { NfsError } from '../../src/errors.js';
import { DropReason, type NetworkFunction } from '../../src/types.js';
import { decodeFull, Driver, encodeFull, ip, type Flow, writer } from './context.js';

interface Entry {
  readonly label: string;
  readonly type: string;
  readonly config: Record<string, unknown>;
  readonly ips: readonly string[];
  readonly ports: readonly number[];
}

const entries: readonly Entry[] = [
  {
    label: 'nat',
    type: 'nat',
    config: { publicIp: '203.0.113.1', portFirst: 40000, portLast: 40002, internal: '10.0.0.0/8' },
    ips: ['10.0.0.1', '10.0.0.2', '192.0.2.1', '203.0.113.1'],
    ports: [53, 80, 1234, 40000, 40001, 40002],
  },
  {
    label: 'firewall (strict)',
    type: 'firewall',
    config: {
      rules: [
        { action: 'allow', src: '10.0.0.0/8' },
        { action: 'allow', proto: 'tcp', dstPort: '80' },
        { action: 'deny', proto: 'udp', dstPort: '1000-2000' },
      ],
      default: 'deny',
      strict: true,
      udpIdleMs: 1000,
      tcpIdleMs: 5000,
      timeWaitMs: 500,
    },
    ips: ['10.0.0.1', '192.0.2.1', '192.0.2.2'],
    ports: [22, 80, 1500, 5000],
  },
  {
    label: 'firewall (loose)',
    type: 'firewall',
    config: {
      rules: [{ action: 'deny', dst: '192.0.2.2/32' }],
      strict: false,
      udpIdleMs: 1000,
      tcpIdleMs: 5000,
    },
    ips: ['10.0.0.1', '192.0.2.1', '192.0.2.2'],
    ports: [22, 80, 5000],
  },
  {
    label: 'lb (maglev)',
    type: 'lb',
    config: { vip: '198.51.100.10', port: 80, backends: ['10.1.0.1:8080', '10.1.0.2'], tableSize: 251 },
    ips: ['192.0.2.1', '198.51.100.10', '10.1.0.1', '10.1.0.2'],
    ports: [80, 8080, 1234],
  },
  {
    label: 'lb (least-connections)',
    type: 'lb',
    config: {
      vip: '198.51.100.10',
      backends: ['10.1.0.1:8080', '10.1.0.2:8080', '10.1.0.3'],
      algorithm: 'least-connections',
    },
    ips: ['192.0.2.1', '198.51.100.10', '10.1.0.1', '10.1.0.3'],
    ports: [80, 8080, 1234],
  },
  {
    label: 'ids',
    type: 'ids',
    config: { scanPorts: 3, heavyBytes: 600, logLimit: 8 },
    ips: ['10.0.0.1', '192.0.2.1', '192.0.2.2'],
    ports: [1, 2, 3, 4, 80],
  },
  {
    label: 'chain firewall (strict) > nat',
    type: 'chain',
    config: {
      nfs: [
        {
          type: 'firewall',
          config: { rules: [{ action: 'allow', src: '10.0.0.0/8' }], default: 'deny', strict: true },
        },
        { type: 'nat', config: { publicIp: '203.0.113.1', portFirst: 40000, portLast: 40002 } },
      ],
    },
    ips: ['10.0.0.1', '10.0.0.2', '192.0.2.1', '203.0.113.1'],
    ports: [53, 80, 1234, 40000, 40001],
  },
  {
    label: 'chain ids > lb',
    type: 'chain',
    config: {
      nfs: [
        { type: 'ids', config: { scanPorts: 3, heavyBytes: 600, logLimit: 8 } },
        { type: 'lb', config: { vip: '198.51.100.10', port: 80, backends: ['10.1.0.1:8080', '10.1.0.2'] } },
      ],
    },
    ips: ['192.0.2.1', '198.51.100.10', '10.1.0.1'],
    ports: [80, 8080, 1234],
  },
];

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

function planOf(e: Entry) {
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

function run(e: Entry, plan: { flows: FlowSpec[]; steps: Step[] }) {
  const global = new LocalGlobalState();
  const nf = createNf(e.type, e.config, global);
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

for (const e of entries) {
  test(
    `${e.label}: codec round trips, delta invariant and determinism on random sequences`,
    { timeout: 60_000 },
    () => {
      fc.assert(
        fc.property(planOf(e), (plan) => {
          const one = run(e, plan);
          checkCodec(one.nf, one.d.flows.values(), one.snaps);
          const two = run(e, plan);
          assert.deepStrictEqual(two.outputs, one.outputs);
          assert.deepStrictEqual(two.global.snapshot(), one.global.snapshot());
          assert.deepStrictEqual([...two.d.flows.keys()], [...one.d.flows.keys()]);
          for (const [k, f] of one.d.flows) assert.deepStrictEqual(two.d.flows.get(k)!.state, f.state);
          for (const f of one.d.flows.values()) one.d.release(f);
        }),
        { interruptAfterTimeLimit: 250, numRuns: 150 },
      );
    },
  );
}

/** An IPv4 packet of any protocol number, with a random payload, optional options, valid checksum. */
const probe = new Packet();

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

for (const e of entries) {
  test(`${e.label}: odd but parseable packets never throw`, { timeout: 60_000 }, () => {
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
    fc.assert(
      fc.property(fc.array(packet, { minLength: 1, maxLength: 30 }), (packets) => {
        const global = new LocalGlobalState();
        const nf = createNf(e.type, e.config, global);
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
      { interruptAfterTimeLimit: 100, numRuns: 100 },
    );
  });
}
