import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { NfsError } from '../../src/errors.js';
import { buildTcp } from '../../src/packet/build.js';
import {
  canonicalKey,
  flowHash,
  flowKeyOf,
  flowKeyString,
  inCidr,
  ipToString,
  flowHashOf,
  parseCidr,
  parseFlowKeyString,
  parseIpv4,
  sameFlow,
} from '../../src/packet/flow-key.js';
import { Packet } from '../../src/packet/packet.js';
import { DropReason, IpProto, type FlowKey } from '../../src/types.js';

const FC = { numRuns: 300, interruptAfterTimeLimit: 2000 };

const u32 = fc.nat({ max: 0xffffffff });
const u16 = fc.nat({ max: 0xffff });
const key = fc.record({ srcIp: u32, dstIp: u32, srcPort: u16, dstPort: u16, proto: fc.nat({ max: 255 }) });

function reversed(k: FlowKey): FlowKey {
  return { srcIp: k.dstIp, dstIp: k.srcIp, srcPort: k.dstPort, dstPort: k.srcPort, proto: k.proto };
}

function hashOf(k: FlowKey): number {
  return flowHash(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto);
}

function isConfigError(text: string) {
  return (err: unknown): boolean =>
    err instanceof NfsError && err.code === 'NFS_ERR_CONFIG' && err.message.includes(text);
}

/** A fixed-seed generator (mulberry32), so the distribution tests are deterministic. */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function assertUniform(counts: number[], total: number): void {
  const expected = total / counts.length;
  for (const [bucket, c] of counts.entries()) {
    assert.ok(Math.abs(c - expected) <= expected * 0.05, `bucket ${bucket}: ${c}, expected ${expected} ± 5%`);
  }
}

describe('flowHash', { timeout: 60_000 }, () => {
  it('is an unsigned 32-bit integer, the same for both directions', () => {
    fc.assert(
      fc.property(key, (k) => {
        const h = hashOf(k);
        assert.ok(Number.isInteger(h) && h >= 0 && h <= 0xffffffff);
        assert.equal(hashOf(reversed(k)), h);
      }),
      FC,
    );
  });

  it('tells apart keys that differ in one field', () => {
    const k = { srcIp: 0x0a000001, dstIp: 0x0a000002, srcPort: 1234, dstPort: 80, proto: IpProto.TCP };
    const h = hashOf(k);
    assert.notEqual(hashOf({ ...k, proto: IpProto.UDP }), h);
    assert.notEqual(hashOf({ ...k, srcPort: 1235 }), h);
    assert.notEqual(hashOf({ ...k, dstIp: 0x0a000003 }), h);
    // Swapping only the ports (not the endpoints) is a different connection.
    assert.notEqual(hashOf({ ...k, srcPort: 80, dstPort: 1234 }), h);
  });

  it('spreads 100k random keys evenly over 16 buckets (within 5%)', () => {
    const next = rng(42);
    const low = new Array<number>(16).fill(0);
    const high = new Array<number>(16).fill(0);
    const total = 100_000;
    for (let i = 0; i < total; i++) {
      const h = flowHash(next(), next(), next() & 0xffff, next() & 0xffff, (next() & 1) === 0 ? 6 : 17);
      low[h & 15]!++;
      high[h >>> 28]!++;
    }
    assertUniform(low, total);
    assertUniform(high, total);
  });

  it('spreads one client’s sequential source ports evenly over 16 buckets', () => {
    const counts = new Array<number>(16).fill(0);
    const total = 64_000;
    for (let port = 1024; port < 1024 + total; port++) {
      counts[flowHash(0x0a000001, 0x5db8d822, port, 443, IpProto.TCP) & 15]!++;
    }
    assertUniform(counts, total);
  });

  it('matches flowHashOf of a parsed packet in both directions', () => {
    const buf = new Uint8Array(80);
    const pkt = new Packet();
    const spec = {
      srcIp: 1,
      dstIp: 2,
      srcPort: 3,
      dstPort: 4,
      seq: 0,
      ack: 0,
      flags: 0,
      payload: new Uint8Array(0),
    };
    assert.equal(pkt.parse(buf, 0, buildTcp(buf, 0, spec)), DropReason.NONE);
    const forward = flowHashOf(pkt);
    assert.equal(forward, flowHash(1, 2, 3, 4, IpProto.TCP));
    const back = { ...spec, srcIp: 2, dstIp: 1, srcPort: 4, dstPort: 3 };
    assert.equal(pkt.parse(buf, 0, buildTcp(buf, 0, back)), DropReason.NONE);
    assert.equal(flowHashOf(pkt), forward);
  });
});

