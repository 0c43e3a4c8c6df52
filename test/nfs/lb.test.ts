import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TcpFlag } from '../../src/packet/build.js';
import { createLb, LB_BACKEND_DECISION, LB_CONNS, LbRole, type LbState } from '../../src/nfs/lb.js';
import { flowKeyString } from '../../src/packet/flow-key.js';
import { GivenGlobalState, LocalGlobalState } from '../../src/state/global-local.js';
import { Verdict } from '../../src/types.js';
import { Driver, ip, tcp, udp, expectConfigError } from '../../src/testing/driver.js';

const VIP = '198.51.100.10';
const backends = ['10.1.0.1:8080', '10.1.0.2:8080', '10.1.0.3:8080', '10.1.0.4:8080'];

function setup(config: Record<string, unknown> = {}) {
  const global = new LocalGlobalState();
  const nf = createLb({ vip: VIP, port: 80, backends, ...config }, global);
  return { global, nf, d: new Driver<LbState>(nf, global) };
}

test(
  'affinity: every packet of a connection goes to one backend, rewritten with valid checksums',
  { timeout: 60_000 },
  () => {
    const { d, nf } = setup({ algorithm: 'maglev', tableSize: 251 });
    const first = d.send(tcp('192.0.2.1', 40000, VIP, 80, TcpFlag.SYN));
    assert.equal(first.verdict, Verdict.FORWARD);
    const b = first.state.backend;
    assert.equal(first.pkt.dstIp, ip(backends[b]!.split(':')[0]!));
    assert.equal(first.pkt.dstPort, 8080);
    assert.equal(first.pkt.srcIp, ip('192.0.2.1'));
    assert.deepEqual(nf.allocations(first.state), { [LB_BACKEND_DECISION]: b });
    for (let i = 0; i < 5; i++) {
      const r = d.send(tcp('192.0.2.1', 40000, VIP, 80, TcpFlag.ACK, `chunk ${i}`));
      assert.equal(r.pkt.dstIp, first.pkt.dstIp);
      assert.equal(r.pkt.dstPort, 8080);
    }
    // The other direction of the client's 5-tuple already comes from vip:80 and passes as is.
    const rev = d.send(tcp(VIP, 80, '192.0.2.1', 40000, TcpFlag.ACK, 'resp'));
    assert.equal(rev.flow, first.flow);
    assert.equal(rev.pkt.srcIp, ip(VIP));
    assert.equal(rev.pkt.srcPort, 80);
  },
);

test(
  'a backend answering on its own 5-tuple gets its source rewritten to vip:port',
  { timeout: 60_000 },
  () => {
    const { d } = setup();
    const r = d.send(tcp('10.1.0.3', 8080, '192.0.2.1', 40000, TcpFlag.SYN | TcpFlag.ACK, 'hi'));
    assert.equal(r.verdict, Verdict.FORWARD);
    assert.equal(r.state.role, LbRole.REPLY);
    assert.equal(r.pkt.srcIp, ip(VIP));
    assert.equal(r.pkt.srcPort, 80);
    assert.equal(r.pkt.dstIp, ip('192.0.2.1'));
  },
);

test('new flows not for the VIP (or its port) are dropped', { timeout: 60_000 }, () => {
  const { d } = setup();
  assert.equal(d.send(tcp('192.0.2.1', 1, '198.51.100.11', 80, TcpFlag.SYN)).verdict, Verdict.DROP);
  assert.equal(d.send(tcp('192.0.2.1', 1, VIP, 81, TcpFlag.SYN)).verdict, Verdict.DROP);
  const r = d.send(udp('192.0.2.1', 1, VIP, 81));
  assert.equal(r.verdict, Verdict.DROP);
  assert.equal(r.state.role, LbRole.REJECTED);
});

test('least-connections spreads connections evenly and follows releases', { timeout: 60_000 }, () => {
  const { d, global } = setup({ algorithm: 'least-connections' });
  const conns = global.counters(LB_CONNS);
  const flows = [];
  for (let i = 0; i < 8; i++) flows.push(d.send(tcp('192.0.2.1', 1000 + i, VIP, 80, TcpFlag.SYN)));
  assert.deepEqual(
    flows.map((r) => r.state.backend),
    [0, 1, 2, 3, 0, 1, 2, 3],
  );
  assert.deepEqual(
    [0, 1, 2, 3].map((b) => conns.get(b)),
    [2, 2, 2, 2],
  );
  d.release(flows[2]!.flow);
  d.release(flows[6]!.flow);
  assert.equal(conns.get(2), 0);
  assert.equal(d.send(tcp('192.0.2.1', 2000, VIP, 80, TcpFlag.SYN)).state.backend, 2);
  assert.equal(d.send(tcp('192.0.2.1', 2001, VIP, 80, TcpFlag.SYN)).state.backend, 2);
  assert.equal(d.send(tcp('192.0.2.1', 2002, VIP, 80, TcpFlag.SYN)).state.backend, 0);
});

