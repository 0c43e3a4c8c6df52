import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PerformanceObserver } from 'node:perf_hooks';
import fc from 'fast-check';
import { NfsError } from '../../src/errors.js';
import { canonicalKey, parseIpv4 } from '../../src/packet/flow-key.js';
import { ByteReader, ByteWriter } from '../../src/state/bytes.js';
import {
  CountMinSketch,
  CrdtKind,
  HyperLogLog,
  MaxRegisterMap,
  OrSetMap,
  PnCounterMap,
  writerOf,
  type Crdt,
} from '../../src/state/crdt/index.js';
import { PairTable } from '../../src/state/crdt/pair-table.js';

const LIMIT = { interruptAfterTimeLimit: 4000 };

function bytes(s: Crdt<unknown>): Uint8Array {
  const w = new ByteWriter(64);
  s.encode(w);
  return w.view().slice();
}

const hex = (s: Crdt<unknown>): string => Buffer.from(bytes(s)).toString('hex');

const isStateError = (e: unknown): boolean => e instanceof NfsError && e.code === 'NFS_ERR_STATE';
const isUsageError = (e: unknown): boolean => e instanceof NfsError && e.code === 'NFS_ERR_USAGE';

/** A small deterministic PRNG, so a failing fast-check seed replays the same deliveries. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One CRDT type, as the generic properties below see it. */
interface Subject<T extends Crdt<T>, Op> {
  name: string;
  kind: number;
  make(replica: number): T;
  decode(r: ByteReader, replica: number): T;
  op: fc.Arbitrary<Op>;
  apply(s: T, op: Op): void;
}

const KEYS = [0, 7, 0x80000001, 0xffffffff];

const pnSubject: Subject<PnCounterMap, { key: number; delta: number; writer: number; seq: number }> = {
  name: 'PnCounterMap',
  kind: CrdtKind.PN_COUNTER,
  make: () => new PnCounterMap(),
  decode: (r) => PnCounterMap.decode(r),
  op: fc.record({
    key: fc.constantFrom(...KEYS),
    delta: fc.integer({ min: -50, max: 50 }),
    writer: fc.oneof(fc.nat(4), fc.constant(2 ** 53 - 1)),
    seq: fc.integer({ min: 1, max: 30 }),
  }),
  apply: (s, o) => {
    s.add(o.key, o.delta, o.writer, o.seq);
  },
};

const maxSubject: Subject<MaxRegisterMap, { key: number; value: number }> = {
  name: 'MaxRegisterMap',
  kind: CrdtKind.MAX_REGISTER,
  make: () => new MaxRegisterMap(),
  decode: (r) => MaxRegisterMap.decode(r),
  op: fc.record({
    key: fc.constantFrom(...KEYS),
    value: fc.double({ noNaN: true, noDefaultInfinity: true }),
  }),
  apply: (s, o) => {
    s.set(o.key, o.value);
  },
};

const orSetSubject: Subject<OrSetMap, { add: boolean; key: number; member: number }> = {
  name: 'OrSetMap',
  kind: CrdtKind.OR_SET,
  make: (replica) => new OrSetMap({ replica }),
  decode: (r, replica) => OrSetMap.decode(r, { replica }),
  op: fc.record({ add: fc.boolean(), key: fc.constantFrom(1, 0xffffffff), member: fc.nat(5) }),
  apply: (s, o) => {
    if (o.add) s.add(o.key, o.member);
    else s.remove(o.key, o.member);
  },
};

const cmsSubject: Subject<CountMinSketch, { item: number; count: number }> = {
  name: 'CountMinSketch',
  kind: CrdtKind.COUNT_MIN,
  make: (replica) => new CountMinSketch({ replica, depth: 3, width: 16 }),
  decode: (r, replica) => CountMinSketch.decode(r, { replica }),
  op: fc.record({
    item: fc.oneof(fc.nat(40), fc.constant(2 ** 53 - 1)),
    count: fc.nat(1000),
  }),
  apply: (s, o) => {
    s.add(o.item, o.count);
  },
};

const hllSubject: Subject<HyperLogLog, number> = {
  name: 'HyperLogLog',
  kind: CrdtKind.HYPERLOGLOG,
  make: () => new HyperLogLog({ precision: 5 }),
  decode: (r) => HyperLogLog.decode(r),
  op: fc.nat(1_000_000),
  apply: (s, item) => {
    s.add(item);
  },
};

function copy<T extends Crdt<T>, Op>(subject: Subject<T, Op>, s: T, replica: number): T {
  return subject.decode(new ByteReader(bytes(s)), replica);
}

function joined<T extends Crdt<T>, Op>(subject: Subject<T, Op>, a: T, b: T): T {
  const out = copy(subject, a, 0);
  out.merge(b);
  return out;
}

