/**
 * Frozen sample encodings (test/fixtures/wire/*.hex) must keep decoding to exactly these values, and the
 * encoders must keep producing exactly these bytes. A failure here means the wire format changed:
 * bump STAMP_VERSION (or the frame format) and add new samples instead of editing these.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { DropReason } from '../../src/types.js';
import { FrameDecoder, encodeFrame } from '../../src/wire/frame.js';
import {
  FLOW_HEADER_LENGTH,
  STAMP_HEADER_LENGTH,
  StampFlag,
  StampView,
  writeStampHeader,
} from '../../src/wire/geneve.js';
import { ArpOp, ArpView, writeArp } from '../../src/wire/arp.js';
import {
  BROADCAST_MAC,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  macToString,
  VxlanView,
  writeVxlanFrame,
} from '../../src/wire/vxlan.js';
import { flowKeyString, ipToString } from '../../src/packet/flow-key.js';
import { checksumsValid, fromHex } from './packets.js';

// The samples stay in test/fixtures; compiled tests run from dist/test, two levels further down.
const fixtureDir = [
  new URL('../fixtures/wire/', import.meta.url),
  new URL('../../../test/fixtures/wire/', import.meta.url),
].find((u) => existsSync(u));

function sample(name: string): Uint8Array {
  assert.ok(fixtureDir, 'test/fixtures/wire not found');
  return fromHex(readFileSync(new URL(name, fixtureDir), 'utf8'));
}

interface Stamp {
  vni: number;
  flags: number;
  epoch: number;
  seq: number;
  timeMs: number;
  headerLength: number;
  stampOffset: number;
}

interface InnerUdp {
  id: number;
  ttl: number;
  src: string;
  dst: string;
  srcPort: number;
  dstPort: number;
  payload: number[];
}

function decodeStamp(bytes: Uint8Array, want: Stamp): StampView {
  const v = new StampView();
  assert.equal(v.parse(bytes, 0, bytes.length), DropReason.NONE);
  assert.equal(v.hasStamp, true);
  assert.deepEqual(
    {
      vni: v.vni,
      flags: v.flags,
      epoch: v.epoch,
      seq: v.seq,
      timeMs: v.timeMs,
      headerLength: v.headerLength,
      stampOffset: v.stampOffset,
    },
    want,
  );
  assert.equal(v.innerOffset, want.headerLength);
  assert.equal(v.innerLength, bytes.length - want.headerLength);
  return v;
}

function decodeInner(ip: Uint8Array, want: InnerUdp): void {
  const u16 = (at: number) => (ip[at]! << 8) | ip[at + 1]!;
  const addr = (at: number) => [...ip.subarray(at, at + 4)].join('.');
  assert.equal(ip[0], 0x45, 'IPv4, 20-byte header');
  assert.equal(ip[1], 0, 'DSCP/ECN');
  assert.equal(u16(2), ip.length, 'total length');
  assert.equal(u16(4), want.id, 'identification');
  assert.equal(u16(6), 0x4000, 'DF, offset 0');
  assert.equal(ip[8], want.ttl, 'TTL');
  assert.equal(ip[9], 17, 'UDP');
  assert.equal(addr(12), want.src);
  assert.equal(addr(16), want.dst);
  assert.equal(u16(20), want.srcPort);
  assert.equal(u16(22), want.dstPort);
  assert.equal(u16(24), 8 + want.payload.length, 'UDP length');
  assert.deepEqual([...ip.subarray(28)], want.payload);
  assert.deepEqual(checksumsValid(ip), { ip: true, udp: true });
}

/** The first STAMP_HEADER_LENGTH bytes writeStampHeader produces for the view's current fields. */
function reencode(v: StampView): Uint8Array {
  const out = new Uint8Array(STAMP_HEADER_LENGTH);
  writeStampHeader(out, 0, { vni: v.vni, flags: v.flags, epoch: v.epoch, seq: v.seq, timeMs: v.timeMs });
  return out;
}

