import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { canonicalKey, flowKeyString, parseIpv4 } from '../../src/packet/flow-key.js';
import { GivenGlobalState, LocalGlobalState } from '../../src/state/global-local.js';
import { NfsError } from '../../src/errors.js';
import type { FlowKey } from '../../src/types.js';

const key = (n: number): FlowKey =>
  canonicalKey(parseIpv4('10.0.0.1'), parseIpv4('192.0.2.1'), 1000 + n, 80, 6);

test(
  'pool: lowest free value first, idempotent per owner, released values reused',
  { timeout: 60_000 },
  () => {
    const g = new LocalGlobalState();
    const p = g.pool('nat.port', 100, 104);
    assert.equal(p.size, 5);
    assert.equal(p.acquire(key(0)), 100);
    assert.equal(p.acquire(key(1)), 101);
    assert.equal(p.acquire(key(0)), 100, 'same owner, same value');
    // The reverse direction of a flow is the same owner.
    const k = key(2);
    assert.equal(p.acquire(k), 102);
    assert.equal(
      p.acquire({ srcIp: k.dstIp, dstIp: k.srcIp, srcPort: k.dstPort, dstPort: k.srcPort, proto: 6 }),
      102,
    );
    assert.equal(p.inUse, 3);
    p.release(101);
    assert.equal(p.ownerOf(101), undefined);
    assert.equal(p.inUse, 2);
    assert.equal(p.acquire(key(3)), 101, 'the released value is the lowest free one');
    assert.equal(p.acquire(key(4)), 103);
    assert.equal(p.acquire(key(5)), 104);
    assert.equal(p.acquire(key(6)), -1, 'exhausted');
    assert.deepEqual(p.ownerOf(104), key(5));
    p.release(100);
    p.release(100);
    assert.equal(p.acquire(key(6)), 100);
    assert.equal(p.inUse, 5);
  },
);

test('handles are shared per name; a pool name cannot change its range', { timeout: 60_000 }, () => {
  const g = new LocalGlobalState();
  assert.equal(g.pool('a', 1, 10), g.pool('a', 1, 10));
  assert.equal(g.counters('c'), g.counters('c'));
  assert.equal(g.sets('s'), g.sets('s'));
  assert.notEqual(g.counters('c'), g.counters('d'));
  assert.throws(
    () => g.pool('a', 1, 11),
    (e: unknown) => e instanceof NfsError && e.code === 'NFS_ERR_CONFIG',
  );
  assert.throws(() => g.pool('b', 5, 4), NfsError);
});

test('counters, sets and decide', { timeout: 60_000 }, () => {
  const g = new LocalGlobalState();
  const c = g.counters('lb.conns');
  assert.equal(c.add(2, 1), 1);
  assert.equal(c.add(2, 4), 5);
  assert.equal(c.get(2), 5);
  assert.equal(c.get(7), 0);
  const s = g.sets('ids.ports');
  assert.equal(s.add(9, 80), 1);
  assert.equal(s.add(9, 80), 1);
  assert.equal(s.add(9, 443), 2);
  assert.equal(s.size(9), 2);
  assert.equal(s.size(10), 0);
  let calls = 0;
  assert.equal(
    g.decide('lb.backend', key(0), () => {
      calls++;
      return 3;
    }),
    3,
  );
  assert.equal(calls, 1);
});

test('snapshot is sorted and leaves out zero counters and empty sets', { timeout: 60_000 }, () => {
  const g = new LocalGlobalState();
  g.counters('z').add(5, 1);
  g.counters('z').add(1, 2);
  g.counters('z').add(3, 1);
  g.counters('z').add(3, -1);
  g.sets('a').add(4, 9);
  g.sets('a').add(4, 1);
  const p = g.pool('p', 1, 10);
  p.acquire(key(1));
  p.acquire(key(0));
  p.release(1);
  p.acquire(key(2));
  const snap = g.snapshot();
  assert.deepEqual(snap, {
    pools: {
      p: [
        { value: 1, owner: flowKeyString(key(2)) },
        { value: 2, owner: flowKeyString(key(0)) },
      ],
    },
    counters: { z: { '1': 2, '5': 1 } },
    sets: { a: { '4': [1, 9] } },
  });
  assert.deepEqual(Object.keys(snap.counters.z), ['1', '5']);
});

test(
  'GivenGlobalState reproduces given pool values and decisions, and allocates the rest',
  { timeout: 60_000 },
  () => {
    const given = new Map<string, Record<string, number>>([
      [flowKeyString(key(0)), { 'nat.port': 107, 'lb.backend': 2 }],
      [flowKeyString(key(1)), { 'nat.port': 100 }],
    ]);
    const g = new GivenGlobalState(given);
    const p = g.pool('nat.port', 100, 109);
    assert.equal(p.acquire(key(0)), 107);
    assert.equal(p.acquire(key(2)), 100, 'no given value: lowest free');
    assert.equal(p.acquire(key(1)), 100, 'the given value wins over an earlier holder');
    assert.deepEqual(p.ownerOf(100), key(1));
    assert.equal(p.acquire(key(3)), 101);
    // The displaced holder releases first (as it did in the deployment); the current one keeps it.
    p.release(100);
    assert.deepEqual(p.ownerOf(100), key(1));
    p.release(100);
    assert.equal(p.ownerOf(100), undefined);
    assert.equal(
      g.decide('lb.backend', key(0), () => 0),
      2,
    );
    assert.equal(
      g.decide('lb.backend', key(5), () => 1),
      1,
    );
    assert.equal(
      g.decide('other', key(0), () => 4),
      4,
    );
  },
);

test(
  'property: a pool hands out the lowest free value, once per owner, never to two owners',
  { timeout: 60_000 },
  () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.boolean(), fc.nat(30)), { maxLength: 200 }), (ops) => {
        const p = new LocalGlobalState().pool('p', 0, 9);
        const model = new Map<number, number>(); // value → owner n
        for (const [isAcquire, n] of ops) {
          if (isAcquire) {
            const v = p.acquire(key(n));
            const held = [...model].find(([, o]) => o === n);
            if (held !== undefined) {
              assert.equal(v, held[0]);
              continue;
            }
            let lowest = -1;
            for (let c = 9; c >= 0; c--) if (!model.has(c)) lowest = c;
            assert.equal(v, lowest);
            if (v >= 0) model.set(v, n);
          } else {
            p.release(n % 10);
            model.delete(n % 10);
          }
          assert.equal(p.inUse, model.size);
        }
        for (const [v, n] of model) assert.deepEqual(p.ownerOf(v), key(n));
      }),
      { interruptAfterTimeLimit: 1000, numRuns: 300 },
    );
  },
);
