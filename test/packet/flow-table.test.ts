import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { buildUdp } from '../../src/packet/build.js';
import { canonicalKey, flowKeyString } from '../../src/packet/flow-key.js';
import { FlowTable } from '../../src/packet/flow-table.js';
import { Packet } from '../../src/packet/packet.js';
import { DropReason, IpProto, type FlowKey } from '../../src/types.js';

function reversed(k: FlowKey): FlowKey {
  return { srcIp: k.dstIp, dstIp: k.srcIp, srcPort: k.dstPort, dstPort: k.srcPort, proto: k.proto };
}

function modelKey(k: FlowKey): string {
  return flowKeyString(canonicalKey(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto));
}

function lookup<V>(table: FlowTable<V>, k: FlowKey): V | undefined {
  return table.get(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto);
}

function sortedEntries<V>(table: FlowTable<V>): [string, V][] {
  return [...table.entries()]
    .map(([k, v]): [string, V] => [flowKeyString(k), v])
    .sort(([a], [b]) => (a < b ? -1 : 1));
}

function key(i: number): FlowKey {
  return {
    srcIp: 0x0a000000 + (i >>> 8),
    dstIp: 0xc0a80001,
    srcPort: 1024 + (i & 0xff),
    dstPort: 80,
    proto: IpProto.TCP,
  };
}

describe('FlowTable', { timeout: 60_000 }, () => {
  it('finds an entry from both directions and replaces on set', () => {
    const t = new FlowTable<string>();
    const k = { srcIp: 0xc0a80001, dstIp: 0x0a000001, srcPort: 80, dstPort: 5000, proto: IpProto.TCP };
    t.set(k, 'a');
    assert.equal(lookup(t, k), 'a');
    assert.equal(lookup(t, reversed(k)), 'a');
    t.set(reversed(k), 'b');
    assert.equal(t.size, 1);
    assert.equal(lookup(t, k), 'b');
    assert.equal(lookup(t, { ...k, proto: IpProto.UDP }), undefined);
    assert.equal(lookup(t, { ...k, srcPort: 5000, dstPort: 80 }), undefined);
    assert.ok(t.has(reversed(k)));
  });

  it('keys entries by canonical FlowKey', () => {
    const t = new FlowTable<number>();
    t.set({ srcIp: 9, dstIp: 3, srcPort: 1, dstPort: 2, proto: 17 }, 1);
    assert.deepEqual([...t.entries()], [[{ srcIp: 3, dstIp: 9, srcPort: 2, dstPort: 1, proto: 17 }, 1]]);
  });

  it('looks up a parsed packet of either direction', () => {
    const t = new FlowTable<string>();
    const buf = new Uint8Array(64);
    const pkt = new Packet();
    const spec = {
      srcIp: 0x0a000001,
      dstIp: 0x0a000002,
      srcPort: 5353,
      dstPort: 53,
      payload: new Uint8Array(4),
    };
    assert.equal(pkt.parse(buf, 0, buildUdp(buf, 0, spec)), DropReason.NONE);
    assert.equal(t.getFlow(pkt), undefined);
    t.set({ ...spec, proto: IpProto.UDP }, 'dns');
    const reply = { ...spec, srcIp: spec.dstIp, dstIp: spec.srcIp, srcPort: 53, dstPort: 5353 };
    assert.equal(pkt.parse(buf, 0, buildUdp(buf, 0, reply)), DropReason.NONE);
    assert.equal(t.getFlow(pkt), 'dns');
  });

  it('grows past its initial capacity and keeps every entry; delete and clear remove them', () => {
    const t = new FlowTable<number>(8);
    const n = 5000;
    for (let i = 0; i < n; i++) t.set(key(i), i);
    assert.equal(t.size, n);
    for (let i = 0; i < n; i++) assert.equal(lookup(t, reversed(key(i))), i);
    for (let i = 0; i < n; i += 2) assert.equal(t.delete(key(i)), true);
    assert.equal(t.delete(key(0)), false);
    assert.equal(t.size, n / 2);
    for (let i = 0; i < n; i++) assert.equal(lookup(t, key(i)), i % 2 === 0 ? undefined : i);
    t.clear();
    assert.equal(t.size, 0);
    assert.equal(lookup(t, key(1)), undefined);
    assert.deepEqual([...t.entries()], []);
    t.set(key(1), 1);
    assert.equal(lookup(t, key(1)), 1);
  });

  it('behaves like a Map keyed by canonical flow under random set/delete/get', () => {
    // A small pool of keys, some sharing addresses or differing only in direction or protocol, so
    // operations collide, repeat and wrap around a small table.
    const ip = fc.constantFrom(0x0a000001, 0x0a000002, 0xc0a80001, 0xffffffff, 0);
    const port = fc.constantFrom(0, 53, 80, 443, 65535);
    const flow = fc.record({
      srcIp: ip,
      dstIp: ip,
      srcPort: port,
      dstPort: port,
      proto: fc.constantFrom(6, 17),
    });
    const op = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), key: flow, value: fc.nat({ max: 1000 }) }),
      fc.record({ kind: fc.constant('delete' as const), key: flow }),
      fc.record({ kind: fc.constant('get' as const), key: flow }),
    );
    fc.assert(
      fc.property(
        fc.array(op, { maxLength: 300, size: 'max' }),
        fc.constantFrom(1, 8, 64),
        (ops, capacity) => {
          const table = new FlowTable<number>(capacity);
          const model = new Map<string, number>();
          for (const o of ops) {
            const mk = modelKey(o.key);
            if (o.kind === 'set') {
              table.set(o.key, o.value);
              model.set(mk, o.value);
            } else if (o.kind === 'delete') {
              assert.equal(table.delete(o.key), model.delete(mk));
            } else {
              assert.equal(lookup(table, o.key), model.get(mk));
              assert.equal(lookup(table, reversed(o.key)), model.get(mk));
            }
            assert.equal(table.size, model.size);
          }
          assert.deepEqual(
            sortedEntries(table),
            [...model.entries()].sort(([a], [b]) => (a < b ? -1 : 1)),
          );
        },
      ),
      { numRuns: 200, interruptAfterTimeLimit: 2000 },
    );
  });

  it('keeps every remaining key reachable after deletes in crowded tables', () => {
    // Many random keys in a table kept near its 0.7 load limit, deleted in random order: exercises the
    // backward shift across long probe runs and the wrap at the end of the arrays.
    const flow = fc.record({
      srcIp: fc.nat({ max: 0xffffffff }),
      dstIp: fc.nat({ max: 0xffffffff }),
      srcPort: fc.nat({ max: 0xffff }),
      dstPort: fc.nat({ max: 0xffff }),
      proto: fc.constantFrom(6, 17),
    });
    fc.assert(
      fc.property(
        fc.uniqueArray(flow, { minLength: 1, maxLength: 90, selector: modelKey, size: 'max' }),
        fc.array(fc.nat(), { maxLength: 90, size: 'max' }),
        (flows, order) => {
          const table = new FlowTable<number>(8);
          flows.forEach((k, i) => {
            table.set(k, i);
          });
          const alive = new Map(flows.map((k, i) => [i, k]));
          for (const pick of order) {
            if (alive.size === 0) break;
            const i = [...alive.keys()][pick % alive.size]!;
            assert.equal(table.delete(reversed(alive.get(i)!)), true);
            alive.delete(i);
            for (const [j, k] of alive) assert.equal(lookup(table, k), j);
          }
          assert.equal(table.size, alive.size);
        },
      ),
      { numRuns: 100, interruptAfterTimeLimit: 2000 },
    );
  });
});
