import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode, NfsError } from '../../src/errors.js';
import { LatencyHistogram, MAX_LATENCY_US } from '../../src/traffic/latency.js';

const within = (actual: number, expected: number, rel = 0.001): void => {
  assert.ok(Math.abs(actual - expected) <= expected * rel + 1, `${actual} not within ${rel} of ${expected}`);
};

void test('empty histogram reports zeros', { timeout: 60_000 }, () => {
  const h = new LatencyHistogram();
  assert.deepEqual(h.toJSON(), { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 });
});

void test('percentiles to three significant digits', { timeout: 60_000 }, () => {
  const h = new LatencyHistogram();
  for (let v = 1; v <= 10_000; v++) h.record(v);
  assert.equal(h.count, 10_000);
  within(h.percentile(50), 5000);
  within(h.percentile(90), 9000);
  within(h.percentile(99), 9900);
  within(h.percentile(99.9), 9990);
  within(h.percentile(100), 10_000);
  assert.equal(h.percentile(0), 1);
  within(h.mean, 5000.5);
  within(h.max, 10_000);
  const j = h.toJSON();
  assert.deepEqual(Object.keys(j), ['count', 'p50', 'p90', 'p99', 'p999', 'max', 'mean']);
  assert.equal(j.p999, h.percentile(99.9));
});

void test('values are clamped to [0, one hour] and NaN is ignored', { timeout: 60_000 }, () => {
  const h = new LatencyHistogram();
  h.record(-5);
  h.record(NaN);
  h.record(Infinity);
  h.record(10 * MAX_LATENCY_US);
  assert.equal(h.count, 3);
  assert.equal(h.percentile(0), 0);
  assert.equal(h.max, MAX_LATENCY_US);
  h.record(2.6);
  assert.equal(h.count, 4);
});

void test('merge adds counts', { timeout: 60_000 }, () => {
  const a = new LatencyHistogram();
  const b = new LatencyHistogram();
  for (let i = 0; i < 1000; i++) a.record(100);
  for (let i = 0; i < 1000; i++) b.record(300);
  a.merge(b);
  assert.equal(a.count, 2000);
  within(a.percentile(25), 100);
  within(a.percentile(75), 300);
  within(a.mean, 200);
  assert.equal(b.count, 1000);
});

void test('encode and decode round-trip the distribution', { timeout: 60_000 }, () => {
  const h = new LatencyHistogram();
  for (let i = 1; i <= 5000; i++) h.record((i * 7919) % 250_000);
  h.record(MAX_LATENCY_US);
  const s = h.encode();
  assert.match(s, /^HISTF/);
  const d = LatencyHistogram.decode(s);
  assert.equal(d.count, h.count);
  for (const p of [50, 90, 99, 99.9]) assert.equal(d.percentile(p), h.percentile(p));
  within(d.max, h.max);
  assert.ok(d.max <= MAX_LATENCY_US);
  within(d.mean, h.mean, 0.01);
  // A decoded histogram merges like any other.
  d.merge(LatencyHistogram.decode(new LatencyHistogram().encode()));
  assert.equal(d.count, h.count);
});

void test('garbage does not decode', { timeout: 60_000 }, () => {
  for (const bad of ['', 'garbage', 'AAAA', 'HISTFAAAAC54nJNpmSzMwMDAxcDAwMjAwMDMAAEgNsO1']) {
    assert.throws(
      () => LatencyHistogram.decode(bad),
      (err: unknown) => err instanceof NfsError && err.code === ErrorCode.FRAME,
      bad,
    );
  }
});

void test('reset empties it', { timeout: 60_000 }, () => {
  const h = new LatencyHistogram();
  h.record(5);
  h.reset();
  assert.equal(h.count, 0);
});
