import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ErrorCode, NfsError } from '../../src/errors.js';
import { createNf } from '../../src/nfs/index.js';
import { IDS_BYTES, IDS_PORTS } from '../../src/nfs/ids.js';
import { LB_CONNS } from '../../src/nfs/lb.js';
import { TcpFlag } from '../../src/packet/build.js';
import { canonicalKey, flowKeyOf, flowKeyString, parseIpv4 } from '../../src/packet/flow-key.js';
import { writerOf } from '../../src/state/crdt/index.js';
import { CrdtGlobalState } from '../../src/state/global-crdt.js';
import { GivenGlobalState, LocalGlobalState } from '../../src/state/global-local.js';
import type { GlobalSnapshot, GlobalState, SharedCounters, SharedSets } from '../../src/types.js';
import { Driver, parsed, tcp, udp, type Flow } from '../../src/testing/driver.js';

const LIMIT = { interruptAfterTimeLimit: 4000 };

const isStateError = (e: unknown): boolean => e instanceof NfsError && e.code === ErrorCode.STATE;
const isUsageError = (e: unknown): boolean => e instanceof NfsError && e.code === ErrorCode.USAGE;

const flowKey = (f: number) =>
  canonicalKey(parseIpv4('10.0.0.1') + f, parseIpv4('192.0.2.1'), 1000 + f, 80, 17);
/** A flow's first packet's ingress time in whole microseconds: its incarnation. */
const INCARNATION = 1_700_000_000_000_000;
const writerFor = (f: number): number => writerOf(flowKey(f), INCARNATION);

type Values = Pick<GlobalSnapshot, 'counters' | 'sets'>;

/** One update a packet makes: an add to counter `key`, or `value` into set `key`. */
interface Op {
  readonly set: boolean;
  readonly key: number;
  readonly value: number;
}

interface Packet {
  readonly flow: number;
  readonly seq: number;
  readonly ops: readonly Op[];
}

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ set: fc.constant(false), key: fc.nat(3), value: fc.integer({ min: -50, max: 1500 }) }),
  fc.record({ set: fc.constant(true), key: fc.nat(3), value: fc.nat(40) }),
);

/** Packets of up to five flows, interleaved; each flow's are numbered 1, 2, 3 … in order. */
const trafficArb: fc.Arbitrary<Packet[]> = fc
  .array(fc.record({ flow: fc.nat(4), ops: fc.array(opArb, { maxLength: 4 }) }), { maxLength: 40 })
  .map((raw) => {
    const seqs = new Map<number, number>();
    return raw.map((p) => {
      const seq = (seqs.get(p.flow) ?? 0) + 1;
      seqs.set(p.flow, seq);
      return { ...p, seq };
    });
  });

interface Handles {
  readonly counters: SharedCounters;
  readonly sets: SharedSets;
}

const handlesOf = (g: GlobalState): Handles => ({ counters: g.counters('c'), sets: g.sets('s') });

function apply(h: Handles, p: Packet): void {
  for (const op of p.ops) {
    if (op.set) h.sets.add(op.key, op.value);
    else h.counters.add(op.key, op.value);
  }
}

/** What a fault-free run on the process-local state ends with. */
function oracle(traffic: readonly Packet[]): Values {
  const g = new LocalGlobalState();
  const h = handlesOf(g);
  for (const p of traffic) apply(h, p);
  const { counters, sets } = g.snapshot();
  return { counters, sets };
}

/** A CRDT replica whose `run` binds each packet as the runtime does. */
class Replica {
  readonly g: CrdtGlobalState;
  readonly h: Handles;

  constructor(id: number) {
    this.g = new CrdtGlobalState(new LocalGlobalState(), { replica: id });
    this.h = handlesOf(this.g);
  }

  run(p: Packet): void {
    this.g.bind(writerFor(p.flow), p.seq);
    apply(this.h, p);
    this.g.unbind();
  }

  values(): Values {
    const { counters, sets } = this.g.snapshot();
    return { counters, sets };
  }
}

/**
 * `items` in the order that `keys` (one per item, at least as many) sorts them, then once more each
 * item whose key is odd: reordered and duplicated deliveries.
 */
