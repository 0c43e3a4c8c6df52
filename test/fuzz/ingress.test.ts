/**
 * Fuzzing the ingress's receive path (src/switch/ingress.ts, src/edge/gateway.ts) through the functions
 * its sockets call for each datagram: the data door (Geneve), the VXLAN door (hosts' frames, ARP) and the
 * service door (plain UDP payloads). Every datagram must be forwarded, dropped for a reason the metrics
 * name, or carried to the egress (ARP); the counters must add up to what came in, and nothing may throw.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { HostTable } from '../../src/edge/hosts.js';
import { silentLogger } from '../../src/log.js';
import { buildUdp } from '../../src/packet/build.js';
import { Ingress } from '../../src/switch/ingress.js';
import type { MetricSample } from '../../src/types.js';
import { ArpOp, writeArp } from '../../src/wire/arp.js';
import { STAMP_HEADER_LENGTH, writeStampHeader } from '../../src/wire/geneve.js';
import { ETHERTYPE_ARP, VXLAN_FRAME_HEADER, writeVxlanFrame } from '../../src/wire/vxlan.js';
import { geneveSeeds, mutate, report, Rng, vxlanSeeds } from './corpus.js';

const DATA = 15_000;
const VXLAN = 10_000;
const SERVICE = 5_000;

interface Counts {
  received: number;
  forwarded: number;
  carried: number;
  dropped: Record<string, number>;
}

function counts(ingress: Ingress): Counts {
  const out: MetricSample[] = [];
  ingress.collect(out);
  const c: Counts = { received: 0, forwarded: 0, carried: 0, dropped: {} };
  for (const [name, labels, value] of out) {
    if (name === 'nfstate_ingress_received_total') c.received = value;
    else if (name === 'nfstate_ingress_forwarded_total') c.forwarded = value;
    else if (name === 'nfstate_edge_arp_carried_total') c.carried = value;
    else if (name === 'nfstate_ingress_dropped_total' && value > 0) c.dropped[labels.reason!] = value;
  }
  return c;
}

function total(dropped: Record<string, number>): number {
  return Object.values(dropped).reduce((a, n) => a + n, 0);
}

/** What happened to the datagrams fed since `from`, and a check that each is accounted for once. */
function since(from: Counts, to: Counts, fed: number): Counts {
  const dropped: Record<string, number> = {};
  for (const [r, n] of Object.entries(to.dropped))
    if (n - (from.dropped[r] ?? 0) > 0) dropped[r] = n - (from.dropped[r] ?? 0);
  const d: Counts = {
    received: to.received - from.received,
    forwarded: to.forwarded - from.forwarded,
    carried: to.carried - from.carried,
    dropped,
  };
  assert.equal(d.received, fed);
  assert.equal(d.forwarded + d.carried + total(dropped), fed, JSON.stringify(d));
  return d;
}

async function udp(onMessage: () => void = () => undefined): Promise<dgram.Socket> {
  const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  s.on('message', onMessage);
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return s;
}

