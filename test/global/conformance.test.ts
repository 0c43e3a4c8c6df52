import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { NfsError } from '../../src/errors.js';
import { EtcdGlobalStore } from '../../src/global/etcd.js';
import { Sequencer } from '../../src/global/sequencer.js';
import { SequencerClient } from '../../src/global/sequencer-client.js';
import { SequencerServer } from '../../src/global/sequencer-server.js';
import type { CommittedUpdate, GlobalStore, GlobalUpdate, WatchHandle } from '../../src/global/store.js';
import { silentLogger } from '../../src/log.js';
import { encodeFrame } from '../../src/wire/frame.js';
import { startEtcd, type EtcdCluster } from '../../src/global/etcd-local.js';
import { settlesBefore, until } from '../helpers/poll.js';

const key = randomBytes(32);

/** One GlobalStore implementation as the suite sees it. */
interface Harness {
  /** A fresh client of the one shared log; every test gets its own id namespace. */
  client(): Promise<GlobalStore>;
  /** A client of a store that accepts connections and never answers. */
  silent(): Promise<GlobalStore>;
  close(): Promise<void>;
}

/** A listener that accepts and then says nothing: the store that hangs. */
async function blackhole(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const addr = server.address() as net.AddressInfo;
  return {
    port: addr.port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

function updates(prefix: string, from: number, n: number): GlobalUpdate[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `${prefix}-${from + i}`,
    data: Uint8Array.of(i & 0xff),
  }));
}

/** Collects what a watcher applies, and checks the order is strictly increasing as it goes. */
function recorder() {
  const seen: CommittedUpdate[] = [];
  const apply = (u: CommittedUpdate): void => {
    const prev = seen.at(-1);
    if (prev !== undefined) {
      assert.ok(
        u.revision > prev.revision || (u.revision === prev.revision && u.index === prev.index + 1),
        `out of order: ${prev.revision}.${prev.index} then ${u.revision}.${u.index}`,
      );
    } else {
      assert.equal(u.index, 0);
    }
    seen.push(u);
  };
  return { seen, apply, ids: () => seen.map((u) => u.id) };
}

