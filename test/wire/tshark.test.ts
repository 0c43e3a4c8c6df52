/**
 * Checks that captures of nfstate's dataplane are readable in Wireshark: tshark must decode the outer
 * UDP as Geneve (on 6081 by itself, on another port with `-d`), show the nfstate option's class and
 * find the inner IPv4/UDP packet with valid checksums.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LinkType, PcapWriter, ethernetFrame } from '../../src/traffic/pcap.js';
import { GENEVE_PORT, STAMP_HEADER_LENGTH, StampFlag, writeStampHeader } from '../../src/wire/geneve.js';
import { ipv4Udp } from './packets.js';

const hasTshark = spawnSync('tshark', ['-v'], { stdio: 'ignore' }).status === 0;
const dir = mkdtempSync(join(tmpdir(), 'nfstate-tshark-'));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

const OTHER_PORT = 7000;

/** Ethernet / IPv4 192.0.2.1 -> 192.0.2.2 / UDP -> dstPort / nfstate Geneve / inner IPv4/UDP. */
function encapsulated(dstPort: number, seq: number): Uint8Array {
  const inner = ipv4Udp({
    src: [10, 0, 0, 1],
    dst: [10, 0, 0, 2],
    srcPort: 40000,
    dstPort: 45678,
    payload: new TextEncoder().encode('nfstate'),
  });
  const geneve = new Uint8Array(STAMP_HEADER_LENGTH + inner.length);
  writeStampHeader(geneve, 0, {
    vni: 0xabcd,
    flags: StampFlag.COPY,
    epoch: 3,
    seq,
    timeMs: 1_700_000_000_000,
  });
  geneve.set(inner, STAMP_HEADER_LENGTH);
  const outer = ipv4Udp({
    src: [192, 0, 2, 1],
    dst: [192, 0, 2, 2],
    srcPort: 50000,
    dstPort,
    payload: geneve,
  });
  return ethernetFrame(outer);
}

describe('tshark reads nfstate captures', { timeout: 120_000 }, () => {
  it('decodes Geneve, the nfstate option and the inner packet', (t) => {
    if (!hasTshark) {
      t.skip('tshark not installed');
      return;
    }
    const path = join(dir, 'geneve.pcap');
    const w = new PcapWriter(path, LinkType.ETHERNET);
    w.write(encapsulated(GENEVE_PORT, 1), 1_700_000_000_000);
    w.write(encapsulated(OTHER_PORT, 2), 1_700_000_000_001);
    w.close();

    const fields = [
      'frame.protocols',
      'geneve.vni',
      'geneve.option.class',
      'geneve.option.type',
      'geneve.option.length',
      'ip.src',
      'ip.dst',
      'udp.dstport',
      'ip.checksum.status',
      'udp.checksum.status',
      '_ws.expert.message',
    ];
    const r = spawnSync(
      'tshark',
      [
        '-r',
        path,
        '-d',
        `udp.port==${OTHER_PORT},geneve`,
        '-o',
        'ip.check_checksum:TRUE',
        '-o',
        'udp.check_checksum:TRUE',
        '-T',
        'fields',
        '-E',
        'separator=/t',
        ...fields.flatMap((f) => ['-e', f]),
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 2, r.stdout);
    for (const [i, line] of lines.entries()) {
      const row = Object.fromEntries(line.split('\t').map((v, j) => [fields[j]!, v]));
      const port = i === 0 ? GENEVE_PORT : OTHER_PORT;
      assert.deepEqual(row, {
        'frame.protocols': 'eth:ethertype:ip:udp:geneve:ip:udp:data',
        'geneve.vni': '0x00abcd',
        'geneve.option.class': '0xfff0',
        'geneve.option.type': '0x01',
        'geneve.option.length': '28,28',
        'ip.src': '192.0.2.1,10.0.0.1',
        'ip.dst': '192.0.2.2,10.0.0.2',
        'udp.dstport': `${port},45678`,
        // 1 is "good" for both outer and inner headers.
        'ip.checksum.status': '1,1',
        'udp.checksum.status': '1,1',
        '_ws.expert.message': '',
      });
    }
  });
});
