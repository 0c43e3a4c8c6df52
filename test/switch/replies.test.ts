import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import { canonicalKey } from '../../src/packet/flow-key.js';
import { ReplyMap } from '../../src/switch/replies.js';
import { parsed, udp } from '../../src/testing/driver.js';

describe('ReplyMap', { timeout: 60_000 }, () => {
  const owner = canonicalKey(0x0a010002, 0xc633640a, 40000, 5001, 17);

  it('counts replies it resolves; parks at most maxParked, and says when a wait is over', () => {
    const clock = new ManualClock(1000);
    const map = new ReplyMap(
      (pkt) => (pkt.dstPort === 1024 ? owner : pkt.dstPort === 2048 ? null : undefined),
      { waitMs: 100, maxParked: 2 },
      clock,
    );
    assert.equal(map.ownerOf(parsed(udp('198.51.100.10', 5001, '203.0.113.1', 1024))), owner);
    assert.equal(map.ownerOf(parsed(udp('198.51.100.10', 5001, '203.0.113.1', 2048))), null);
    assert.equal(map.ownerOf(parsed(udp('198.51.100.10', 5001, '203.0.113.1', 80))), undefined);
    assert.equal(map.resolved, 1);
    const pkt = parsed(udp('198.51.100.10', 5001, '203.0.113.1', 2048, 'x'));
    assert.equal(map.park(pkt, 1, clock.now()), true);
    assert.equal(map.park(pkt, 1, clock.now()), true);
    assert.equal(map.park(pkt, 1, clock.now()), false, 'full');
    assert.equal(map.overflow, 1);
    assert.equal(map.park(pkt, 1, clock.now(), clock.now()), false, 'a retry whose wait is over goes on');
    assert.equal(map.unmatched, 1);
    const retried: [number, number, number][] = [];
    map.onRetry = (data, vni, until) => retried.push([data.length, vni, until]);
    map.stop();
    map.changed();
    assert.deepEqual(retried, [], 'stopped: nothing parked any more');
  });
});