type Event<Op> =
  | { type: 'op'; replica: number; op: Op }
  | { type: 'flush'; replica: number }
  | { type: 'deliver'; pick: number; to: number; keep: boolean };

function events<Op>(op: fc.Arbitrary<Op>, replicas: number): fc.Arbitrary<Event<Op>[]> {
  return fc.array(
    fc.oneof(
      {
        weight: 4,
        arbitrary: fc.record({ type: fc.constant('op' as const), replica: fc.nat(replicas - 1), op }),
      },
      {
        weight: 1,
        arbitrary: fc.record({ type: fc.constant('flush' as const), replica: fc.nat(replicas - 1) }),
      },
      {
        weight: 3,
        arbitrary: fc.record({
          type: fc.constant('deliver' as const),
          pick: fc.nat(),
          to: fc.nat(replicas - 1),
          keep: fc.boolean(),
        }),
      },
    ),
    { maxLength: 60 },
  );
}

/**
 * Replicas that update, exchange encoded deltas in random order (duplicated, late) and merge them, with
 * each delta reaching every other replica at least once in the end (or, with `drop`, some never, and
 * then one round of full states). Returns the replicas.
 */
function run<T extends Crdt<T>, Op>(
  subject: Subject<T, Op>,
  replicas: number,
  history: Event<Op>[],
  seed: number,
  drop: boolean,
): T[] {
  const states = Array.from({ length: replicas }, (_, i) => subject.make(i));
  // `got`: replicas a message has reached, or (with `drop`) will never reach.
  const messages: { data: Uint8Array; got: Set<number> }[] = [];
  const random = prng(seed);
  const flush = (i: number): void => {
    messages.push({ data: bytes(states[i]!.takeDelta()), got: new Set([i]) });
  };
  const deliver = (m: (typeof messages)[number], to: number): void => {
    states[to]!.merge(subject.decode(new ByteReader(m.data), to));
    m.got.add(to);
  };
  for (const e of history) {
    if (e.type === 'op') subject.apply(states[e.replica]!, e.op);
    else if (e.type === 'flush') flush(e.replica);
    else if (messages.length > 0) {
      const m = messages[e.pick % messages.length]!;
      if (drop && !e.keep) m.got.add(e.to);
      else deliver(m, e.to);
    }
  }
  for (let i = 0; i < replicas; i++) flush(i);
  if (drop) {
    const full = states.map((s) => bytes(s));
    states.forEach((s, i) => {
      full.forEach((data, j) => {
        if (j !== i) s.merge(subject.decode(new ByteReader(data), i));
      });
    });
  } else {
    const pending: [number, number][] = [];
    messages.forEach((m, k) => {
      for (let to = 0; to < replicas; to++) if (!m.got.has(to)) pending.push([k, to]);
    });
    for (let i = pending.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [pending[i], pending[j]] = [pending[j]!, pending[i]!];
    }
    for (const [k, to] of pending) {
      deliver(messages[k]!, to);
      if (random() < 0.3) deliver(messages[k]!, to);
    }
  }
  return states;
}

