import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { silentLogger } from '../../src/log.js';
import { MAX_REPLICATION_FRAME, ReplicationFrame } from '../../src/nf/replication.js';
import { ByteWriter } from '../../src/state/bytes.js';
import { encodeFrame, FrameDecoder } from '../../src/wire/frame.js';
import { NfInstance } from '../../src/nf/instance.js';
import { DropReason } from '../../src/types.js';
import type { MetricSample } from '../../src/types.js';
import { StampView } from '../../src/wire/geneve.js';
import { stamped } from '../helpers/packets.js';
import { datagramFlowHash } from '../../src/nf/dispatch.js';
import { freePort } from '../../src/launcher/free-port.js';

const FLOWS = 12;
const PER_FLOW = 40;

describe('NfInstance (worker threads, real UDP)', { timeout: 120_000 }, () => {
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
      processor: {
        batchSize: 30,
        batchTimeoutMs: 5,
        maxHeld: 1024,
        gapTimeoutMs: 2000,
        flowIdleMs: 60_000,
      },
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

  it("takes a flow's packets at its worker's own port, past the main thread, and keeps a copy of each that waits", async () => {
    const { workers } = await nf.start();
    assert.equal(workers.length, 2);
    const handed = nf.counter('handed');
    assert.ok(handed >= FLOWS * PER_FLOW, 'what came to the main port was handed over');
    // Flows 50-61, out of order, each to the worker its hash names: most packets wait for one before them,
    // in a receive buffer that later batches overwrite.
    const all: Uint8Array[] = [];
    for (let f = 50; f < 50 + FLOWS; f++)
      for (let seq = 1; seq <= PER_FLOW; seq++) all.push(stamped({ flow: f, seq }));
    const [shuffled] = fc.sample(fc.shuffledSubarray(all, { minLength: all.length, maxLength: all.length }), {
      numRuns: 1,
      seed: 7,
    });
    for (const [i, d] of shuffled!.entries()) {
      client.send(d, workers[datagramFlowHash(d) % workers.length], '127.0.0.1');
      if (i % 50 === 49) await new Promise((r) => setTimeout(r, 2));
    }
    const mine = (): [number, number[]][] => [...seen.entries()].filter(([f]) => f >= 50);
    const deadline = Date.now() + 10_000;
    while (mine().reduce((n, [, l]) => n + l.length, 0) < FLOWS * PER_FLOW && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(mine().length, FLOWS);
    for (const [flow, seqs] of mine())
      assert.deepEqual(
        seqs,
        Array.from({ length: PER_FLOW }, (_, i) => i + 1),
        `flow ${flow}`,
      );
    const digest = await nf.digest();
    assert.equal(digest.flows.length, 2 * FLOWS);
    for (const f of digest.flows) assert.equal(f.packets, PER_FLOW);
    assert.equal(nf.counter('handed'), handed, 'none of them through the main thread');
  });
});

describe('NfInstance with fixed worker ports', { timeout: 60_000 }, () => {
  const options = {
    id: 'nf-ports',
    host: '127.0.0.1',
    port: 0,
    threads: 2,
    nf: { type: 'firewall', config: {} },
    processor: { batchSize: 30, batchTimeoutMs: 5, maxHeld: 1024, gapTimeoutMs: 2000, flowIdleMs: 60_000 },
    egress: { host: '127.0.0.1', port: 9 },
    partition: { index: 0, count: 1 },
    logger: silentLogger,
  };

  it('binds the worker port given and the next one up, one per thread, and refuses a range past 65535', async () => {
    const base = await freePort();
    const nf = new NfInstance({ ...options, workerPort: base });
    const { workers } = await nf.start();
    await nf.stop();
    assert.deepEqual(workers, [base, base + 1]);
    await assert.rejects(
      new NfInstance({ ...options, workerPort: 65535 }).start(),
      (err: Error & { code?: string }) => err.code === 'NFS_ERR_CONFIG' && /past 65535/.test(err.message),
    );
  });
});

describe('NfInstance whose egress is gone', { timeout: 120_000 }, () => {
  it('counts the output its workers could not send, and exports it on /metrics', async () => {
    // A port nobody holds: the kernel refuses the workers' datagrams (ICMP port unreachable).
    const gone = dgram.createSocket('udp4');
    gone.bind(0, '127.0.0.1');
    await once(gone, 'listening');
    const port = gone.address().port;
    gone.close();
    const nf = new NfInstance({
      id: 'nf-unheard',
      host: '127.0.0.1',
      port: 0,
      threads: 1,
      nf: { type: 'firewall', config: {} },
      processor: {
        batchSize: 30,
        batchTimeoutMs: 5,
        maxHeld: 1024,
        gapTimeoutMs: 2000,
        flowIdleMs: 60_000,
      },
      egress: { host: '127.0.0.1', port },
      partition: { index: 0, count: 1 },
      logger: silentLogger,
    });
    await nf.start();
    const client = dgram.createSocket('udp4');
    try {
      for (let seq = 1; seq <= 50 && nf.counter('sendErrors') === 0; seq++) {
        client.send(stamped({ flow: 1, seq }), nf.port, '127.0.0.1');
        await new Promise((r) => setTimeout(r, 20));
      }
      const deadline = Date.now() + 5000;
      while (nf.counter('sendErrors') === 0 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      assert.ok(nf.counter('forwarded') > 0, 'the firewall forwarded the flow');
      const out: MetricSample[] = [];
      nf.collect(out);
      const errors = out.find(([name]) => name === 'nfstate_nf_send_errors_total');
      assert.deepEqual(errors?.[1], { nf: 'nf-unheard' });
      assert.ok(errors[2] > 0, `send errors: ${errors[2]}`);
    } finally {
      client.close();
      await nf.stop();
    }
  });
});

/**
 * An instance under output commit replicating to the peer at `peerPort`, and the stamps that reach its
 * egress, in arrival order. Batches of 5 close by size only.
 */
async function outputCommit(
  key: Uint8Array,
  peerPort: number,
): Promise<{ nf: NfInstance; got: number[]; close: () => Promise<void> }> {
  const out = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  const got: number[] = [];
  const view = new StampView();
  out.on('message', (msg) => {
    view.parse(msg, 0, msg.length);
    got.push(view.seq);
  });
  out.bind(0, '127.0.0.1');
  await once(out, 'listening');
  const nf = new NfInstance({
    id: 'nf-a',
    host: '127.0.0.1',
    port: 0,
    threads: 1,
    nf: { type: 'nat', config: {} },
    processor: {
      release: 'after-replication',
      batchSize: 5,
      batchTimeoutMs: 10_000,
      maxHeld: 64,
      gapTimeoutMs: 10_000,
      flowIdleMs: 60_000,
    },
    egress: { host: '127.0.0.1', port: out.address().port },
    partition: { index: 0, count: 1 },
    cluster: { members: ['nf-a', 'nf-b'], key: Buffer.from(key).toString('hex') },
    logger: silentLogger,
  });
  await nf.start();
  await nf.replicateTo([{ id: 'nf-b', host: '127.0.0.1', port: peerPort }]);
  return {
    nf,
    got,
    close: async () => {
      await nf.stop();
      out.close();
    },
  };
}

describe('NfInstance with after-replication release (output commit)', { timeout: 120_000 }, () => {
  it('holds each batch’s packets until the peer acknowledges the batch, then releases them in order', async () => {
    const key = randomBytes(32);
    // A peer that reads replication frames but acknowledges only when told to.
    const frames: number[] = [];
    let peerSocket: net.Socket | undefined;
    const peer = net.createServer((socket) => {
      peerSocket = socket;
      const decoder = new FrameDecoder({ key, maxFrame: MAX_REPLICATION_FRAME });
      socket.on('data', (chunk) => {
        decoder.push(chunk, (type, seq) => {
          if (type === ReplicationFrame.REPLICATE) frames.push(seq);
        });
      });
    });
    peer.listen(0, '127.0.0.1');
    await once(peer, 'listening');
    const ack = (seq: number): void => {
      const body = new ByteWriter(8);
      body.u53(seq);
      peerSocket!.write(encodeFrame(ReplicationFrame.ACK, seq, body.view(), key));
    };

    const { nf, got, close } = await outputCommit(key, (peer.address() as net.AddressInfo).port);
    const client = dgram.createSocket('udp4');
    for (let seq = 1; seq <= 12; seq++) client.send(stamped({ flow: 0, seq }), nf.port, '127.0.0.1');

    // Batches of 5: two close (seq 1-5, 6-10) and ship; 11-12 wait in the open batch.
    const deadline = Date.now() + 5000;
    while (frames.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(got, [], 'nothing leaves before the peer acknowledges');
    ack(frames[frames.length - 1]!);
    while (got.length < 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(
      got,
      Array.from({ length: 10 }, (_, i) => i + 1),
    );
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(got.length, 10, 'the open batch is still held');

    await close();
    client.close();
    peer.close();
  });
  it('releases a batch as soon as no peer is left to acknowledge it (none connected)', async (t) => {
    const key = randomBytes(32);
    // A peer that is down: its port refuses every connection.
    const gone = net.createServer();
    gone.listen(0, '127.0.0.1');
    await once(gone, 'listening');
    const port = (gone.address() as net.AddressInfo).port;
    gone.close();
    await once(gone, 'close');

    const { nf, got, close } = await outputCommit(key, port);
    const client = dgram.createSocket('udp4');
    t.after(async () => {
      client.close();
      await close();
    });
    for (let seq = 1; seq <= 10; seq++) client.send(stamped({ flow: 0, seq }), nf.port, '127.0.0.1');

    // Two full batches: the send that carries the last of them commits at once, and its packets must go.
    const deadline = Date.now() + 10_000;
    while (got.length < 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(
      got,
      Array.from({ length: 10 }, (_, i) => i + 1),
    );
  });
});