function deliveries<T>(items: readonly T[], keys: readonly number[]): T[] {
  const order = items.map((_, k) => k).sort((x, y) => keys[x]! - keys[y]! || x - y);
  return [...order, ...order.filter((k) => keys[k]! % 2 === 1)].map((k) => items[k]!);
}

/** Runs a packet through a test driver bound as the runtime binds it. */
function sendBound<S>(d: Driver<S>, g: CrdtGlobalState, bytes: Uint8Array) {
  const seq = (d.flowOf(bytes)?.seq ?? 0) + 1;
  g.bind(writerOf(flowKeyOf(parsed(bytes)), INCARNATION), seq);
  try {
    return d.send(bytes);
  } finally {
    g.unbind();
  }
}

/** Releases a flow as the processor does at expiry: under the seq after its last packet. */
function releaseBound<S>(d: Driver<S>, g: CrdtGlobalState, flow: Flow<S>): void {
  g.bind(writerOf(flow.key, INCARNATION), flow.seq + 1);
  try {
    d.release(flow);
  } finally {
    g.unbind();
  }
}

test(
  'exactly once under failover: a successor that replays from older flow records ends as a fault-free run',
  { timeout: 60_000 },
  () => {
    fc.assert(
      fc.property(
        trafficArb,
        fc.nat(),
        fc.array(fc.nat(), { maxLength: 6 }),
        fc.nat(),
        fc.nat(),
        fc.array(fc.nat(), { minLength: 6, maxLength: 6 }),
        trafficArb.map((ps) => ps.map((p) => ({ ...p, flow: p.flow + 5 }))),
        (traffic, crashAt, framesAt, receivedUpTo, recordsUpTo, order, own) => {
          const crash = crashAt % (traffic.length + 1);
          const points = [...new Set(framesAt.map((t) => t % (crash + 1)))].sort((x, y) => x - y);
          // The failed replica: runs the traffic up to the crash, taking a delta at each frame, with the
          // flows' positions that the frame's flow records carry.
          const a = new Replica(1);
          const frames: { delta: Uint8Array; seqs: Map<number, number> }[] = [];
          const seqs = new Map<number, number>();
          let next = 0;
          const runTo = (t: number): void => {
            for (; next < t; next++) {
              const p = traffic[next]!;
              a.run(p);
              seqs.set(p.flow, p.seq);
            }
          };
          for (const t of points) {
            runTo(t);
            frames.push({ delta: a.g.takeDelta(), seqs: new Map(seqs) });
          }
          runTo(crash);
          // The successor got frames 1 … j (any order, some twice) and continues every flow from its
          // records in frame i ≤ j: the deltas may run ahead of the records, never behind.
          const j = receivedUpTo % (frames.length + 1);
          const i = recordsUpTo % (j + 1);
          // It has been running flows of its own all along.
          const b = new Replica(2);
          for (const p of own) b.run(p);
          for (const f of deliveries(frames.slice(0, j), order)) b.g.merge(f.delta);
          const from = i === 0 ? new Map<number, number>() : frames[i - 1]!.seqs;
          for (const p of traffic) if (p.seq > (from.get(p.flow) ?? 0)) b.run(p);
          const want = oracle([...traffic, ...own]);
          assert.deepEqual(b.values(), want);
          // A third replica got every frame and the failed one's last state; after the survivors'
          // exchange of full states all agree.
          const c = new Replica(3);
          for (const f of frames) c.g.merge(f.delta);
          c.g.merge(a.g.encodeFull());
          c.g.merge(b.g.encodeFull());
          b.g.merge(c.g.encodeFull());
          assert.deepEqual(c.values(), want);
          assert.deepEqual(b.values(), want);
        },
      ),
      LIMIT,
    );
  },
);

