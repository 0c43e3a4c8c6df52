import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TcpFlag } from '../../src/packet/build.js';
import { ConnState, createFirewall, type FirewallState } from '../../src/nfs/firewall.js';
import { LocalGlobalState } from '../../src/state/global-local.js';
import { Verdict } from '../../src/types.js';
import { Driver, icmpEcho, tcp, udp, expectConfigError } from '../../src/testing/driver.js';

const { SYN, ACK, FIN, RST, PSH } = TcpFlag;

function setup(config: Record<string, unknown>) {
  const global = new LocalGlobalState();
  const nf = createFirewall(config);
  return new Driver<FirewallState>(nf, global);
}

const C = '10.0.0.5';
const S = '192.0.2.80';

test(
  'rules: first match wins, by CIDR, protocol and port range; else the default',
  { timeout: 60_000 },
  () => {
    const d = setup({
      rules: [
        { action: 'deny', src: '10.0.9.0/24' },
        { action: 'allow', src: '10.0.0.0/8', proto: 'tcp', dstPort: '80' },
        { action: 'allow', dst: '192.0.2.0/24', proto: 'udp', dstPort: '1000-2000' },
        { action: 'allow', proto: 'icmp' },
        { action: 'deny', dst: '192.0.2.0/24' },
        { action: 'allow', proto: 'any', dstPort: 53 },
      ],
      default: 'allow',
    });
    const v = (bytes: Uint8Array) => d.send(bytes);
    assert.equal(v(tcp('10.0.9.1', 1, S, 80, SYN)).verdict, Verdict.DROP, 'rule 0 before rule 1');
    const allowed = v(tcp(C, 1, S, 80, SYN));
    assert.equal(allowed.verdict, Verdict.FORWARD);
    assert.equal(allowed.state.rule, 1);
    assert.equal(v(tcp(C, 2, S, 81, SYN)).state.rule, 4, 'port outside rule 1');
    assert.equal(v(udp(C, 3, S, 80)).state.rule, 4, 'protocol outside rule 1');
    assert.equal(v(udp('172.16.0.1', 3, S, 1000)).state.rule, 2);
    assert.equal(v(udp('172.16.0.1', 3, S, 2000)).state.rule, 2);
    assert.equal(v(udp('172.16.0.1', 3, S, 2001)).verdict, Verdict.DROP);
    assert.equal(v(icmpEcho(C, S, 5)).state.rule, 3);
    const dns = v(udp(C, 9, '198.51.100.1', 53));
    assert.equal(dns.state.rule, 5, 'a numeric dstPort is accepted');
    assert.equal(dns.verdict, Verdict.FORWARD);
    const other = v(udp(C, 9, '198.51.100.1', 54));
    assert.equal(other.state.rule, -1);
    assert.equal(other.verdict, Verdict.FORWARD, 'default allow');
  },
);

test('TCP: handshake, data, orderly close, TIME_WAIT, then a new SYN reopens', { timeout: 60_000 }, () => {
  const d = setup({ default: 'allow', strict: true, timeWaitMs: 1000 });
  const states: number[] = [];
  const step = (bytes: Uint8Array) => {
    const r = d.send(bytes);
    assert.equal(r.verdict, Verdict.FORWARD);
    states.push(r.state.conn);
    return r;
  };
  step(tcp(C, 1234, S, 80, SYN));
  step(tcp(S, 80, C, 1234, SYN | ACK));
  step(tcp(C, 1234, S, 80, ACK));
  step(tcp(C, 1234, S, 80, ACK | PSH, 'GET /'));
  step(tcp(S, 80, C, 1234, ACK | PSH, '200 OK'));
  step(tcp(C, 1234, S, 80, FIN | ACK));
  step(tcp(S, 80, C, 1234, ACK));
  step(tcp(S, 80, C, 1234, FIN | ACK));
  const last = step(tcp(C, 1234, S, 80, ACK));
  assert.deepEqual(states, [
    ConnState.SYN_SENT,
    ConnState.SYN_RECEIVED,
    ConnState.ESTABLISHED,
    ConnState.ESTABLISHED,
    ConnState.ESTABLISHED,
    ConnState.FIN_WAIT,
    ConnState.FIN_WAIT,
    ConnState.LAST_ACK,
    ConnState.TIME_WAIT,
  ]);
  assert.equal(last.state.pktsFwd, 5);
  assert.equal(last.state.pktsRev, 4);
  // A stray ACK within TIME_WAIT passes; after it, strict mode wants a SYN.
  assert.equal(d.send(tcp(S, 80, C, 1234, ACK), 10).state.conn, ConnState.TIME_WAIT);
  assert.equal(d.send(tcp(C, 1234, S, 80, ACK), 2000).verdict, Verdict.DROP);
  const reopen = d.send(tcp(C, 1234, S, 80, SYN));
  assert.equal(reopen.verdict, Verdict.FORWARD);
  assert.equal(reopen.state.conn, ConnState.SYN_SENT);
});

