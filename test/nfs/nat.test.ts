import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TcpFlag } from '../../src/packet/build.js';
import { flowKeyString } from '../../src/packet/flow-key.js';
import { createNat, NatRole, NAT_INBOUND_DECISION, NAT_PORT_POOL } from '../../src/nfs/nat.js';
import { GivenGlobalState, LocalGlobalState } from '../../src/state/global-local.js';
import { Verdict } from '../../src/types.js';
import { Driver, icmpEcho, ip, parsed, tcp, udp, expectConfigError } from '../../src/testing/driver.js';

function setup(config: Record<string, unknown> = {}) {
  const global = new LocalGlobalState();
  const nf = createNat({ publicIp: '203.0.113.1', portFirst: 40000, portLast: 40009, ...config }, global);
  return { global, nf, d: new Driver(nf, global) };
}

test(
  'outbound: source rewritten to publicIp:port with valid checksums; the same flow keeps its port',
  { timeout: 60_000 },
  () => {
    const { d, nf } = setup();
    const r1 = d.send(udp('10.0.0.5', 5555, '192.0.2.9', 53, 'query'));
    assert.equal(r1.verdict, Verdict.FORWARD);
    // r.pkt is a re-parse of the rewritten bytes: parse verifies the IPv4 and UDP checksums.
    assert.equal(r1.pkt.srcIp, ip('203.0.113.1'));
    assert.equal(r1.pkt.srcPort, 40000);
    assert.equal(r1.pkt.dstIp, ip('192.0.2.9'));
    assert.equal(r1.pkt.dstPort, 53);
    assert.deepEqual(nf.allocations(r1.state), { [NAT_PORT_POOL]: 40000 });
    const r2 = d.send(tcp('10.0.0.5', 5555, '192.0.2.9', 53, TcpFlag.SYN));
    assert.equal(r2.pkt.srcPort, 40001, 'a TCP flow is a different flow');
    const r3 = d.send(udp('10.0.0.5', 5555, '192.0.2.9', 53, 'again'));
    assert.equal(r3.pkt.srcPort, 40000);
    assert.equal(r3.state.packets, 2);
    assert.equal(r3.state.bytes, r1.bytes.length + r3.bytes.length);
  },
);

test('ports are unique across concurrent flows', { timeout: 60_000 }, () => {
  const { d, global } = setup({ portLast: 40999 });
  const seen = new Set<number>();
  for (let i = 0; i < 200; i++) {
    const r = d.send(tcp(`10.0.${i % 7}.${1 + (i % 200)}`, 1000 + i, '192.0.2.1', 443, TcpFlag.SYN));
    assert.equal(seen.has(r.pkt.srcPort), false);
    seen.add(r.pkt.srcPort);
  }
  assert.equal(global.pool(NAT_PORT_POOL, 40000, 40999).inUse, 200);
});

test('reply flow to publicIp:port is translated to the internal endpoint', { timeout: 60_000 }, () => {
  const { d, nf } = setup();
  const out = d.send(tcp('10.0.0.5', 5555, '192.0.2.9', 80, TcpFlag.SYN));
  const port = out.pkt.srcPort;
  const back = d.send(tcp('192.0.2.9', 80, '203.0.113.1', port, TcpFlag.SYN | TcpFlag.ACK, 'hello'));
  assert.equal(back.verdict, Verdict.FORWARD);
  assert.equal(back.state.role, NatRole.INBOUND);
  assert.equal(back.pkt.dstIp, ip('10.0.0.5'));
  assert.equal(back.pkt.dstPort, 5555);
  assert.equal(back.pkt.srcIp, ip('192.0.2.9'));
  assert.deepEqual(nf.allocations(back.state), { [NAT_INBOUND_DECISION]: ip('10.0.0.5') * 65536 + 5555 });
  // The original reverse 5-tuple (as a generator sends it) is the outbound flow's other direction.
  const rev = d.send(tcp('192.0.2.9', 80, '10.0.0.5', 5555, TcpFlag.ACK));
  assert.equal(rev.verdict, Verdict.FORWARD);
  assert.equal(rev.flow, out.flow);
  assert.equal(rev.pkt.dstIp, ip('10.0.0.5'));
  assert.equal(rev.pkt.srcIp, ip('192.0.2.9'));
});