test('two replicas converge whatever the order and duplication of their deltas', { timeout: 60_000 }, () => {
  fc.assert(
    fc.property(trafficArb, fc.array(fc.nat(), { maxLength: 120 }), (traffic, steps) => {
      const r = [new Replica(1), new Replica(2)] as const;
      // inbox[k]: the deltas on their way to replica k; one may be delivered and still stay queued.
      const inbox: [Uint8Array[], Uint8Array[]] = [[], []];
      let next = 0;
      const runNext = (): void => {
        const p = traffic[next++]!;
        r[p.flow % 2]!.run(p);
      };
      for (const s of steps) {
        const side = s & 1;
        const step = (s >>> 1) % 3;
        if (step === 0 && next < traffic.length) runNext();
        else if (step === 1) inbox[1 - side]!.push(r[side]!.g.takeDelta());
        else if (step === 2 && inbox[side]!.length > 0) {
          const q = inbox[side]!;
          const k = (s >>> 3) % q.length;
          r[side]!.g.merge(q[k]!);
          if (((s >>> 10) & 1) === 1) q.splice(k, 1);
        }
      }
      while (next < traffic.length) runNext();
      inbox[1].push(r[0].g.takeDelta());
      inbox[0].push(r[1].g.takeDelta());
      for (const side of [0, 1] as const) for (const d of inbox[side].reverse()) r[side].g.merge(d);
      const want = oracle(traffic);
      assert.deepEqual(r[0].values(), want);
      assert.deepEqual(r[1].values(), want);
      assert.deepEqual(r[0].g.encodeFull(), r[1].g.encodeFull(), 'equal states encode equally');
    }),
    LIMIT,
  );
});

test('a packet counts once however often it runs, and every add it makes counts', { timeout: 60_000 }, () => {
  const g = new CrdtGlobalState(new LocalGlobalState(), { replica: 1 });
  const c = g.counters('c');
  const w = writerFor(0);
  const packet = (seq: number): void => {
    g.bind(w, seq);
    c.add(7, 10);
    c.add(9, 1);
    assert.equal(c.add(7, 5), 15 * seq, 'a second add to one key in one packet counts');
    g.unbind();
  };
  packet(1);
  packet(1);
  assert.equal(c.get(7), 15, 'replayed here');
  assert.equal(c.get(9), 1);
  const successor = new CrdtGlobalState(new LocalGlobalState(), { replica: 2 });
  successor.merge(g.takeDelta());
  successor.bind(w, 1);
  const sc = successor.counters('c');
  assert.equal(sc.add(7, 10), 15, 'replayed at a successor that holds the entries');
  assert.equal(sc.add(9, 1), 1);
  assert.equal(sc.add(7, 5), 15);
  packet(2);
  assert.equal(c.get(7), 30);
  g.bind(writerFor(1), 2);
  assert.equal(c.add(7, 1), 31, 'another flow with the same seq is another writer');
  // Up to 256 adds to one map per packet; the next one is refused rather than miscounted.
  g.bind(w, 3);
  for (let i = 0; i < 256; i++) c.add(1, 1);
  assert.throws(() => c.add(1, 1), isUsageError);
  assert.equal(c.get(1), 256);
});

test(
  'adding outside a bound packet, or binding a bad writer or seq, throws NFS_ERR_USAGE',
  { timeout: 60_000 },
  () => {
    const g = new CrdtGlobalState(new LocalGlobalState(), { replica: 1 });
    const c = g.counters('c');
    assert.throws(() => c.add(1, 1), isUsageError);
    g.bind(writerFor(0), 1);
    assert.equal(c.add(1, 1), 1);
    g.unbind();
    assert.throws(() => c.add(1, 1), isUsageError, 'after unbind');
    for (const [writer, seq] of [
      [writerFor(0), 0],
      [writerFor(0), 1.5],
      [writerFor(0), 2 ** 45],
      [-1, 1],
      [2 ** 53, 1],
    ] as const) {
      assert.throws(
        () => {
          g.bind(writer, seq);
        },
        isUsageError,
        `bind(${writer}, ${seq})`,
      );
    }
    assert.throws(() => c.add(1, 1), isUsageError, 'a refused bind leaves nothing bound');
    // Reads and set adds need no binding.
    assert.equal(c.get(1), 1);
    assert.equal(g.sets('s').add(1, 80), 1);
    assert.throws(() => new CrdtGlobalState(new LocalGlobalState(), { replica: 1024 }), isUsageError);
  },
);

