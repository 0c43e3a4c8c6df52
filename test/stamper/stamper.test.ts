import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildUdp } from '../../src/packet/build.js';
import { Packet } from '../../src/packet/packet.js';
import { Stamper } from '../../src/stamper/stamper.js';
import { DropReason } from '../../src/types.js';

function udp(srcIp: number, srcPort: number, dstIp: number, dstPort: number): Packet {
  const buf = new Uint8Array(64);
  const n = buildUdp(buf, 0, { srcIp, dstIp, srcPort, dstPort, payload: new Uint8Array(4) });
  const p = new Packet();
  assert.equal(p.parse(buf, 0, n), DropReason.NONE);
  return p;
}

describe('Stamper', { timeout: 60_000 }, () => {
  it('numbers each flow 1, 2, 3 … independently', () => {
    const s = new Stamper({ flowIdleMs: 1000 });
    const a = udp(0x0a000001, 1000, 0xc0000201, 80);
    const b = udp(0x0a000002, 1000, 0xc0000201, 80);
    assert.deepEqual([s.next(a, 0), s.next(a, 0), s.next(b, 0), s.next(a, 0), s.next(b, 0)], [1, 2, 1, 3, 2]);
    assert.equal(s.size, 2);
  });

  it('counts both directions of a connection as one flow', () => {
    const s = new Stamper({ flowIdleMs: 1000 });
    assert.equal(s.next(udp(0x0a000001, 1000, 0xc0000201, 80), 0), 1);
    assert.equal(s.next(udp(0xc0000201, 80, 0x0a000001, 1000), 0), 2);
  });

  it('forgets idle flows, which then start again at 1; active ones are kept', () => {
    const s = new Stamper({ flowIdleMs: 1000 });
    const idle = udp(0x0a000001, 1000, 0xc0000201, 80);
    const busy = udp(0x0a000003, 1000, 0xc0000201, 80);
    s.next(idle, 0);
    s.next(idle, 0);
    for (let t = 0; t <= 3000; t += 100) {
      s.next(busy, t);
      s.tick(t);
    }
    assert.equal(s.size, 1);
    assert.equal(s.flowsExpired, 1);
    assert.equal(s.next(idle, 3000), 1);
    assert.equal(s.next(busy, 3000), 32);
  });
});
