import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NfsError } from '../../src/errors.js';
import { buildUdp } from '../../src/packet/build.js';
import { flowKeyOf, flowHashOf } from '../../src/packet/flow-key.js';
import { Packet } from '../../src/packet/packet.js';
import { Switch } from '../../src/switch/switch.js';

function udp(srcPort: number): Packet {
  const buf = new Uint8Array(64);
  const n = buildUdp(buf, 0, {
    srcIp: 0x0a000001,
    dstIp: 0xc0000201,
    srcPort,
    dstPort: 80,
    payload: new Uint8Array(4),
  });
  const p = new Packet();
  p.parse(buf, 0, n);
  return p;
}

describe('Switch', { timeout: 60_000 }, () => {
  it('spreads flows without rules over the live instances by consistent hashing', () => {
    const sw = new Switch(['a', 'b', 'c']);
    const hits = [0, 0, 0];
    for (let port = 1000; port < 4000; port++) {
      const p = udp(port);
      const r = sw.route(p, flowHashOf(p), p.length);
      hits[r.primary]!++;
      assert.equal(r.secondary, -1);
    }
    for (const h of hits) assert.ok(h > 800, `uneven: ${hits.join(',')}`);
    sw.setLive([0, 2]);
    for (let port = 1000; port < 1100; port++) {
      const p = udp(port);
      assert.notEqual(sw.route(p, flowHashOf(p), p.length).primary, 1);
    }
  });

  it('keeps each running flow with its owner when the live set changes: a pin where the default moved, none under a rule', () => {
    const sw = new Switch(['a', 'b', 'c']);
    const running = Array.from({ length: 600 }, (_, i) => flowKeyOf(udp(1000 + i)));
    const ruled = running[0]!;
    assert.ok(sw.installRule(ruled, { primary: 1, epoch: 7 }));
    const before = running.map((k) => sw.owner(k));
    const visit = (v: (a: number, b: number, c: number, d: number, e: number) => void): void => {
      for (const k of running) v(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto);
    };
    const pinned = sw.setLive([0, 2], visit);
    assert.deepEqual(
      running.map((k) => sw.owner(k)),
      before,
      'every running flow keeps its owner',
    );
    const pins = sw.listRules().filter((r) => r.epoch === 0);
    assert.equal(pins.length, pinned);
    assert.equal(
      pinned,
      before.filter((o, i) => o === 1 && i > 0).length,
      "exactly b's flows without a rule",
    );
    assert.ok(pinned > 100);
    assert.equal(sw.listRules().find((r) => r.epoch === 7)?.primary, 'b', 'the rule stays as it was');
    const fresh = flowKeyOf(udp(9000));
    assert.notEqual(sw.owner(fresh), 1, 'a new flow goes to a live instance');
    assert.equal(sw.setLive([0, 2], visit), 0, 'the same live set moves nothing');
  });

  it("lets an exact rule win, copies to its primary's secondary, and counts its packets", () => {
    const sw = new Switch(['a', 'b', 'c']);
    const p = udp(5000);
    assert.ok(sw.installRule(flowKeyOf(p), { primary: 2, epoch: 5 }));
    let r = sw.route(p, flowHashOf(p), p.length);
    assert.deepEqual([r.primary, r.secondary, r.epoch], [2, -1, 5]);
    sw.setSecondary(2, 1);
    r = sw.route(p, flowHashOf(p), p.length);
    assert.deepEqual([r.primary, r.secondary, r.epoch], [2, 1, 5]);
    assert.equal(sw.listRules()[0]?.secondary, 'b');
    const rule = sw.listRules()[0];
    assert.equal(rule?.packets, 2);
    assert.equal(rule.primary, 'c');
  });

  it('refuses a rule older than the one installed', () => {
    const sw = new Switch(['a', 'b']);
    const key = flowKeyOf(udp(5000));
    assert.ok(sw.installRule(key, { primary: 1, epoch: 5 }));
    assert.equal(sw.installRule(key, { primary: 0, epoch: 4 }), false);
    assert.equal(sw.listRules()[0]?.primary, 'b');
    assert.equal(sw.staleRules, 1);
  });

  it('rejects a rule naming an unknown instance with a clear error', () => {
    const sw = new Switch(['a']);
    assert.throws(() => sw.installRule(flowKeyOf(udp(1)), { primary: 3, epoch: 1 }), NfsError);
  });
});
