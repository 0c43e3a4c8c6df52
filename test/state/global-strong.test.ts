import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PoolOp, encodePoolUpdate } from '../../src/global/pool-rule.js';
import { canonicalKey, flowKeyString, parseFlowKeyString } from '../../src/packet/flow-key.js';
import { DECISION_PENDING, StrongGlobalState } from '../../src/state/global-strong.js';
import { LocalGlobalState } from '../../src/state/global-local.js';

const a = parseFlowKeyString('udp 10.0.0.1:1000 192.0.2.1:80');
const b = parseFlowKeyString('udp 10.0.0.2:1000 192.0.2.1:80');
const name = (k: typeof a): string =>
  flowKeyString(canonicalKey(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto));
const claim = (owner: string, incarnation: number, candidate: number): Uint8Array =>
  encodePoolUpdate({
    op: candidate < 0 ? PoolOp.CLAIM_ANY : PoolOp.CLAIM,
    pool: 'p',
    owner,
    incarnation,
    candidate,
  });

void test(
  'a claim not decided yet throws DECISION_PENDING once, and asks the main thread once',
  { timeout: 60_000 },
  () => {
    const g = new StrongGlobalState(new LocalGlobalState());
    const pool = g.pool('p', 10, 20);
    g.bind(7, 1);
    assert.throws(
      () => pool.acquire(a),
      (err: unknown) => err === DECISION_PENDING,
    );
    assert.throws(
      () => pool.acquire(a),
      (err: unknown) => err === DECISION_PENDING,
    );
    g.unbind();
    assert.deepEqual(g.takeRequests(), [{ op: PoolOp.CLAIM, pool: 'p', owner: name(a), incarnation: 7 }]);
    assert.deepEqual(g.takeRequests(), []);
    assert.deepEqual(g.declared(), [{ name: 'p', first: 10, last: 20 }]);
  },
);

void test(
  'the mirror answers once the log decided; ownerOf and inUse read it; a release goes by value',
  { timeout: 60_000 },
  () => {
    const g = new StrongGlobalState(new LocalGlobalState());
    const pool = g.pool('p', 10, 20);
    g.bind(7, 1);
    assert.throws(() => pool.acquire(a));
    g.unbind();
    g.takeRequests();
    // Another instance's flow took 10 first; ours lost its candidate and took the lowest free.
    g.applyLog([claim(name(b), 3, 10), claim(name(a), 7, 10), claim(name(a), 7, -1)]);
    assert.deepEqual(g.answer('p', name(a), 7, 11), a, 'the flow that waited runs again');
    g.bind(7, 1);
    assert.equal(pool.acquire(a), 11);
    g.unbind();
    assert.deepEqual(pool.ownerOf(10), b);
    assert.equal(pool.inUse, 2);
    pool.release(11);
    pool.release(12); // held by nobody: nothing to ask
    assert.deepEqual(g.takeRequests(), [{ op: PoolOp.RELEASE, pool: 'p', owner: name(a), incarnation: 7 }]);
  },
);

void test(
  'a claim that could not be decided answers -1 once; a later run asks again',
  { timeout: 60_000 },
  () => {
    const g = new StrongGlobalState(new LocalGlobalState());
    const pool = g.pool('p', 10, 20);
    g.bind(7, 1);
    assert.throws(() => pool.acquire(a));
    g.takeRequests();
    assert.deepEqual(g.answer('p', name(a), 7, -1), a);
    assert.equal(pool.acquire(a), -1, 'the NF goes on without a value');
    assert.throws(
      () => pool.acquire(a),
      (err: unknown) => err === DECISION_PENDING,
    );
    assert.equal(g.takeRequests().length, 1);
    assert.equal(g.answer('p', name(b), 1, 12), undefined, 'nothing waits for an answer never asked');
  },
);

void test(
  'a snapshot lists the holdings of the flows this worker has; bad log entries are counted',
  { timeout: 60_000 },
  () => {
    const mine = new Set([name(a)]);
    const g = new StrongGlobalState(new LocalGlobalState(), (k) => mine.has(name(k)));
    g.pool('p', 10, 20);
    g.applyLog([
      claim(name(a), 7, 12),
      claim(name(b), 3, 13),
      new Uint8Array([9, 9]),
      encodePoolUpdate({ op: PoolOp.CLAIM, pool: 'other', owner: name(a), incarnation: 1, candidate: 1 }),
    ]);
    assert.deepEqual(g.snapshot().pools, { p: [{ value: 12, owner: name(a) }] });
    assert.equal(g.malformed, 1);
    assert.equal(g.undeclared, 1);
  },
);

void test(
  'a decision: the worker proposes its own choice; the first in log order is everyone’s',
  { timeout: 60_000 },
  () => {
    const g = new StrongGlobalState(new LocalGlobalState());
    g.bind(7, 1);
    assert.throws(
      () => g.decide('lb.backend', a, () => 2),
      (err: unknown) => err === DECISION_PENDING,
    );
    assert.deepEqual(g.takeRequests(), [
      { op: PoolOp.DECIDE, pool: 'lb.backend', owner: name(a), incarnation: 7, candidate: 2 },
    ]);
    // Another instance decided first (a successor's replay would find this).
    const decide = (candidate: number): Uint8Array =>
      encodePoolUpdate({ op: PoolOp.DECIDE, pool: 'lb.backend', owner: name(a), incarnation: 7, candidate });
    g.applyLog([decide(3), decide(2)]);
    assert.deepEqual(g.answer('lb.backend', name(a), 7, 3), a);
    assert.equal(
      g.decide('lb.backend', a, () => 2),
      3,
    );
    // "No mapping" (-1) is a decision too.
    g.unbind();
    g.bind(8, 1);
    g.applyLog([
      encodePoolUpdate({
        op: PoolOp.DECIDE,
        pool: 'nat.inbound',
        owner: name(a),
        incarnation: 8,
        candidate: -1,
      }),
    ]);
    assert.equal(
      g.decide('nat.inbound', a, () => 5),
      -1,
    );
    assert.deepEqual(g.takeRequests(), []);
  },
);
