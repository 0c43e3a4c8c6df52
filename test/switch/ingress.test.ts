import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { HostTable } from '../../src/edge/hosts.js';
import { silentLogger } from '../../src/log.js';
import { stampListener, type StampListener } from '../helpers/packets.js';
import { buildUdp } from '../../src/packet/build.js';
import { canonicalKey, flowHash, flowKeyOf, flowKeyString } from '../../src/packet/flow-key.js';
import { Packet } from '../../src/packet/packet.js';
import { Ingress } from '../../src/switch/ingress.js';
import { ReplyMap } from '../../src/switch/replies.js';
import { DropReason, type FlowKey } from '../../src/types.js';
import { ArpOp, ArpView, writeArp } from '../../src/wire/arp.js';
import {
  isCarriedFrame,
  STAMP_HEADER_LENGTH,
  StampFlag,
  StampView,
  writeStampHeader,
} from '../../src/wire/geneve.js';
import { BROADCAST_MAC, ETHERTYPE_ARP, VxlanView, writeVxlanFrame } from '../../src/wire/vxlan.js';

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

describe('Ingress', { timeout: 120_000 }, () => {
  const sinks: StampListener[] = [];
  let ingress: Ingress;
  let client: dgram.Socket;

  before(async () => {
    sinks.push(await stampListener(), await stampListener());
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
    sinks.push(await stampListener());
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

  it("sends a flow to the worker port its hash names, copies to the main port, and a move's marker behind the flow's packets", async () => {
    const main = await stampListener();
    const workers = [await stampListener(), await stampListener(), await stampListener()];
    const at = await ingress.addInstance({
      id: 'nf-3',
      host: '127.0.0.1',
      port: main.port,
      workers: workers.map((w) => w.port),
    });
    const flow = (port: number): FlowKey => canonicalKey(0x0a000001, 0xc6336401, port, 80, 17);
    const workerOf = (port: number): number => {
      const k = flow(port);
      return flowHash(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto) % workers.length;
    };
    const ports = Array.from({ length: 30 }, (_, i) => 6000 + i);
    for (const port of ports) ingress.switch.installRule(flow(port), { primary: at, epoch: 20 });
    for (let k = 0; k < 2; k++)
      for (const port of ports) client.send(geneve(port, true), ingress.port, '127.0.0.1');
    const total = (): number => workers.reduce((n, w) => n + w.seen.length, 0);
    await until(() => total() >= 60);
    for (const port of ports)
      workers.forEach((w, i) =>
        assert.deepEqual(
          w.seen.filter((x) => x.srcPort === port).map((x) => x.seq),
          i === workerOf(port) ? [1, 2] : [],
          `flow ${port} at worker ${i}`,
        ),
      );
    assert.ok(new Set(ports.map(workerOf)).size === workers.length, 'the flows spread over every worker');
    assert.equal(main.seen.length, 0, 'no packet of its own flows at the main port');

    // As a secondary: the copies of instance 0's flows come to the main port.
    ingress.switch.installRule(flow(6100), { primary: 0, epoch: 20 });
    ingress.switch.setSecondary(0, at);
    client.send(geneve(6100, true), ingress.port, '127.0.0.1');
    await until(() => main.seen.length > 0);
    assert.deepEqual(
      main.seen.map((x) => [x.srcPort, x.flags]),
      [[6100, StampFlag.COPY]],
    );
    ingress.switch.setSecondary(0, -1);

    // A move away: the marker takes the flow's path, after its packets.
    const moved = workers[workerOf(6000)]!;
    client.send(geneve(6000, true), ingress.port, '127.0.0.1');
    await until(() => moved.seen.filter((x) => x.srcPort === 6000).length === 3);
    assert.ok(ingress.repoint(flow(6000), { primary: 0, epoch: 21 }));
    await until(() => moved.seen.some((x) => x.flags === StampFlag.END_OF_MOVE));
    assert.deepEqual(
      moved.seen.filter((x) => x.srcPort === 6000).map((x) => [x.seq, x.flags]),
      [
        [1, 0],
        [2, 0],
        [3, 0],
        [3, StampFlag.END_OF_MOVE],
      ],
    );
    for (const l of [main, ...workers]) l.socket.close();
  });
});

describe(
  'Ingress at the edge: VXLAN from real hosts, ARP, and replies to translated addresses',
  { timeout: 120_000 },
  () => {
    const PUBLIC = 0xcb007101; // 203.0.113.1
    const CLIENT = 0x0a010002; // 10.1.0.2
    const SERVER = 0xc633640a; // 198.51.100.10
    const conn = canonicalKey(CLIENT, SERVER, 40000, 5001, 17);
    /** Public port → the connection that holds it: what the NAT's pool says, here set by the test. */
    const holders = new Map<number, FlowKey>();
    let ingress: Ingress;
    let replies: ReplyMap;
    let instance: dgram.Socket;
    let egress: dgram.Socket;
    let vtep: dgram.Socket;
    const seen: { seq: number; vni: number; flow: FlowKey | undefined; src: number; dst: number }[] = [];
    const carried: Uint8Array[] = [];
    const answers: Uint8Array[] = [];

    before(async () => {
      instance = dgram.createSocket('udp4');
      const view = new StampView();
      const pkt = new Packet();
      instance.on('message', (msg) => {
        assert.equal(view.parse(msg, 0, msg.length), DropReason.NONE);
        assert.equal(pkt.parse(msg, view.innerOffset, view.innerLength), DropReason.NONE);
        const flow = view.hasFlow
          ? view.flowInto({ srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 }, pkt.proto)
          : undefined;
        seen.push({ seq: view.seq, vni: view.vni, flow, src: pkt.srcIp, dst: pkt.dstIp });
      });
      egress = dgram.createSocket('udp4');
      egress.on('message', (msg) => carried.push(new Uint8Array(msg)));
      vtep = dgram.createSocket('udp4');
      vtep.on('message', (msg) => answers.push(new Uint8Array(msg)));
      for (const s of [instance, egress, vtep]) {
        s.bind(0, '127.0.0.1');
        await once(s, 'listening');
      }
      replies = new ReplyMap(
        (pkt) => (pkt.dstIp !== PUBLIC ? undefined : (holders.get(pkt.dstPort) ?? null)),
        {
          waitMs: 100,
          maxParked: 4,
        },
      );
      ingress = new Ingress(
        {
          host: '127.0.0.1',
          port: 0,
          servicePort: -1,
          instances: [{ id: 'nf-0', host: '127.0.0.1', port: instance.address().port }],
          vni: 1,
          flowIdleMs: 60_000,
          edge: {
            port: 0,
            hosts: new HostTable({
              vxlanPort: 0,
              vtepPort: vtep.address().port,
              mac: '02:6e:66:00:00:01',
              hosts: [
                { prefix: '10.1.0.0/24', vtep: '127.0.0.1', vni: 5 },
                { prefix: '198.51.100.0/24', vtep: '127.0.0.1', vni: 6 },
              ],
            }),
            egress: { host: '127.0.0.1', port: egress.address().port },
          },
          replies,
        },
        silentLogger,
      );
      await ingress.start();
    });

    after(async () => {
      await ingress.stop();
      for (const s of [instance, egress, vtep]) s.close();
    });

    /** A host's frame: VXLAN, Ethernet (EtherType `type`) and an IPv4/UDP packet; `pad` bytes after it. */
    function vxlan(
      vni: number,
      src: number,
      dst: number,
      sport: number,
      dport: number,
      type = 0x0800,
      pad = 0,
    ) {
      const b = new Uint8Array(200);
      const h = writeVxlanFrame(b, 0, { vni, dst: 0x026e66000001, src: 0x020000000002, etherType: type });
      const n = buildUdp(b, h, {
        srcIp: src,
        dstIp: dst,
        srcPort: sport,
        dstPort: dport,
        payload: new Uint8Array(4),
      });
      return b.slice(0, h + n + pad);
    }

    it('stamps a host’s IPv4 packet with its VNI, Ethernet padding left behind', async () => {
      vtep.send(vxlan(5, CLIENT, SERVER, 40000, 5001, 0x0800, 6), ingress.vxlanPort, '127.0.0.1');
      await until(() => seen.length >= 1);
      assert.deepEqual(seen[0], { seq: 1, vni: 5, flow: undefined, src: CLIENT, dst: SERVER });
    });

    it('answers ARP for the gateway to its network’s VTEP, and carries every ARP frame to the egress', async () => {
      const b = new Uint8Array(22 + 28);
      const h = writeVxlanFrame(b, 0, {
        vni: 5,
        dst: BROADCAST_MAC,
        src: 0x020000000002,
        etherType: ETHERTYPE_ARP,
      });
      writeArp(b, h, {
        op: ArpOp.REQUEST,
        senderMac: 0x020000000002,
        senderIp: CLIENT,
        targetMac: 0,
        targetIp: 0x0a010001,
      });
      vtep.send(b, ingress.vxlanPort, '127.0.0.1');
      await until(() => answers.length >= 1 && carried.length >= 1);
      const v = new VxlanView();
      assert.equal(v.parse(answers[0]!, 0, answers[0]!.length), DropReason.NONE);
      assert.deepEqual(
        [v.vni, v.dstMac, v.srcMac, v.etherType],
        [5, 0x020000000002, 0x026e66000001, ETHERTYPE_ARP],
      );
      const a = new ArpView();
      assert.equal(a.parse(answers[0]!, v.payloadOffset, v.payloadLength), DropReason.NONE);
      assert.deepEqual(
        [a.op, a.senderMac, a.senderIp, a.targetIp],
        [ArpOp.REPLY, 0x026e66000001, 0x0a010001, CLIENT],
      );
      assert.equal(isCarriedFrame(carried[0]!), true);
      assert.deepEqual(
        carried[0]!.subarray(8),
        b.subarray(8),
        'the frame itself, from the Ethernet header on',
      );
      // A request for another address is not answered, but still carried.
      writeArp(b, h, {
        op: ArpOp.REQUEST,
        senderMac: 0x020000000002,
        senderIp: CLIENT,
        targetMac: 0,
        targetIp: 0x0a010009,
      });
      vtep.send(b, ingress.vxlanPort, '127.0.0.1');
      await until(() => carried.length >= 2);
      assert.equal(answers.length, 1);
    });

    it('drops bad frames by reason and goes on', async () => {
      const count = (r: DropReason) => ingress.drops[r]!;
      const before = ingress.drops.slice();
      const good = vxlan(5, CLIENT, SERVER, 40001, 5001);
      const noI = good.slice();
      noI[0] = 0;
      const badLength = good.slice();
      badLength[22 + 3] = 0xff; // total length past the frame
      const arpCut = vxlan(5, CLIENT, SERVER, 1, 1, ETHERTYPE_ARP).subarray(0, 22 + 10);
      const cases: [Uint8Array, DropReason][] = [
        [good.subarray(0, 10), DropReason.TRUNCATED],
        [noI, DropReason.BAD_HEADER],
        [vxlan(99, CLIENT, SERVER, 40001, 5001), DropReason.UNKNOWN_VNI],
        [vxlan(5, CLIENT, SERVER, 40001, 5001, 0x86dd), DropReason.NOT_IPV4],
        [vxlan(5, CLIENT, SERVER, 40001, 5001, 0x8100), DropReason.NOT_IPV4],
        [good.subarray(0, 22 + 12), DropReason.TRUNCATED],
        [badLength, DropReason.BAD_LENGTH],
        [arpCut, DropReason.TRUNCATED],
      ];
      for (const [bytes] of cases) ingress.onVxlan(bytes);
      for (const [bytes, reason] of cases)
        assert.ok(count(reason) > before[reason]!, `${bytes.length} bytes: reason ${reason}`);
      for (const bytes of fc.sample(fc.uint8Array({ maxLength: 120 }), 500)) ingress.onVxlan(bytes);
      const n = seen.length;
      vtep.send(good, ingress.vxlanPort, '127.0.0.1');
      await until(() => seen.length > n);
      assert.equal(seen.at(-1)!.src, CLIENT);
    });

    it('stamps a reply to a translated port as part of the connection that holds it', async () => {
      holders.set(1024, conn);
      seen.length = 0;
      vtep.send(vxlan(5, CLIENT, SERVER, 40000, 5001), ingress.vxlanPort, '127.0.0.1');
      await until(() => seen.length >= 1);
      vtep.send(vxlan(6, SERVER, PUBLIC, 5001, 1024), ingress.vxlanPort, '127.0.0.1');
      await until(() => seen.length >= 2);
      // The connection's second packet (its first was stamped in the first test), and then its reply.
      assert.deepEqual(
        seen.map((s) => [s.seq, s.flow === undefined ? null : flowKeyString(s.flow), s.src]),
        [
          [2, null, CLIENT],
          [3, flowKeyString(conn), SERVER],
        ],
      );
      assert.ok(replies.resolved >= 1);
    });

    it('holds a reply whose port nobody holds yet until the log has it, or until its wait is over', async () => {
      seen.length = 0;
      vtep.send(vxlan(6, SERVER, PUBLIC, 5001, 2048), ingress.vxlanPort, '127.0.0.1');
      vtep.send(vxlan(6, SERVER, PUBLIC, 5001, 4096), ingress.vxlanPort, '127.0.0.1');
      await until(() => replies.parked >= 2);
      assert.equal(seen.length, 0);
      const late = canonicalKey(CLIENT, SERVER, 40002, 5001, 17);
      holders.set(2048, late);
      replies.changed();
      await until(() => seen.length >= 1);
      assert.equal(flowKeyString(seen[0]!.flow!), flowKeyString(late));
      // Port 4096 is nobody's: after its wait it goes on as a flow of its own.
      await until(() => seen.length >= 2);
      assert.equal(seen[1]!.flow, undefined);
      assert.equal(replies.unmatched, 1);
    });
  },
);