function suite<T extends Crdt<T>, Op>(subject: Subject<T, Op>): void {
  /** Three states from one execution: replicas that update and sometimes merge each other's deltas. */
  const triple = fc
    .tuple(events(subject.op, 3), fc.integer())
    .map(([history, seed]) => run(subject, 3, history, seed, true))
    .chain((settled) =>
      fc.tuple(fc.array(fc.tuple(fc.nat(2), subject.op), { maxLength: 12 })).map(([more]) => {
        for (const [replica, op] of more) subject.apply(settled[replica]!, op);
        return settled;
      }),
    );

  describe(subject.name, { timeout: 60_000 }, () => {
    it('merge is commutative, associative and idempotent', () => {
      fc.assert(
        fc.property(triple, ([a, b, c]) => {
          assert.equal(hex(joined(subject, a!, b!)), hex(joined(subject, b!, a!)), 'commutative');
          assert.equal(
            hex(joined(subject, joined(subject, a!, b!), c!)),
            hex(joined(subject, a!, joined(subject, b!, c!))),
            'associative',
          );
          assert.equal(hex(joined(subject, a!, a!)), hex(a!), 'idempotent');
          const ab = joined(subject, a!, b!);
          assert.equal(hex(joined(subject, ab, b!)), hex(ab), 'idempotent after a join');
          assert.deepEqual(joined(subject, a!, b!).snapshot(), joined(subject, b!, a!).snapshot());
        }),
        { numRuns: 60, ...LIMIT },
      );
    });

    it('replicas that exchange deltas in any order, duplicated and late, converge', () => {
      fc.assert(
        fc.property(events(subject.op, 3), fc.integer(), (history, seed) => {
          const [a, b, c] = run(subject, 3, history, seed, false);
          assert.equal(hex(a!), hex(b!));
          assert.equal(hex(a!), hex(c!));
          assert.deepEqual(a!.snapshot(), c!.snapshot());
        }),
        { numRuns: 80, ...LIMIT },
      );
    });

    it('replicas that lost deltas converge after one round of full states', () => {
      fc.assert(
        fc.property(events(subject.op, 3), fc.integer(), (history, seed) => {
          const [a, b, c] = run(subject, 3, history, seed, true);
          assert.equal(hex(a!), hex(b!));
          assert.equal(hex(a!), hex(c!));
        }),
        { numRuns: 80, ...LIMIT },
      );
    });

    it('a state equals the join of all the deltas taken from it', () => {
      fc.assert(
        fc.property(fc.array(fc.tuple(subject.op, fc.boolean()), { maxLength: 40 }), (ops) => {
          const s = subject.make(1);
          const sum = subject.make(2);
          for (const [op, take] of ops) {
            subject.apply(s, op);
            if (take) sum.merge(s.takeDelta());
          }
          sum.merge(s.takeDelta());
          assert.equal(hex(sum), hex(s));
          assert.equal(hex(s.takeDelta()), hex(subject.make(1)), 'nothing left after a take');
        }),
        { numRuns: 80, ...LIMIT },
      );
    });

    it('decodes what it encodes, and rejects every truncation, leaving the target untouched', () => {
      fc.assert(
        fc.property(triple, ([a, b]) => {
          const data = bytes(a!);
          assert.equal(hex(subject.decode(new ByteReader(data), 0)), hex(a!));
          const before = hex(b!);
          for (let n = 0; n < data.length; n++) {
            assert.throws(() => {
              b!.merge(subject.decode(new ByteReader(data.subarray(0, n)), 0));
            }, isStateError);
          }
          assert.equal(hex(b!), before);
        }),
        { numRuns: 30, ...LIMIT },
      );
    });

    it('garbage and flipped bytes throw NFS_ERR_STATE or decode to a valid state, never anything else', () => {
      const body = fc.uint8Array({ maxLength: 80 });
      fc.assert(
        fc.property(
          triple,
          body,
          fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { maxLength: 4 }),
          ([a, b], garbage, flips) => {
            const flipped = bytes(a!);
            for (const [at, x] of flips) flipped[at % flipped.length]! ^= x;
            const candidates = [garbage, Uint8Array.from([subject.kind, 1, ...garbage]), flipped];
            for (const data of candidates) {
              const before = hex(b!);
              let decoded: T;
              try {
                decoded = subject.decode(new ByteReader(data), 0);
              } catch (e) {
                assert.ok(isStateError(e), `expected NFS_ERR_STATE, got ${String(e)}`);
                assert.equal(hex(b!), before);
                continue;
              }
              // What decodes is a state like any other: it re-encodes to itself, and merges unless its
              // shape differs (a sketch's), which is refused without a change.
              assert.equal(hex(subject.decode(new ByteReader(bytes(decoded)), 0)), hex(decoded));
              try {
                b!.merge(decoded);
              } catch (e) {
                assert.ok(isStateError(e), `expected NFS_ERR_STATE, got ${String(e)}`);
                assert.equal(hex(b!), before);
              }
            }
          },
        ),
        { numRuns: 150, ...LIMIT },
      );
    });

    it('rejects another type, an unknown format version and an empty buffer with a clear message', () => {
      const data = bytes(subject.make(0));
      const otherKind = Uint8Array.from(data);
      otherKind[0] = subject.kind === 1 ? 2 : 1;
      const version = Uint8Array.from(data);
      version[1] = 99;
      assert.throws(() => subject.decode(new ByteReader(otherKind), 0), /crdt .*: expected kind/);
      assert.throws(() => subject.decode(new ByteReader(version), 0), /format version 99 is not supported/);
      assert.throws(() => subject.decode(new ByteReader(new Uint8Array(0)), 0), /crdt .*: truncated/);
    });
  });
}