describe('canonicalKey / flowKeyOf / sameFlow', { timeout: 60_000 }, () => {
  it('gives both directions one key, whose source is the lower (ip, port)', () => {
    fc.assert(
      fc.property(key, (k) => {
        const c = canonicalKey(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto);
        const r = reversed(k);
        assert.deepEqual(canonicalKey(r.srcIp, r.dstIp, r.srcPort, r.dstPort, r.proto), c);
        assert.ok(c.srcIp < c.dstIp || (c.srcIp === c.dstIp && c.srcPort <= c.dstPort));
        assert.ok(sameFlow(c, k) && sameFlow(k, r) && sameFlow(r, c));
      }),
      FC,
    );
  });

  it('orders by address first, then by port', () => {
    assert.deepEqual(canonicalKey(0xc0000001, 0x0a000001, 80, 5000, 6), {
      srcIp: 0x0a000001,
      dstIp: 0xc0000001,
      srcPort: 5000,
      dstPort: 80,
      proto: 6,
    });
    assert.deepEqual(canonicalKey(7, 7, 9000, 53, 17), {
      srcIp: 7,
      dstIp: 7,
      srcPort: 53,
      dstPort: 9000,
      proto: 17,
    });
  });

  it('sameFlow is false when any field differs', () => {
    const k = { srcIp: 1, dstIp: 2, srcPort: 3, dstPort: 4, proto: 6 };
    assert.equal(sameFlow(k, { ...k, proto: 17 }), false);
    assert.equal(sameFlow(k, { ...k, srcPort: 4, dstPort: 3 }), false);
    assert.equal(sameFlow(k, { ...k, dstIp: 3 }), false);
  });

  it('flowKeyOf gives a packet the canonical key of its flow', () => {
    const buf = new Uint8Array(80);
    const pkt = new Packet();
    const n = buildTcp(buf, 0, {
      srcIp: 0x0a000009,
      dstIp: 0x0a000001,
      srcPort: 80,
      dstPort: 50000,
      seq: 0,
      ack: 0,
      flags: 0,
      payload: new Uint8Array(0),
    });
    assert.equal(pkt.parse(buf, 0, n), DropReason.NONE);
    assert.deepEqual(flowKeyOf(pkt), {
      srcIp: 0x0a000001,
      dstIp: 0x0a000009,
      srcPort: 50000,
      dstPort: 80,
      proto: 6,
    });
  });
});

describe('flow key text', { timeout: 60_000 }, () => {
  it('writes protocol names and dotted quads', () => {
    const k = { srcIp: 0x0a000001, dstIp: 0x0a000002, srcPort: 1234, dstPort: 80, proto: IpProto.UDP };
    assert.equal(flowKeyString(k), 'udp 10.0.0.1:1234 10.0.0.2:80');
    assert.equal(flowKeyString({ ...k, proto: IpProto.TCP }), 'tcp 10.0.0.1:1234 10.0.0.2:80');
    assert.equal(flowKeyString({ ...k, proto: IpProto.ICMP }), 'icmp 10.0.0.1:1234 10.0.0.2:80');
    assert.equal(flowKeyString({ ...k, proto: 47 }), '47 10.0.0.1:1234 10.0.0.2:80');
  });

  it('parses back exactly what it writes', () => {
    fc.assert(
      fc.property(key, (k) => {
        const s = flowKeyString(k);
        assert.deepEqual(parseFlowKeyString(s), { ...k });
        assert.equal(flowKeyString(parseFlowKeyString(s)), s);
      }),
      FC,
    );
  });

  it('refuses malformed flow keys with NfsError CONFIG', () => {
    for (const bad of [
      '',
      'udp 10.0.0.1:1 10.0.0.2:2 extra',
      'udp  10.0.0.1:1 10.0.0.2:2',
      'sctp 10.0.0.1:1 10.0.0.2:2',
      '256 10.0.0.1:1 10.0.0.2:2',
      'udp 10.0.0.1 10.0.0.2:2',
      'udp 10.0.0.1:65536 10.0.0.2:2',
      'udp 10.0.0.1:-1 10.0.0.2:2',
      'udp 10.0.0.1:01 10.0.0.2:2',
      'udp 10.0.0.1: 10.0.0.2:2',
      'udp 10.0.0.256:1 10.0.0.2:2',
      'UDP 10.0.0.1:1 10.0.0.2:2',
    ]) {
      assert.throws(() => parseFlowKeyString(bad), isConfigError(''), bad);
    }
  });
});

