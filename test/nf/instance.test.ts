import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { silentLogger } from '../../src/log.js';
import { NfInstance } from '../../src/nf/instance.js';
import { DropReason } from '../../src/types.js';
import { StampView } from '../../src/wire/geneve.js';
import { stamped } from '../helpers/packets.js';

const FLOWS = 12;
const PER_FLOW = 40;

describe('NfInstance (worker threads, real UDP)', () => {
  let out: dgram.Socket;
  const seen = new Map<number, number[]>();
  let nf: NfInstance;
  let client: dgram.Socket;

  before(async () => {
    // Large enough for every packet of the test at once: drains release held packets in bursts.
    out = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
    const view = new StampView();
    out.on('message', (msg) => {
      assert.equal(view.parse(msg, 0, msg.length), DropReason.NONE);
      const flow = msg[msg.length - 8]!;
      let list = seen.get(flow);
      if (list === undefined) seen.set(flow, (list = []));
      list.push(view.seq);
    });
    out.bind(0, '127.0.0.1');
    await once(out, 'listening');
    nf = new NfInstance({
      id: 'nf-test',
      host: '127.0.0.1',
      port: 0,
      threads: 2,
      nf: { type: 'firewall', config: {} },
      processor: { batchSize: 30, batchTimeoutMs: 5, maxHeld: 1024, gapTimeoutMs: 2000, flowIdleMs: 60_000 },
      egress: { host: '127.0.0.1', port: out.address().port },
      partition: { index: 0, count: 1 },
      logger: silentLogger,
    });
    await nf.start();
    client = dgram.createSocket('udp4');
  });

  after(async () => {
    await nf.stop();
    out.close();
    client.close();
  });

  it('releases packets sent out of order in stamp order, flow by flow', async () => {
    const all: Uint8Array[] = [];
    for (let f = 0; f < FLOWS; f++)
      for (let seq = 1; seq <= PER_FLOW; seq++) all.push(stamped({ flow: f, seq }));
    // A fixed shuffle, so a failure reproduces.
    const [shuffled] = fc.sample(fc.shuffledSubarray(all, { minLength: all.length, maxLength: all.length }), {
      numRuns: 1,
      seed: 42,
    });
    for (const [i, d] of shuffled!.entries()) {
      client.send(d, nf.port, '127.0.0.1');
      // Small pauses keep the socket buffers far from full: this test is about order, not load.
      if (i % 50 === 49) await new Promise((r) => setTimeout(r, 2));
    }
    const deadline = Date.now() + 10_000;
    while ([...seen.values()].reduce((n, l) => n + l.length, 0) < FLOWS * PER_FLOW && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(seen.size, FLOWS);
    for (const [flow, seqs] of seen) {
      assert.deepEqual(
        seqs,
        Array.from({ length: PER_FLOW }, (_, i) => i + 1),
        `flow ${flow}`,
      );
    }
    assert.ok(nf.counter('held') > 0, 'some packets did arrive early and waited');
    assert.equal(nf.counter('gapSkipped'), 0);
    const digest = await nf.digest();
    assert.equal(digest.flows.length, FLOWS);
    for (const f of digest.flows) assert.equal(f.packets, PER_FLOW);
  });
});