test(
  'pools and decisions are the inner state’s; counters and sets are one map per name and family',
  { timeout: 60_000 },
  () => {
    const key = flowKey(0);
    const inner = new GivenGlobalState(new Map([[flowKeyString(key), { 'lb.backend': 2 }]]));
    const g = new CrdtGlobalState(inner, { replica: 1 });
    const pool = g.pool('nat.port', 100, 199);
    assert.equal(pool, inner.pool('nat.port', 100, 199));
    assert.equal(pool.acquire(key), 100);
    assert.equal(
      g.decide('lb.backend', key, () => 0),
      2,
    );
    assert.equal(g.counters('x'), g.counters('x'));
    assert.equal(g.sets('x'), g.sets('x'));
    g.bind(writerFor(0), 1);
    g.counters('x').add(5, 3);
    g.sets('x').add(5, 443);
    g.unbind();
    const peer = new CrdtGlobalState(new LocalGlobalState(), { replica: 2 });
    peer.merge(g.takeDelta());
    const want = { counters: { x: { '5': 3 } }, sets: { x: { '5': [443] } } };
    assert.deepEqual(g.snapshot(), {
      pools: { 'nat.port': [{ value: 100, owner: flowKeyString(key) }] },
      ...want,
    });
    assert.deepEqual(peer.snapshot(), { pools: {}, ...want });
  },
);

test(
  'a delta holds only the maps that changed, and is zero bytes when nothing did',
  { timeout: 60_000 },
  () => {
    const g = new CrdtGlobalState(new LocalGlobalState(), { replica: 1 });
    const a = g.counters('a');
    g.counters('b');
    const s = g.sets('s');
    assert.equal(g.takeDelta().length, 0);
    g.bind(writerFor(0), 1);
    a.add(1, 4);
    const first = g.takeDelta();
    assert.equal(g.takeDelta().length, 0, 'taken already');
    g.bind(writerFor(0), 1);
    a.add(1, 4);
    assert.equal(g.takeDelta().length, 0, 'a replayed add changes nothing');
    g.unbind();
    s.add(2, 22);
    const second = g.takeDelta();
    const peer = new CrdtGlobalState(new LocalGlobalState(), { replica: 2 });
    peer.merge(first);
    assert.deepEqual(peer.snapshot(), { pools: {}, counters: { a: { '1': 4 } }, sets: {} });
    peer.merge(new Uint8Array(0));
    peer.merge(second);
    peer.merge(first);
    assert.deepEqual(peer.snapshot(), { pools: {}, counters: { a: { '1': 4 } }, sets: { s: { '2': [22] } } });
  },
);

test('a frozen full encoding keeps decoding to the same state', { timeout: 60_000 }, () => {
  const g = new CrdtGlobalState(new LocalGlobalState(), { replica: 1 });
  g.bind(writerFor(0), 1);
  g.counters(IDS_BYTES).add(0x0a000001, 1500);
  g.unbind();
  g.sets(IDS_PORTS).add(0x0a000001, 80);
  g.sets(IDS_BYTES).add(7, 9);
  const frozen =
    '010000000300096964732e62797465730000002a0101000000010a00000100031df39bfc3607000000000000010000000000000005dc' +
    '000000000000000000096964732e6279746573000000280301000100010000000000000001000000000000000100010000000000000001' +
    '000000070000000900096964732e706f7274730000002803010001000100000000000000010000000000000001000100000000000000010a' +
    '00000100000050';
  assert.equal(Buffer.from(g.encodeFull()).toString('hex'), frozen);
  const want = {
    counters: { [IDS_BYTES]: { '167772161': 1500 } },
    sets: { [IDS_BYTES]: { '7': [9] }, [IDS_PORTS]: { '167772161': [80] } },
  };
  assert.deepEqual(CrdtGlobalState.joinSnapshots([Buffer.from(frozen, 'hex')]), want);
});