describe('IPv4 addresses and CIDR', { timeout: 60_000 }, () => {
  it('round-trips every address through text', () => {
    fc.assert(
      fc.property(u32, (n) => {
        assert.equal(parseIpv4(ipToString(n)), n);
      }),
      FC,
    );
    assert.equal(ipToString(0xffffffff), '255.255.255.255');
    assert.equal(parseIpv4('0.0.0.0'), 0);
    assert.equal(parseIpv4('192.168.1.2'), 0xc0a80102);
  });

  it('refuses anything but a strict dotted quad, naming the text', () => {
    for (const bad of [
      '',
      '1.2.3',
      '1.2.3.4.5',
      '1.2.3.256',
      '01.2.3.4',
      '1.2.3.-4',
      '1.2.3.4 ',
      ' 1.2.3.4',
      '1..3.4',
      '0x1.2.3.4',
      '1.2.3.1e2',
      'a.b.c.d',
    ]) {
      assert.throws(() => parseIpv4(bad), isConfigError(`'${bad}'`), bad);
    }
  });

  it('parses prefixes, a bare address as /32, and clears host bits', () => {
    assert.deepEqual(parseCidr('10.0.0.0/8'), { network: 0x0a000000, mask: 0xff000000, bits: 8 });
    assert.deepEqual(parseCidr('10.1.2.3'), { network: 0x0a010203, mask: 0xffffffff, bits: 32 });
    assert.deepEqual(parseCidr('10.1.2.3/16'), { network: 0x0a010000, mask: 0xffff0000, bits: 16 });
    assert.deepEqual(parseCidr('0.0.0.0/0'), { network: 0, mask: 0, bits: 0 });
    assert.deepEqual(parseCidr('192.168.1.129/25'), { network: 0xc0a80180, mask: 0xffffff80, bits: 25 });
    for (const bad of [
      '10.0.0.0/33',
      '10.0.0.0/',
      '10.0.0.0/-1',
      '10.0.0.0/08',
      '10.0.0/8',
      '10.0.0.0/8/8',
    ]) {
      assert.throws(() => parseCidr(bad), isConfigError(''), bad);
    }
  });

  it('inCidr matches exactly the addresses that share the prefix', () => {
    const net = parseCidr('172.16.0.0/12');
    assert.ok(inCidr(parseIpv4('172.16.0.0'), net));
    assert.ok(inCidr(parseIpv4('172.31.255.255'), net));
    assert.ok(!inCidr(parseIpv4('172.32.0.0'), net));
    assert.ok(!inCidr(parseIpv4('172.15.255.255'), net));
    assert.ok(inCidr(0xffffffff, parseCidr('0.0.0.0/0')));
    fc.assert(
      fc.property(u32, u32, fc.nat({ max: 32 }), (ip, other, bits) => {
        const cidr = parseCidr(`${ipToString(ip)}/${bits}`);
        assert.ok(inCidr(ip, cidr));
        const sameTop = bits === 0 || ip >>> (32 - bits) === other >>> (32 - bits);
        assert.equal(inCidr(other, cidr), sameTop);
      }),
      FC,
    );
  });
});
