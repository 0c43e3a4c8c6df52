import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  buildIcmp,
  buildTcp,
  buildUdp,
  TcpFlag,
  type TcpSpec,
  type UdpSpec,
} from '../../src/packet/build.js';
import { checksum } from '../../src/packet/checksum.js';
import { Packet } from '../../src/packet/packet.js';
import { DropReason, IpProto } from '../../src/types.js';

const FC = { numRuns: 200, interruptAfterTimeLimit: 2000 };
const REASONS = new Set<number>(Object.values(DropReason));

const A = 0x0a000001; // 10.0.0.1
const B = 0xc0a80102; // 192.168.1.2

/** Recomputes the IPv4 header checksum after a test has edited the header. */
function fixIpChecksum(buf: Uint8Array, off = 0): void {
  const hl = (buf[off]! & 0x0f) * 4;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  const c = checksum(buf, off, hl);
  buf[off + 10] = c >>> 8;
  buf[off + 11] = c & 0xff;
}

function set16(buf: Uint8Array, at: number, v: number): void {
  buf[at] = v >>> 8;
  buf[at + 1] = v & 0xff;
}

function get16(buf: Uint8Array, at: number): number {
  return (buf[at]! << 8) | buf[at + 1]!;
}

function udp(spec: Partial<UdpSpec> = {}): Uint8Array {
  const buf = new Uint8Array(200);
  const n = buildUdp(buf, 0, {
    srcIp: A,
    dstIp: B,
    srcPort: 1234,
    dstPort: 53,
    payload: Uint8Array.of(1, 2, 3, 4, 5),
    ...spec,
  });
  return buf.slice(0, n);
}

function tcp(spec: Partial<TcpSpec> = {}): Uint8Array {
  const buf = new Uint8Array(200);
  const n = buildTcp(buf, 0, {
    srcIp: A,
    dstIp: B,
    srcPort: 40000,
    dstPort: 80,
    seq: 1000,
    ack: 0,
    flags: TcpFlag.SYN,
    payload: new Uint8Array(0),
    ...spec,
  });
  return buf.slice(0, n);
}

function icmp(type = 8): Uint8Array {
  const buf = new Uint8Array(100);
  const n = buildIcmp(buf, 0, {
    srcIp: A,
    dstIp: B,
    type,
    code: 0,
    id: 777,
    seq: 1,
    payload: Uint8Array.of(9, 9),
  });
  return buf.slice(0, n);
}

function parse(bytes: Uint8Array, offset = 0, length = bytes.length - offset): DropReason {
  return new Packet().parse(bytes, offset, length);
}

const u32 = fc.nat({ max: 0xffffffff });
const u16 = fc.nat({ max: 0xffff });
const options = fc.oneof(
  fc.constant(new Uint8Array(0)),
  fc
    .integer({ min: 1, max: 10 })
    .chain((words) => fc.uint8Array({ minLength: words * 4, maxLength: words * 4 })),
);
const payload = fc.uint8Array({ maxLength: 64, size: 'max' });
const udpSpec = fc.record({
  srcIp: u32,
  dstIp: u32,
  srcPort: u16,
  dstPort: u16,
  payload,
  ttl: fc.nat({ max: 255 }),
  id: u16,
  ipOptions: options,
});
const tcpSpec = fc.record({
  srcIp: u32,
  dstIp: u32,
  srcPort: u16,
  dstPort: u16,
  seq: u32,
  ack: u32,
  flags: fc.nat({ max: 0xff }),
  window: u16,
  payload,
  ttl: fc.nat({ max: 255 }),
  id: u16,
  ipOptions: options,
});

