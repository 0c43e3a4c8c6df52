/**
 * The ingress behind an OVS bridge, with a socket playing the bridge: it stamps each frame and sends it
 * where the route in its destination address says, keeps a flow's first owner against a later default
 * placement, re-points a flow (with its end-of-move marker) when a newer epoch comes first from the bridge,
 * sends a packet that the bridge classified by an older rule by the newer one, and drops what no route
 * names. The route codec and the flows written to OVS are checked here too.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { silentLogger } from '../../src/log.js';
import { buildUdp } from '../../src/packet/build.js';
import { Ingress } from '../../src/switch/ingress.js';
import { NfsError } from '../../src/errors.js';
import { liveFlows, readRoute, routeMac, ruleFlows } from '../../src/switch/openflow.js';
import { programOvs } from '../../src/switch/ovs.js';
import type { MetricSample } from '../../src/types.js';
import { StampFlag, writeStampHeader } from '../../src/wire/geneve.js';
import { writeVxlanFrame } from '../../src/wire/vxlan.js';
import { stampListener, type StampListener } from '../helpers/packets.js';
import { until } from '../helpers/poll.js';

const VNI = 9;
const CLIENT = 0x0a000001;
const SERVER = 0xc6336401;

describe('the route in a routed frame', { timeout: 60_000 }, () => {
  it('names any instance below 255 and any u32 epoch, and nothing else reads as one', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 254 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }), (p, e) => {
        const out = { primary: -1, epoch: -1 };
        assert.equal(readRoute(routeMac(p, e), out), true);
        assert.deepEqual(out, { primary: p, epoch: e });
      }),
    );
    const out = { primary: -1, epoch: -1 };
    for (const mac of [0x02_6e_66_00_00_01, 0xffff_ffff_ffff, 0x07_00_00_00_00_00, 0])
      assert.equal(readRoute(mac, out), false);
    assert.throws(() => routeMac(255, 1), /does not fit/);
    assert.throws(() => routeMac(1, 2 ** 32), /does not fit/);
  });

  it('is written by one exact rule per direction and a multipath over the live set', () => {
    const key = { srcIp: CLIENT, dstIp: SERVER, srcPort: 4000, dstPort: 80, proto: 17 };
    assert.deepEqual(ruleFlows(key, 3, 42, VNI), [
      'table=0,priority=100,cookie=42,udp,nw_src=10.0.0.1,nw_dst=198.51.100.1,tp_src=4000,tp_dst=80,actions=set_field:06:03:00:00:00:2a->eth_dst,set_field:9->tun_id,output:2',
      'table=0,priority=100,cookie=42,udp,nw_src=198.51.100.1,nw_dst=10.0.0.1,tp_src=80,tp_dst=4000,actions=set_field:06:03:00:00:00:2a->eth_dst,set_field:9->tun_id,output:2',
    ]);
    assert.deepEqual(liveFlows([0, 2], VNI), [
      'delete table=1',
      'delete_strict table=0,priority=0,ip',
      'add table=0,priority=0,ip,actions=multipath(symmetric_l4,0,hrw,2,0,NXM_NX_REG0[]),resubmit(,1)',
      'add table=1,reg0=0,actions=set_field:06:00:00:00:00:00->eth_dst,set_field:9->tun_id,output:2',
      'add table=1,reg0=1,actions=set_field:06:02:00:00:00:00->eth_dst,set_field:9->tun_id,output:2',
    ]);
    // With no instance live, nothing is placed by default.
    assert.deepEqual(liveFlows([], VNI), ['delete table=1', 'delete_strict table=0,priority=0,ip']);
  });
});

describe('Ingress behind an OVS bridge', { timeout: 60_000 }, () => {
  const nfs: StampListener[] = [];
  let ingress: Ingress;
  let bridge: dgram.Socket;

  before(async () => {
    nfs.push(await stampListener(), await stampListener());
    ingress = new Ingress(
      {
        host: '127.0.0.1',
        port: 0,
        servicePort: -1,
        instances: nfs.map((s, i) => ({ id: `nf-${i}`, host: '127.0.0.1', port: s.port })),
        vni: VNI,
        flowIdleMs: 60_000,
        ovs: { host: '127.0.0.1', port: 0 },
      },
      silentLogger,
    );
    await ingress.start();
    bridge = dgram.createSocket('udp4');
    bridge.bind(0, '127.0.0.1');
    await once(bridge, 'listening');
  });

  after(async () => {
    await ingress.stop();
    bridge.close();
    for (const s of nfs) s.socket.close();
  });

  /** A frame as the bridge sends it: routed to `primary` at `epoch`, or to `dst` as is. */
  function frame(
    srcPort: number,
    to: { primary: number; epoch: number } | { dst: number },
    vni = VNI,
    type = 0x0800,
  ) {
    const b = new Uint8Array(120);
    const dst = 'dst' in to ? to.dst : routeMac(to.primary, to.epoch);
    const h = writeVxlanFrame(b, 0, { vni, dst, src: 0x02_00_00_00_00_02, etherType: type });
    const n = buildUdp(b, h, {
      srcIp: CLIENT,
      dstIp: SERVER,
      srcPort,
      dstPort: 80,
      payload: new Uint8Array(4),
    });
    return b.slice(0, h + n);
  }

  async function send(...frames: Uint8Array[]): Promise<void> {
    const before = nfs[0]!.seen.length + nfs[1]!.seen.length;
    for (const f of frames) bridge.send(f, ingress.vxlanPort, '127.0.0.1');
    await until(() => nfs[0]!.seen.length + nfs[1]!.seen.length >= before + frames.length);
  }

  const of = (i: number, port: number) =>
    nfs[i]!.seen.filter((s) => s.srcPort === port || s.dstPort === port).map((s) => [
      s.seq,
      s.flags,
      s.epoch,
    ]);

  function counters(): {
    followed: number;
    overridden: number;
    unknownVni: number;
    notIpv4: number;
    noRoute: number;
  } {
    const out: MetricSample[] = [];
    ingress.collect(out);
    const get = (name: string, label: Record<string, string>) =>
      out.find(([n, l]) => n === name && Object.entries(label).every(([k, v]) => l[k] === v))?.[2] as number;
    return {
      followed: get('nfstate_ingress_ovs_frames_total', { route: 'followed' }),
      overridden: get('nfstate_ingress_ovs_frames_total', { route: 'overridden' }),
      unknownVni: get('nfstate_ingress_dropped_total', { reason: 'unknown_vni' }),
      notIpv4: get('nfstate_ingress_dropped_total', { reason: 'not_ipv4' }),
      noRoute: get('nfstate_ingress_dropped_total', { reason: 'no_route' }),
    };
  }

  it('stamps a flow where the bridge places it, and keeps it there when the default placement changes', async () => {
    await send(frame(5000, { primary: 1, epoch: 0 }), frame(5000, { primary: 1, epoch: 0 }));
    // The live set changed and OVS hashes the flow elsewhere: its state is on nf-1, so it stays.
    await send(frame(5000, { primary: 0, epoch: 0 }));
    assert.deepEqual(of(1, 5000), [
      [1, 0, 0],
      [2, 0, 0],
      [3, 0, 0],
    ]);
    assert.deepEqual(of(0, 5000), []);
    assert.equal(counters().followed, 2);
    assert.equal(counters().overridden, 1);
  });

  it('re-points a flow with its end-of-move marker when the bridge has the newer rule first, and sends what the bridge classified before by the newer rule', async () => {
    await send(frame(6000, { primary: 0, epoch: 0 }), frame(6000, { primary: 0, epoch: 0 }));
    // OVS got the move's rule (epoch 7) before the ingress did.
    await send(frame(6000, { primary: 1, epoch: 7 }));
    await until(() => of(0, 6000).length === 3);
    assert.deepEqual(of(0, 6000), [
      [1, 0, 0],
      [2, 0, 0],
      [2, StampFlag.END_OF_MOVE, 7],
    ]);
    // A frame the bridge classified by the rule before the move, late: the newer rule sends it.
    await send(frame(6000, { primary: 0, epoch: 0 }));
    assert.deepEqual(of(1, 6000), [
      [3, 0, 7],
      [4, 0, 7],
    ]);
    // The controller's own call for the same rule changes nothing more: no second marker.
    assert.equal(
      ingress.repoint(
        { srcIp: CLIENT, dstIp: SERVER, srcPort: 6000, dstPort: 80, proto: 17 },
        { primary: 1, epoch: 7 },
      ),
      true,
    );
    assert.equal(ingress.markers, 1);
  });

  it('drops, by reason, a frame that no route names, of another VNI, not IPv4, or naming no instance', async () => {
    const was = counters();
    bridge.send(frame(7000, { dst: 0x02_6e_66_00_00_01 }), ingress.vxlanPort, '127.0.0.1');
    bridge.send(frame(7000, { primary: 0, epoch: 0 }, VNI + 1), ingress.vxlanPort, '127.0.0.1');
    bridge.send(frame(7000, { primary: 0, epoch: 0 }, VNI, 0x86dd), ingress.vxlanPort, '127.0.0.1');
    bridge.send(frame(7000, { primary: 9, epoch: 0 }), ingress.vxlanPort, '127.0.0.1');
    await until(() => counters().noRoute > was.noRoute);
    const now = counters();
    assert.equal(now.unknownVni - was.unknownVni, 2);
    assert.equal(now.notIpv4 - was.notIpv4, 1);
    assert.equal(now.noRoute - was.noRoute, 1);
    assert.equal(now.followed + now.overridden, was.followed + was.overridden);
    assert.deepEqual([...of(0, 7000), ...of(1, 7000)], []);
    // The dropped frames' routes stay with them: a packet of another door after them is placed by this
    // switch, not pinned by a route it never had.
    const other = { srcIp: CLIENT, dstIp: SERVER, srcPort: 7001, dstPort: 80, proto: 17 };
    const stamped = new Uint8Array(100);
    const h = writeStampHeader(stamped, 0, { vni: VNI, flags: 0, epoch: 0, seq: 0, timeMs: 0 });
    const n = buildUdp(stamped, h, { ...other, payload: new Uint8Array(4) });
    const seen = nfs[0]!.seen.length + nfs[1]!.seen.length;
    bridge.send(stamped.subarray(0, h + n), ingress.port, '127.0.0.1');
    await until(() => nfs[0]!.seen.length + nfs[1]!.seen.length > seen);
    assert.equal(nfs[0]!.seen.length + nfs[1]!.seen.length, seen + 1);
    assert.equal(ingress.switch.ruleOf(other), undefined);
  });
});

describe('writing flows to a bridge', { timeout: 60_000 }, () => {
  it("rejects with the tool's reason when no bridge is there, however many flows it had to write", async () => {
    // More than a pipe holds, so the write is still going when ovs-ofctl gives up without reading it.
    const lines = Array.from({ length: 40_000 }, (_, i) => `priority=10,udp,tp_src=${i},actions=drop`);
    await assert.rejects(
      programOvs('unix:/nonexistent/nfstate-test.mgmt', lines),
      (err: unknown) => err instanceof NfsError && /ovs-ofctl/.test(err.message),
    );
  });
});