test(
  'TCP: the responder closing first goes through CLOSE_WAIT; a SYN in TIME_WAIT reopens at once',
  { timeout: 60_000 },
  () => {
    const d = setup({ strict: true });
    for (const [bytes, want] of [
      [tcp(C, 1, S, 22, SYN), ConnState.SYN_SENT],
      [tcp(S, 22, C, 1, SYN | ACK), ConnState.SYN_RECEIVED],
      [tcp(C, 1, S, 22, ACK), ConnState.ESTABLISHED],
      [tcp(S, 22, C, 1, FIN | ACK), ConnState.CLOSE_WAIT],
      [tcp(C, 1, S, 22, FIN | ACK), ConnState.LAST_ACK],
      [tcp(C, 1, S, 22, ACK), ConnState.LAST_ACK],
      [tcp(S, 22, C, 1, ACK), ConnState.TIME_WAIT],
      [tcp(C, 1, S, 22, SYN), ConnState.SYN_SENT],
    ] as const) {
      assert.equal(d.send(bytes).state.conn, want);
    }
  },
);

test('TCP: simultaneous close passes through CLOSING', { timeout: 60_000 }, () => {
  const d = setup({});
  d.send(tcp(C, 1, S, 22, SYN));
  d.send(tcp(S, 22, C, 1, SYN | ACK));
  d.send(tcp(C, 1, S, 22, ACK));
  assert.equal(d.send(tcp(C, 1, S, 22, FIN)).state.conn, ConnState.FIN_WAIT);
  assert.equal(d.send(tcp(S, 22, C, 1, FIN)).state.conn, ConnState.CLOSING);
  assert.equal(d.send(tcp(C, 1, S, 22, ACK)).state.conn, ConnState.TIME_WAIT);
});

test('TCP: RST closes from any state; the next packet is a new connection', { timeout: 60_000 }, () => {
  const d = setup({ strict: true });
  d.send(tcp(C, 1, S, 443, SYN));
  const rst = d.send(tcp(S, 443, C, 1, RST | ACK));
  assert.equal(rst.verdict, Verdict.FORWARD);
  assert.equal(rst.state.conn, ConnState.CLOSED);
  assert.equal(d.send(tcp(C, 1, S, 443, ACK)).verdict, Verdict.DROP, 'strict: not a SYN');
  const again = d.send(tcp(C, 1, S, 443, SYN));
  assert.equal(again.verdict, Verdict.FORWARD);
  assert.equal(again.state.evaluations, 3);
});

test(
  'strict mode drops mid-stream pickups and a SYN+ACK first; non-strict picks them up',
  { timeout: 60_000 },
  () => {
    const strict = setup({ strict: true });
    assert.equal(strict.send(tcp(C, 7, S, 80, ACK, 'data')).verdict, Verdict.DROP);
    assert.equal(strict.send(tcp(S, 80, C, 7, ACK, 'more')).verdict, Verdict.DROP);
    assert.equal(strict.send(tcp(C, 8, S, 80, SYN | ACK)).verdict, Verdict.DROP);
    assert.equal(strict.send(tcp(C, 9, S, 80, RST)).verdict, Verdict.DROP);
    const loose = setup({ strict: false });
    const r = loose.send(tcp(C, 7, S, 80, ACK, 'data'));
    assert.equal(r.verdict, Verdict.FORWARD);
    assert.equal(r.state.conn, ConnState.ESTABLISHED);
    assert.equal(loose.send(tcp(S, 80, C, 7, ACK, 'more')).verdict, Verdict.FORWARD);
  },
);

