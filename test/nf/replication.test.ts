import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, it } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';
import { FlowProcessor } from '../../src/nf/processor.js';
import { ReplicaStore } from '../../src/nf/replica-store.js';
import { RecordKind, ReplicationFrame, writeRecord } from '../../src/nf/replication.js';
import { Replicator } from '../../src/nf/replicator.js';
import { createNf } from '../../src/nfs/index.js';
import { flowKeyString } from '../../src/packet/flow-key.js';
import { ByteWriter } from '../../src/state/bytes.js';
import { LocalGlobalState } from '../../src/state/global-local.js';
import { encodeFrame } from '../../src/wire/frame.js';
import { stamped } from '../helpers/packets.js';

const key = randomBytes(32);
const stores: ReplicaStore[] = [];
const replicators: Replicator[] = [];

afterEach(async () => {
  for (const r of replicators.splice(0)) r.stop();
  for (const s of stores.splice(0)) await s.stop();
});

async function store(members = ['nf-a']): Promise<ReplicaStore> {
  const s = new ReplicaStore({ members, key, nf: createNf('ids', {}, new LocalGlobalState()) }, silentLogger);
  await s.listen('127.0.0.1', 0);
  stores.push(s);
  return s;
}

async function replicator(self: string, to: ReplicaStore, k = key): Promise<Replicator> {
  const r = new Replicator(
    { self, key: k, peers: [{ id: 'peer', host: '127.0.0.1', port: to.port }] },
    silentLogger,
  );
  await r.start();
  replicators.push(r);
  return r;
}

/** An ids processor whose closed batches become replication records, as a worker's do. */
function source(batchSize = 3) {
  const global = new LocalGlobalState();
  const nf = createNf('ids', {}, global);
  const p = new FlowProcessor(
    nf,
    global,
    { batchSize, batchTimeoutMs: 1e9, maxHeld: 64, gapTimeoutMs: 1e9, flowIdleMs: 1e12 },
    () => undefined,
    new ManualClock(),
  );
  const w = new ByteWriter();
  p.onBatch = (flow, _version, bytes, full) => {
    writeRecord(w, flow, full ? RecordKind.FULL : RecordKind.DELTA, bytes);
  };
  const take = (): Uint8Array => {
    const out = w.view().slice();
    w.reset();
    return out;
  };
  return { p, take };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
}

