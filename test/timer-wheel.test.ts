import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { NfsError } from '../src/errors.js';
import { TimerWheel } from '../src/timer-wheel.js';

interface Item {
  id: number;
  at: number;
}

void test('fires at or after the deadline, never before', { timeout: 60_000 }, () => {
  const w = new TimerWheel<string>(10, 8);
  const fired: string[] = [];
  w.add('a', 25);
  w.add('b', 30);
  w.add('c', 31);
  assert.equal(w.size, 3);
  w.advance(24, (x) => fired.push(x));
  assert.equal(fired.length, 0);
  w.advance(30, (x) => fired.push(x));
  assert.deepEqual([...fired].sort(), ['a', 'b']);
  w.advance(39, (x) => fired.push(x));
  assert.deepEqual(fired.sort(), ['a', 'b']);
  w.advance(40, (x) => fired.push(x));
  assert.deepEqual(fired.sort(), ['a', 'b', 'c']);
  assert.equal(w.size, 0);
});

void test('items beyond one revolution wait for their own turn', { timeout: 60_000 }, () => {
  const w = new TimerWheel<number>(1, 4);
  const fired: number[] = [];
  w.add(1, 2);
  w.add(2, 6); // same slot as 1, one revolution later
  w.add(3, 102); // same slot, many revolutions later
  w.advance(2, (x) => fired.push(x));
  assert.deepEqual(fired, [1]);
  for (let t = 3; t < 102; t++) w.advance(t, (x) => fired.push(x));
  assert.deepEqual(fired, [1, 2]);
  w.advance(102, (x) => fired.push(x));
  assert.deepEqual(fired, [1, 2, 3]);
});

void test('a large jump fires everything due, whatever the slot', { timeout: 60_000 }, () => {
  const w = new TimerWheel<number>(5, 16);
  const fired: number[] = [];
  for (let i = 0; i < 100; i++) w.add(i, i * 7);
  w.advance(10_000, (x) => fired.push(x));
  assert.equal(fired.length, 100);
  assert.equal(w.size, 0);
});

void test(
  'items added in the past fire on the next advance, even without time moving',
  { timeout: 60_000 },
  () => {
    const w = new TimerWheel<string>(10, 8);
    w.advance(1000, () => assert.fail('empty'));
    w.add('late', 500);
    w.add('now', 1000);
    const fired: string[] = [];
    w.advance(1000, (x) => fired.push(x));
    assert.deepEqual(fired.sort(), ['late', 'now']);
  },
);

void test('time going backwards fires nothing', { timeout: 60_000 }, () => {
  const w = new TimerWheel<string>(10, 8);
  w.advance(1000, () => undefined);
  w.add('x', 1050);
  w.advance(500, () => assert.fail('must not fire'));
  assert.equal(w.size, 1);
});

void test(
  'lazy deletion: the callback re-adds refreshed items, which fire on a later advance',
  { timeout: 60_000 },
  () => {
    // The idle-flow pattern: lastSeen moves on each packet; the wheel holds one stale entry.
    const idle = 100;
    const flow = { lastSeen: 0, expired: false };
    const w = new TimerWheel<typeof flow>(10, 64);
    w.add(flow, flow.lastSeen + idle);
    const onDue = (now: number) => (f: typeof flow) => {
      const due = f.lastSeen + idle;
      if (due > now) w.add(f, due);
      else f.expired = true;
    };
    flow.lastSeen = 80; // a packet arrived; nothing touches the wheel
    w.advance(100, onDue(100));
    assert.equal(flow.expired, false);
    assert.equal(w.size, 1);
    w.advance(179, onDue(179));
    assert.equal(flow.expired, false);
    w.advance(180, onDue(180));
    assert.equal(flow.expired, true);
    assert.equal(w.size, 0);
  },
);

void test('a callback that always re-adds as due cannot loop within one advance', { timeout: 60_000 }, () => {
  const w = new TimerWheel<number>(10, 4);
  w.add(1, 0);
  let calls = 0;
  w.advance(50, (x) => {
    calls++;
    w.add(x, 0);
  });
  assert.equal(calls, 1);
  assert.equal(w.size, 1);
  w.advance(50, () => calls++);
  assert.equal(calls, 2);
});

void test('a throwing callback loses no items and the next advance resumes', { timeout: 60_000 }, () => {
  const w = new TimerWheel<number>(1, 8);
  for (let i = 0; i < 8; i++) w.add(i, i);
  const fired: number[] = [];
  assert.throws(() => {
    w.advance(7, (x) => {
      if (x === 3) throw new Error('boom');
      fired.push(x);
    });
  }, /boom/);
  assert.equal(w.size, 8 - fired.length - 1);
  w.advance(7, (x) => fired.push(x));
  assert.deepEqual(fired.sort(), [0, 1, 2, 4, 5, 6, 7]);
  assert.equal(w.size, 0);
});

void test('clear drops everything; bad arguments are rejected', { timeout: 60_000 }, () => {
  const w = new TimerWheel<number>(1, 4);
  w.add(1, 1);
  w.add(2, 100);
  w.clear();
  assert.equal(w.size, 0);
  w.advance(1000, () => assert.fail('cleared'));
  assert.throws(() => new TimerWheel(0, 4), NfsError);
  assert.throws(() => new TimerWheel(1, 0), NfsError);
  assert.throws(() => new TimerWheel(1, 2.5), NfsError);
  assert.throws(() => {
    w.add(1, NaN);
  }, NfsError);
});

void test(
  'property: no item fires early; every item fires within one tick after its deadline',
  { timeout: 60_000 },
  () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 1, max: 32 }),
        fc.array(fc.record({ at: fc.double({ min: 0, max: 5000, noNaN: true }), addAfter: fc.nat(60) }), {
          maxLength: 60,
        }),
        fc.array(fc.double({ min: 0, max: 400, noNaN: true }), { minLength: 1, maxLength: 80 }),
        (tickMs, slots, specs, steps) => {
          const w = new TimerWheel<Item>(tickMs, slots);
          const pending = new Map<number, Item>();
          let now = 0;
          let nextId = 0;
          // Items are added interleaved with the clock, so some are added already due.
          const plan = specs.map((s) => ({ ...s, step: s.addAfter % steps.length }));
          for (let i = 0; i < steps.length; i++) {
            for (const s of plan) {
              if (s.step !== i) continue;
              const item = { id: nextId++, at: s.at };
              pending.set(item.id, item);
              w.add(item, item.at);
            }
            now += steps[i]!;
            w.advance(now, (item) => {
              assert.ok(item.at <= now, `fired early: at ${item.at}, now ${now}`);
              assert.ok(pending.delete(item.id), 'fired twice');
            });
            for (const item of pending.values()) {
              assert.ok(item.at + tickMs > now, `late by more than a tick: at ${item.at}, now ${now}`);
            }
            assert.equal(w.size, pending.size);
          }
          // Run past every deadline: everything left fires.
          w.advance(now + 6000, (item) => pending.delete(item.id));
          assert.equal(pending.size, 0);
          assert.equal(w.size, 0);
        },
      ),
      { interruptAfterTimeLimit: 1500, numRuns: 500 },
    );
  },
);