test(
  'inbound without a mapping, from the wrong remote, or not for publicIp is dropped',
  { timeout: 60_000 },
  () => {
    const { d } = setup();
    assert.equal(d.send(udp('192.0.2.9', 53, '203.0.113.1', 40001)).verdict, Verdict.DROP);
    const out = d.send(udp('10.0.0.5', 5555, '192.0.2.9', 53));
    const port = out.pkt.srcPort;
    assert.equal(d.send(udp('192.0.2.77', 53, '203.0.113.1', port)).verdict, Verdict.DROP, 'other remote');
    assert.equal(
      d.send(udp('192.0.2.9', 54, '203.0.113.1', port)).verdict,
      Verdict.DROP,
      'other remote port',
    );
    assert.equal(
      d.send(tcp('192.0.2.9', 53, '203.0.113.1', port, TcpFlag.SYN)).verdict,
      Verdict.DROP,
      'other proto',
    );
    const stray = d.send(udp('192.0.2.9', 53, '198.51.100.1', 9));
    assert.equal(stray.verdict, Verdict.DROP);
    assert.equal(stray.state.role, NatRole.REJECTED);
    assert.equal(d.send(udp('192.0.2.9', 53, '198.51.100.1', 9)).verdict, Verdict.DROP, 'stays rejected');
    assert.equal(d.send(udp('192.0.2.9', 53, '203.0.113.1', port)).verdict, Verdict.FORWARD);
  },
);

test('pool exhaustion drops new outbound flows; releaseFlow gives the port back', { timeout: 60_000 }, () => {
  const { d, nf, global } = setup({ portFirst: 50000, portLast: 50001 });
  const a = d.send(udp('10.0.0.1', 1, '192.0.2.1', 53));
  const b = d.send(udp('10.0.0.1', 2, '192.0.2.1', 53));
  assert.deepEqual([a.pkt.srcPort, b.pkt.srcPort], [50000, 50001]);
  const c = d.send(udp('10.0.0.1', 3, '192.0.2.1', 53));
  assert.equal(c.verdict, Verdict.DROP);
  assert.deepEqual(nf.allocations(c.state), {});
  d.release(a.flow);
  d.release(c.flow);
  assert.equal(global.pool(NAT_PORT_POOL, 50000, 50001).inUse, 1);
  const e = d.send(udp('10.0.0.1', 4, '192.0.2.1', 53));
  assert.equal(e.verdict, Verdict.FORWARD);
  assert.equal(e.pkt.srcPort, 50000);
});

test('ICMP echo: the identifier is the port, both ways', { timeout: 60_000 }, () => {
  const { d } = setup();
  const out = d.send(icmpEcho('10.0.0.5', '192.0.2.9', 777));
  assert.equal(out.pkt.srcIp, ip('203.0.113.1'));
  const id = out.pkt.srcPort;
  assert.equal(id, 40000);
  const back = d.send(icmpEcho('192.0.2.9', '203.0.113.1', id, 0));
  assert.equal(back.verdict, Verdict.FORWARD);
  assert.equal(back.pkt.dstIp, ip('10.0.0.5'));
  assert.equal(back.pkt.dstPort, 777);
  assert.equal(back.pkt.icmpType, 0);
});

test('the oracle reproduces the deployment with the reported allocations', { timeout: 60_000 }, () => {
  const { d, nf } = setup();
  d.send(udp('10.0.0.1', 1, '192.0.2.1', 53)); // takes 40000 only in the deployment
  const out = d.send(udp('10.0.0.2', 2, '192.0.2.2', 53));
  const back = d.send(udp('192.0.2.2', 53, '203.0.113.1', out.pkt.srcPort));
  const given = new Map([
    [flowKeyString(out.flow.key), nf.allocations(out.state)],
    [flowKeyString(back.flow.key), nf.allocations(back.state)],
  ]);
  const oracleGlobal = new GivenGlobalState(given);
  const oracle = new Driver(
    createNat({ publicIp: '203.0.113.1', portFirst: 40000, portLast: 40009 }, oracleGlobal),
    oracleGlobal,
  );
  // The oracle sees the reply first (another order than the deployment's), and still agrees.
  oracle.now = back.state.lastSeen - 1;
  const back2 = oracle.send(udp('192.0.2.2', 53, '203.0.113.1', out.pkt.srcPort));
  oracle.now = out.state.lastSeen - 1;
  const out2 = oracle.send(udp('10.0.0.2', 2, '192.0.2.2', 53));
  assert.deepEqual(out2.bytes, out.bytes);
  assert.deepEqual(back2.bytes, back.bytes);
  assert.deepEqual(out2.state, out.state);
  assert.deepEqual(back2.state, back.state);
});

