import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { silentLogger } from '../../src/log.js';
import { buildUdp } from '../../src/packet/build.js';
import { flowKeyOf } from '../../src/packet/flow-key.js';
import { Packet } from '../../src/packet/packet.js';
import { Ingress } from '../../src/switch/ingress.js';
import { DropReason } from '../../src/types.js';
import { STAMP_HEADER_LENGTH, StampFlag, StampView, writeStampHeader } from '../../src/wire/geneve.js';

interface Seen {
  seq: number;
  flags: number;
  srcPort: number;
  srcIp: number;
  dstPort: number;
}

async function listener(): Promise<{ socket: dgram.Socket; port: number; seen: Seen[] }> {
  const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  const seen: Seen[] = [];
  const view = new StampView();
  const pkt = new Packet();
  socket.on('message', (msg) => {
    assert.equal(view.parse(msg, 0, msg.length), DropReason.NONE);
    assert.equal(pkt.parse(msg, view.innerOffset, view.innerLength), DropReason.NONE);
    seen.push({
      seq: view.seq,
      flags: view.flags,
      srcPort: pkt.srcPort,
      srcIp: pkt.srcIp,
      dstPort: pkt.dstPort,
    });
  });
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  return { socket, port: socket.address().port, seen };
}

function geneve(srcPort: number, stamp: boolean): Uint8Array {
  const buf = new Uint8Array(200);
  let at = 0;
  if (stamp) at = writeStampHeader(buf, 0, { vni: 1, flags: 0, epoch: 0, seq: 0, timeMs: 0 });
  else {
    // A plain Geneve header with no options.
    buf.set([0x00, 0x00, 0x08, 0x00, 0, 0, 1, 0]);
    at = 8;
  }
  const n = buildUdp(buf, at, {
    srcIp: 0x0a000001,
    dstIp: 0xc6336401,
    srcPort,
    dstPort: 80,
    payload: new Uint8Array(8),
  });
  return buf.subarray(0, at + n);
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
}

describe('Ingress', () => {
  const sinks: Awaited<ReturnType<typeof listener>>[] = [];
  let ingress: Ingress;
  let client: dgram.Socket;

  before(async () => {
    sinks.push(await listener(), await listener());
    ingress = new Ingress(
      {
        host: '127.0.0.1',
        port: 0,
        servicePort: 0,
        instances: sinks.map((s, i) => ({ id: `nf-${i}`, host: '127.0.0.1', port: s.port })),
        vni: 7,
        flowIdleMs: 60_000,
      },
      silentLogger,
    );
    await ingress.start();
    client = dgram.createSocket('udp4');
    client.bind(0, '127.0.0.1');
    await once(client, 'listening');
  });

  after(async () => {
    await ingress.stop();
    client.close();
    for (const s of sinks) s.socket.close();
  });

  it('stamps Geneve input per flow, with or without an nfstate option, and spreads flows', async () => {
    for (let k = 0; k < 5; k++) {
      for (let port = 2000; port < 2040; port++)
        client.send(geneve(port, k % 2 === 0), ingress.port, '127.0.0.1');
    }
    await until(() => sinks[0]!.seen.length + sinks[1]!.seen.length >= 200);
    for (const s of sinks) assert.ok(s.seen.length > 0, 'both instances own flows');
    for (let port = 2000; port < 2040; port++) {
      const seqs = sinks.flatMap((s) => s.seen.filter((x) => x.srcPort === port).map((x) => x.seq));
      assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
    }
  });

  it('turns plain UDP at the front door into a flow from the sender to the service port', async () => {
    for (let i = 0; i < 3; i++) client.send(new Uint8Array([1, 2, 3]), ingress.servicePort, '127.0.0.1');
    await until(() =>
      sinks.some((s) => s.seen.filter((x) => x.dstPort === ingress.servicePort).length === 3),
    );
    const got = sinks.flatMap((s) => s.seen.filter((x) => x.dstPort === ingress.servicePort));
    assert.deepEqual(
      got.map((x) => [x.seq, x.srcPort, x.srcIp]),
      [1, 2, 3].map((seq) => [seq, client.address().port, 0x7f000001]),
    );
  });

  it("follows an exact rule and copies to its primary's secondary with the copy flag", async () => {
    const d = geneve(3000, true);
    const pkt = new Packet();
    pkt.parse(d, STAMP_HEADER_LENGTH, d.length - STAMP_HEADER_LENGTH);
    ingress.switch.installRule(flowKeyOf(pkt), { primary: 1, epoch: 9 });
    ingress.switch.setSecondary(1, 0);
    client.send(d, ingress.port, '127.0.0.1');
    await until(() => sinks[0]!.seen.some((x) => x.srcPort === 3000));
    assert.deepEqual(
      sinks[1]!.seen.filter((x) => x.srcPort === 3000).map((x) => x.flags),
      [0],
    );
    assert.deepEqual(
      sinks[0]!.seen.filter((x) => x.srcPort === 3000).map((x) => x.flags),
      [StampFlag.COPY],
    );
    ingress.switch.setSecondary(1, -1);
  });

  it('counts malformed datagrams by reason and keeps going', async () => {
    const before = sinks[0]!.seen.length + sinks[1]!.seen.length;
    const samples: Uint8Array[] = fc.sample(fc.uint8Array({ maxLength: 120 }), 300);
    const valid = geneve(4000, true);
    for (let i = 0; i < 100; i++) {
      const bad = valid.slice();
      const at = (i * 7) % bad.length;
      bad[at] = bad[at]! ^ 0x5a;
      samples.push(bad, valid.subarray(0, i % valid.length));
    }
    for (const s of samples) ingress.onData(s);
    const dropped = ingress.drops.reduce((a, b) => a + b, 0);
    assert.ok(dropped > 300, `dropped ${dropped}`);
    assert.ok(ingress.drops[DropReason.TRUNCATED]! > 0);
    // Still forwarding afterwards.
    client.send(geneve(4001, true), ingress.port, '127.0.0.1');
    await until(() => sinks[0]!.seen.length + sinks[1]!.seen.length > before);
    assert.ok(sinks.some((s) => s.seen.some((x) => x.srcPort === 4001)));
  });

  it('takes an instance added while it runs: new flows go to it once live, running flows stay where they are', async () => {
    const owner = (): Map<string, number> =>
      new Map(ingress.flows().map((f) => [`${f.key.srcPort}`, f.owner]));
    const before = owner();
    sinks.push(await listener());
    const newcomer = { id: 'nf-2', host: '127.0.0.1', port: sinks[2]!.port };
    assert.equal(await ingress.addInstance(newcomer), 2);
    assert.equal(await ingress.addInstance(newcomer), 2, 'adding it again changes nothing');
    assert.deepEqual(
      ingress.endpoints.map((e) => e.id),
      ['nf-0', 'nf-1', 'nf-2'],
    );
    assert.ok(ingress.setLive([0, 1, 2]) > 0, 'running flows whose default owner changed are pinned');
    assert.deepEqual(owner(), before);
    for (let port = 2000; port < 2040; port++) client.send(geneve(port, true), ingress.port, '127.0.0.1');
    for (let port = 5000; port < 5060; port++) client.send(geneve(port, true), ingress.port, '127.0.0.1');
    await until(() => sinks[2]!.seen.length > 0);
    await new Promise((r) => setTimeout(r, 50));
    const ports = sinks[2]!.seen.map((x) => x.srcPort);
    assert.ok(ports.length > 0 && ports.every((p) => p >= 5000), `nf-2 got ${ports.join(' ')}`);
  });
});
