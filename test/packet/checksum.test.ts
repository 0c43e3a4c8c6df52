import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  checksum,
  checksumUpdate16,
  checksumUpdate32,
  onesSum,
  pseudoHeaderSum,
} from '../../src/packet/checksum.js';

const FC = { numRuns: 300, interruptAfterTimeLimit: 2000 };

function hex(s: string): Uint8Array {
  return Uint8Array.from(s.match(/../g) ?? [], (b) => parseInt(b, 16));
}

/** Big-endian word at `at`. */
function word(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

describe('onesSum / checksum', { timeout: 60_000 }, () => {
  it('matches the RFC 1071 section 3 example', () => {
    const data = hex('0001f203f4f5f6f7');
    assert.equal(onesSum(data, 0, 8), 0xddf2);
    assert.equal(checksum(data, 0, 8), 0x220d);
  });

  it('computes a known IPv4 header checksum and verifies it', () => {
    const header = hex('450000730000400040110000c0a80001c0a800c7');
    assert.equal(checksum(header, 0, 20), 0xb861);
    header[10] = 0xb8;
    header[11] = 0x61;
    assert.equal(onesSum(header, 0, 20), 0xffff);
  });

  it('pads an odd trailing byte with zero', () => {
    assert.equal(onesSum(hex('0102ab'), 0, 3), 0x0102 + 0xab00);
    assert.equal(onesSum(hex('ff'), 0, 1), 0xff00);
  });

  it('sums only the given range and adds the initial partial sum', () => {
    const data = hex('ffff12345678ffff');
    assert.equal(onesSum(data, 2, 4), 0x1234 + 0x5678);
    assert.equal(onesSum(data, 2, 4, 0x10000), 0x1234 + 0x5678 + 1);
  });

  it('sums a packet-sized range four bytes at a time as a byte pair at a time, at any alignment', () => {
    const pairs = (b: Uint8Array, offset: number, length: number, initial: number): number => {
      let sum = initial;
      for (let i = 0; i < length; i += 2) {
        const lowByte = i + 1 < length ? b[offset + i + 1]! : 0;
        sum += (b[offset + i]! << 8) | lowByte;
      }
      while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
      return sum;
    };
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 2100, size: 'max' }),
        fc.nat(7),
        fc.nat(),
        fc.nat(),
        fc.nat(0x3ffff),
        (data, shift, a, b, initial) => {
          // The bytes at every alignment of the underlying buffer, as a socket's receive slab holds them.
          const backing = new Uint8Array(new ArrayBuffer(data.length + 8), shift, data.length);
          backing.set(data);
          const offset = a % data.length;
          const length = b % (data.length - offset + 1);
          assert.equal(onesSum(backing, offset, length, initial), pairs(backing, offset, length, initial));
        },
      ),
      FC,
    );
    const full = new Uint8Array(70_000).fill(0xff);
    assert.equal(onesSum(full, 1, 0xffff), pairs(full, 1, 0xffff, 0));
  });

  it('folds carries from long buffers of 0xff', () => {
    const data = new Uint8Array(200_000).fill(0xff);
    assert.equal(onesSum(data, 0, data.length), 0xffff);
    assert.equal(checksum(data, 0, data.length), 0);
  });

  it('gives checksum 0xffff only for all-zero data', () => {
    assert.equal(checksum(new Uint8Array(8), 0, 8), 0xffff);
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (data) => {
        fc.pre(data.some((b) => b !== 0));
        assert.notEqual(checksum(data, 0, data.length), 0xffff);
      }),
      FC,
    );
  });

  it('makes any buffer verify once its checksum is stored', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 2, maxLength: 80 }), fc.nat(), (data, pick) => {
        const at = (pick % (data.length >> 1)) * 2;
        data[at] = 0;
        data[at + 1] = 0;
        const c = checksum(data, 0, data.length);
        data[at] = c >>> 8;
        data[at + 1] = c & 0xff;
        assert.equal(onesSum(data, 0, data.length), 0xffff);
      }),
      FC,
    );
  });
});

describe('pseudoHeaderSum', { timeout: 60_000 }, () => {
  it('equals the sum of the pseudo header written out as bytes', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 255 }),
        fc.nat({ max: 0xffff }),
        (src, dst, proto, len) => {
          const ph = new Uint8Array(12);
          const dv = new DataView(ph.buffer);
          dv.setUint32(0, src);
          dv.setUint32(4, dst);
          ph[9] = proto;
          dv.setUint16(10, len);
          // Both are folded sums, so compare them as ones-complement values.
          const expected = onesSum(ph, 0, 12);
          const got = pseudoHeaderSum(src, dst, proto, len);
          assert.equal(got % 0xffff, expected % 0xffff);
          assert.ok(got <= 0xffff);
        },
      ),
      FC,
    );
  });
});