describe('PairTable', { timeout: 60_000 }, () => {
  it('finds, inserts and removes like a Map, through growth and churn', () => {
    const op = fc.tuple(
      fc.boolean(),
      fc.constantFrom(0, 1, 0xffffffff),
      fc.oneof(fc.nat(40), fc.constant(2 ** 53 - 1)),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const t = new PairTable(2);
        const model = new Map<string, number>();
        ops.forEach(([insert, a, b], i) => {
          const id = t.find(a, b);
          assert.equal(id >= 0, model.has(`${a}/${b}`));
          if (insert && id < 0) {
            const n = t.insert(a, b);
            t.v[n * 2 + 1] = i;
            model.set(`${a}/${b}`, i);
          } else if (!insert && id >= 0) {
            t.remove(id);
            model.delete(`${a}/${b}`);
          }
        });
        assert.equal(t.size, model.size);
        for (const [k, v] of model) {
          const [a, b] = k.split('/').map(Number);
          const id = t.find(a!, b!);
          assert.ok(id >= 0);
          assert.equal(t.v[id * 2 + 1], v);
        }
      }),
      { numRuns: 200, ...LIMIT },
    );
  });
});

suite(pnSubject);
suite(maxSubject);
suite(orSetSubject);
suite(cmsSubject);
suite(hllSubject);

describe('PnCounterMap', { timeout: 60_000 }, () => {
  const src = parseIpv4('198.51.100.7');
  const flow = (port: number) => canonicalKey(src, parseIpv4('192.0.2.1'), port, 80, 6);

  it('counts up and down per key, and snapshots non-zero values in key order', () => {
    const c = new PnCounterMap();
    assert.equal(c.add(9, 5, 1, 1), 5);
    assert.equal(c.add(9, -2, 1, 2), 3);
    assert.equal(c.add(0xffffffff, 4, 2, 1), 4);
    assert.equal(c.add(3, 1, 2, 2), 1);
    assert.equal(c.add(3, -1, 2, 3), 0);
    assert.equal(c.get(9), 3);
    assert.equal(c.get(12345), 0);
    assert.deepEqual(c.snapshot(), { '9': 3, '4294967295': 4 });
    assert.deepEqual(Object.keys(c.snapshot()), ['9', '4294967295']);
  });

  it('counts an update id once: a second application, or an older one, is skipped', () => {
    const c = new PnCounterMap();
    assert.equal(c.add(1, 10, 7, 3), 10);
    assert.equal(c.add(1, 10, 7, 3), 10, 'the same update again');
    assert.equal(c.add(1, 10, 7, 2), 10, 'an older update of the same writer');
    assert.equal(c.add(1, 10, 8, 3), 20, 'another writer');
    assert.equal(c.add(1, 10, 7, 4), 30);
  });

  it('writer ids tell flows and their incarnations apart', () => {
    const w = writerOf(flow(1000), 1);
    assert.ok(Number.isSafeInteger(w) && w >= 0);
    assert.equal(writerOf(flow(1000), 1), w);
    const reverse = flow(1000);
    assert.equal(
      writerOf(canonicalKey(reverse.dstIp, reverse.srcIp, reverse.dstPort, reverse.srcPort, 6), 1),
      w,
      'both directions are one flow',
    );
    assert.notEqual(writerOf(flow(1000), 2), w);
    assert.notEqual(writerOf(flow(1001), 1), w);
    const many = new Set(Array.from({ length: 20_000 }, (_, i) => writerOf(flow(i % 60000), i)));
    assert.equal(many.size, 20_000);
    assert.throws(() => writerOf(flow(1), -1), isUsageError);
  });

  it('rejects bad arguments with NFS_ERR_USAGE', () => {
    const c = new PnCounterMap();
    const bad: [number, number, number, number][] = [
      [-1, 1, 0, 1],
      [2 ** 32, 1, 0, 1],
      [1, 0.5, 0, 1],
      [1, 1, -1, 1],
      [1, 1, 0, 0],
      [1, 1, 0, 1.5],
    ];
    for (const [key, delta, writer, seq] of bad) {
      assert.throws(() => c.add(key, delta, writer, seq), isUsageError, `${key} ${delta} ${writer} ${seq}`);
    }
    c.add(1, Number.MAX_SAFE_INTEGER, 0, 1);
    assert.throws(() => c.add(1, 1, 0, 2), isUsageError, 'overflow');
  });

  /**
   * Instance A processes interleaved flows and ships deltas (its batches) to B and C, each delivery
   * lost or not. A dies. B, the successor, holds each flow as of some batch no newer than the entries it
   * got, and replays every flow's packets from there, in order, then ships its state. Both B and C must
   * end with every packet counted exactly once, whatever reached whom.
   */
  it('a successor that replays a failed instance packets never counts one twice', () => {
    const scenario = fc.record({
      flows: fc.array(
        fc.record({
          key: fc.constantFrom(1, 2, 0xfffffff0),
          packets: fc.array(fc.integer({ min: -20, max: 1500 }), { minLength: 1, maxLength: 25 }),
        }),
        { minLength: 1, maxLength: 6 },
      ),
      order: fc.array(fc.nat(), { maxLength: 200 }),
      crashAfter: fc.nat(150),
      ship: fc.array(fc.tuple(fc.boolean(), fc.boolean(), fc.boolean()), { maxLength: 200 }),
      rewind: fc.array(fc.nat(), { maxLength: 6 }),
    });
    fc.assert(
      fc.property(scenario, ({ flows, order, crashAfter, ship, rewind }) => {
        const writers = flows.map((_, i) => writerOf(flow(2000 + i), 1000 + i));
        const expected = new Map<number, number>();
        flows.forEach((f) => {
          for (const d of f.packets) expected.set(f.key, (expected.get(f.key) ?? 0) + d);
        });
        const a = new PnCounterMap();
        const b = new PnCounterMap();
        const c = new PnCounterMap();
        const next = flows.map(() => 0);
        // A processes packets in an interleaving of the flows, shipping after some of them. `atB` is what
        // B's entry of each flow covers: the flow's seq at the last shipment B got that carried it.
        const atB = flows.map(() => 0);
        let changed = flows.map(() => false);
        let done = 0;
        for (let step = 0; step < Math.min(order.length, crashAfter); step++) {
          const i = order[step]! % flows.length;
          const f = flows[i]!;
          if (next[i]! >= f.packets.length) continue;
          const seq = ++next[i]!;
          a.add(f.key, f.packets[seq - 1]!, writers[i]!, seq);
          changed[i] = true;
          const [doShip, toB, toC] = ship[done++] ?? [false, false, false];
          if (!doShip) continue;
          const delta = bytes(a.takeDelta());
          if (toB) {
            b.merge(PnCounterMap.decode(new ByteReader(delta)));
            changed.forEach((c, j) => {
              if (c) atB[j] = next[j]!;
            });
          }
          if (toC) c.merge(PnCounterMap.decode(new ByteReader(delta)));
          changed = flows.map(() => false);
        }
        // B holds each flow as of a batch no newer than its entries, and replays from there, some
        // packets twice.
        flows.forEach((f, i) => {
          const from = (rewind[i] ?? 0) % (atB[i]! + 1);
          for (let seq = from + 1; seq <= f.packets.length; seq++) {
            b.add(f.key, f.packets[seq - 1]!, writers[i]!, seq);
            if (seq % 3 === 0) b.add(f.key, f.packets[seq - 1]!, writers[i]!, seq);
          }
        });
        // What A shipped to C alone, B never re-ships as a delta: after a failover the survivors
        // exchange full states once.
        c.merge(PnCounterMap.decode(new ByteReader(bytes(b))));
        b.merge(PnCounterMap.decode(new ByteReader(bytes(c))));
        for (const [key, total] of expected) {
          assert.equal(b.get(key), total, `successor, key ${key}`);
          assert.equal(c.get(key), total, `peer, key ${key}`);
        }
        assert.equal(hex(b), hex(c));
      }),
      { numRuns: 200, ...LIMIT },
    );
  });
});

