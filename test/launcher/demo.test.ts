import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { DemoSummary } from '../../src/launcher/demo.js';
import { nfstate } from '../helpers/cli.js';

async function demo(args: string[]): Promise<DemoSummary> {
  const r = await nfstate(['demo', '--json', ...args]);
  assert.equal(r.code, 0, `demo ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(r.stdout) as DemoSummary;
}

function assertClean(s: DemoSummary): void {
  assert.equal(s.lost, 0, 'lost');
  assert.equal(s.reordered, 0, 'reordered');
  assert.equal(s.duplicated, 0, 'duplicated');
  assert.equal(
    s.state_matches_oracle,
    true,
    `state differs from the oracle: ${s.mismatched_flows.join('; ')}`,
  );
  assert.equal(s.delivered, s.sent - s.nf_dropped);
  assert.equal(s.replication.replicas_match, true, 'every cluster peer holds each flow as its owner does');
  assert.ok(s.throughput_pps > 0);
  for (const k of ['p50', 'p99', 'max'] as const) assert.ok(s.latency_us[k] > 0);
}

describe('nfstate demo (multi-process on loopback)', () => {
  it('replicates to the cluster only; the no-cluster baseline sends to every instance', async () => {
    const cluster = await demo(['--nf', 'ids', '--flows', '60', '--packets', '60']);
    const all = await demo(['--nf', 'ids', '--flows', '60', '--packets', '60', '--no-cluster']);
    const off = await demo(['--nf', 'ids', '--flows', '60', '--packets', '60', '--no-replication']);
    for (const s of [cluster, all, off]) assertClean(s);
    assert.equal(off.replication.bytes_sent, 0);
    assert.ok(cluster.replication.bytes_sent > 0);
    // 3 peers per instance in a cluster of 4, against 11 peers among 12 instances.
    assert.ok(
      all.replication.bytes_sent > 2.5 * cluster.replication.bytes_sent,
      `no-cluster ${all.replication.bytes_sent} B vs cluster ${cluster.replication.bytes_sent} B`,
    );
  });

  for (const nf of ['nat', 'firewall', 'lb', 'ids']) {
    it(`${nf}: 200 flow moves during the run, inside and across clusters, lose and reorder nothing`, async () => {
      const s = await demo(['--nf', nf, '--moves', '200']);
      assertClean(s);
      assert.equal(s.moves.count + s.moves.aborted, 200);
      assert.ok(s.moves.intra > 50 && s.moves.inter > 50, JSON.stringify(s.moves));
    });
  }

  it('draining two instances under traffic moves all their flows away with nothing lost, then they leave', async () => {
    const s = await demo(['--nf', 'nat', '--packets', '100', '--drain', '2']);
    assertClean(s);
    assert.equal(s.drained.length, 2);
    for (const d of s.drained) {
      assert.equal(d.aborted, 0);
      assert.ok(d.moved > 0, `${d.id} had flows to move`);
    }
  });

  it('an intra-cluster move ships the last batch’s changes, an inter-cluster one the whole log-like state', async () => {
    // ids state grows by ~26 B per packet (its per-packet log); flows here have 150 packets, and a move
    // happens after at least a tenth of the run. Inside the cluster only the delta of the batch the move
    // closes travels (at most one batch of 30 packets), across clusters the full log.
    const s = await demo(['--nf', 'ids', '--packets', '150', '--moves', '40']);
    assertClean(s);
    assert.ok(s.moves.intra > 0 && s.moves.inter > 0);
    assert.ok(
      s.moves.state_bytes_intra * 3 < s.moves.state_bytes_inter,
      `intra ${s.moves.state_bytes_intra} B vs inter ${s.moves.state_bytes_inter} B`,
    );
  });

  for (const nf of ['nat', 'ids']) {
    it(`${nf}: --release after-replication (output commit) delivers every packet in order`, async () => {
      const s = await demo(['--nf', nf, '--release', 'after-replication']);
      assert.equal(s.replication.release, 'after-replication');
      assertClean(s);
    });
  }

  for (const nf of ['nat', 'firewall', 'lb', 'ids']) {
    it(`${nf}: defaults deliver every packet, in order, with the oracle's state`, async () => {
      const s = await demo(['--nf', nf]);
      assert.equal(s.instances, 12, 'default topology: 3 clusters x 4');
      assertClean(s);
    });

    it(`${nf}: --rate 0 drains as fast as it can with nothing lost`, async () => {
      const s = await demo(['--nf', nf, '--rate', '0', '--proto', nf === 'firewall' ? 'tcp' : 'udp']);
      assertClean(s);
    });
  }
});