describe('Packet.parse of built packets', { timeout: 60_000 }, () => {
  it('reads back every field of a UDP packet, at any offset, ignoring trailing bytes', () => {
    fc.assert(
      fc.property(udpSpec, fc.nat({ max: 16 }), fc.nat({ max: 8 }), (spec, offset, trailing) => {
        const buf = new Uint8Array(offset + 200);
        const n = buildUdp(buf, offset, spec);
        const pkt = new Packet();
        assert.equal(pkt.parse(buf, offset, n + trailing), DropReason.NONE);
        assert.equal(pkt.buf, buf);
        assert.equal(pkt.offset, offset);
        assert.equal(pkt.length, n);
        assert.equal(pkt.ipHeaderLength, 20 + spec.ipOptions.length);
        assert.equal(pkt.l4Offset, offset + 20 + spec.ipOptions.length);
        assert.equal(pkt.l4Length, 8 + spec.payload.length);
        assert.equal(pkt.proto, IpProto.UDP);
        assert.equal(pkt.srcIp, spec.srcIp);
        assert.equal(pkt.dstIp, spec.dstIp);
        assert.equal(pkt.ttl, spec.ttl);
        assert.equal(pkt.srcPort, spec.srcPort);
        assert.equal(pkt.dstPort, spec.dstPort);
        assert.equal(pkt.tcpFlags, 0);
        assert.equal(pkt.icmpType, 0);
        assert.equal(pkt.icmpCode, 0);
        assert.deepEqual(
          buf.subarray(pkt.payloadOffset, pkt.payloadOffset + pkt.payloadLength),
          spec.payload,
        );
      }),
      FC,
    );
  });

  it('reads back every field of a TCP packet', () => {
    fc.assert(
      fc.property(tcpSpec, (spec) => {
        const buf = new Uint8Array(200);
        const n = buildTcp(buf, 0, spec);
        const pkt = new Packet();
        assert.equal(pkt.parse(buf, 0, n), DropReason.NONE);
        assert.equal(pkt.proto, IpProto.TCP);
        assert.equal(pkt.srcIp, spec.srcIp);
        assert.equal(pkt.dstIp, spec.dstIp);
        assert.equal(pkt.srcPort, spec.srcPort);
        assert.equal(pkt.dstPort, spec.dstPort);
        assert.equal(pkt.tcpFlags, spec.flags);
        assert.equal(pkt.tcpSeq, spec.seq);
        assert.equal(pkt.tcpAck, spec.ack);
        assert.equal(pkt.ttl, spec.ttl);
        assert.equal(pkt.payloadOffset, 40 + spec.ipOptions.length);
        assert.deepEqual(
          buf.subarray(pkt.payloadOffset, pkt.payloadOffset + pkt.payloadLength),
          spec.payload,
        );
      }),
      FC,
    );
  });

  it('exposes the ICMP echo identifier as both ports, and no ports for other ICMP types', () => {
    const pkt = new Packet();
    for (const type of [8, 0]) {
      const bytes = icmp(type);
      assert.equal(pkt.parse(bytes, 0, bytes.length), DropReason.NONE);
      assert.equal(pkt.proto, IpProto.ICMP);
      assert.equal(pkt.icmpType, type);
      assert.equal(pkt.icmpCode, 0);
      assert.equal(pkt.srcPort, 777);
      assert.equal(pkt.dstPort, 777);
      assert.equal(pkt.payloadLength, 2);
      assert.equal(pkt.tcpFlags, 0);
    }
    const unreachable = icmp(3);
    assert.equal(pkt.parse(unreachable, 0, unreachable.length), DropReason.NONE);
    assert.equal(pkt.icmpType, 3);
    assert.equal(pkt.srcPort, 0);
    assert.equal(pkt.dstPort, 0);
    pkt.setSrcPort(9);
    assert.deepEqual(pkt.buf, icmp(3));
  });

  it('passes other protocols with ports 0 and the whole L4 segment as payload', () => {
    const bytes = udp();
    bytes[9] = 47; // GRE
    fixIpChecksum(bytes);
    const pkt = new Packet();
    assert.equal(pkt.parse(bytes, 0, bytes.length), DropReason.NONE);
    assert.equal(pkt.proto, 47);
    assert.equal(pkt.srcPort, 0);
    assert.equal(pkt.dstPort, 0);
    assert.equal(pkt.payloadOffset, 20);
    assert.equal(pkt.payloadLength, bytes.length - 20);
    pkt.setSrcIp(B);
    assert.equal(pkt.parse(bytes, 0, bytes.length), DropReason.NONE);
    assert.equal(pkt.srcIp, B);
  });

  it('accepts a UDP checksum of 0 as "none" without verifying it', () => {
    const bytes = udp();
    set16(bytes, 26, 0);
    bytes[28] = bytes[28]! ^ 0xff; // payload changed, but there is no checksum to notice
    assert.equal(parse(bytes), DropReason.NONE);
  });
});