describe('MaxRegisterMap', { timeout: 60_000 }, () => {
  it('keeps the largest value per key; -0 and 0 are one value', () => {
    const m = new MaxRegisterMap();
    assert.equal(m.get(1), undefined);
    assert.equal(m.set(1, 5), 5);
    assert.equal(m.set(1, 3), 5);
    assert.equal(m.set(1, 7.5), 7.5);
    assert.equal(m.set(2, -0), 0);
    const zero = new MaxRegisterMap();
    zero.set(2, 0);
    const negativeZero = new MaxRegisterMap();
    negativeZero.set(2, -0);
    assert.equal(hex(negativeZero), hex(zero));
    assert.deepEqual(m.snapshot(), { '1': 7.5, '2': 0 });
    assert.throws(() => m.set(1, NaN), isUsageError);
    assert.throws(() => m.set(1, Infinity), isUsageError);
  });
});

describe('OrSetMap', { timeout: 60_000 }, () => {
  it('behaves as a set per key at one replica', () => {
    fc.assert(
      fc.property(fc.array(orSetSubject.op, { maxLength: 60 }), (ops) => {
        const s = new OrSetMap({ replica: 0 });
        const model = new Map<number, Set<number>>();
        for (const o of ops) {
          const set = model.get(o.key) ?? new Set<number>();
          model.set(o.key, set);
          if (o.add) set.add(o.member);
          else set.delete(o.member);
          orSetSubject.apply(s, o);
          assert.equal(s.size(o.key), set.size);
          assert.equal(s.has(o.key, o.member), o.add);
        }
        const expected: Record<string, number[]> = {};
        for (const key of [...model.keys()].sort((x, y) => x - y)) {
          const members = [...model.get(key)!].sort((x, y) => x - y);
          if (members.length > 0) expected[String(key)] = members;
        }
        assert.deepEqual(s.snapshot(), expected);
      }),
      { numRuns: 150, ...LIMIT },
    );
  });

  it('an add wins over a concurrent remove; a remove wins over the adds it saw', () => {
    const a = new OrSetMap({ replica: 0 });
    const b = new OrSetMap({ replica: 1 });
    a.add(10, 22);
    b.merge(a.takeDelta());
    assert.equal(b.size(10), 1);
    b.remove(10, 22);
    a.add(10, 22);
    const fromA = a.takeDelta();
    const fromB = b.takeDelta();
    a.merge(fromB);
    b.merge(fromA);
    assert.ok(a.has(10, 22) && b.has(10, 22), 'the concurrent add survives');
    a.remove(10, 22);
    b.merge(a.takeDelta());
    assert.ok(!b.has(10, 22), 'the remove saw both tags');
    assert.equal(hex(a), hex(b));
  });

  it('a replayed add does not count twice, at the same replica or at another', () => {
    const a = new OrSetMap({ replica: 0 });
    const b = new OrSetMap({ replica: 1 });
    a.add(5, 80);
    a.add(5, 443);
    b.merge(a.takeDelta());
    assert.equal(b.add(5, 443), 2, 'replayed at the successor');
    assert.equal(b.add(5, 443), 2, 'and again');
    a.merge(b.takeDelta());
    assert.equal(a.size(5), 2);
    assert.equal(hex(a), hex(b));
  });

  it('rejects replica ids outside 0..1023 and elements outside their context', () => {
    assert.throws(() => new OrSetMap({ replica: 1024 }), isUsageError);
    assert.throws(() => new OrSetMap({ replica: -1 }), isUsageError);
    const w = new ByteWriter();
    w.u8(CrdtKind.OR_SET);
    w.u8(1);
    w.u16(0);
    w.u32(0);
    w.u32(1);
    w.u16(3);
    w.u53(1);
    w.u32(1);
    w.u32(2);
    assert.throws(() => OrSetMap.decode(new ByteReader(w.view()), { replica: 0 }), /outside the context/);
  });
});