test('malformed bytes are rejected with NFS_ERR_STATE and change nothing', { timeout: 60_000 }, () => {
  const source = new CrdtGlobalState(new LocalGlobalState(), { replica: 1 });
  source.bind(writerFor(0), 1);
  source.counters('c').add(1, 10);
  source.counters('d').add(2, -3);
  source.unbind();
  source.sets('s').add(3, 4);
  const full = source.encodeFull();
  const target = new CrdtGlobalState(new LocalGlobalState(), { replica: 2 });
  target.bind(writerFor(1), 1);
  target.counters('c').add(1, 5);
  target.unbind();
  target.sets('s').add(3, 5);
  const before = target.encodeFull();
  const snapshot = target.snapshot();

  const patched = (at: number, ...bytes: number[]): Uint8Array => {
    const b = full.slice();
    b.set(bytes, at);
    return b;
  };
  // The first map: u16 name length at 5, the name, u32 state length, then the CRDT's kind byte.
  const nameLength = new DataView(full.buffer).getUint16(5);
  const stateLengthAt = 7 + nameLength;
  const kindAt = stateLengthAt + 4;
  const bad: [string, Uint8Array][] = [
    ['format version', patched(0, 2)],
    ['map count', patched(1, 0xff, 0xff, 0xff, 0xff)],
    ['name not UTF-8', patched(7, 0xff)],
    ['name longer than the bytes', patched(5, 0xff, 0xff)],
    ['state longer than the bytes', patched(stateLengthAt, 0x7f, 0xff, 0xff, 0xff)],
    ['state shorter than its CRDT', patched(stateLengthAt + 3, full[stateLengthAt + 3]! - 1)],
    ['a max-register map', patched(kindAt, 2)],
    ['an unknown kind', patched(kindAt, 99)],
    ['a trailing byte', Uint8Array.from([...full, 0])],
  ];
  for (let n = 1; n < full.length; n++) bad.push([`cut at ${n}`, full.subarray(0, n)]);
  for (const [what, bytes] of bad) {
    assert.throws(
      () => {
        target.merge(bytes);
      },
      isStateError,
      what,
    );
    assert.deepEqual(target.encodeFull(), before, what);
  }
  assert.deepEqual(target.snapshot(), snapshot);
  assert.throws(() => CrdtGlobalState.joinSnapshots([full, bad[0]![1]]), isStateError);
  target.merge(full);
  assert.deepEqual(target.snapshot().counters, { c: { '1': 15 }, d: { '2': -3 } });
});

test(
  'joinSnapshots joins replicas that hold each other’s entries; summing them counts those twice',
  { timeout: 60_000 },
  () => {
    const traffic: Packet[] = [
      { flow: 0, seq: 1, ops: [{ set: false, key: 1, value: 100 }] },
      { flow: 1, seq: 1, ops: [{ set: false, key: 1, value: 50 }] },
      { flow: 0, seq: 2, ops: [{ set: false, key: 1, value: 7 }] },
      { flow: 0, seq: 3, ops: [{ set: false, key: 1, value: 1 }] },
    ];
    const a = new Replica(1);
    const b = new Replica(2);
    a.run(traffic[0]!);
    b.run(traffic[1]!);
    a.run(traffic[2]!);
    a.g.merge(b.g.takeDelta());
    b.g.merge(a.g.takeDelta());
    // a fails after running flow 0's third packet, whose delta never left; b replays it.
    a.run(traffic[3]!);
    b.run(traffic[3]!);
    const want = oracle(traffic);
    assert.deepEqual(CrdtGlobalState.joinSnapshots([a.g.encodeFull(), b.g.encodeFull()]), want);
    assert.deepEqual(want.counters, { c: { '1': 158 } });
    assert.equal(a.h.counters.get(1) + b.h.counters.get(1), 2 * 158);
  },
);

