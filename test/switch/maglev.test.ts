import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NfsError } from '../../src/errors.js';
import { Maglev, fnv1a32, murmur3_32 } from '../../src/switch/maglev.js';

const names = (n: number, prefix = 'nf-') => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

// A fixed pseudo-random key set, so failures reproduce.
function keys(n: number, seed = 12345): Uint32Array {
  const out = new Uint32Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x >>> 0;
  }
  return out;
}

void test('hashes match published vectors', { timeout: 60_000 }, () => {
  assert.equal(fnv1a32(''), 0x811c9dc5);
  assert.equal(fnv1a32('a'), 0xe40c292c);
  assert.equal(fnv1a32('foobar'), 0xbf9cf968);
  assert.equal(murmur3_32('', 0), 0);
  assert.equal(murmur3_32('hello', 0), 0x248bfa47);
  assert.equal(murmur3_32('Hello, world!', 0x9747b28c), 0x24884cba);
});

void test('every backend gets about 1/N of the table', { timeout: 60_000 }, () => {
  for (const n of [1, 3, 7, 10, 33]) {
    const m = new Maglev(names(n));
    const shares = m.shares();
    assert.equal(
      shares.reduce((a, b) => a + b, 0),
      m.tableSize,
    );
    const ideal = m.tableSize / n;
    for (const s of shares) assert.ok(Math.abs(s - ideal) <= ideal * 0.01, `N=${n}: share ${s} vs ${ideal}`);
  }
});

void test('lookups spread keys evenly and stay in range', { timeout: 60_000 }, () => {
  const n = 8;
  const m = new Maglev(names(n));
  const counts = new Array<number>(n).fill(0);
  for (const k of keys(100_000)) {
    const i = m.lookup(k);
    assert.ok(i >= 0 && i < n);
    counts[i]!++;
  }
  for (const c of counts) assert.ok(Math.abs(c - 100_000 / n) < 100_000 / n / 10, `count ${c}`);
  // Negative and large inputs are taken as unsigned 32-bit values.
  assert.equal(m.lookup(-1), m.lookup(0xffffffff));
});

void test('removing one backend of N moves little more than its own keys', { timeout: 60_000 }, () => {
  for (const n of [5, 10, 20]) {
    const before = new Maglev(names(n));
    const removed = `nf-${n >> 1}`;
    const after = new Maglev(before.backends.filter((b) => b !== removed));
    let onRemoved = 0;
    let movedOthers = 0;
    const ks = keys(100_000, n);
    for (const k of ks) {
      const was = before.backends[before.lookup(k)];
      const now = after.backends[after.lookup(k)];
      if (was === removed) onRemoved++;
      else if (was !== now) movedOthers++;
    }
    assert.ok(onRemoved > 0);
    // Keys that were not on the removed backend mostly stay: disruption well under the paper's bound.
    assert.ok(
      onRemoved + movedOthers < (1.5 / n) * ks.length,
      `N=${n}: ${onRemoved} on removed + ${movedOthers} others moved`,
    );
  }
});

void test('adding a backend takes about 1/(N+1) of the keys', { timeout: 60_000 }, () => {
  const n = 10;
  const before = new Maglev(names(n));
  const after = new Maglev([...names(n), 'nf-new']);
  let moved = 0;
  const ks = keys(100_000, 99);
  for (const k of ks) if (before.backends[before.lookup(k)] !== after.backends[after.lookup(k)]) moved++;
  assert.ok(moved < (1.5 / (n + 1)) * ks.length, `moved ${moved}`);
});

void test('deterministic for the same backend list', { timeout: 60_000 }, () => {
  const a = new Maglev(names(12, 'host-a/'), 251);
  const b = new Maglev(names(12, 'host-a/'), 251);
  for (let h = 0; h < 251; h++) assert.equal(a.lookup(h), b.lookup(h));
  // The backend order names indices, but the owner of each slot is the same backend.
  const reversed = new Maglev([...a.backends].reverse(), 251);
  let same = 0;
  for (let h = 0; h < 251; h++) if (a.backends[a.lookup(h)] === reversed.backends[reversed.lookup(h)]) same++;
  assert.ok(same > 200, `same ${same}/251`);
});

void test('no backends gives -1; bad table sizes are rejected', { timeout: 60_000 }, () => {
  assert.equal(new Maglev([]).lookup(42), -1);
  assert.throws(() => new Maglev(['a'], 65536), NfsError);
  assert.throws(() => new Maglev(['a'], 1), NfsError);
  assert.throws(() => new Maglev(names(4), 3), NfsError);
  assert.equal(new Maglev(['only']).lookup(7), 0);
});
