import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareRuns, runOracle, type TracePacket } from '../../src/traffic/oracle.js';
import { udp } from '../nfs/context.js';

const CHAIN = {
  type: 'chain',
  config: {
    nfs: [
      { type: 'firewall', config: {} },
      { type: 'nat', config: { publicIp: '203.0.113.1', portFirst: 40000, portLast: 40009 } },
    ],
  },
};

function trace(): TracePacket[] {
  const t = 1_700_000_000_000;
  return [
    { data: udp('10.0.0.5', 5555, '192.0.2.9', 53, 'q1'), timeMs: t },
    // The reply to the NAT's public port (40000, its first), as the switch sees it.
    { data: udp('192.0.2.9', 53, '203.0.113.1', 40000, 'a1'), timeMs: t + 1 },
    { data: udp('10.0.0.5', 5555, '192.0.2.9', 53, 'q2'), timeMs: t + 2 },
    { data: udp('10.0.0.6', 6666, '192.0.2.9', 53, 'other'), timeMs: t + 3 },
  ];
}

describe('runOracle and compareRuns', () => {
  it('stamps a reply to a translated port as part of its connection, as the switch does', () => {
    const ref = runOracle(CHAIN, trace());
    assert.equal(ref.packets, 4);
    const conn = ref.flows.find((f) => f.flow === 'udp 10.0.0.5:5555 192.0.2.9:53');
    assert.equal(conn?.packets, 3, 'both directions in one flow');
    assert.equal(ref.flows.length, 2);
    assert.deepEqual(conn.allocations, { 'nat.port': 40000 });
    // As they leave the chain: translated out, translated back.
    assert.equal(ref.forwarded.get('udp 192.0.2.9:53 203.0.113.1:40000'), 2);
    assert.equal(ref.forwarded.get('udp 10.0.0.5:5555 192.0.2.9:53'), 1);
  });

  it("a chain's run that differs from the oracle in one NF's part is caught, and named by that NF", () => {
    const ref = runOracle(CHAIN, trace());
    const same = compareRuns(ref, ref);
    assert.equal(same.matches, true);
    assert.deepEqual(same.byNf, { firewall: 0, nat: 0 });
    const wrong = {
      ...ref,
      flows: ref.flows.map((f, i) =>
        i === 0 ? { ...f, digest: 'x'.repeat(32), parts: { ...f.parts, nat: 'y'.repeat(32) } } : f,
      ),
    };
    const cmp = compareRuns(wrong, ref);
    assert.equal(cmp.matches, false);
    assert.deepEqual(cmp.byNf, { firewall: 0, nat: 1 });
  });
});