describe('CountMinSketch', { timeout: 60_000 }, () => {
  it('never underestimates, whatever replicas counted what', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(3), fc.nat(500), fc.integer({ min: 1, max: 100 })), {
          minLength: 1,
          maxLength: 400,
        }),
        (adds) => {
          const parts = [0, 1, 2, 3].map((replica) => new CountMinSketch({ replica, depth: 4, width: 64 }));
          const truth = new Map<number, number>();
          for (const [replica, item, count] of adds) {
            truth.set(item, (truth.get(item) ?? 0) + count);
            assert.ok(parts[replica]!.add(item, count) >= count);
          }
          const merged = new CountMinSketch({ replica: 9, depth: 4, width: 64 });
          for (const p of parts)
            merged.merge(CountMinSketch.decode(new ByteReader(bytes(p.takeDelta())), { replica: 9 }));
          for (const p of parts) merged.merge(p);
          for (const [item, count] of truth) {
            const e = merged.estimate(item);
            assert.ok(e >= count, `item ${item}: ${e} < ${count}`);
          }
        },
      ),
      { numRuns: 100, ...LIMIT },
    );
  });

  it('overestimates by more than e·N/width for no more than about e^-depth of the items', () => {
    const depth = 4;
    const width = 256;
    const sketch = new CountMinSketch({ replica: 0, depth, width });
    const truth = new Map<number, number>();
    const random = prng(7);
    let total = 0;
    for (let i = 0; i < 50_000; i++) {
      // Skewed: a few heavy items and a long tail.
      const item = Math.floor(random() ** 3 * 5000);
      const count = 1 + Math.floor(random() * 100);
      sketch.add(item, count);
      truth.set(item, (truth.get(item) ?? 0) + count);
      total += count;
    }
    let bad = 0;
    for (const [item, count] of truth) if (sketch.estimate(item) - count > (Math.E * total) / width) bad++;
    assert.ok(bad / truth.size <= 2 * Math.exp(-depth), `${bad} of ${truth.size} items beyond the bound`);
  });

  it('refuses to merge a sketch of another shape and stays as it was', () => {
    const a = new CountMinSketch({ replica: 0 });
    a.add(1, 5);
    const before = hex(a);
    assert.throws(() => {
      a.merge(new CountMinSketch({ replica: 1, width: 1024 }));
    }, isStateError);
    assert.equal(hex(a), before);
    assert.throws(() => new CountMinSketch({ replica: 0, depth: 0 }), isUsageError);
    assert.throws(() => a.add(1, -1), isUsageError);
  });
});