/**
 * Data to checksum: a random even-length buffer whose first word is nonzero, as every real header's is
 * (the IPv4 version nibble, the protocol in the pseudo header). The checksum field is word 1.
 */
const covered = fc
  .tuple(fc.integer({ min: 1, max: 0xffff }), fc.uint8Array({ minLength: 2, maxLength: 40 }))
  .map(([first, rest]) => {
    const data = new Uint8Array(4 + (rest.length & ~1));
    data[0] = first >>> 8;
    data[1] = first & 0xff;
    data.set(rest.subarray(0, rest.length & ~1), 4);
    return data;
  });

/** Words that hit the ones-complement corners: both zeros and their neighbours. */
const word16 = fc.oneof(fc.constantFrom(0x0000, 0xffff, 0x0001, 0xfffe), fc.nat({ max: 0xffff }));

function storeChecksum(data: Uint8Array): number {
  data[2] = 0;
  data[3] = 0;
  const c = checksum(data, 0, data.length);
  data[2] = c >>> 8;
  data[3] = c & 0xff;
  return c;
}

function setWord(data: Uint8Array, at: number, v: number): void {
  data[at] = v >>> 8;
  data[at + 1] = v & 0xff;
}

describe('checksumUpdate16 (RFC 1624 eqn 3)', { timeout: 60_000 }, () => {
  it('equals full recomputation after any covered word changes', () => {
    fc.assert(
      fc.property(covered, fc.nat(), word16, word16, (data, pick, before, after) => {
        const words = data.length >> 1;
        // Any word but the checksum field (word 1); word 0 may change too, to any value but zero.
        let index = 1 + (pick % (words - 1));
        if (index === 1) index = 0;
        const at = index * 2;
        if (at === 0 && (before === 0 || after === 0)) return;
        setWord(data, at, before);
        const old = storeChecksum(data);
        setWord(data, at, after);
        const incremental = checksumUpdate16(old, before, after);
        assert.equal(incremental, storeChecksum(data));
      }),
      { ...FC, numRuns: 1000 },
    );
  });

  it('handles a checksum of 0x0000 before and after the change', () => {
    // Words summing to 0xffff give checksum 0x0000 (the case eqn 2 gets wrong).
    const data = hex('1234000000000000');
    setWord(data, 4, 0xffff - 0x1234);
    assert.equal(storeChecksum(data), 0x0000);
    const old = word(data, 4);
    setWord(data, 4, 0x0001);
    const updated = checksumUpdate16(0x0000, old, 0x0001);
    assert.equal(updated, storeChecksum(data));
    // And back to a checksum of 0x0000.
    assert.equal(checksumUpdate16(updated, 0x0001, old), 0x0000);
  });

  it('keeps data verifying when the stored checksum is 0xffff (UDP writes a computed 0 that way)', () => {
    fc.assert(
      fc.property(covered, word16, (data, after) => {
        // Make the data's checksum 0 by choosing word 2, then store it in its other form, 0xffff.
        setWord(data, 4, 0);
        const zeroing = storeChecksum(data);
        setWord(data, 4, zeroing);
        assert.equal(storeChecksum(data), 0);
        setWord(data, 2, 0xffff);
        assert.equal(onesSum(data, 0, data.length), 0xffff);
        setWord(data, 4, after);
        const next = checksumUpdate16(0xffff, zeroing, after);
        setWord(data, 2, next);
        assert.equal(onesSum(data, 0, data.length), 0xffff);
      }),
      FC,
    );
  });
});

describe('checksumUpdate32', { timeout: 60_000 }, () => {
  it('equals full recomputation after a covered 32-bit field changes', () => {
    const u32 = fc.oneof(
      fc.constantFrom(0, 0xffffffff, 0xffff0000, 0x0000ffff, 1),
      fc.nat({ max: 0xffffffff }),
    );
    fc.assert(
      fc.property(covered, fc.nat(), u32, u32, (data, pick, before, after) => {
        fc.pre(data.length >= 8);
        const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
        const at = 4 + (pick % ((data.length - 4) >> 2)) * 4;
        dv.setUint32(at, before);
        const old = storeChecksum(data);
        dv.setUint32(at, after);
        assert.equal(checksumUpdate32(old, before, after), storeChecksum(data));
      }),
      { ...FC, numRuns: 1000 },
    );
  });

  it('agrees with two 16-bit updates', () => {
    fc.assert(
      fc.property(word16, fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff }), (c, a, b) => {
        const twice = checksumUpdate16(checksumUpdate16(c, a >>> 16, b >>> 16), a & 0xffff, b & 0xffff);
        assert.equal(checksumUpdate32(c, a, b) % 0xffff, twice % 0xffff);
      }),
      FC,
    );
  });
});