test(
  'the ids NF on CRDT state counts bytes and ports as the oracle does, and a replay adds nothing',
  { timeout: 60_000 },
  () => {
    const config = { heavyBytes: 200 };
    const packets = [
      udp('10.0.0.1', 4000, '192.0.2.1', 53, 'query one'),
      udp('10.0.0.1', 4000, '192.0.2.1', 53, 'query two'),
      udp('192.0.2.1', 53, '10.0.0.1', 4000, 'an answer'),
      tcp('10.0.0.1', 4001, '192.0.2.1', 80, TcpFlag.SYN),
      tcp('10.0.0.1', 4001, '192.0.2.1', 80, TcpFlag.ACK, 'GET / HTTP/1.1'),
      tcp('10.0.0.2', 5000, '192.0.2.9', 443, TcpFlag.SYN),
      udp('10.0.0.1', 4002, '192.0.2.1', 53, 'query three'),
    ];
    const a = new CrdtGlobalState(new LocalGlobalState(), { replica: 1 });
    const da = new Driver(createNf('ids', config, a), a);
    const heavy = packets.flatMap((p) => sendBound(da, a, p).events.filter((e) => e.type === 'heavy-hitter'));
    const o = new LocalGlobalState();
    const dOracle = new Driver(createNf('ids', config, o), o);
    for (const p of packets) dOracle.send(p);
    const want = o.snapshot();
    assert.deepEqual(a.snapshot(), want);

    const bytesFrom = (src: string): number =>
      packets.filter((p) => parsed(p).srcIp === parseIpv4(src)).reduce((n, p) => n + parsed(p).length, 0);
    const src1 = String(parseIpv4('10.0.0.1'));
    const src2 = String(parseIpv4('10.0.0.2'));
    const server = String(parseIpv4('192.0.2.1'));
    assert.deepEqual(want.counters[IDS_BYTES], {
      [src1]: bytesFrom('10.0.0.1'),
      [src2]: bytesFrom('10.0.0.2'),
      [server]: bytesFrom('192.0.2.1'),
    });
    // A flow's first packet adds its destination port: the answer belongs to the query's flow.
    assert.deepEqual(want.sets[IDS_PORTS], { [src1]: [53, 80], [src2]: [443] });
    assert.deepEqual(heavy, [{ type: 'heavy-hitter', src: '10.0.0.1', bytes: heavy[0]?.bytes ?? -1 }]);

    // A successor that holds a's changes replays every packet with the same writers and seqs.
    const b = new CrdtGlobalState(new LocalGlobalState(), { replica: 2 });
    b.merge(a.takeDelta());
    const db = new Driver(createNf('ids', config, b), b);
    for (const p of packets) sendBound(db, b, p);
    assert.deepEqual(b.snapshot(), want);
  },
);

test(
  'lb on CRDT state: +1 at a connection’s first packet and −1 at its release, each counted once',
  { timeout: 60_000 },
  () => {
    const config = {
      vip: '198.51.100.10',
      port: 80,
      backends: ['10.1.0.1:8080', '10.1.0.2:8080'],
      algorithm: 'least-connections',
    };
    const first = [
      tcp('192.0.2.1', 40000, '198.51.100.10', 80, TcpFlag.SYN),
      tcp('192.0.2.1', 40000, '198.51.100.10', 80, TcpFlag.ACK, 'hello'),
    ];
    const second = tcp('192.0.2.2', 40001, '198.51.100.10', 80, TcpFlag.SYN);
    const a = new CrdtGlobalState(new LocalGlobalState(), { replica: 1 });
    const da = new Driver(createNf('lb', config, a), a);
    const conns = a.counters(LB_CONNS);
    for (const p of first) sendBound(da, a, p);
    sendBound(da, a, second);
    assert.deepEqual([conns.get(0), conns.get(1)], [1, 1]);
    const beforeRelease = a.takeDelta();
    releaseBound(da, a, da.flowOf(first[0]!)!);
    assert.deepEqual([conns.get(0), conns.get(1)], [0, 1]);
    const release = a.takeDelta();

    // A successor with a's changes up to before the release replays the first connection and its
    // release: the packets are skipped, the release counts; the release's own delta, arriving late,
    // changes nothing more.
    const b = new CrdtGlobalState(new LocalGlobalState(), { replica: 2 });
    b.merge(beforeRelease);
    const db = new Driver(createNf('lb', config, b), b);
    for (const p of first) sendBound(db, b, p);
    assert.equal(db.flowOf(first[0]!)!.seq, 2);
    releaseBound(db, b, db.flowOf(first[0]!)!);
    b.merge(release);
    assert.deepEqual(b.snapshot().counters, a.snapshot().counters);
    assert.deepEqual(b.snapshot().counters, { [LB_CONNS]: { '1': 1 } });
  },
);