describe('HyperLogLog', { timeout: 60_000 }, () => {
  const N = 100_000;

  it('estimates 100k distinct items within three standard errors, duplicates and replicas included', () => {
    const precision = 12;
    const bound = 3 * (1.04 / Math.sqrt(2 ** precision));
    const one = new HyperLogLog({ precision });
    const parts = [0, 1, 2, 3].map(() => new HyperLogLog({ precision }));
    const merged = new HyperLogLog({ precision });
    for (let i = 0; i < N; i++) {
      const item = 0x0a000000 + i * 7;
      one.add(item);
      parts[i % 4]!.add(item);
      // Overlap: every tenth item is seen by a second replica too, and added again.
      if (i % 10 === 0) parts[(i + 1) % 4]!.add(item);
      if (i % 1000 === 0)
        for (const p of parts) merged.merge(HyperLogLog.decode(new ByteReader(bytes(p.takeDelta()))));
    }
    for (const p of parts) merged.merge(HyperLogLog.decode(new ByteReader(bytes(p.takeDelta()))));
    const error = Math.abs(one.estimate() - N) / N;
    assert.ok(error <= bound, `relative error ${error.toFixed(4)} above ${bound.toFixed(4)}`);
    assert.equal(hex(merged), hex(one), 'the union of the replicas is the sketch of all items');
    const before = one.estimate();
    for (let i = 0; i < N; i += 3) one.add(0x0a000000 + i * 7);
    assert.equal(one.estimate(), before, 'items seen before change nothing');
  });

  it('counts small sets nearly exactly', () => {
    const h = new HyperLogLog();
    assert.equal(h.estimate(), 0);
    for (let i = 0; i < 100; i++) h.add(i);
    assert.ok(Math.abs(h.estimate() - 100) <= 3, String(h.estimate()));
  });

  it('refuses another precision', () => {
    const a = new HyperLogLog({ precision: 10 });
    a.add(1);
    const before = hex(a);
    assert.throws(() => {
      a.merge(new HyperLogLog({ precision: 11 }));
    }, isStateError);
    assert.equal(hex(a), before);
    assert.throws(() => new HyperLogLog({ precision: 3 }), isUsageError);
  });
});

describe('frozen encodings', { timeout: 60_000 }, () => {
  // Format version 1. These bytes must keep decoding to these states: peers of different builds
  // exchange them, and writer ids must agree between builds too.
  const flow = canonicalKey(parseIpv4('198.51.100.7'), parseIpv4('192.0.2.1'), 40000, 443, 6);
  const samples: {
    name: string;
    make: () => Crdt<unknown>;
    decode: (r: ByteReader) => Crdt<unknown>;
    hex: string;
    snapshot: unknown;
  }[] = [
    {
      name: 'pn-counter map',
      make: () => {
        const c = new PnCounterMap();
        const w = writerOf(flow, 1_700_000_000_000_000);
        c.add(0xc6336407, 1500, w, 1);
        c.add(0xc6336407, -20, w, 2);
        c.add(7, 3, 2 ** 40, 1);
        return c;
      },
      decode: (r) => PnCounterMap.decode(r),
      hex:
        '010100000002000000070000010000000000000000000000000100000000000000030000000000000000c6' +
        '33640700017515ce06ef01000000000000000200000000000005dc0000000000000014',
      snapshot: { '7': 3, '3325256711': 1480 },
    },
    {
      name: 'max-register map',
      make: () => {
        const m = new MaxRegisterMap();
        m.set(1, 2.5);
        m.set(0xffffffff, -1);
        return m;
      },
      decode: (r) => MaxRegisterMap.decode(r),
      hex: '020100000002000000014004000000000000ffffffffbff0000000000000',
      snapshot: { '1': 2.5, '4294967295': -1 },
    },
    {
      name: 'or-set map',
      make: () => {
        const a = new OrSetMap({ replica: 2 });
        a.add(10, 22);
        a.add(10, 80);
        a.remove(10, 22);
        const b = new OrSetMap({ replica: 5 });
        b.add(11, 443);
        a.merge(b.takeDelta());
        return a;
      },
      decode: (r) => OrSetMap.decode(r, { replica: 2 }),
      hex:
        '030100020002000000000000000200050000000000000001000000000000000200020000000000000002' +
        '0000000a00000050000500000000000000010000000b000001bb',
      snapshot: { '10': [80], '11': [443] },
    },
    {
      name: 'count-min sketch',
      make: () => {
        const c = new CountMinSketch({ replica: 3, depth: 2, width: 8 });
        c.add(1, 5);
        c.add(0xc6336407, 7);
        return c;
      },
      decode: (r) => CountMinSketch.decode(r, { replica: 3 }),
      hex:
        '040102000000080001000300000000040000000300000000000000050000000700000000000000070000' +
        '000b00000000000000070000000d0000000000000005',
      snapshot: { depth: 2, width: 8, replicas: { '3': [0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 7, 0, 5, 0, 0] } },
    },
    {
      name: 'hyperloglog',
      make: () => {
        const h = new HyperLogLog({ precision: 4 });
        for (const item of [1, 2, 3]) h.add(item);
        return h;
      },
      decode: (r) => HyperLogLog.decode(r),
      hex: '0501040000000003000306000901000c01',
      snapshot: {
        precision: 4,
        estimate: 3.322229836451913,
        registers: [0, 0, 0, 6, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0],
      },
    },
  ];
  for (const sample of samples) {
    it(`${sample.name}: encodes as frozen, and the frozen bytes decode to the same state`, () => {
      assert.equal(hex(sample.make()), sample.hex);
      const decoded = sample.decode(new ByteReader(Buffer.from(sample.hex, 'hex')));
      assert.deepEqual(decoded.snapshot(), sample.snapshot);
      assert.equal(hex(decoded), sample.hex);
    });
  }
  it('writer ids are frozen too', () => {
    assert.equal(writerOf(flow, 1_700_000_000_000_000), 410211488034561);
  });
});