describe('Packet.parse drop reasons', { timeout: 60_000 }, () => {
  const cases: [name: string, make: () => Uint8Array, reason: DropReason][] = [
    ['fewer than 20 bytes', () => udp().subarray(0, 19), DropReason.TRUNCATED],
    ['empty input', () => new Uint8Array(0), DropReason.TRUNCATED],
    [
      'IPv6 version nibble',
      () => {
        const b = udp();
        b[0] = 0x65;
        return b;
      },
      DropReason.BAD_VERSION,
    ],
    [
      'IHL below 5',
      () => {
        const b = udp();
        b[0] = 0x44;
        return b;
      },
      DropReason.BAD_HEADER,
    ],
    [
      'IHL beyond the bytes given',
      () => {
        const b = udp();
        b[0] = 0x4f; // 60-byte header in a 33-byte packet
        return b;
      },
      DropReason.BAD_HEADER,
    ],
    [
      'total length below the header length',
      () => {
        const b = udp();
        set16(b, 2, 19);
        fixIpChecksum(b);
        return b;
      },
      DropReason.BAD_LENGTH,
    ],
    [
      'total length beyond the bytes given',
      () => {
        const b = udp();
        set16(b, 2, b.length + 1);
        fixIpChecksum(b);
        return b;
      },
      DropReason.BAD_LENGTH,
    ],
    [
      'IPv4 header checksum off by one',
      () => {
        const b = udp();
        b[11] = b[11]! ^ 1;
        return b;
      },
      DropReason.BAD_CHECKSUM,
    ],
    [
      'more-fragments flag',
      () => {
        const b = udp();
        set16(b, 6, 0x2000);
        fixIpChecksum(b);
        return b;
      },
      DropReason.UNSUPPORTED,
    ],
    [
      'nonzero fragment offset',
      () => {
        const b = udp();
        set16(b, 6, 0x0001);
        fixIpChecksum(b);
        return b;
      },
      DropReason.UNSUPPORTED,
    ],
    [
      'UDP header cut short by the total length',
      () => {
        const b = udp();
        set16(b, 2, 27);
        fixIpChecksum(b);
        return b;
      },
      DropReason.TRUNCATED,
    ],
    [
      'UDP length below 8',
      () => {
        const b = udp();
        set16(b, 24, 7);
        return b;
      },
      DropReason.BAD_LENGTH,
    ],
    [
      'UDP length beyond the IPv4 payload',
      () => {
        const b = udp();
        set16(b, 24, b.length - 20 + 1);
        return b;
      },
      DropReason.BAD_LENGTH,
    ],
    [
      'UDP checksum wrong',
      () => {
        const b = udp();
        b[28] = b[28]! ^ 0x10;
        return b;
      },
      DropReason.BAD_CHECKSUM,
    ],
    [
      'TCP header cut short by the total length',
      () => {
        const b = tcp();
        set16(b, 2, 39);
        fixIpChecksum(b);
        return b;
      },
      DropReason.TRUNCATED,
    ],
    [
      'TCP data offset below 5',
      () => {
        const b = tcp();
        b[32] = 0x40;
        return b;
      },
      DropReason.BAD_HEADER,
    ],
    [
      'TCP data offset beyond the segment',
      () => {
        const b = tcp({ payload: new Uint8Array(8) });
        b[32] = 0x80; // 32-byte header in a 28-byte segment
        return b;
      },
      DropReason.BAD_HEADER,
    ],
    [
      'TCP checksum wrong',
      () => {
        const b = tcp();
        b[36] = b[36]! ^ 0x01;
        return b;
      },
      DropReason.BAD_CHECKSUM,
    ],
    [
      'TCP pseudo header mismatch (address changed without updating the checksum)',
      () => {
        const b = tcp();
        b[15] = b[15]! ^ 0x01;
        fixIpChecksum(b);
        return b;
      },
      DropReason.BAD_CHECKSUM,
    ],
    [
      'ICMP shorter than 8 bytes',
      () => {
        const b = icmp();
        set16(b, 2, 27);
        fixIpChecksum(b);
        return b;
      },
      DropReason.TRUNCATED,
    ],
    [
      'ICMP checksum wrong',
      () => {
        const b = icmp();
        b[29] = b[29]! ^ 0x01;
        return b;
      },
      DropReason.BAD_CHECKSUM,
    ],
  ];
  for (const [name, make, reason] of cases) {
    it(`${name} → ${reason}`, () => {
      assert.equal(parse(make()), reason);
    });
  }

  it('rejects an offset or length outside the buffer as TRUNCATED', () => {
    const bytes = udp();
    assert.equal(parse(bytes, 0, bytes.length + 1), DropReason.TRUNCATED);
    assert.equal(parse(bytes, 1, bytes.length), DropReason.TRUNCATED);
    assert.equal(parse(bytes, -1, 20), DropReason.TRUNCATED);
    assert.equal(parse(bytes, 0, -5), DropReason.TRUNCATED);
    assert.equal(parse(bytes, 0.5, 20), DropReason.TRUNCATED);
    assert.equal(parse(bytes, 0, Number.NaN), DropReason.TRUNCATED);
  });

  it('accepts IPv4 options, and a trailing byte beyond the total length', () => {
    const bytes = new Uint8Array(100);
    const n = buildUdp(bytes, 0, {
      srcIp: A,
      dstIp: B,
      srcPort: 1,
      dstPort: 2,
      payload: new Uint8Array(3),
      ipOptions: Uint8Array.of(0x94, 0x04, 0, 0), // router alert
    });
    const pkt = new Packet();
    assert.equal(pkt.parse(bytes, 0, n + 1), DropReason.NONE);
    assert.equal(pkt.length, n);
    assert.equal(pkt.ipHeaderLength, 24);
  });
});

