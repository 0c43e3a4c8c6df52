import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { NfsError } from '../../src/errors.js';
import { buildIcmp, buildTcp, buildUdp, TcpFlag } from '../../src/packet/build.js';
import { onesSum, pseudoHeaderSum } from '../../src/packet/checksum.js';

const FC = { numRuns: 200, interruptAfterTimeLimit: 2000 };

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

function isConfigError(err: unknown): boolean {
  return err instanceof NfsError && err.code === 'NFS_ERR_CONFIG';
}

const A = 0xc0a80001; // 192.168.0.1
const B = 0xc0a800c7; // 192.168.0.199

describe('buildUdp', { timeout: 60_000 }, () => {
  it('writes the exact bytes of a known packet', () => {
    const buf = new Uint8Array(64);
    const n = buildUdp(buf, 0, {
      srcIp: A,
      dstIp: B,
      srcPort: 0x1234,
      dstPort: 53,
      payload: Uint8Array.of(0xab),
      id: 7,
    });
    assert.equal(n, 29);
    // version/IHL, TOS, length 29, id 7, DF, TTL 64, UDP, checksum, addresses.
    assert.equal(hex(buf.subarray(0, 10)), '4500001d000740004011');
    assert.equal(hex(buf.subarray(12, 20)), 'c0a80001c0a800c7');
    // ports, UDP length 9, checksum, payload.
    assert.equal(hex(buf.subarray(20, 26)), '123400350009');
    assert.equal(buf[28], 0xab);
    assert.equal(onesSum(buf, 0, 20), 0xffff);
    assert.equal(onesSum(buf, 20, 9, pseudoHeaderSum(A, B, 17, 9)), 0xffff);
    assert.ok(buf.subarray(29).every((b) => b === 0));
  });

  it('writes only inside [offset, offset + length) and verifies at any offset', () => {
    fc.assert(
      fc.property(fc.nat({ max: 20 }), fc.uint8Array({ maxLength: 40 }), (offset, payload) => {
        const buf = new Uint8Array(offset + 80).fill(0xee);
        const n = buildUdp(buf, offset, { srcIp: A, dstIp: B, srcPort: 1, dstPort: 2, payload });
        assert.equal(n, 28 + payload.length);
        assert.ok(buf.subarray(0, offset).every((b) => b === 0xee));
        assert.ok(buf.subarray(offset + n).every((b) => b === 0xee));
        assert.equal(onesSum(buf, offset, 20), 0xffff);
        const udpLen = n - 20;
        assert.equal(onesSum(buf, offset + 20, udpLen, pseudoHeaderSum(A, B, 17, udpLen)), 0xffff);
      }),
      FC,
    );
  });

  it('stores a checksum that computes to 0 as 0xffff', () => {
    const buf = new Uint8Array(64);
    const spec = { srcIp: A, dstIp: B, srcPort: 1, dstPort: 2, payload: new Uint8Array(2) };
    buildUdp(buf, 0, spec);
    // A payload word equal to the checksum of the rest makes the whole sum 0xffff.
    const n = buildUdp(buf, 0, { ...spec, payload: buf.slice(26, 28) });
    assert.equal(hex(buf.subarray(26, 28)), 'ffff');
    assert.equal(onesSum(buf, 20, n - 20, pseudoHeaderSum(A, B, 17, n - 20)), 0xffff);
  });

  it('places IPv4 options and sets IHL', () => {
    const buf = new Uint8Array(64);
    const ipOptions = Uint8Array.of(0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00);
    const n = buildUdp(buf, 0, {
      srcIp: A,
      dstIp: B,
      srcPort: 1,
      dstPort: 2,
      payload: new Uint8Array(0),
      ipOptions,
      ttl: 3,
    });
    assert.equal(n, 36);
    assert.equal(buf[0], 0x47);
    assert.equal(buf[8], 3);
    assert.deepEqual(buf.subarray(20, 28), ipOptions);
    assert.equal(onesSum(buf, 0, 28), 0xffff);
  });

  it('refuses options that are not a multiple of 4 or longer than 40 bytes', () => {
    const base = { srcIp: A, dstIp: B, srcPort: 1, dstPort: 2, payload: new Uint8Array(0) };
    for (const len of [1, 2, 3, 5, 44]) {
      assert.throws(
        () => buildUdp(new Uint8Array(100), 0, { ...base, ipOptions: new Uint8Array(len) }),
        isConfigError,
      );
    }
    assert.equal(buildUdp(new Uint8Array(100), 0, { ...base, ipOptions: new Uint8Array(40) }), 68);
  });

  it('refuses a packet that does not fit the buffer or exceeds 65535 bytes', () => {
    const base = { srcIp: A, dstIp: B, srcPort: 1, dstPort: 2 };
    assert.throws(
      () => buildUdp(new Uint8Array(30), 0, { ...base, payload: new Uint8Array(3) }),
      isConfigError,
    );
    assert.throws(
      () => buildUdp(new Uint8Array(40), 10, { ...base, payload: new Uint8Array(3) }),
      isConfigError,
    );
    assert.throws(
      () => buildUdp(new Uint8Array(40), -1, { ...base, payload: new Uint8Array(0) }),
      isConfigError,
    );
    const big = new Uint8Array(70_000);
    assert.throws(
      () => buildUdp(big, 0, { ...base, payload: new Uint8Array(65_535 - 28 + 1) }),
      isConfigError,
    );
    assert.equal(buildUdp(big, 0, { ...base, payload: new Uint8Array(65_535 - 28) }), 65_535);
  });
});

