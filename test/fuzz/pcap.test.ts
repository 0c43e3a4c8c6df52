/**
 * Fuzzing the capture reader (src/traffic/pcap.ts): captures written by PcapWriter, in both byte orders
 * and with nanosecond timestamps, cut short, damaged or replaced by random bytes. Reading must give the
 * records back or refuse the file with NFS_ERR_PCAP before iteration, iterating must never throw, and the
 * packets inside go through ipv4Payload and the packet parser.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { NfsError } from '../../src/errors.js';
import { Packet } from '../../src/packet/packet.js';
import {
  ethernetFrame,
  ipv4Payload,
  LinkType,
  PcapWriter,
  readPcap,
  type PcapFile,
} from '../../src/traffic/pcap.js';
import { dropReasonName } from '../../src/types.js';
import { concat, mutate, packetSeeds, report, Rng } from './corpus.js';

const dir = mkdtempSync(join(tmpdir(), 'nfstate-fuzz-pcap-'));
const FILES = 1500;
let fileNo = 0;

function file(bytes: Uint8Array): string {
  const path = join(dir, `f${fileNo++ % 64}.pcap`);
  writeFileSync(path, bytes);
  return path;
}

/** A capture PcapWriter writes: `packets` at 1 ms steps, Ethernet-framed or raw. */
function capture(packets: readonly Uint8Array[], linkType: number, snaplen = 65535): Uint8Array {
  const path = join(dir, 'written.pcap');
  const w = new PcapWriter(path, linkType, snaplen);
  // A Linux cooked header: packet type, address type and length, the address, then the protocol (IPv4).
  const sll = Uint8Array.of(0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00);
  packets.forEach((p, i) => {
    const frame =
      linkType === LinkType.ETHERNET
        ? ethernetFrame(p)
        : linkType === LinkType.LINUX_SLL
          ? concat(sll, p)
          : p;
    w.write(frame, 1_700_000_000_000 + i + 0.25);
  });
  w.close();
  return new Uint8Array(readFileSync(path));
}

/** The same capture written on a big-endian machine, or with nanosecond timestamps. */
function variant(le: Uint8Array, bigEndian: boolean, nano: boolean): Uint8Array {
  const out = Uint8Array.from(le);
  const src = new DataView(le.buffer, le.byteOffset, le.byteLength);
  const dst = new DataView(out.buffer);
  const u32 = (at: number, v = src.getUint32(at, true)): void => dst.setUint32(at, v, !bigEndian);
  u32(0, nano ? 0xa1b23c4d : 0xa1b2c3d4);
  dst.setUint16(4, 2, !bigEndian);
  dst.setUint16(6, 4, !bigEndian);
  for (const at of [8, 12, 16, 20]) u32(at);
  for (let at = 24; at < le.length;) {
    const incl = src.getUint32(at + 8, true);
    u32(at);
    u32(at + 4, nano ? src.getUint32(at + 4, true) * 1000 : src.getUint32(at + 4, true));
    u32(at + 8);
    u32(at + 12);
    at += 16 + incl;
  }
  return out;
}

/** Reads a capture; undefined when it is refused, which must be NFS_ERR_PCAP. */
function read(bytes: Uint8Array): PcapFile | undefined {
  try {
    return readPcap(file(bytes));
  } catch (err) {
    assert.ok(err instanceof NfsError && err.code === 'NFS_ERR_PCAP', String(err));
    return undefined;
  }
}

/** Byte offsets where the records of a valid little-endian capture end (the header's end first). */
function boundaries(le: Uint8Array): number[] {
  const dv = new DataView(le.buffer, le.byteOffset, le.byteLength);
  const out = [24];
  for (let at = 24; at < le.length;) {
    at += 16 + dv.getUint32(at + 8, true);
    out.push(at);
  }
  return out;
}

const packetsArb = fc.array(fc.constantFrom(...packetSeeds()), { minLength: 1, maxLength: 8 });
const FC = { seed: 0x5eed_0801, numRuns: 300, interruptAfterTimeLimit: 10_000 };

describe('fuzz: pcap captures', { timeout: 60_000 }, () => {
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads back what it writes, in either byte order and with nanosecond timestamps', () => {
    fc.assert(
      fc.property(
        packetsArb,
        fc.constantFrom<number>(LinkType.ETHERNET, LinkType.RAW),
        fc.boolean(),
        fc.boolean(),
        (packets, linkType, be, nano) => {
          const got = read(variant(capture(packets, linkType), be, nano));
          assert.ok(got !== undefined);
          assert.equal(got.linkType, linkType);
          const records = [...got.records];
          assert.equal(records.length, packets.length);
          records.forEach((r, i) => {
            assert.equal(Math.round((r.timeMs - 1_700_000_000_000) * 1000), i * 1000 + 250);
            assert.deepEqual(ipv4Payload(linkType, r.data), packets[i]);
          });
        },
      ),
      FC,
    );
  });

  it('refuses a capture cut inside a record with NFS_ERR_PCAP, and reads one cut between records', () => {
    fc.assert(
      fc.property(packetsArb, fc.nat(), (packets, cut) => {
        const whole = capture(packets, LinkType.RAW);
        const end = cut % (whole.length + 1);
        const got = read(whole.subarray(0, end));
        const at = boundaries(whole).indexOf(end);
        if (at < 0) assert.equal(got, undefined, `cut at ${end} of ${whole.length}`);
        else assert.equal([...got!.records].length, at);
      }),
      FC,
    );
  });

  it(`reads or refuses ${FILES} damaged and random captures, and parses the packets inside`, (t) => {
    const rng = new Rng(0x5eed_0802);
    const seeds = packetSeeds();
    const captures = [LinkType.ETHERNET, LinkType.RAW, LinkType.LINUX_SLL, LinkType.IPV4].flatMap((lt) => [
      capture(seeds, lt),
      variant(capture(seeds, lt), true, true),
    ]);
    const pkt = new Packet();
    const counts: Record<string, number> = { files: FILES, refused: 0, read: 0, records: 0, notIpv4: 0 };
    for (let i = 0; i < FILES; i++) {
      const bytes = i % 10 === 9 ? rng.bytes(rng.int(200)) : mutate(rng.pick(captures), rng, 8192);
      const got = read(bytes);
      if (got === undefined) {
        counts.refused!++;
        continue;
      }
      counts.read!++;
      for (const r of got.records) {
        counts.records!++;
        const ip = ipv4Payload(got.linkType, r.data);
        if (ip === undefined) {
          counts.notIpv4!++;
          continue;
        }
        const reason = `packet_${dropReasonName[pkt.parse(ip, 0, ip.length)]!}`;
        counts[reason] = (counts[reason] ?? 0) + 1;
      }
    }
    assert.ok(counts.read! > 0 && counts.refused! > 0 && (counts.packet_none ?? 0) > 0);
    report(t, 'pcap', { properties: 2 * FC.numRuns, ...counts });
  });
});