describe('fuzz: the ingress receive path', { timeout: 60_000 }, () => {
  let ingress: Ingress;
  const sockets: dgram.Socket[] = [];
  let received = 0;

  before(async () => {
    const count = (): void => {
      received++;
    };
    const [nf0, nf1, vtep, egress] = [await udp(count), await udp(count), await udp(), await udp()];
    sockets.push(nf0, nf1, vtep, egress);
    ingress = new Ingress(
      {
        host: '127.0.0.1',
        port: 0,
        servicePort: 0,
        instances: [nf0, nf1].map((s, i) => ({ id: `nf-${i}`, host: '127.0.0.1', port: s.address().port })),
        vni: 1,
        flowIdleMs: 60_000,
        edge: {
          port: 0,
          hosts: new HostTable({
            vxlanPort: 0,
            vtepPort: vtep.address().port,
            mac: '02:6e:66:00:00:01',
            hosts: [
              { prefix: '10.1.0.0/24', vtep: '127.0.0.1', vni: 1 },
              { prefix: '198.51.100.0/24', vtep: '127.0.0.1', vni: 5 },
            ],
          }),
          egress: { host: '127.0.0.1', port: egress.address().port },
        },
      },
      silentLogger,
    );
    await ingress.start();
    // Every flow has a copy made for the other instance: the copy path is fuzzed too.
    ingress.switch.setSecondary(0, 1);
    ingress.switch.setSecondary(1, 0);
  });

  after(async () => {
    await ingress.stop();
    for (const s of sockets) s.close();
  });

  it(`accounts for each of ${DATA} random and mutated Geneve datagrams at the data door`, (t) => {
    const rng = new Rng(0x5eed_0401);
    const seeds = [...geneveSeeds(), jumbo(4000)];
    const from = counts(ingress);
    for (let i = 0; i < DATA; i++) {
      const b = i % 10 === 9 ? rng.bytes(rng.int(100)) : mutate(rng.pick(seeds), rng, 9000);
      ingress.onData(b);
    }
    const d = since(from, counts(ingress), DATA);
    assert.ok(d.forwarded > 0 && total(d.dropped) > 0);
    report(t, 'ingress data door', { datagrams: DATA, forwarded: d.forwarded, ...d.dropped });
  });

  it('drops a stamped datagram larger than a slot whose flow has a secondary, instead of overrunning the copy ring', () => {
    const big = jumbo(3000);
    const from = counts(ingress);
    // More than the ring's 4096 slots, so a copy written past a slot would reach the end of the ring.
    for (let i = 0; i < 5000; i++) ingress.onData(Uint8Array.from(big));
    const d = since(from, counts(ingress), 5000);
    assert.deepEqual(d.dropped, { bad_length: 5000 });
  });

  it(`accounts for each of ${VXLAN} random and mutated frames at the VXLAN door`, (t) => {
    const rng = new Rng(0x5eed_0402);
    const seeds = [...vxlanSeeds(), paddedArp(100), paddedArp(3000)];
    const from = counts(ingress);
    for (let i = 0; i < VXLAN; i++) {
      const b = i % 10 === 9 ? rng.bytes(rng.int(100)) : mutate(rng.pick(seeds), rng, 9000);
      ingress.onVxlan(b);
    }
    const d = since(from, counts(ingress), VXLAN);
    assert.ok(d.forwarded > 0 && d.carried > 0 && (d.dropped.unknown_vni ?? 0) > 0);
    report(t, 'ingress vxlan door', {
      frames: VXLAN,
      forwarded: d.forwarded,
      arpCarried: d.carried,
      ...d.dropped,
    });
  });

  it('drops an ARP frame too long to carry to the egress, and counts it', () => {
    const from = counts(ingress);
    for (let i = 0; i < 10; i++) ingress.onVxlan(paddedArp(2100));
    ingress.onVxlan(paddedArp(40));
    const d = since(from, counts(ingress), 11);
    assert.deepEqual([d.carried, d.dropped], [1, { bad_length: 10 }]);
  });

  it(`accounts for each of ${SERVICE} random datagrams at the service door`, (t) => {
    const rng = new Rng(0x5eed_0403);
    const from = counts(ingress);
    for (let i = 0; i < SERVICE; i++) {
      const n = rng.int(10) === 0 ? 1900 + rng.int(300) : rng.int(200);
      ingress.onService(rng.bytes(n), rng.pick(['127.0.0.1', '10.1.0.2', '192.0.2.77']), 1 + rng.int(65535));
    }
    const d = since(from, counts(ingress), SERVICE);
    assert.ok(d.forwarded > 0 && (d.dropped.bad_length ?? 0) > 0);
    report(t, 'ingress service door', { datagrams: SERVICE, forwarded: d.forwarded, ...d.dropped });
  });

  it('still takes datagrams from its sockets and forwards them afterwards', async () => {
    const from = counts(ingress).forwarded;
    const client = await udp();
    sockets.push(client);
    for (let i = 0; i < 20; i++) client.send(vxlanSeeds()[2]!, ingress.vxlanPort, '127.0.0.1');
    for (let i = 0; i < 200 && counts(ingress).forwarded - from < 20; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.equal(counts(ingress).forwarded - from, 20);
    assert.ok(received > 0, 'the instances receive what the ingress forwards');
  });
});

/** A stamped UDP datagram of `bytes` bytes in all, larger than the ingress's 2048-byte slots. */
function jumbo(bytes: number): Uint8Array {
  const buf = new Uint8Array(bytes);
  const h = writeStampHeader(buf, 0, { vni: 1, flags: 0, epoch: 0, seq: 0, timeMs: 0 });
  buildUdp(buf, h, {
    srcIp: 0x0a010002,
    dstIp: 0xc633640a,
    srcPort: 40000,
    dstPort: 5001,
    payload: new Uint8Array(bytes - STAMP_HEADER_LENGTH - 28),
  });
  return buf;
}

/** A host's ARP request for its gateway (10.1.0.1, VNI 1), with `pad` bytes of Ethernet padding after it. */
function paddedArp(pad: number): Uint8Array {
  const buf = new Uint8Array(VXLAN_FRAME_HEADER + 28 + pad);
  const h = writeVxlanFrame(buf, 0, {
    vni: 1,
    dst: 0xffff_ffff_ffff,
    src: 0x92b5ca7710ad,
    etherType: ETHERTYPE_ARP,
  });
  writeArp(buf, h, {
    op: ArpOp.REQUEST,
    senderMac: 0x92b5ca7710ad,
    senderIp: 0x0a010002,
    targetMac: 0,
    targetIp: 0x0a010001,
  });
  return buf;
}