test('denied connections drop every packet, both ways, until they idle out', { timeout: 60_000 }, () => {
  const d = setup({ rules: [{ action: 'allow', src: '10.0.0.0/8' }], default: 'deny', tcpIdleMs: 5000 });
  assert.equal(d.send(tcp(S, 80, C, 1, SYN)).verdict, Verdict.DROP);
  // The internal side answering does not re-roll the rules into an allow.
  const reply = d.send(tcp(C, 1, S, 80, SYN | ACK));
  assert.equal(reply.verdict, Verdict.DROP);
  assert.equal(reply.state.evaluations, 1);
  assert.equal(reply.state.dropped, 2);
  const later = d.send(tcp(C, 1, S, 80, SYN), 6000);
  assert.equal(later.verdict, Verdict.FORWARD, 'a new connection, from the inside this time');
  assert.equal(later.state.evaluations, 2);
});

test('UDP pseudo-connection: established by the answer, expires after udpIdleMs', { timeout: 60_000 }, () => {
  const d = setup({ rules: [{ action: 'allow', src: '10.0.0.0/8' }], default: 'deny', udpIdleMs: 1000 });
  const a = d.send(udp(C, 5000, S, 53, 'q'));
  assert.equal(a.verdict, Verdict.FORWARD);
  assert.equal(a.state.conn, ConnState.NEW);
  const b = d.send(udp(S, 53, C, 5000, 'a'), 500);
  assert.equal(b.verdict, Verdict.FORWARD);
  assert.equal(b.state.conn, ConnState.ESTABLISHED);
  assert.equal(d.send(udp(S, 53, C, 5000, 'a2'), 999).verdict, Verdict.FORWARD, 'within the timeout');
  // Silence past the timeout: the outside packet now starts a connection of its own, and is denied.
  const late = d.send(udp(S, 53, C, 5000, 'late'), 1001);
  assert.equal(late.verdict, Verdict.DROP);
  assert.equal(late.state.evaluations, 2);
});

test('ICMP echo is tracked like UDP', { timeout: 60_000 }, () => {
  const d = setup({ rules: [{ action: 'allow', proto: 'icmp', src: '10.0.0.0/8' }], default: 'deny' });
  assert.equal(d.send(icmpEcho(C, S, 9)).verdict, Verdict.FORWARD);
  const reply = d.send(icmpEcho(S, C, 9, 0));
  assert.equal(reply.verdict, Verdict.FORWARD);
  assert.equal(reply.state.conn, ConnState.ESTABLISHED);
  assert.equal(d.send(icmpEcho(S, C, 10)).verdict, Verdict.DROP);
});

test('config is validated field by field', { timeout: 60_000 }, () => {
  const bad = (config: Record<string, unknown>, field: string) => {
    expectConfigError(() => createFirewall(config), field);
  };
  bad({ rules: 'all' }, 'rules');
  bad({ rules: [7] }, 'rules[0]');
  bad({ rules: [{ src: '10.0.0.0/8' }] }, 'rules[0].action');
  bad({ rules: [{ action: 'permit' }] }, 'rules[0].action');
  bad({ rules: [{ action: 'allow' }, { action: 'allow', src: '10.0.0/8' }] }, 'rules[1].src');
  bad({ rules: [{ action: 'allow', dst: 'x' }] }, 'rules[0].dst');
  bad({ rules: [{ action: 'allow', proto: 'sctp' }] }, 'rules[0].proto');
  bad({ rules: [{ action: 'allow', dstPort: '2000-1000' }] }, 'rules[0].dstPort');
  bad({ rules: [{ action: 'allow', dstPort: '70000' }] }, 'rules[0].dstPort');
  bad({ rules: [{ action: 'allow', proto: 'icmp', dstPort: '1' }] }, 'rules[0].dstPort');
  bad({ rules: [{ action: 'allow', port: '1' }] }, 'rules[0].port');
  bad({ default: 'maybe' }, 'default');
  bad({ strict: 'yes' }, 'strict');
  bad({ udpIdleMs: 0 }, 'udpIdleMs');
  bad({ tcpIdleMs: 1.5 }, 'tcpIdleMs');
  const fw = createFirewall({});
  assert.equal(fw.config.defaultAllow, true);
  assert.equal(fw.config.strict, false);
  assert.equal(fw.config.udpIdleMs, 30_000);
  assert.equal(fw.config.tcpIdleMs, 300_000);
});