describe('batch replication', { timeout: 120_000 }, () => {
  it('keeps a peer replica of every flow equal to the origin after each batch, deltas and compaction included', async () => {
    const peer = await store();
    const out = await replicator('nf-a', peer);
    const src = source(3);
    // 4 flows x 150 packets: 50 batches each, so replicas fold deltas into a new full state along the way.
    for (let seq = 1; seq <= 150; seq++) {
      for (let f = 0; f < 4; f++) src.p.receive(...args(stamped({ flow: f, seq })));
      if (seq % 10 === 0) out.send(src.take());
    }
    out.send(src.take());
    assert.ok(await out.settled(5000), 'every frame acknowledged');
    const mine = src.p.digest().flows.map((f) => [f.flow, f.digest]);
    const held = (peer.digests()['nf-a'] ?? []).map((f) => [f.flow, f.digest]);
    assert.deepEqual(held.sort(), mine.sort());
    assert.equal(peer.records, 4 * 50);
    assert.ok(out.bytesSent > 0 && out.messages === 16);
  });

  it('settled answers false at its deadline and at stop while a connected peer has not acknowledged', async () => {
    // A peer that takes the connection and never answers.
    const silent = net.createServer((s) => s.resume());
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    try {
      const port = (silent.address() as net.AddressInfo).port;
      const out = new Replicator(
        { self: 'nf-a', key, peers: [{ id: 'peer', host: '127.0.0.1', port }] },
        silentLogger,
      );
      replicators.push(out);
      await out.start();
      out.send(new Uint8Array(0));
      assert.equal(await out.settled(50), false);
      const waiting = out.settled(60_000);
      out.stop();
      assert.equal(await waiting, false);
    } finally {
      silent.close();
    }
  });

  it('reconnects to a peer that restarted and repairs its replicas from full states', async () => {
    const first = await store();
    const port = first.port;
    const out = await replicator('nf-a', first);
    const src = source(2);
    out.onRepair = (key) => {
      src.p.resend(key);
    };
    for (let seq = 1; seq <= 6; seq++) src.p.receive(...args(stamped({ flow: 1, seq })));
    out.send(src.take());
    assert.ok(await out.settled(2000));
    await first.stop();
    // The peer comes back empty on the same port; the next deltas find no replica and ask for full state.
    const second = new ReplicaStore(
      { members: ['nf-a'], key, nf: createNf('ids', {}, new LocalGlobalState()) },
      silentLogger,
    );
    stores.push(second);
    await second.listen('127.0.0.1', port);
    for (let round = 0; round < 100 && (second.digests()['nf-a']?.length ?? 0) === 0; round++) {
      src.p.receive(...args(stamped({ flow: 1, seq: 7 + round })));
      out.send(src.take());
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(await out.settled(2000));
    src.p.flushBatches();
    out.send(src.take());
    assert.ok(await out.settled(2000));
    assert.ok(second.drops.gap > 0 && second.repairsRequested > 0);
    assert.deepEqual(
      (second.digests()['nf-a'] ?? []).map((f) => f.digest),
      src.p.digest().flows.map((f) => f.digest),
    );
  });

  it('drops a replica when its flow ends at the owner', async () => {
    const peer = await store();
    const out = await replicator('nf-a', peer);
    const global = new LocalGlobalState();
    const nf = createNf('ids', {}, global);
    const clock = new ManualClock();
    const p = new FlowProcessor(
      nf,
      global,
      { batchSize: 2, batchTimeoutMs: 1e9, maxHeld: 64, gapTimeoutMs: 1e9, flowIdleMs: 1000 },
      () => undefined,
      clock,
    );
    const w = new ByteWriter();
    p.onBatch = (flow, _version, bytes, full) => {
      writeRecord(w, flow, full ? RecordKind.FULL : RecordKind.DELTA, bytes);
    };
    p.onEnd = (flow) => {
      writeRecord(w, flow, RecordKind.END, new Uint8Array(0));
    };
    for (const flow of [1, 2]) for (let seq = 1; seq <= 4; seq++) p.receive(...args(stamped({ flow, seq })));
    out.send(w.view().slice());
    w.reset();
    assert.ok(await out.settled(2000));
    assert.equal(peer.digests()['nf-a']?.length, 2);
    // Flow 2 keeps talking; flow 1 goes quiet and expires.
    for (let t = 0; t < 3000; t += 250) {
      clock.advance(250);
      p.receive(...args(stamped({ flow: 2, seq: 5 + t / 250 })));
      p.tick(clock.now());
    }
    out.send(w.view().slice());
    assert.ok(await out.settled(2000));
    assert.equal(p.counters.flowsExpired, 1);
    assert.deepEqual(
      (peer.digests()['nf-a'] ?? []).map((f) => f.flow),
      p.digest().flows.map((f) => f.flow),
    );
  });

  /** A replicator to `a` whose catch-ups the test sends itself: each round asked for is in `asked`. */
  async function caughtUp(a: ReplicaStore, sources: number) {
    const out = new Replicator({ self: 'nf-a', key, peers: [], sources, catchUps: true }, silentLogger);
    replicators.push(out);
    const asked: [string, number][] = [];
    out.onCatchUp = (peer, round) => asked.push([peer, round]);
    assert.deepEqual(await out.setPeers([{ id: 'a', host: '127.0.0.1', port: a.port }]), ['a']);
    assert.deepEqual(asked, [['a', 1]], 'the first connection begins with a catch-up too');
    return { out, asked };
  }

  /** A source's full catch-up, as a worker sends it: each flow's full state at its current version. */
  function catchUp(out: Replicator, src: ReturnType<typeof source>, at: [string, number], i: number): void {
    for (const [k] of src.p.flows.entries()) src.p.resend(k);
    out.catchUp(at[0], at[1], i, src.take(), true);
  }

  it('a peer that joins gets each source’s catch-up before that source’s further records; the others see no gap', async () => {
    const [a, b] = [await store(), await store()];
    // Two workers' shards: flows 1 and 2 on source 0, flow 3 on source 1.
    const srcs = [source(3), source(3)];
    const { out, asked } = await caughtUp(a, 2);
    srcs.forEach((src, i) => catchUp(out, src, asked[0]!, i));
    const feed = (packets: number, from: number): void => {
      for (let seq = from; seq < from + packets; seq++) {
        for (const f of [1, 2]) srcs[0]!.p.receive(...args(stamped({ flow: f, seq })));
        srcs[1]!.p.receive(...args(stamped({ flow: 3, seq })));
      }
      srcs.forEach((src, i) => out.send(src.take(), i));
    };
    feed(9, 1);
    assert.ok(await out.settled(2000));

    assert.deepEqual(
      await out.setPeers([
        { id: 'a', host: '127.0.0.1', port: a.port },
        { id: 'b', host: '127.0.0.1', port: b.port },
      ]),
      ['b'],
    );
    assert.deepEqual(asked[1], ['b', 2]);
    feed(3, 10);
    assert.ok(await out.settled(2000), 'a peer still waiting for its catch-up holds no commit back');
    assert.equal(b.records, 0, 'nothing of a source reaches the newcomer before its catch-up');
    catchUp(out, srcs[0]!, asked[1], 0);
    // A part of an earlier round (one a drop cut short) is not taken for this one's.
    out.catchUp('b', 1, 1, new Uint8Array(0), true);
    feed(6, 13);
    assert.ok(await out.settled(2000));
    assert.deepEqual(
      (b.digests()['nf-a'] ?? []).map((d) => d.flow).sort(),
      srcs[0]!.p
        .digest()
        .flows.map((d) => d.flow)
        .sort(),
      'source 0 is caught up, source 1 not yet',
    );
    catchUp(out, srcs[1]!, asked[1], 1);
    feed(5, 19);
    srcs.forEach((src, i) => {
      src.p.flushBatches();
      out.send(src.take(), i);
    });
    assert.ok(await out.settled(2000));
    const mine = srcs.flatMap((src) => src.p.digest().flows.map((f) => [f.flow, f.digest]));
    for (const peer of [a, b]) {
      assert.deepEqual((peer.digests()['nf-a'] ?? []).map((f) => [f.flow, f.digest]).sort(), mine.sort());
      assert.equal(peer.drops.gap, 0);
      assert.equal(peer.repairsRequested, 0);
    }
    assert.equal(out.catchUps, 2);
    assert.ok(out.catchUpBytes > 0);
  });

  it('a connection that drops is caught up when it comes back: what it missed, a flow’s end included, is made good', async () => {
    const a = await store();
    const src = source(3);
    const { out, asked } = await caughtUp(a, 1);
    catchUp(out, src, asked[0]!, 0);
    const feed = (flows: number[], packets: number, from: number): void => {
      for (let seq = from; seq < from + packets; seq++)
        for (const f of flows) src.p.receive(...args(stamped({ flow: f, seq })));
      out.send(src.take(), 0);
    };
    feed([1, 2, 3], 6, 1);
    assert.ok(await out.settled(2000));
    assert.equal((a.digests()['nf-a'] ?? []).length, 3);

    // The receiver's side of the connection goes; until the sender notices, what it sends is lost.
    const sockets = (a as unknown as { sockets: Map<net.Socket, string | undefined> }).sockets;
    for (const socket of sockets.keys()) socket.destroy();
    // stamped() gives flow n the source port 10000 + n.
    const flow2 = [...src.p.flows.entries()]
      .map(([k]) => k)
      .find((k) => k.srcPort === 10002 || k.dstPort === 10002)!;
    src.p.forget(flow2);
    feed([1, 3], 6, 7);
    await until(() => asked.length === 2);
    assert.deepEqual(asked[1], ['a', 2], 'the connection came back, and with it a catch-up');
    feed([1], 3, 13);
    catchUp(out, src, asked[1], 0);
    feed([1, 3], 3, 16);
    assert.ok(await out.settled(2000));
    assert.deepEqual(
      (a.digests()['nf-a'] ?? []).map((f) => [f.flow, f.digest]).sort(),
      src.p
        .digest()
        .flows.map((f) => [f.flow, f.digest])
        .sort(),
      'every replica equals its flow, and the flow that ended has none',
    );
    assert.equal(a.unrefreshed, 1);
  });

  it('fences a failed origin: its replicas stay as they were, and nothing more of it is accepted or trims its copies', async () => {
    const a = await store();
    const covered: number[] = [];
    a.onCovered = (_key, next) => covered.push(next);
    const out = await replicator('nf-a', a);
    const src = source(3);
    const feed = (from: number, to: number): void => {
      for (let seq = from; seq <= to; seq++) src.p.receive(...args(stamped({ flow: 1, seq })));
      out.send(src.take());
    };
    feed(1, 6);
    assert.ok(await out.settled(2000));
    const before = a.digests()['nf-a'];
    const trimmed = covered.length;
    a.fence('nf-a');
    feed(7, 12);
    // The sender reconnects, and is turned away.
    await until(() => a.drops.not_member > 0);
    assert.ok(a.drops.not_member > 0);
    assert.deepEqual(a.digests()['nf-a'], before);
    assert.equal(covered.length, trimmed, 'no copy is trimmed once the origin is fenced');
    const { flows } = a.adopt('nf-a');
    assert.equal(flows.length, 1);
    assert.equal(flows[0]!.next, 7, 'the takeover resumes where the last accepted record ended');
  });

  it('rejects a sender outside the cluster and applies nothing from it', async () => {
    const peer = await store(['nf-a']);
    const out = await replicator('nf-z', peer);
    const src = source(1);
    src.p.receive(...args(stamped({ flow: 1, seq: 1 })));
    out.send(src.take());
    await until(() => peer.drops.not_member > 0);
    assert.equal(peer.drops.not_member, 1);
    assert.deepEqual(peer.digests(), {});
  });

  it('rejects frames made with another key', async () => {
    const peer = await store(['nf-a']);
    const out = await replicator('nf-a', peer, randomBytes(32));
    const src = source(1);
    src.p.receive(...args(stamped({ flow: 1, seq: 1 })));
    out.send(src.take());
    await until(() => peer.drops.bad_frame > 0);
    assert.equal(peer.drops.bad_frame, 1);
    assert.deepEqual(peer.digests(), {});
  });

  it('requires a hello first, and survives malformed records and gaps without corrupting replicas', async () => {
    const peer = await store(['nf-a']);
    // No hello: the connection is dropped.
    const raw = net.createConnection({ host: '127.0.0.1', port: peer.port });
    await once(raw, 'connect');
    raw.write(encodeFrame(ReplicationFrame.REPLICATE, 1, new Uint8Array(4), key));
    await until(() => peer.drops.no_hello > 0);
    assert.equal(peer.drops.no_hello, 1);
    raw.destroy();

    const out = await replicator('nf-a', peer);
    const src = source(1);
    src.p.receive(...args(stamped({ flow: 1, seq: 1 })));
    src.p.receive(...args(stamped({ flow: 2, seq: 1 })));
    const good = src.take();
    // A whole record followed by half of one: the whole one applies, the rest is refused.
    out.send(new Uint8Array([...good, ...good.subarray(0, 10)]));
    await out.settled(2000);
    assert.equal(peer.drops.malformed, 1);
    assert.equal(peer.digests()['nf-a']?.length, 2);

    // Version 3 of flow 1 arrives without version 2: the replica is set aside, not patched wrongly, and the
    // peer asks for the flow's full state, which repairs it.
    const repairs: string[] = [];
    out.onRepair = (key) => {
      repairs.push(flowKeyString(key));
      assert.ok(src.p.resend(key));
    };
    src.p.receive(...args(stamped({ flow: 1, seq: 2 })));
    src.take();
    src.p.receive(...args(stamped({ flow: 1, seq: 3 })));
    out.send(src.take());
    await out.settled(2000);
    assert.equal(peer.drops.gap, 1);
    assert.equal(peer.digests()['nf-a']?.length, 1, 'the stale replica is not offered');
    await until(() => repairs.length === 1);
    assert.equal(repairs.length, 1);
    out.send(src.take());
    await out.settled(2000);
    const mine = src.p.digest().flows.map((f) => [f.flow, f.digest]);
    assert.deepEqual((peer.digests()['nf-a'] ?? []).map((f) => [f.flow, f.digest]).sort(), mine.sort());
  });
});

function args(d: Uint8Array): [Uint8Array, number, number] {
  return [d, 0, d.length];
}