/**
 * Garbage collections that start while `body` runs, fewest of three tries: none means it allocated (next to)
 * nothing. One try can meet a collection it did not cause (code tiering up, a timer's work on a loaded
 * machine); a body that allocates per call causes one in every try.
 */
async function collectionsDuring(body: () => void): Promise<number> {
  let fewest = Infinity;
  for (let t = 0; t < 3 && fewest > 0; t++) {
    const starts: number[] = [];
    const observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) starts.push(e.startTime);
    });
    observer.observe({ entryTypes: ['gc'] });
    const from = performance.now();
    body();
    const to = performance.now();
    // Entries are delivered asynchronously.
    await new Promise((resolve) => setTimeout(resolve, 20));
    observer.disconnect();
    fewest = Math.min(fewest, starts.filter((s) => s >= from && s <= to).length);
  }
  return fewest;
}

describe('the packet path', { timeout: 60_000 }, () => {
  // Keys, writers and values below 2^30, which V8 keeps as small integers: what is measured is the
  // CRDT code, not V8 boxing a larger number where it crosses a call that V8 chose not to inline.
  const KEYS = 1024;
  const WRITERS = 8192;
  const N = 1_000_000;
  const source = (i: number): number => 0x0a000000 + (i & (KEYS - 1));

  it('a PN-counter add, counted or skipped as a replay, allocates nothing once its tables have grown', async () => {
    const counters = new PnCounterMap();
    const seqs = new Float64Array(WRITERS);
    const count = (from: number, n: number): void => {
      for (let i = from; i < from + n; i++) {
        const w = i & (WRITERS - 1);
        counters.add(source(w), 1500, 0x1000000 + w, (seqs[w] = seqs[w]! + 1));
      }
    };
    const replay = (n: number): void => {
      for (let i = 0; i < n; i++) {
        const w = i & (WRITERS - 1);
        counters.add(source(w), 1500, 0x1000000 + w, seqs[w]!);
      }
    };
    count(0, 200_000);
    replay(200_000);
    let counted = 200_000;
    assert.equal(
      await collectionsDuring(() => {
        count(counted, N);
        counted += N;
      }),
      0,
    );
    assert.equal(await collectionsDuring(() => replay(N)), 0);
    assert.equal(counters.get(source(0)), 1500 * Math.ceil(counted / KEYS));
  });

  it('the check sees a body that allocates on every call', async () => {
    const kept: { i: number }[] = new Array<{ i: number }>(16);
    assert.ok(
      (await collectionsDuring(() => {
        for (let i = 0; i < N; i++) kept[i & 15] = { i };
      })) > 0,
    );
  });

  it('max-register, count-min and HyperLogLog updates allocate nothing', async () => {
    const lastSeen = new MaxRegisterMap();
    const heavy = new CountMinSketch({ replica: 1 });
    const sources = new HyperLogLog();
    const registers = (n: number): void => {
      for (let i = 0; i < n; i++) lastSeen.set(source(i), i);
    };
    const sketch = (n: number): void => {
      for (let i = 0; i < n; i++) heavy.add(source(i), 1500);
    };
    const distinct = (n: number): void => {
      for (let i = 0; i < n; i++) sources.add(i);
    };
    registers(200_000);
    assert.equal(await collectionsDuring(() => registers(N)), 0, 'max-register');
    sketch(200_000);
    assert.equal(await collectionsDuring(() => sketch(N)), 0, 'count-min');
    distinct(200_000);
    assert.equal(await collectionsDuring(() => distinct(N)), 0, 'hyperloglog');
  });
});