describe('Packet.parse on hostile input', { timeout: 60_000 }, () => {
  it('never throws on random bytes, offsets and lengths', () => {
    const pkt = new Packet();
    // Steer some inputs past the version check and into the L4 parsers.
    const first = fc.oneof(fc.constantFrom(0x45, 0x46, 0x4f), fc.nat({ max: 255 }));
    const proto = fc.oneof(fc.constantFrom(1, 6, 17), fc.nat({ max: 255 }));
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 120 }),
        first,
        proto,
        fc.boolean(),
        fc.integer({ min: -4, max: 130 }),
        fc.integer({ min: -4, max: 130 }),
        (bytes, b0, b9, repair, offset, length) => {
          if (bytes.length > 20) {
            bytes[0] = b0;
            bytes[9] = b9;
            if (repair) fixIpChecksum(bytes);
          }
          assert.ok(REASONS.has(pkt.parse(bytes, 0, bytes.length)));
          // Getters must not throw either, whatever parse said, and read numbers (never NaN).
          const fields = [
            pkt.srcIp,
            pkt.dstIp,
            pkt.srcPort,
            pkt.dstPort,
            pkt.tcpFlags,
            pkt.icmpType,
            pkt.icmpCode,
          ];
          assert.ok(fields.every(Number.isInteger));
          assert.ok(REASONS.has(pkt.parse(bytes, offset, length)));
        },
      ),
      { ...FC, numRuns: 500 },
    );
  });

  it('never throws on mutated valid packets, with or without a repaired header checksum', () => {
    const seeds = [
      udp(),
      tcp({ payload: new Uint8Array(12) }),
      icmp(),
      udp({ ipOptions: new Uint8Array(8) }),
    ];
    const pkt = new Packet();
    fc.assert(
      fc.property(
        fc.nat({ max: seeds.length - 1 }),
        fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.boolean(),
        fc.nat({ max: 80 }),
        (which, edits, repair, cut) => {
          const bytes = seeds[which]!.slice();
          for (const [at, v] of edits) bytes[at % bytes.length] = v;
          if (repair && (bytes[0]! & 0x0f) * 4 <= bytes.length) fixIpChecksum(bytes);
          const reason = pkt.parse(bytes, 0, Math.min(bytes.length, cut));
          assert.ok(REASONS.has(reason));
          assert.ok(REASONS.has(pkt.parse(bytes, 0, bytes.length)));
        },
      ),
      { ...FC, numRuns: 1000 },
    );
  });

  it('reports every strict prefix as TRUNCATED or BAD_*, and only the whole packet as NONE', () => {
    const packets = [
      udp({ payload: new Uint8Array(10) }),
      tcp({ payload: Uint8Array.of(1, 2, 3), ipOptions: new Uint8Array(12) }),
      icmp(),
    ];
    const pkt = new Packet();
    for (const full of packets) {
      const headerLength = (full[0]! & 0x0f) * 4;
      for (let n = 0; n <= full.length; n++) {
        // A buffer holding exactly the prefix, at a nonzero offset, so nothing past it can be read.
        const buf = new Uint8Array(3 + n);
        buf.set(full.subarray(0, n), 3);
        const reason = pkt.parse(buf, 3, n);
        if (n === full.length) assert.equal(reason, DropReason.NONE);
        else if (n < 20) assert.equal(reason, DropReason.TRUNCATED);
        else if (n < headerLength) assert.equal(reason, DropReason.BAD_HEADER);
        else assert.equal(reason, DropReason.BAD_LENGTH);
      }
    }
  });
});