test('config is validated field by field', { timeout: 60_000 }, () => {
  const g = new LocalGlobalState();
  const bad = (config: Record<string, unknown>, field: string) => {
    expectConfigError(() => createNat(config, g), field);
  };
  bad({ publicIp: '1.2.3' }, 'publicIp');
  bad({ publicIp: 7 }, 'publicIp');
  bad({ portFirst: 0 }, 'portFirst');
  bad({ portFirst: 2000, portLast: 1000 }, 'portLast');
  bad({ portLast: 70000 }, 'portLast');
  bad({ internal: '10.0.0.0/33' }, 'internal');
  bad({ publicIP: '1.2.3.4' }, 'publicIP');
  assert.equal(createNat({}, g).config.portFirst, 1024);
});

test(
  'replyOwner: the connection holding the public port, when the packet comes from its remote end',
  { timeout: 60_000 },
  () => {
    const { d, nf } = setup();
    const out = d.send(tcp('10.0.0.5', 5555, '192.0.2.9', 80, TcpFlag.SYN));
    const port = out.pkt.srcPort;
    assert.equal(
      flowKeyString(nf.replyOwner(parsed(tcp('192.0.2.9', 80, '203.0.113.1', port, TcpFlag.ACK)))!),
      flowKeyString(out.flow.key),
    );
    assert.equal(
      nf.replyOwner(parsed(tcp('192.0.2.9', 81, '203.0.113.1', port, TcpFlag.ACK))),
      undefined,
      'another remote port',
    );
    assert.equal(
      nf.replyOwner(parsed(udp('192.0.2.9', 80, '203.0.113.1', port))),
      undefined,
      'another protocol',
    );
    assert.equal(
      nf.replyOwner(parsed(tcp('192.0.2.9', 80, '203.0.113.1', 40009, TcpFlag.ACK))),
      null,
      'a port nobody holds',
    );
    assert.equal(
      nf.replyOwner(parsed(tcp('192.0.2.9', 80, '10.0.0.5', 5555, TcpFlag.ACK))),
      undefined,
      'not for publicIp',
    );
  },
);

test(
  'a reply the switch stamps as part of its connection is translated back to the initiator',
  { timeout: 60_000 },
  () => {
    const global = new LocalGlobalState();
    const nf = createNat({ publicIp: '203.0.113.1', portFirst: 40000, portLast: 40009 }, global);
    const d = new Driver(nf, global, true);
    const out = d.send(tcp('10.0.0.5', 5555, '192.0.2.9', 80, TcpFlag.SYN));
    const back = d.send(
      tcp('192.0.2.9', 80, '203.0.113.1', out.pkt.srcPort, TcpFlag.SYN | TcpFlag.ACK, 'hi'),
    );
    assert.equal(back.flow, out.flow, 'one flow, both directions');
    assert.equal(back.verdict, Verdict.FORWARD);
    assert.equal(back.state.role, NatRole.OUTBOUND);
    assert.equal(back.pkt.dstIp, ip('10.0.0.5'));
    assert.equal(back.pkt.dstPort, 5555);
    assert.equal(back.pkt.srcIp, ip('192.0.2.9'));
    assert.equal(back.state.packets, 2);
    // ICMP echo: the reply carries the public identifier, which is put back.
    const ping = d.send(icmpEcho('10.0.0.6', '192.0.2.9', 77));
    const pong = d.send(icmpEcho('192.0.2.9', '203.0.113.1', ping.pkt.srcPort, 0));
    assert.equal(pong.flow, ping.flow);
    assert.equal(pong.pkt.dstIp, ip('10.0.0.6'));
    assert.equal(pong.pkt.dstPort, 77);
  },
);
