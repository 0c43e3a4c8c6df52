import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { NfsError } from '../../src/errors.js';
import { DropReason } from '../../src/types.js';
import { ArpOp, ArpView, ARP_LENGTH, writeArp } from '../../src/wire/arp.js';
import {
  ETHERTYPE_IPV4,
  macToString,
  parseMac,
  readMac,
  VXLAN_FRAME_HEADER,
  VxlanView,
  writeMac,
  writeVxlanFrame,
} from '../../src/wire/vxlan.js';

function frame(vni: number, etherType = ETHERTYPE_IPV4, payload = 20): Uint8Array {
  const b = new Uint8Array(VXLAN_FRAME_HEADER + payload);
  writeVxlanFrame(b, 0, { vni, dst: 0x0200_0000_0001, src: 0x0200_0000_0002, etherType });
  return b;
}

describe('VxlanView', { timeout: 60_000 }, () => {
  it('reads the VNI, the MACs, the EtherType and where the payload is', () => {
    const b = frame(0xabcdef, 0x86dd, 40);
    const v = new VxlanView();
    assert.equal(v.parse(b, 0, b.length), DropReason.NONE);
    assert.equal(v.vni, 0xabcdef);
    assert.equal(v.dstMac, 0x0200_0000_0001);
    assert.equal(v.srcMac, 0x0200_0000_0002);
    assert.equal(v.etherType, 0x86dd);
    assert.equal(v.frameOffset, 8);
    assert.equal(v.frameLength, 14 + 40);
    assert.equal(v.payloadOffset, 22);
    assert.equal(v.payloadLength, 40);
  });

  it('every prefix shorter than the two headers is TRUNCATED, fed byte by byte', () => {
    const b = frame(1);
    const v = new VxlanView();
    for (let n = 0; n < VXLAN_FRAME_HEADER; n++)
      assert.equal(v.parse(b.subarray(0, n), 0, n), DropReason.TRUNCATED, `${n} bytes`);
    assert.equal(v.parse(b, 0, VXLAN_FRAME_HEADER), DropReason.NONE);
    assert.equal(v.parse(b, 4, b.length), DropReason.TRUNCATED, 'a range past the buffer');
  });

  it('a frame without the I flag is BAD_HEADER; the reserved bits are ignored, as RFC 7348 asks', () => {
    const b = frame(1);
    const v = new VxlanView();
    b[0] = 0;
    assert.equal(v.parse(b, 0, b.length), DropReason.BAD_HEADER);
    b[0] = 0xff;
    b[7] = 0xff;
    assert.equal(v.parse(b, 0, b.length), DropReason.NONE);
    assert.equal(v.vni, 1);
  });

  it('writes zero reserved bits', () => {
    const b = new Uint8Array(VXLAN_FRAME_HEADER).fill(0xee);
    writeVxlanFrame(b, 0, { vni: 5, dst: 1, src: 2, etherType: 0x0800 });
    assert.deepEqual([...b.subarray(0, 8)], [0x08, 0, 0, 0, 0, 0, 5, 0]);
  });

  it('never throws on any bytes', () => {
    const v = new VxlanView();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (b) => {
        const r = v.parse(b, 0, b.length);
        if (r === DropReason.NONE) {
          assert.ok(v.payloadLength >= 0);
          for (const n of [v.vni, v.srcMac, v.dstMac, v.etherType]) assert.ok(Number.isInteger(n));
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('MAC addresses', { timeout: 60_000 }, () => {
  it('round trip through text and bytes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 48 - 1 }), (mac) => {
        assert.equal(parseMac(macToString(mac)), mac);
        const b = new Uint8Array(6);
        writeMac(b, 0, mac);
        assert.equal(readMac(b, 0), mac);
      }),
    );
    assert.equal(macToString(0x026e66000001), '02:6e:66:00:00:01');
  });

  it('anything but six hex pairs is a CONFIG error naming the text', () => {
    for (const bad of ['', '02:6e:66:00:00', '02-6e-66-00-00-01', '02:6e:66:00:00:0g', '002:6e:66:00:00:01'])
      assert.throws(
        () => parseMac(bad),
        (e: unknown) => e instanceof NfsError && e.message.includes(`'${bad}'`),
      );
  });
});

describe('ArpView', { timeout: 60_000 }, () => {
  const fields = {
    op: ArpOp.REPLY,
    senderMac: 0x0200_0000_00aa,
    senderIp: 0x0a010001,
    targetMac: 0x0200_0000_00bb,
    targetIp: 0x0a010002,
  } as const;

  it('round trips', () => {
    const b = new Uint8Array(ARP_LENGTH + 18);
    assert.equal(writeArp(b, 0, fields), ARP_LENGTH);
    const a = new ArpView();
    assert.equal(a.parse(b, 0, b.length), DropReason.NONE, 'Ethernet padding after it is ignored');
    assert.deepEqual(
      {
        op: a.op,
        senderMac: a.senderMac,
        senderIp: a.senderIp,
        targetMac: a.targetMac,
        targetIp: a.targetIp,
      },
      fields,
    );
  });

  it('short messages are TRUNCATED, other hardware, protocols, lengths and operations BAD_HEADER', () => {
    const b = new Uint8Array(ARP_LENGTH);
    writeArp(b, 0, fields);
    const a = new ArpView();
    for (let n = 0; n < ARP_LENGTH; n++) assert.equal(a.parse(b, 0, n), DropReason.TRUNCATED);
    for (const [at, value] of [
      [1, 6],
      [2, 0x86],
      [4, 8],
      [5, 16],
      [7, 3],
    ] as const) {
      const c = b.slice();
      c[at] = value;
      assert.equal(a.parse(c, 0, c.length), DropReason.BAD_HEADER, `byte ${at} = ${value}`);
    }
  });
});
