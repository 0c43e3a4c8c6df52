import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LinkType, PcapWriter, ethernetFrame, ipv4Payload, readPcap } from '../../src/traffic/pcap.js';

const dir = mkdtempSync(join(tmpdir(), 'nfstate-pcap-'));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A minimal IPv4 header of `total` bytes (checksum not needed here), payload bytes counting up. */
function ipv4(total: number, tag: number): Uint8Array {
  const p = new Uint8Array(total);
  p[0] = 0x45;
  p[2] = total >>> 8;
  p[3] = total & 0xff;
  p[8] = 64;
  p[9] = 17;
  p.set([10, 0, 0, tag], 12);
  p.set([10, 0, 0, 200], 16);
  for (let i = 20; i < total; i++) p[i] = i & 0xff;
  return p;
}

function records(path: string): { linkType: number; recs: { timeMs: number; data: number[] }[] } {
  const { linkType, records: rs } = readPcap(path);
  return { linkType, recs: [...rs].map((r) => ({ timeMs: r.timeMs, data: [...r.data] })) };
}

describe('pcap', { timeout: 60_000 }, () => {
  it('round-trips RAW captures with microsecond timestamps', () => {
    const path = join(dir, 'raw.pcap');
    const pkts = [ipv4(20, 1), ipv4(100, 2), ipv4(1500, 3)];
    const times = [0, 1_700_000_000_123.456, 2_000.9996];
    const w = new PcapWriter(path, LinkType.RAW);
    pkts.forEach((p, i) => {
      w.write(p, times[i]!);
    });
    w.close();
    w.close();
    const file = readFileSync(path);
    assert.equal(file.readUInt32LE(0), 0xa1b2c3d4);
    assert.deepEqual([file.readUInt16LE(4), file.readUInt16LE(6)], [2, 4]);
    assert.equal(file.readUInt32LE(16), 65535);
    assert.equal(file.readUInt32LE(20), 101);
    const { linkType, recs } = records(path);
    assert.equal(linkType, LinkType.RAW);
    assert.deepEqual(
      recs.map((r) => r.data),
      pkts.map((p) => [...p]),
    );
    // Microsecond precision; .9996 ms rounds up into the next second.
    assert.deepEqual(
      recs.map((r) => r.timeMs),
      [0, 1_700_000_000_123.456, 2_001],
    );
    const again = readPcap(path);
    assert.equal([...again.records].length, 3, 'records iterate more than once');
    assert.equal([...again.records].length, 3);
    for (const r of again.records) assert.ok(ipv4Payload(again.linkType, r.data) !== undefined);
  });

  it('round-trips ETHERNET captures and buffers past 64 KiB', () => {
    const path = join(dir, 'eth.pcap');
    const w = new PcapWriter(path, LinkType.ETHERNET);
    const pkts = Array.from({ length: 200 }, (_, i) => ipv4(60 + i * 7, i));
    pkts.forEach((p, i) => {
      w.write(ethernetFrame(p), 1000 + i);
    });
    w.close();
    const { linkType, records: rs } = readPcap(path);
    assert.equal(linkType, LinkType.ETHERNET);
    let i = 0;
    for (const r of rs) {
      assert.equal(r.timeMs, 1000 + i);
      assert.deepEqual([...r.data.subarray(0, 14)], [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
      assert.deepEqual(ipv4Payload(linkType, r.data), pkts[i]);
      i++;
    }
    assert.equal(i, pkts.length);
  });

  it('truncates to snaplen, keeps the original length, and writes records larger than its buffer', () => {
    const path = join(dir, 'snap.pcap');
    const w = new PcapWriter(path, LinkType.RAW, 100_000);
    const big = ipv4(65535, 9);
    const small = ipv4(200, 1);
    w.write(small, 1);
    w.write(big, 2);
    w.close();
    assert.deepEqual(
      records(path).recs.map((r) => r.data.length),
      [200, 65535],
    );

    const cut = join(dir, 'cut.pcap');
    const c = new PcapWriter(cut, LinkType.RAW, 64);
    c.write(small, 1);
    c.close();
    const file = readFileSync(cut);
    assert.deepEqual([file.readUInt32LE(24 + 8), file.readUInt32LE(24 + 12)], [64, 200]);
    const [rec] = [...readPcap(cut).records];
    assert.deepEqual(rec?.data, small.subarray(0, 64));
  });

  it('reads big-endian files with nanosecond timestamps', () => {
    const pkt = ipv4(28, 7);
    const buf = Buffer.alloc(24 + 16 + pkt.length);
    buf.writeUInt32BE(0xa1b23c4d, 0);
    buf.writeUInt16BE(2, 4);
    buf.writeUInt16BE(4, 6);
    buf.writeUInt32BE(262144, 16);
    buf.writeUInt32BE(101, 20);
    buf.writeUInt32BE(1_700_000_000, 24);
    buf.writeUInt32BE(123_456_789, 28);
    buf.writeUInt32BE(pkt.length, 32);
    buf.writeUInt32BE(pkt.length, 36);
    buf.set(pkt, 40);
    const path = join(dir, 'be-ns.pcap');
    writeFileSync(path, buf);
    const { linkType, recs } = records(path);
    assert.equal(linkType, LinkType.RAW);
    assert.deepEqual(recs, [{ timeMs: 1_700_000_000_000 + 123.456789, data: [...pkt] }]);

    // Same file with the microsecond magic, still big endian.
    buf.writeUInt32BE(0xa1b2c3d4, 0);
    buf.writeUInt32BE(123_456, 28);
    writeFileSync(path, buf);
    assert.equal(records(path).recs[0]?.timeMs, 1_700_000_000_123.456);
  });

  it('rejects bad magic, pcapng and truncated files with NFS_ERR_PCAP', () => {
    const good = join(dir, 'good.pcap');
    const w = new PcapWriter(good, LinkType.RAW);
    w.write(ipv4(40, 1), 5);
    w.close();
    const bytes = readFileSync(good);
    const cases: [string, Uint8Array, RegExp][] = [
      ['empty', new Uint8Array(0), /truncated pcap file: 0 bytes/],
      ['short header', bytes.subarray(0, 23), /truncated pcap file/],
      ['record header cut', bytes.subarray(0, 30), /record 0 header cut short/],
      ['record data cut', bytes.subarray(0, bytes.length - 1), /record 0 needs 40 bytes, 39 remain/],
      ['bad magic', Buffer.concat([Buffer.from([1, 2, 3, 4]), bytes.subarray(4)]), /bad magic 0x01020304/],
      ['pcapng', Buffer.from([0x0a, 0x0d, 0x0d, 0x0a, ...bytes.subarray(4)]), /pcapng/],
    ];
    for (const [name, content, message] of cases) {
      const path = join(dir, `${name.replace(/ /g, '-')}.pcap`);
      writeFileSync(path, content);
      assert.throws(() => readPcap(path), { name: 'NfsError', code: 'NFS_ERR_PCAP', message }, name);
    }
    const version = Buffer.from(bytes);
    version.writeUInt16LE(3, 4);
    writeFileSync(join(dir, 'v3.pcap'), version);
    assert.throws(() => readPcap(join(dir, 'v3.pcap')), { code: 'NFS_ERR_PCAP', message: /version 3/ });
    assert.throws(() => readPcap(join(dir, 'missing.pcap')), {
      code: 'NFS_ERR_PCAP',
      message: /cannot read/,
    });
    assert.throws(() => new PcapWriter(join(dir, 'no', 'such', 'dir.pcap'), LinkType.RAW), {
      code: 'NFS_ERR_PCAP',
    });
    const closed = new PcapWriter(join(dir, 'closed.pcap'), LinkType.RAW);
    closed.close();
    assert.throws(() => {
      closed.write(ipv4(20, 1), 0);
    }, /write after close/);
  });

  it('finds the IPv4 packet in Ethernet, VLAN, SLL and raw frames', () => {
    const ip = ipv4(28, 3);
    assert.deepEqual(ipv4Payload(LinkType.ETHERNET, ethernetFrame(ip)), ip);
    assert.deepEqual(ipv4Payload(LinkType.RAW, ip), ip);
    assert.deepEqual(ipv4Payload(LinkType.IPV4, ip), ip);

    const eth = ethernetFrame(ip);
    const vlan = new Uint8Array(eth.length + 4);
    vlan.set(eth.subarray(0, 12));
    vlan.set([0x81, 0x00, 0x00, 0x64, 0x08, 0x00], 12);
    vlan.set(ip, 18);
    assert.deepEqual(ipv4Payload(LinkType.ETHERNET, vlan), ip);

    const sll = new Uint8Array(16 + ip.length);
    sll.set([0x08, 0x00], 14);
    sll.set(ip, 16);
    assert.deepEqual(ipv4Payload(LinkType.LINUX_SLL, sll), ip);

    // Cooked v2 (`tcpdump -i any` since libpcap 1.10): the protocol first, 20 bytes in all.
    const sll2 = new Uint8Array(20 + ip.length);
    sll2.set([0x08, 0x00], 0);
    sll2.set([0x00, 0x01], 8); // ARPHRD_ETHER, where v1 would read its protocol
    sll2.set(ip, 20);
    assert.deepEqual(ipv4Payload(LinkType.LINUX_SLL2, sll2), ip);
    sll2.set([0x86, 0xdd], 0);
    assert.equal(ipv4Payload(LinkType.LINUX_SLL2, sll2), undefined, 'IPv6 is not replayed');
    assert.equal(ipv4Payload(LinkType.LINUX_SLL2, sll2.subarray(0, 19)), undefined);

    // Ethernet pads short frames to 60 bytes; the padding is not part of the packet.
    const padded = new Uint8Array(60);
    padded.set(eth);
    assert.deepEqual(ipv4Payload(LinkType.ETHERNET, padded), ip);
  });

  it('returns undefined for frames that carry no IPv4', () => {
    const arp = ethernetFrame(new Uint8Array(28));
    arp[12] = 0x08;
    arp[13] = 0x06;
    assert.equal(ipv4Payload(LinkType.ETHERNET, arp), undefined);
    const ipv6 = new Uint8Array(40);
    ipv6[0] = 0x60;
    assert.equal(ipv4Payload(LinkType.RAW, ipv6), undefined);
    assert.equal(ipv4Payload(LinkType.ETHERNET, ethernetFrame(ipv6)), undefined);
    assert.equal(ipv4Payload(LinkType.ETHERNET, new Uint8Array(13)), undefined);
    assert.equal(
      ipv4Payload(LinkType.ETHERNET, new Uint8Array([...new Array<number>(12).fill(0), 0x81, 0])),
      undefined,
    );
    assert.equal(ipv4Payload(LinkType.RAW, new Uint8Array(0)), undefined);
    assert.equal(ipv4Payload(105, ipv4(20, 1)), undefined, '802.11 is not read');
  });
});