describe('Packet setters', { timeout: 60_000 }, () => {
  it('rewrite UDP addresses and ports keeping both checksums valid, as if built that way', () => {
    fc.assert(
      fc.property(udpSpec, u32, u32, u16, u16, fc.boolean(), (spec, srcIp, dstIp, srcPort, dstPort, zero) => {
        const buf = new Uint8Array(200);
        const n = buildUdp(buf, 0, spec);
        const lenIp = 20 + spec.ipOptions.length;
        if (zero) set16(buf, lenIp + 6, 0);
        const pkt = new Packet();
        assert.equal(pkt.parse(buf, 0, n), DropReason.NONE);
        pkt.setSrcIp(srcIp);
        pkt.setDstIp(dstIp);
        pkt.setSrcPort(srcPort);
        pkt.setDstPort(dstPort);
        assert.equal(pkt.parse(buf, 0, n), DropReason.NONE);
        assert.deepEqual([pkt.srcIp, pkt.dstIp, pkt.srcPort, pkt.dstPort], [srcIp, dstIp, srcPort, dstPort]);
        const expected = new Uint8Array(200);
        buildUdp(expected, 0, { ...spec, srcIp, dstIp, srcPort, dstPort });
        if (zero) set16(expected, lenIp + 6, 0);
        assert.deepEqual(buf, expected);
      }),
      FC,
    );
  });

  it('rewrite TCP addresses and ports keeping both checksums valid, as if built that way', () => {
    fc.assert(
      fc.property(tcpSpec, u32, u32, u16, u16, (spec, srcIp, dstIp, srcPort, dstPort) => {
        const buf = new Uint8Array(200);
        const n = buildTcp(buf, 0, spec);
        const pkt = new Packet();
        assert.equal(pkt.parse(buf, 0, n), DropReason.NONE);
        pkt.setDstPort(dstPort);
        pkt.setSrcIp(srcIp);
        pkt.setSrcPort(srcPort);
        pkt.setDstIp(dstIp);
        assert.equal(pkt.parse(buf, 0, n), DropReason.NONE);
        assert.deepEqual([pkt.srcIp, pkt.dstIp, pkt.srcPort, pkt.dstPort], [srcIp, dstIp, srcPort, dstPort]);
        const expected = new Uint8Array(200);
        buildTcp(expected, 0, { ...spec, srcIp, dstIp, srcPort, dstPort });
        assert.deepEqual(buf, expected);
      }),
      FC,
    );
  });

  it('rewrite the ICMP echo identifier and addresses', () => {
    fc.assert(
      fc.property(u32, u32, u16, fc.constantFrom(0, 8), (srcIp, dstIp, id, type) => {
        const buf = icmp(type);
        const pkt = new Packet();
        assert.equal(pkt.parse(buf, 0, buf.length), DropReason.NONE);
        pkt.setSrcIp(srcIp);
        pkt.setDstIp(dstIp);
        pkt.setDstPort(id);
        assert.equal(pkt.parse(buf, 0, buf.length), DropReason.NONE);
        assert.equal(pkt.srcPort, id);
        const expected = new Uint8Array(buf.length);
        buildIcmp(expected, 0, { srcIp, dstIp, type, code: 0, id, seq: 1, payload: Uint8Array.of(9, 9) });
        assert.deepEqual(buf, expected);
      }),
      FC,
    );
  });

  it('store a UDP checksum that computes to 0 as 0xffff', () => {
    // Choose the first payload word so the UDP checksum computes to 0, then move a port and back.
    const bytes = udp({ payload: new Uint8Array(2) });
    const zeroing = get16(bytes, 26);
    const rebuilt = udp({ payload: Uint8Array.of(zeroing >>> 8, zeroing & 0xff) });
    assert.equal(get16(rebuilt, 26), 0xffff);
    const pkt = new Packet();
    assert.equal(pkt.parse(rebuilt, 0, rebuilt.length), DropReason.NONE);
    pkt.setSrcPort(4321);
    assert.notEqual(get16(rebuilt, 26), 0xffff);
    pkt.setSrcPort(1234);
    assert.equal(get16(rebuilt, 26), 0xffff);
    assert.equal(pkt.parse(rebuilt, 0, rebuilt.length), DropReason.NONE);
  });

  it('leave the buffer untouched when the value does not change', () => {
    const bytes = tcp();
    const before = bytes.slice();
    const pkt = new Packet();
    assert.equal(pkt.parse(bytes, 0, bytes.length), DropReason.NONE);
    pkt.setSrcIp(A);
    pkt.setDstPort(80);
    assert.deepEqual(bytes, before);
  });
});
