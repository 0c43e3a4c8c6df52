import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VxlanEgress } from '../../src/edge/egress.js';
import { HostTable } from '../../src/edge/hosts.js';
import { buildUdp } from '../../src/packet/build.js';
import { parseIpv4 } from '../../src/packet/flow-key.js';
import { Packet } from '../../src/packet/packet.js';
import { DropReason } from '../../src/types.js';
import { ArpOp, ArpView, writeArp } from '../../src/wire/arp.js';
import { writeFrameHeader } from '../../src/wire/geneve.js';
import { BROADCAST_MAC, ETHERTYPE_ARP, ETHERTYPE_IPV4, VxlanView } from '../../src/wire/vxlan.js';

const GATEWAY_MAC = 0x026e66000001;
const SERVER_MAC = 0x92b5ca7710ad;
const hosts = new HostTable({
  vxlanPort: 4789,
  vtepPort: 4789,
  mac: '02:6e:66:00:00:01',
  hosts: [{ prefix: '198.51.100.0/24', vtep: '198.18.0.3', vni: 7 }],
});

interface Sent {
  bytes: Uint8Array;
  /** The host network's index: its VTEP. */
  net: number;
}

function setup() {
  const sent: Sent[] = [];
  const egress = new VxlanEgress(hosts, (net, buf, offset, length) => {
    sent.push({ bytes: buf.slice(offset, offset + length), net });
  });
  return { egress, sent };
}

function packet(dst: string, payload = 'x'): Uint8Array {
  const b = new Uint8Array(100);
  const n = buildUdp(b, 0, {
    srcIp: parseIpv4('203.0.113.1'),
    dstIp: parseIpv4(dst),
    srcPort: 1024,
    dstPort: 5001,
    payload: new TextEncoder().encode(payload),
  });
  return b.subarray(0, n);
}

/** An ARP frame as the ingress carries it across: the bare Geneve header, then the Ethernet frame. */
function carried(op: ArpOp, senderIp: string, senderMac = SERVER_MAC): Uint8Array {
  const b = new Uint8Array(8 + 14 + 28);
  writeFrameHeader(b, 0, 7);
  b[8 + 12] = ETHERTYPE_ARP >>> 8;
  b[8 + 13] = ETHERTYPE_ARP & 0xff;
  writeArp(b, 22, {
    op,
    senderMac,
    senderIp: parseIpv4(senderIp),
    targetMac: GATEWAY_MAC,
    targetIp: parseIpv4('198.51.100.1'),
  });
  return b;
}

describe('VxlanEgress', { timeout: 60_000 }, () => {
  it('asks a host it has not heard from for its MAC, holds its packets, then delivers them in order', () => {
    const { egress, sent } = setup();
    egress.deliver(
      packet('198.51.100.10', 'one'),
      0,
      packet('198.51.100.10', 'one').length,
      parseIpv4('198.51.100.10'),
    );
    egress.deliver(
      packet('198.51.100.10', 'two'),
      0,
      packet('198.51.100.10', 'two').length,
      parseIpv4('198.51.100.10'),
    );
    assert.equal(sent.length, 1, 'one ARP request, however many packets wait');
    const v = new VxlanView();
    assert.equal(v.parse(sent[0]!.bytes, 0, sent[0]!.bytes.length), DropReason.NONE);
    assert.deepEqual(
      [hosts.nets[sent[0]!.net]!.vtep, v.vni, v.dstMac, v.srcMac, v.etherType],
      ['198.18.0.3', 7, BROADCAST_MAC, GATEWAY_MAC, ETHERTYPE_ARP],
    );
    const a = new ArpView();
    assert.equal(a.parse(sent[0]!.bytes, v.payloadOffset, v.payloadLength), DropReason.NONE);
    assert.deepEqual(
      [a.op, a.senderIp, a.targetIp],
      [ArpOp.REQUEST, parseIpv4('198.51.100.1'), parseIpv4('198.51.100.10')],
    );

    egress.onCarried(carried(ArpOp.REPLY, '198.51.100.10'));
    assert.equal(egress.macOf(parseIpv4('198.51.100.10')), SERVER_MAC);
    assert.equal(sent.length, 3);
    const pkt = new Packet();
    const payloads = sent.slice(1).map((s) => {
      assert.equal(v.parse(s.bytes, 0, s.bytes.length), DropReason.NONE);
      assert.deepEqual(
        [v.vni, v.dstMac, v.srcMac, v.etherType],
        [7, SERVER_MAC, GATEWAY_MAC, ETHERTYPE_IPV4],
      );
      assert.equal(pkt.parse(s.bytes, v.payloadOffset, v.payloadLength), DropReason.NONE);
      return new TextDecoder().decode(
        s.bytes.subarray(pkt.payloadOffset, pkt.payloadOffset + pkt.payloadLength),
      );
    });
    assert.deepEqual(payloads, ['one', 'two']);
    // Known now: straight out.
    const p = packet('198.51.100.10', 'three');
    egress.deliver(p, 0, p.length, parseIpv4('198.51.100.10'));
    assert.equal(sent.length, 4);
    assert.equal(egress.delivered, 3);
    egress.stop();
  });

  it('learns from any ARP a host sends, not from probes, and counts what it cannot deliver', () => {
    const { egress, sent } = setup();
    egress.onCarried(carried(ArpOp.REQUEST, '198.51.100.20', 0x0200_0000_0020));
    assert.equal(egress.macOf(parseIpv4('198.51.100.20')), 0x0200_0000_0020);
    egress.onCarried(carried(ArpOp.REQUEST, '0.0.0.0'));
    assert.equal(egress.macOf(0), undefined);
    const p = packet('192.0.2.1');
    egress.deliver(p, 0, p.length, parseIpv4('192.0.2.1'));
    assert.equal(egress.drops[DropReason.NO_ROUTE], 1, 'no host network holds it');
    const bad = carried(ArpOp.REPLY, '198.51.100.20');
    egress.onCarried(bad.subarray(0, 30));
    assert.equal(egress.drops[DropReason.TRUNCATED], 1);
    const ipv6 = carried(ArpOp.REPLY, '198.51.100.20');
    ipv6[20] = 0x86;
    ipv6[21] = 0xdd;
    egress.onCarried(ipv6);
    assert.equal(egress.drops[DropReason.NOT_IPV4], 1);
    assert.equal(sent.length, 0);
    egress.stop();
  });
});

describe('VxlanEgress: a host that never answers', { timeout: 60_000 }, () => {
  it('is asked five times, 200 ms apart; then what waited for it is dropped as no_route', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const { egress, sent } = setup();
    const p = packet('198.51.100.99');
    for (let i = 0; i < 3; i++) egress.deliver(p, 0, p.length, parseIpv4('198.51.100.99'));
    for (let i = 0; i < 5; i++) t.mock.timers.tick(200);
    assert.equal(sent.length, 5, 'five ARP requests');
    assert.equal(egress.arpRequests, 5);
    assert.equal(egress.drops[DropReason.NO_ROUTE], 3);
    // Asked for again from scratch when a packet for it comes later.
    egress.deliver(p, 0, p.length, parseIpv4('198.51.100.99'));
    assert.equal(sent.length, 6);
    egress.stop();
  });
});