describe('frozen wire samples', { timeout: 60_000 }, () => {
  it('stamp-udp.hex', () => {
    const bytes = sample('stamp-udp.hex');
    assert.equal(bytes.length, 36 + 35);
    const v = decodeStamp(bytes, {
      vni: 0xabcd,
      flags: 0,
      epoch: 1,
      seq: 1,
      timeMs: 1_700_000_000_123.456,
      headerLength: 36,
      stampOffset: 12,
    });
    decodeInner(bytes.subarray(v.innerOffset), {
      id: 0x1234,
      ttl: 64,
      src: '10.0.0.1',
      dst: '10.0.0.2',
      srcPort: 40000,
      dstPort: 53,
      payload: [...new TextEncoder().encode('nfstate')],
    });
    assert.deepEqual(reencode(v), bytes.subarray(0, 36));
  });

  it('stamp-copy-replay.hex', () => {
    const bytes = sample('stamp-copy-replay.hex');
    assert.equal(bytes.length, 36 + 32);
    const v = decodeStamp(bytes, {
      vni: 0xffffff,
      flags: StampFlag.COPY | StampFlag.REPLAY,
      epoch: 0x89abcdef,
      seq: 2 ** 32 + 5,
      timeMs: Date.UTC(2025, 0, 1),
      headerLength: 36,
      stampOffset: 12,
    });
    decodeInner(bytes.subarray(v.innerOffset), {
      id: 0xbeef,
      ttl: 63,
      src: '192.168.1.10',
      dst: '192.168.1.20',
      srcPort: 5353,
      dstPort: 6000,
      payload: [0xde, 0xad, 0xbe, 0xef],
    });
    assert.deepEqual(reencode(v), bytes.subarray(0, 36));
  });

  it('stamp-foreign-option.hex', () => {
    const bytes = sample('stamp-foreign-option.hex');
    assert.equal(bytes.length, 44 + 28);
    const v = decodeStamp(bytes, {
      vni: 7,
      flags: StampFlag.FORWARDED,
      epoch: 2,
      seq: 3,
      timeMs: 1_700_000_000_000,
      headerLength: 44,
      stampOffset: 20,
    });
    decodeInner(bytes.subarray(v.innerOffset), {
      id: 1,
      ttl: 64,
      src: '172.16.0.5',
      dst: '172.16.0.6',
      srcPort: 1234,
      dstPort: 4321,
      payload: [],
    });
    // The nfstate option itself is byte for byte what the writer emits.
    assert.deepEqual(reencode(v).subarray(8), bytes.subarray(16, 44));
    assert.deepEqual([...bytes.subarray(8, 16)], [0x01, 0x03, 0x05, 0x01, 0, 0, 0, 1]);
  });

  it('stamp-flow-udp.hex', () => {
    const bytes = sample('stamp-flow-udp.hex');
    assert.equal(bytes.length, 52 + 33);
    const v = decodeStamp(bytes, {
      vni: 1,
      flags: 0,
      epoch: 3,
      seq: 42,
      timeMs: 1_700_000_000_123.456,
      headerLength: 52,
      stampOffset: 12,
    });
    assert.equal(v.hasFlow, true);
    const flow = v.flowInto({ srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 }, 17);
    assert.equal(flowKeyString(flow), 'udp 10.1.0.2:40000 198.51.100.10:5001');
    decodeInner(bytes.subarray(v.innerOffset), {
      id: 0x4242,
      ttl: 64,
      src: '198.51.100.10',
      dst: '203.0.113.1',
      srcPort: 5001,
      dstPort: 1024,
      payload: [...new TextEncoder().encode('reply')],
    });
    const out = new Uint8Array(FLOW_HEADER_LENGTH);
    writeStampHeader(
      out,
      0,
      { vni: v.vni, flags: v.flags, epoch: v.epoch, seq: v.seq, timeMs: v.timeMs },
      flow,
    );
    assert.deepEqual(out, bytes.subarray(0, 52));
  });

  it('vxlan-udp.hex', () => {
    const bytes = sample('vxlan-udp.hex');
    const v = new VxlanView();
    assert.equal(v.parse(bytes, 0, bytes.length), DropReason.NONE);
    assert.deepEqual(
      [v.vni, macToString(v.dstMac), macToString(v.srcMac), v.etherType, v.payloadOffset],
      [0x123456, '02:6e:66:00:00:01', '92:b5:ca:77:10:ad', ETHERTYPE_IPV4, 22],
    );
    decodeInner(bytes.subarray(v.payloadOffset), {
      id: 0x0101,
      ttl: 64,
      src: '10.1.0.2',
      dst: '198.51.100.10',
      srcPort: 40000,
      dstPort: 5001,
      payload: [...new TextEncoder().encode('hello')],
    });
    const out = new Uint8Array(22);
    writeVxlanFrame(out, 0, { vni: v.vni, dst: v.dstMac, src: v.srcMac, etherType: v.etherType });
    assert.deepEqual(out, bytes.subarray(0, 22));
  });

  it('vxlan-arp-request.hex', () => {
    const bytes = sample('vxlan-arp-request.hex');
    const v = new VxlanView();
    assert.equal(v.parse(bytes, 0, bytes.length), DropReason.NONE);
    assert.deepEqual([v.vni, v.dstMac, v.etherType], [1, BROADCAST_MAC, ETHERTYPE_ARP]);
    const arp = new ArpView();
    assert.equal(arp.parse(bytes, v.payloadOffset, v.payloadLength), DropReason.NONE);
    assert.deepEqual(
      [arp.op, macToString(arp.senderMac), ipToString(arp.senderIp), arp.targetMac, ipToString(arp.targetIp)],
      [ArpOp.REQUEST, '92:b5:ca:77:10:ad', '10.1.0.2', 0, '10.1.0.1'],
    );
    const out = new Uint8Array(28);
    writeArp(out, 0, {
      op: arp.op,
      senderMac: arp.senderMac,
      senderIp: arp.senderIp,
      targetMac: arp.targetMac,
      targetIp: arp.targetIp,
    });
    assert.deepEqual(out, bytes.subarray(22));
  });

  it('frame-hmac.hex', () => {
    const key = new TextEncoder().encode('nfstate-frame-fixture-key');
    const bytes = sample('frame-hmac.hex');
    const body = new TextEncoder().encode('batch 1: 3 deltas');
    const dec = new FrameDecoder({ key, maxFrame: 1024 });
    const got: { type: number; seq: number; body: string }[] = [];
    dec.push(bytes, (type, seq, b) => got.push({ type, seq, body: new TextDecoder().decode(b) }));
    assert.deepEqual(got, [{ type: 2, seq: 1, body: 'batch 1: 3 deltas' }]);
    assert.deepEqual(dec.drops, { oversized: 0, malformed: 0, bad_auth: 0, replayed: 0 });
    assert.deepEqual(encodeFrame(2, 1, body, key), bytes);
  });
});
