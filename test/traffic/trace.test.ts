import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { flowKeyOf, flowKeyString } from '../../src/packet/flow-key.js';
import { Packet } from '../../src/packet/packet.js';
import { PcapSource } from '../../src/traffic/generator.js';
import { compareRuns, readTrace, runOracle } from '../../src/traffic/oracle.js';
import { LinkType, PcapWriter } from '../../src/traffic/pcap.js';
import { DEFAULT_TRACE, SyntheticTrace } from '../../src/traffic/trace.js';
import { DropReason } from '../../src/types.js';

function packetsOf(t: { total: number; write(i: number, b: Uint8Array, o: number): number }): Uint8Array[] {
  const out: Uint8Array[] = [];
  const buf = new Uint8Array(2048);
  for (let i = 0; i < t.total; i++) out.push(buf.slice(0, t.write(i, buf, 0)));
  return out;
}

describe('SyntheticTrace', { timeout: 60_000 }, () => {
  it('is deterministic, valid, and has F flows of N packets (heavy flows with skew)', () => {
    for (const proto of ['udp', 'tcp'] as const) {
      const t = new SyntheticTrace({ ...DEFAULT_TRACE, flows: 20, packets: 5, skew: 4, proto });
      const a = packetsOf(t);
      assert.deepEqual(
        a,
        packetsOf(new SyntheticTrace({ ...DEFAULT_TRACE, flows: 20, packets: 5, skew: 4, proto })),
      );
      const pkt = new Packet();
      const perFlow = new Map<string, number>();
      for (const p of a) {
        assert.equal(pkt.parse(p, 0, p.length), DropReason.NONE);
        const k = flowKeyString(flowKeyOf(pkt));
        perFlow.set(k, (perFlow.get(k) ?? 0) + 1);
      }
      assert.equal(perFlow.size, 20);
      assert.deepEqual(
        [...perFlow.values()].sort((x, y) => y - x).slice(0, 2),
        [20, 5],
        'one heavy flow of 4x',
      );
    }
  });

  it('sends the chosen heavy flows k times as fast, so they run as long as the others', () => {
    const t = new SyntheticTrace({ ...DEFAULT_TRACE, flows: 10, packets: 5, skew: 4, heavy: [3, 7] });
    assert.equal(t.total, 8 * 5 + 2 * 20);
    const pkt = new Packet();
    const seen = new Map<string, number>();
    const heavy = new Set([3, 7].map((f) => flowKeyString(t.flowKey(f))));
    const all = packetsOf(t);
    for (let i = 0; i < all.length; i++) {
      const p = all[i]!;
      assert.equal(pkt.parse(p, 0, p.length), DropReason.NONE);
      const k = flowKeyString(flowKeyOf(pkt));
      seen.set(k, (seen.get(k) ?? 0) + 1);
      // After each round of 16 packets, every heavy flow has sent 4 for each light flow's 1.
      if ((i + 1) % 16 === 0) {
        for (const [flow, n] of seen) assert.equal(n, ((i + 1) / 16) * (heavy.has(flow) ? 4 : 1));
      }
    }
  });

  it('rejects bad sizes with a clear error', () => {
    assert.throws(() => new SyntheticTrace({ ...DEFAULT_TRACE, flows: 0 }), /--flows/);
    assert.throws(() => new SyntheticTrace({ ...DEFAULT_TRACE, payload: 5000 }), /--payload/);
  });
});

describe('pcap replay and the oracle', { timeout: 60_000 }, () => {
  it('replays a capture packet for packet, and the oracle gives the same digest for the same trace', () => {
    const trace = new SyntheticTrace({ ...DEFAULT_TRACE, flows: 16, packets: 12 });
    const packets = packetsOf(trace);
    const path = join(mkdtempSync(join(tmpdir(), 'nfstate-trace-')), 'trace.pcap');
    const w = new PcapWriter(path, LinkType.RAW);
    packets.forEach((p, i) => {
      w.write(p, 1_700_000_000_000 + i * 0.25);
    });
    w.close();
    assert.deepEqual(packetsOf(new PcapSource(path)), packets);
    // A capture with no IPv4 in it (ARP only, here) is refused rather than replayed as nothing.
    const empty = join(mkdtempSync(join(tmpdir(), 'nfstate-trace-')), 'arp.pcap');
    const arp = new PcapWriter(empty, LinkType.ETHERNET);
    arp.write(new Uint8Array([...new Uint8Array(12), 0x08, 0x06, ...new Uint8Array(28)]), 1_700_000_000_000);
    arp.close();
    assert.throws(() => new PcapSource(empty), /arp\.pcap: no IPv4 packet to replay \(link type 1;/);
    for (const type of ['nat', 'firewall', 'ids']) {
      const a = runOracle({ type, config: {} }, readTrace(path));
      const b = runOracle({ type, config: {} }, readTrace(path));
      assert.equal(a.packets, packets.length);
      assert.equal(a.flows.length, 16);
      const cmp = compareRuns(a, b);
      assert.ok(cmp.matches && cmp.globalMatches, type);
      // A state that differs anywhere is caught.
      const tampered = { ...a, flows: a.flows.map((f, i) => (i === 3 ? { ...f, digest: '0' } : f)) };
      assert.deepEqual(compareRuns(tampered, b).mismatched, [a.flows[3]!.flow]);
    }
  });

  it('takes the deployment allocations as given', () => {
    const trace = new SyntheticTrace({ ...DEFAULT_TRACE, flows: 4, packets: 3 });
    const path = join(mkdtempSync(join(tmpdir(), 'nfstate-trace-')), 'trace.pcap');
    const w = new PcapWriter(path, LinkType.RAW);
    for (const p of packetsOf(trace)) w.write(p, 1_700_000_000_000);
    w.close();
    const free = runOracle({ type: 'nat', config: {} }, readTrace(path));
    const given = new Map(free.flows.map((f, i) => [f.flow, { 'nat.port': 40000 + i }]));
    const forced = runOracle({ type: 'nat', config: {} }, readTrace(path), given);
    for (const f of forced.flows) assert.equal(f.allocations['nat.port'], given.get(f.flow)?.['nat.port']);
  });
});