describe('buildTcp', { timeout: 60_000 }, () => {
  it('writes the TCP header fields and a valid checksum', () => {
    const buf = new Uint8Array(80);
    const n = buildTcp(buf, 0, {
      srcIp: A,
      dstIp: B,
      srcPort: 40000,
      dstPort: 443,
      seq: 0x01020304,
      ack: 0xa0b0c0d0,
      flags: TcpFlag.SYN | TcpFlag.ACK,
      window: 1024,
      payload: Uint8Array.of(1, 2, 3),
    });
    assert.equal(n, 43);
    assert.equal(buf[9], 6);
    // ports, seq, ack, data offset 5, flags SYN|ACK, window 1024, checksum, urgent 0.
    assert.equal(hex(buf.subarray(20, 36)), '9c4001bb01020304a0b0c0d050120400');
    assert.equal(hex(buf.subarray(38, 43)), '0000010203');
    assert.equal(onesSum(buf, 0, 20), 0xffff);
    assert.equal(onesSum(buf, 20, 23, pseudoHeaderSum(A, B, 6, 23)), 0xffff);
  });

  it('defaults the window to 65535', () => {
    const buf = new Uint8Array(80);
    buildTcp(buf, 0, {
      srcIp: A,
      dstIp: B,
      srcPort: 1,
      dstPort: 2,
      seq: 0,
      ack: 0,
      flags: 0,
      payload: new Uint8Array(0),
    });
    assert.equal(hex(buf.subarray(34, 36)), 'ffff');
  });

  it('exports the flag bits', () => {
    assert.deepEqual(TcpFlag, { FIN: 1, SYN: 2, RST: 4, PSH: 8, ACK: 16, URG: 32 });
  });
});

describe('buildIcmp', { timeout: 60_000 }, () => {
  it('writes an echo request with a valid checksum and IP id 0', () => {
    const buf = new Uint8Array(64);
    const n = buildIcmp(buf, 0, {
      srcIp: A,
      dstIp: B,
      type: 8,
      code: 0,
      id: 0x1234,
      seq: 5,
      payload: Uint8Array.of(7),
    });
    assert.equal(n, 29);
    assert.equal(buf[9], 1);
    assert.equal(hex(buf.subarray(4, 6)), '0000');
    assert.equal(hex(buf.subarray(20, 22)), '0800');
    assert.equal(hex(buf.subarray(24, 29)), '1234000507');
    assert.equal(onesSum(buf, 20, 9), 0xffff);
  });
});