/** Submits until it commits: a retriable failure leaves the outcome open, and the ids make retrying safe. */
async function submitSurely(store: GlobalStore, batch: GlobalUpdate[], deadlineMs = 2000): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await store.submit(batch, { deadlineMs });
      return;
    } catch (err) {
      if (!(err instanceof NfsError) || !err.retriable || attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

function conformance(name: string, make: () => Promise<Harness>): void {
  describe(`GlobalStore conformance: ${name}`, { timeout: 300_000 }, () => {
    let h: Harness;
    const open: GlobalStore[] = [];
    const watches: WatchHandle[] = [];
    const client = async (): Promise<GlobalStore> => {
      const s = await h.client();
      open.push(s);
      return s;
    };
    before(async () => {
      h = await make();
    });
    after(async () => {
      for (const w of watches) await w.stop();
      for (const s of open) await s.stop();
      await h.close();
    });

    it('applies concurrent batches from many clients in one order at every watcher', async () => {
      const tag = randomBytes(4).toString('hex');
      const writers = await Promise.all([client(), client(), client()]);
      const readers = await Promise.all([client(), client(), client()]);
      const recs = readers.map((r) => {
        const rec = recorder();
        // Other tests share the log: keep only this test's updates.
        watches.push(r.watch(0, (u) => (u.id.startsWith(tag) ? rec.apply(u) : undefined)));
        return rec;
      });
      const batches = 20;
      const size = 10;
      await Promise.all(
        writers.map(async (w, wi) => {
          for (let b = 0; b < batches; b++) await w.submit(updates(`${tag}-w${wi}`, b * size, size));
        }),
      );
      const total = writers.length * batches * size;
      await until(() => recs.every((r) => r.seen.length >= total));
      const first = recs[0]!.ids();
      assert.equal(first.length, total);
      assert.equal(new Set(first).size, total, 'every update applied exactly once');
      for (const r of recs) assert.deepEqual(r.ids(), first);
    });

    it('applies a replayed id once, across a client crash', async () => {
      const tag = randomBytes(4).toString('hex');
      const rec = recorder();
      const watcher = await client();
      watches.push(watcher.watch(0, (u) => (u.id.startsWith(tag) ? rec.apply(u) : undefined)));
      const a = await client();
      const r1 = await a.submit(updates(tag, 0, 10));
      assert.equal(r1.applied, 10);
      await a.stop();
      const b = await client();
      const r2 = await b.submit([...updates(tag, 5, 10), ...updates(tag, 5, 3)]);
      assert.equal(r2.applied, 5);
      assert.equal(r2.duplicates, 5);
      assert.ok(r2.revision > r1.revision);
      const r3 = await b.submit(updates(tag, 0, 15));
      assert.deepEqual(r3, { revision: 0, applied: 0, duplicates: 15 });
      await until(() => rec.seen.length >= 15);
      await new Promise((r) => setTimeout(r, 100));
      // The first batch in order; the new half of the second may commit in any order (etcd's fallback).
      assert.deepEqual(
        rec.ids().slice(0, 10),
        updates(tag, 0, 10).map((u) => u.id),
      );
      assert.deepEqual(
        rec.ids().slice(10).sort(),
        updates(tag, 10, 5)
          .map((u) => u.id)
          .sort(),
      );
    });

    it('resumes a watch from its last revision without losing or repeating updates', async () => {
      const tag = randomBytes(4).toString('hex');
      const writer = await client();
      const full = recorder();
      const fullClient = await client();
      watches.push(fullClient.watch(0, (u) => (u.id.startsWith(tag) ? full.apply(u) : undefined)));
      const part = recorder();
      const c1 = await client();
      const w1 = c1.watch(0, (u) => (u.id.startsWith(tag) ? part.apply(u) : undefined));
      for (let b = 0; b < 5; b++) await writer.submit(updates(tag, b * 4, 4));
      await until(() => part.seen.length >= 20);
      const position = w1.revision;
      await w1.stop();
      await c1.stop();
      // Commits while nobody from this client watches.
      for (let b = 5; b < 10; b++) await writer.submit(updates(tag, b * 4, 4));
      const c2 = await client();
      watches.push(c2.watch(position, (u) => (u.id.startsWith(tag) ? part.apply(u) : undefined)));
      for (let b = 10; b < 12; b++) await writer.submit(updates(tag, b * 4, 4));
      await until(() => part.seen.length >= 48 && full.seen.length >= 48);
      await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(part.ids(), full.ids());
      assert.equal(part.seen.length, 48);
    });

    it('refuses a bad batch with a clear error', async () => {
      const c = await client();
      await assert.rejects(c.submit([{ id: '', data: new Uint8Array(1) }]), { code: 'NFS_ERR_STATE' });
      await assert.rejects(c.submit([{ id: 'x'.repeat(300), data: new Uint8Array(1) }]), {
        code: 'NFS_ERR_STATE',
      });
      assert.deepEqual(await c.submit([]), { revision: 0, applied: 0, duplicates: 0 });
    });

    it('fails a submit with NFS_ERR_TIMEOUT at the deadline when the store does not answer', async () => {
      const c = await h.silent();
      open.push(c);
      const t0 = Date.now();
      const submit = c.submit(updates('silent', 0, 3), { deadlineMs: 300 });
      // Its own 300 ms, not the default deadline (2 s): it fails before a 1 s timer armed after it.
      assert.equal(await settlesBefore(submit, 1000), true, 'the call ends at its own deadline');
      await assert.rejects(submit, (err: unknown) => {
        assert.ok(err instanceof NfsError);
        assert.equal(err.code, 'NFS_ERR_TIMEOUT');
        assert.equal(err.retriable, true);
        return true;
      });
      // Never before it: the deadline is a timer, which does not fire early (10 ms for clock granularity).
      const took = Date.now() - t0;
      assert.ok(took >= 290, `took ${took} ms`);
    });
  });
}

/** One process's view of a shared in-process Sequencer: stopping it ends only its own watches. */
function view(seq: Sequencer): GlobalStore {
  const mine = new Set<WatchHandle>();
  return {
    start: () => Promise.resolve(),
    stop: async () => {
      for (const w of mine) await w.stop();
      mine.clear();
    },
    submit: (u) => seq.submit(u),
    watch: (a, f, e) => {
      const w = seq.watch(a, f, e);
      mine.add(w);
      return w;
    },
  };
}

conformance('local, in process', () => {
  const seq = new Sequencer({ logger: silentLogger });
  return Promise.resolve({
    client: () => Promise.resolve(view(seq)),
    silent: async () => {
      const hole = await blackhole();
      const c = new SequencerClient({ host: '127.0.0.1', port: hole.port, key, logger: silentLogger });
      await c.start();
      return {
        start: () => c.start(),
        stop: async () => {
          await c.stop();
          await hole.close();
        },
        submit: (u, o) => c.submit(u, o),
        watch: (a, f, e) => c.watch(a, f, e),
      };
    },
    close: () => seq.stop(),
  });
});

conformance('local, over TCP', async () => {
  const server = new SequencerServer({ key, logger: silentLogger });
  await server.listen('127.0.0.1', 0);
  const holes: { close(): Promise<void> }[] = [];
  return {
    client: async () => {
      const c = new SequencerClient({ host: '127.0.0.1', port: server.port, key, logger: silentLogger });
      await c.start();
      return c;
    },
    silent: async () => {
      const hole = await blackhole();
      holes.push(hole);
      const c = new SequencerClient({ host: '127.0.0.1', port: hole.port, key, logger: silentLogger });
      await c.start();
      return c;
    },
    close: async () => {
      for (const hole of holes) await hole.close();
      await server.stop();
    },
  };
});

let etcd: EtcdCluster | undefined;
const etcdHarness = async (): Promise<Harness> => {
  etcd ??= await startEtcd(3);
  const prefix = `conf-${randomBytes(4).toString('hex')}/`;
  const holes: { close(): Promise<void> }[] = [];
  const hosts = etcd.clientUrls;
  return {
    client: async () => {
      const c = new EtcdGlobalStore({ hosts, prefix, logger: silentLogger });
      await c.start();
      return c;
    },
    silent: async () => {
      const hole = await blackhole();
      holes.push(hole);
      const c = new EtcdGlobalStore({
        hosts: [`http://127.0.0.1:${hole.port}`],
        prefix,
        logger: silentLogger,
      });
      await c.start();
      return c;
    },
    close: async () => {
      for (const hole of holes) await hole.close();
    },
  };
};

conformance('etcd, 3 members', etcdHarness);

describe('local sequencer specifics', { timeout: 300_000 }, () => {
  it('keeps a bounded window: an id older than the window commits again, a watch behind it fails', async () => {
    const seq = new Sequencer({ logger: silentLogger, retain: 10 });
    await seq.submit(updates('w', 0, 6));
    await seq.submit(updates('w', 6, 6));
    const again = await seq.submit(updates('w', 0, 1));
    assert.equal(again.applied, 1, 'evicted ids are forgotten');
    const failures: Error[] = [];
    await seq
      .watch(
        0,
        () => undefined,
        (err) => failures.push(err),
      )
      .stop();
    assert.equal(failures.length, 1);
    assert.match(failures[0]!.message, /compacted/);
  });

  it('resumes a watch over a new connection after the server restarts, losing and repeating nothing', async () => {
    const sequencer = new Sequencer({ logger: silentLogger });
    let server = new SequencerServer({ key, logger: silentLogger, sequencer });
    await server.listen('127.0.0.1', 0);
    const port = server.port;
    const c = new SequencerClient({
      host: '127.0.0.1',
      port,
      key,
      logger: silentLogger,
      maxBackoffMs: 100,
    });
    await c.start();
    const rec = recorder();
    const w = c.watch(0, rec.apply);
    await c.submit(updates('r', 0, 5));
    await until(() => rec.seen.length === 5);
    await server.stop();
    await sequencer.submit(updates('r', 5, 5));
    server = new SequencerServer({ key, logger: silentLogger, sequencer });
    await server.listen('127.0.0.1', port);
    await submitSurely(c, updates('r', 10, 5));
    await until(() => rec.seen.length >= 15);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(
      rec.ids(),
      updates('r', 0, 15).map((u) => u.id),
    );
    assert.ok(c.counts.reconnects >= 1);
    await w.stop();
    await c.stop();
    await server.stop();
  });

  it('drops forged, foreign and garbage frames without crashing and keeps serving', async () => {
    const server = new SequencerServer({ key, logger: silentLogger });
    await server.listen('127.0.0.1', 0);
    const raw = net.connect({ host: '127.0.0.1', port: server.port });
    await once(raw, 'connect');
    raw.on('error', () => undefined);
    raw.resume();
    // A frame under another key, a valid HELLO, a SUBMIT without this connection's nonce, then garbage.
    raw.write(encodeFrame(1, 1, new Uint8Array(8), randomBytes(32)));
    raw.write(encodeFrame(1, 2, new Uint8Array(8), key));
    raw.write(encodeFrame(2, 3, new Uint8Array(20), key));
    raw.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    await once(raw, 'close');
    assert.ok(server.counts.droppedFrames >= 3, `dropped ${server.counts.droppedFrames}`);
    const c = new SequencerClient({ host: '127.0.0.1', port: server.port, key, logger: silentLogger });
    await c.start();
    assert.equal((await c.submit(updates('ok', 0, 2))).applied, 2);
    await c.stop();
    await server.stop();
  });
});

describe('etcd store under member failures', { timeout: 300_000 }, () => {
  after(async () => {
    await etcd?.stop();
  });

  it('keeps committing with one member killed, and fails clearly within the deadline without quorum', async () => {
    etcd ??= await startEtcd(3);
    const prefix = `fail-${randomBytes(4).toString('hex')}/`;
    const hosts = etcd.clientUrls;
    const writer = new EtcdGlobalStore({ hosts, prefix, logger: silentLogger });
    const reader = new EtcdGlobalStore({ hosts, prefix, logger: silentLogger });
    await writer.start();
    await reader.start();
    const rec = recorder();
    const w = reader.watch(0, rec.apply);
    const batches = 40;
    for (let b = 0; b < batches; b++) {
      if (b === 15) await etcd.kill(0);
      await submitSurely(writer, updates('k', b * 5, 5));
    }
    await until(() => rec.seen.length >= batches * 5, 10_000);
    assert.deepEqual(
      rec.ids(),
      updates('k', 0, batches * 5).map((u) => u.id),
    );

    await etcd.kill(1);
    const submit = writer.submit(updates('k', 1000, 5), { deadlineMs: 1000 });
    // etcd holds a write without a leader for about 7 s: the store gives up at its own deadline instead,
    // and not at the default deadline (2 s) either: before a 1.5 s timer armed after the call.
    assert.equal(await settlesBefore(submit, 1500), true, 'the call ends at its own deadline');
    await assert.rejects(submit, (err: unknown) => {
      assert.ok(err instanceof NfsError);
      assert.equal(err.code, 'NFS_ERR_TIMEOUT');
      assert.match(err.message, /quorum/);
      return true;
    });
    await w.stop();
    await writer.stop();
    await reader.stop();
  });
});