test('maglev: the same connection maps to the same backend in every instance', { timeout: 60_000 }, () => {
  const a = setup({ algorithm: 'maglev' });
  const b = setup({ algorithm: 'maglev' });
  const used = new Set<number>();
  for (let i = 0; i < 40; i++) {
    const p = tcp('192.0.2.7', 30000 + i, VIP, 80, TcpFlag.SYN);
    const ra = a.d.send(p);
    assert.equal(ra.state.backend, b.d.send(p).state.backend);
    used.add(ra.state.backend);
  }
  assert.equal(used.size, 4, 'forty connections reach all four backends');
});

test('the oracle takes the deployment decision; releaseFlow decrements lb.conns', { timeout: 60_000 }, () => {
  const { d, nf, global } = setup({ algorithm: 'least-connections' });
  const r = d.send(tcp('192.0.2.1', 1, VIP, 80, TcpFlag.SYN));
  const og = new GivenGlobalState(new Map([[flowKeyString(r.flow.key), { [LB_BACKEND_DECISION]: 3 }]]));
  const oracle = new Driver<LbState>(
    createLb({ vip: VIP, port: 80, backends, algorithm: 'least-connections' }, og),
    og,
  );
  const o = oracle.send(tcp('192.0.2.1', 1, VIP, 80, TcpFlag.SYN));
  assert.equal(o.state.backend, 3);
  assert.equal(og.counters(LB_CONNS).get(3), 1);
  assert.equal(global.counters(LB_CONNS).get(0), 1);
  d.release(r.flow);
  assert.equal(global.counters(LB_CONNS).get(0), 0);
  assert.deepEqual(nf.allocations(r.state), { [LB_BACKEND_DECISION]: 0 });
});

test(
  'TCP close is recorded; without a port every VIP port is balanced and backends keep it',
  { timeout: 60_000 },
  () => {
    const { d } = setup({ port: undefined, backends: ['10.1.0.1', '10.1.0.2'] });
    const a = d.send(tcp('192.0.2.1', 1, VIP, 443, TcpFlag.SYN));
    assert.equal(a.pkt.dstPort, 443);
    assert.equal(a.state.closed, false);
    d.send(tcp('192.0.2.1', 1, VIP, 443, TcpFlag.FIN | TcpFlag.ACK));
    assert.equal(a.state.closed, false);
    d.send(tcp(VIP, 443, '192.0.2.1', 1, TcpFlag.FIN | TcpFlag.ACK));
    assert.equal(a.state.closed, true);
    const b = d.send(tcp('192.0.2.1', 2, VIP, 22, TcpFlag.SYN));
    d.send(tcp(VIP, 22, '192.0.2.1', 2, TcpFlag.RST));
    assert.equal(b.state.closed, true);
    const reply = d.send(udp('10.1.0.2', 5353, '192.0.2.1', 9));
    assert.equal(reply.pkt.srcIp, ip(VIP));
    assert.equal(reply.pkt.srcPort, 5353);
  },
);

test('config is validated field by field', { timeout: 60_000 }, () => {
  const g = new LocalGlobalState();
  const bad = (config: Record<string, unknown>, field: string) => {
    expectConfigError(() => createLb(config, g), field);
  };
  bad({}, 'backends');
  bad({ backends: [] }, 'backends');
  bad({ backends: ['10.1.0.1:99999'] }, 'backends[0]');
  bad({ backends: ['10.1.0.1', 'host:80'] }, 'backends[1]');
  bad({ backends: ['10.1.0.300:80'] }, 'backends[0]');
  bad({ backends: ['10.1.0.1'], vip: 'vip' }, 'vip');
  bad({ backends: ['10.1.0.1'], port: 0 }, 'port');
  bad({ backends: ['10.1.0.1'], algorithm: 'random' }, 'algorithm');
  bad({ backends: ['10.1.0.1'], tableSize: 100 }, 'tableSize');
  bad({ backends: ['10.1.0.1', '10.1.0.2', '10.1.0.3'], tableSize: 2 }, 'tableSize');
  const lb = createLb({ backends: ['10.1.0.1:80'] }, g);
  assert.equal(lb.config.algorithm, 'maglev');
  assert.equal(lb.config.port, -1);
  assert.equal(lb.maglev?.tableSize, 65537);
});
