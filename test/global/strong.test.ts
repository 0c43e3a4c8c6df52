import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it, type TestContext } from 'node:test';
import { NfsError } from '../../src/errors.js';
import { EtcdGlobalStore } from '../../src/global/etcd.js';
import { startEtcd, type EtcdCluster } from '../../src/global/etcd-local.js';
import { Sequencer } from '../../src/global/sequencer.js';
import { SequencerClient } from '../../src/global/sequencer-client.js';
import { SequencerServer } from '../../src/global/sequencer-server.js';
import type { GlobalStore } from '../../src/global/store.js';
import { PoolOp, decodePoolUpdate, encodePoolUpdate } from '../../src/global/pool-rule.js';
import { StrongPools, type StrongPoolsOptions } from '../../src/global/strong-pool.js';
import { silentLogger } from '../../src/log.js';
import { canonicalKey, flowKeyString } from '../../src/packet/flow-key.js';
import type { MetricSample } from '../../src/types.js';

const key = randomBytes(32);

let poolCount = 0;
/** A pool name of its own for each test: the suites' tests share one log, and each defines its range. */
function fresh(): string {
  return `nat.port.${++poolCount}`;
}

/** Two instances' stores of one log. */
interface Deployment {
  readonly stores: readonly [GlobalStore, GlobalStore];
  close(): Promise<void>;
}

/** Flow `i`'s owner string, as the NAT would name it. */
function owner(i: number): string {
  return flowKeyString(canonicalKey(0x0a000000 + i, 0xc0a80001, 40000 + (i % 20000), 443, 6));
}

function range(from: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => from + i);
}

/**
 * Resolves once each of `instances` has applied everything committed before the call: a release for an
 * owner that holds nothing changes no state, and it applies after all of that.
 */
async function barrier(pool: string, ...instances: StrongPools[]): Promise<void> {
  await Promise.all(instances.map((p) => p.release(pool, `barrier ${randomBytes(6).toString('hex')}`, 0)));
}

/** Both instances hold the same owners at the same values, so they also agree on what is free. */
function assertSameState(pool: string, a: StrongPools, b: StrongPools, first: number, last: number): void {
  assert.deepEqual(a.holdings(pool), b.holdings(pool));
  const free = (p: StrongPools): number[] =>
    range(first, last - first + 1).filter((v) => p.ownerOf(pool, v) === undefined);
  assert.deepEqual(free(a), free(b));
}

function sample(p: StrongPools, name: string): number {
  const out: MetricSample[] = [];
  p.collect(out);
  const s = out.find(([n]) => n === name);
  assert.ok(s !== undefined, `no sample ${name}`);
  return s[2];
}

/** One started instance per store, each with `pool` defined, stopped when the test ends. */
async function startPools(
  t: TestContext,
  stores: readonly GlobalStore[],
  pool: string,
  first: number,
  last: number,
  options: Partial<StrongPoolsOptions> = {},
): Promise<StrongPools[]> {
  const instances = stores.map((store, i) => {
    const p = new StrongPools(store, { self: `nf-${i}`, ...options }, silentLogger);
    p.define(pool, first, last);
    return p;
  });
  for (const p of instances) await p.start();
  t.after(async () => {
    for (const p of instances) await p.stop();
  });
  return instances;
}

function suite(name: string, make: () => Promise<Deployment>): void {
  describe(`StrongPools over ${name}`, { timeout: 600_000 }, () => {
    let d: Deployment | undefined;
    const deployment = async (): Promise<Deployment> => (d ??= await make());
    after(async () => {
      await d?.close();
    });

    it('never gives one value to two owners, and every instance ends with the same state', async (t) => {
      const P = fresh();
      const { stores } = await deployment();
      const [a, b] = await startPools(t, stores, P, 1000, 1999);
      // Owners 0..299 claim at a, 300..599 at b, and 600..699 at both at once, like a replay racing the
      // original.
      const mine = (p: StrongPools, owners: number[]) =>
        Promise.all(owners.map((i) => p.claim(P, owner(i), 1)));
      const [va, vb, sa, sb] = await Promise.all([
        mine(a!, range(0, 300)),
        mine(b!, range(300, 300)),
        mine(a!, range(600, 100)),
        mine(b!, range(600, 100)),
      ]);
      assert.deepEqual(sa, sb, 'both instances get the same value for a shared owner');
      const all = [...va, ...vb, ...sa];
      assert.equal(new Set(all).size, 700, 'no value twice');
      assert.ok(all.every((v) => v >= 1000 && v <= 1999));
      await barrier(P, a!, b!);
      assertSameState(P, a!, b!, 1000, 1999);
      assert.equal(a!.inUse(P), 700);
      for (const [i, v] of [
        ...range(0, 300).map((i) => [i, va[i]!]),
        ...range(0, 100).map((i) => [600 + i, sa[i]!]),
      ]) {
        assert.equal(a!.valueOf(P, owner(i!), 1), v);
        assert.equal(b!.valueOf(P, owner(i!), 1), v);
        assert.equal(b!.ownerOf(P, v!), owner(i!));
      }
    });

    it('answers a replayed claim with the value held, and a new incarnation with a new value', async (t) => {
      const P = fresh();
      const { stores } = await deployment();
      const [a, b] = await startPools(t, stores, P, 5000, 5099);
      const o = owner(7);
      const v = await a!.claim(P, o, 3);
      assert.equal(await a!.claim(P, o, 3), v);
      // A successor's claim that crossed the original in the log: a new update for a held owner.
      await stores[1].submit([
        {
          id: `pool:successor:${randomBytes(4).toString('hex')}`,
          data: encodePoolUpdate({
            op: PoolOp.CLAIM,
            pool: P,
            owner: o,
            incarnation: 3,
            candidate: 5099,
          }),
        },
      ]);
      await barrier(P, a!, b!);
      assert.equal(b!.valueOf(P, o, 3), v);
      assert.equal(await b!.claim(P, o, 3), v);
      assert.equal(a!.inUse(P), 1);
      assert.equal(b!.inUse(P), 1);
      assert.equal(a!.ownerOf(P, 5099), undefined);

      const w = await b!.claim(P, o, 4);
      assert.notEqual(w, v);
      await barrier(P, a!);
      assert.equal(a!.valueOf(P, o, 4), w);
      assert.equal(a!.inUse(P), 2);
    });

    it('frees released values in order everywhere, reuses them, and answers -1 everywhere when exhausted', async (t) => {
      const P = fresh();
      const { stores } = await deployment();
      const [a, b] = await startPools(t, stores, P, 20, 29);
      const got = await Promise.all(range(0, 10).map((i) => (i % 2 === 0 ? a! : b!).claim(P, owner(i), 0)));
      assert.deepEqual(
        [...got].sort((x, y) => x - y),
        range(20, 10),
      );
      assert.equal(await a!.claim(P, owner(10), 0), -1);
      assert.equal(await b!.claim(P, owner(11), 0), -1);
      await barrier(P, a!, b!);
      assert.equal(a!.valueOf(P, owner(10), 0), undefined, 'an exhausted claim holds nothing');
      assert.equal(b!.inUse(P), 10);

      assert.equal(await b!.release(P, owner(3), 0), got[3]);
      assert.equal(await b!.release(P, owner(3), 0), -1, 'a second release frees nothing');
      await barrier(P, a!);
      assert.equal(a!.ownerOf(P, got[3]!), undefined);
      assert.equal(await a!.claim(P, owner(12), 0), got[3], 'the one free value');
      assert.equal(await b!.claim(P, owner(13), 0), -1);
      await barrier(P, a!, b!);
      assertSameState(P, a!, b!, 20, 29);
    });

    it('batches 10 000 claims from two instances', async (t) => {
      const P = fresh();
      const { stores } = await deployment();
      const [a, b] = await startPools(t, stores, P, 1, 65535, { deadlineMs: 60_000 });
      const n = 10_000;
      const t0 = performance.now();
      const values = await Promise.all(range(0, n).map((i) => (i % 2 === 0 ? a! : b!).claim(P, owner(i), 0)));
      const ms = performance.now() - t0;
      assert.equal(new Set(values).size, n);
      assert.ok(values.every((v) => v > 0));
      const batches =
        sample(a!, 'nfstate_strong_pool_batches_total') + sample(b!, 'nfstate_strong_pool_batches_total');
      const conflicts =
        sample(a!, 'nfstate_strong_pool_conflicts_total') + sample(b!, 'nfstate_strong_pool_conflicts_total');
      t.diagnostic(
        `${name}: ${n} claims in ${ms.toFixed(0)} ms = ${Math.round((n / ms) * 1000)} claims/s ` +
          `(${batches} batches, ${conflicts} conflicts)`,
      );
      await barrier(P, a!, b!);
      assertSameState(P, a!, b!, 1, 65535);
    });
  });
}

suite('an in-process Sequencer', () => {
  const seq = new Sequencer({ logger: silentLogger });
  return Promise.resolve({ stores: [seq, seq], close: () => seq.stop() });
});

suite('a SequencerServer and two SequencerClients', async () => {
  const server = new SequencerServer({ key, logger: silentLogger });
  await server.listen('127.0.0.1', 0);
  const clients = [0, 1].map(
    () => new SequencerClient({ host: '127.0.0.1', port: server.port, key, logger: silentLogger }),
  );
  for (const c of clients) await c.start();
  return {
    stores: [clients[0]!, clients[1]!],
    close: async () => {
      for (const c of clients) await c.stop();
      await server.stop();
    },
  };
});

let etcd: EtcdCluster | undefined;
/** Two clients of a fresh log in the file's etcd cluster, started on first use. */
async function etcdStores(): Promise<{ stores: [EtcdGlobalStore, EtcdGlobalStore]; close(): Promise<void> }> {
  etcd ??= await startEtcd(3);
  const prefix = `strong-${randomBytes(4).toString('hex')}/`;
  const hosts = etcd.clientUrls;
  const stores: [EtcdGlobalStore, EtcdGlobalStore] = [
    new EtcdGlobalStore({ hosts, prefix, logger: silentLogger }),
    new EtcdGlobalStore({ hosts, prefix, logger: silentLogger }),
  ];
  for (const s of stores) await s.start();
  return {
    stores,
    close: async () => {
      for (const s of stores) await s.stop();
    },
  };
}

suite('a 3-member etcd', etcdStores);

describe('StrongPools specifics', { timeout: 600_000 }, () => {
  it('keeps decoding a frozen sample of the update layout', () => {
    // version 1, CLAIM, incarnation 7, candidate 1024, 'nat.port', 'tcp 10.0.0.1:40000 192.168.0.1:443'
    const frozen = Buffer.from(
      '0101' +
        '0000000000000007' +
        '0000000000000400' +
        '00000008' +
        '6e61742e706f7274' +
        '00000022' +
        '7463702031302e302e302e313a3430303030203139322e3136382e302e313a343433',
      'hex',
    );
    const u = {
      op: PoolOp.CLAIM,
      pool: 'nat.port',
      owner: 'tcp 10.0.0.1:40000 192.168.0.1:443',
      incarnation: 7,
      candidate: 1024,
    };
    assert.deepEqual(decodePoolUpdate(frozen), u);
    assert.deepEqual(Buffer.from(encodePoolUpdate(u)), frozen);
    const release = { op: PoolOp.RELEASE, pool: 'p', owner: 'o', incarnation: 2 ** 40, candidate: -1 };
    assert.deepEqual(decodePoolUpdate(encodePoolUpdate(release)), release);
  });

  it('counts and skips malformed updates and updates for undefined pools, and ignores other ids', async (t) => {
    const P = fresh();
    const seq = new Sequencer({ logger: silentLogger });
    const [a] = await startPools(t, [seq], P, 0, 9);
    const good = encodePoolUpdate({
      op: PoolOp.CLAIM,
      pool: P,
      owner: owner(1),
      incarnation: 0,
      candidate: 5,
    });
    const bad = [
      new Uint8Array(0),
      Uint8Array.of(2, ...good.subarray(1)),
      Uint8Array.of(1, 9, ...good.subarray(2)),
      good.subarray(0, good.length - 1),
      Uint8Array.of(...good, 0),
      encodePoolUpdate({ op: PoolOp.CLAIM, pool: P, owner: owner(1), incarnation: 0, candidate: 5 }).fill(
        0xff,
        20,
      ),
    ];
    await seq.submit(bad.map((data, i) => ({ id: `pool:x:bad:${i}`, data })));
    await seq.submit([
      {
        id: 'pool:x:other-pool',
        data: encodePoolUpdate({
          op: PoolOp.CLAIM,
          pool: 'lb.slot',
          owner: owner(1),
          incarnation: 0,
          candidate: 5,
        }),
      },
      { id: 'lb:not-a-pool-update', data: good },
    ]);
    await barrier(P, a!);
    assert.equal(sample(a!, 'nfstate_strong_pool_malformed_total'), bad.length);
    assert.equal(sample(a!, 'nfstate_strong_pool_undeclared_total'), 1);
    assert.equal(a!.inUse(P), 0);
    assert.equal(await a!.claim(P, owner(1), 0), 0, 'the pools go on as if nothing had come');
  });

  it('retries a lost candidate once, as ANY, and joins concurrent calls for one owner', async (t) => {
    const P = fresh();
    const seq = new Sequencer({ logger: silentLogger });
    const [a] = await startPools(t, [seq], P, 0, 99);
    // Someone else takes value 0 in the log before a's proposal of 0 arrives.
    const pending = a!.claim(P, owner(1), 0);
    await seq.submit([
      {
        id: 'pool:other:1',
        data: encodePoolUpdate({
          op: PoolOp.CLAIM,
          pool: P,
          owner: owner(2),
          incarnation: 0,
          candidate: 0,
        }),
      },
    ]);
    assert.equal(await pending, 1);
    assert.equal(sample(a!, 'nfstate_strong_pool_conflicts_total'), 1);
    const before = sample(a!, 'nfstate_strong_pool_batches_total');
    const twice = await Promise.all([a!.claim(P, owner(3), 0), a!.claim(P, owner(3), 0)]);
    assert.equal(twice[0], twice[1]);
    assert.equal(sample(a!, 'nfstate_strong_pool_batches_total'), before + 1);
    assert.equal(sample(a!, 'nfstate_strong_pool_pending'), 0);
  });

  it('refuses bad calls clearly, bounds the calls in progress, and honours an abort', async (t) => {
    const P = fresh();
    const server = new SequencerServer({ key, logger: silentLogger });
    await server.listen('127.0.0.1', 0);
    const port = server.port;
    await server.stop();
    // A client of a sequencer that is down: nothing commits.
    const client = new SequencerClient({ host: '127.0.0.1', port, key, logger: silentLogger });
    await client.start();
    t.after(() => client.stop());
    const [a] = await startPools(t, [client], P, 0, 9, { maxPending: 2, deadlineMs: 5000 });
    await assert.rejects(a!.claim('nope', owner(1), 0), { code: 'NFS_ERR_CONFIG' });
    await assert.rejects(a!.claim(P, '', 0), { code: 'NFS_ERR_USAGE' });
    await assert.rejects(a!.claim(P, owner(1), -1), { code: 'NFS_ERR_USAGE' });
    const ac = new AbortController();
    const first = a!.claim(P, owner(1), 0, { signal: ac.signal });
    const second = a!.claim(P, owner(2), 0);
    await assert.rejects(a!.claim(P, owner(3), 0), (err: unknown) => {
      assert.ok(err instanceof NfsError && err.retriable && /in progress/.test(err.message));
      return true;
    });
    assert.throws(() => {
      a!.define('late', 0, 1);
    }, /before start/);
    ac.abort(new Error('gone'));
    await assert.rejects(first, /gone/);
    await a!.stop();
    await assert.rejects(second, { code: 'NFS_ERR_STATE', message: /stopped/ });
    assert.equal(sample(a!, 'nfstate_strong_pool_pending'), 0);
  });

  it('fails a claim with NFS_ERR_TIMEOUT at its deadline while the sequencer is down, and goes on after', async (t) => {
    const P = fresh();
    const sequencer = new Sequencer({ logger: silentLogger });
    let server = new SequencerServer({ key, logger: silentLogger, sequencer });
    await server.listen('127.0.0.1', 0);
    const port = server.port;
    const client = new SequencerClient({
      host: '127.0.0.1',
      port,
      key,
      logger: silentLogger,
      maxBackoffMs: 100,
    });
    await client.start();
    t.after(() => client.stop());
    const [a] = await startPools(t, [client], P, 0, 9, { deadlineMs: 500 });
    assert.equal(await a!.claim(P, owner(1), 0), 0);
    await server.stop();
    const t0 = Date.now();
    await assert.rejects(a!.claim(P, owner(2), 0), (err: unknown) => {
      assert.ok(err instanceof NfsError);
      assert.equal(err.code, 'NFS_ERR_TIMEOUT');
      // Its own deadline ended it (the pool's words), with what the store last said.
      assert.match(err.message, /claim for 'tcp .*' #0: not committed within 500 ms: .*sequencer/);
      return true;
    });
    // Never before it: the pool fails a call only once Date.now() has passed its deadline.
    const took = Date.now() - t0;
    assert.ok(took >= 450, `took ${took} ms`);
    server = new SequencerServer({ key, logger: silentLogger, sequencer });
    await server.listen('127.0.0.1', port);
    t.after(() => server.stop());
    // Nothing reached the log while it was down, so the candidate the rejected claim named is free again.
    assert.equal(await a!.claim(P, owner(2), 0), 1);
    assert.equal(await a!.claim(P, owner(3), 0), 2);
  });
});

describe('StrongPools over etcd under member failures', { timeout: 600_000 }, () => {
  after(async () => {
    await etcd?.stop();
  });

  it('keeps claiming with one member killed, and rejects clearly within the deadline without quorum', async (t) => {
    const P = fresh();
    const d = await etcdStores();
    t.after(() => d.close());
    const [a, b] = await startPools(t, d.stores, P, 1, 4096, { deadlineMs: 5000 });
    const values: number[] = [];
    for (let wave = 0; wave < 10; wave++) {
      const claims = range(wave * 40, 40).map((i) => (i % 2 === 0 ? a! : b!).claim(P, owner(i), 0));
      // Killed while a wave is in flight: its submits fail over to the other members or go again.
      if (wave === 3) await etcd!.kill(0);
      values.push(...(await Promise.all(claims)));
    }
    assert.equal(new Set(values).size, 400);
    await barrier(P, a!, b!);
    assertSameState(P, a!, b!, 1, 4096);

    // An instance with a short deadline, watching before the quorum goes: an etcd3 watch still being
    // created when its store stops is never cancelled, and keeps the process alive.
    const [c] = await startPools(t, [d.stores[0]], P, 1, 4096, { deadlineMs: 1000 });
    await barrier(P, c!);
    await etcd!.kill(1);
    const t0 = Date.now();
    await assert.rejects(c!.claim(P, owner(1000), 0), (err: unknown) => {
      assert.ok(err instanceof NfsError);
      assert.equal(err.code, 'NFS_ERR_TIMEOUT');
      assert.equal(err.retriable, true);
      // The store's words follow: a timeout that asks about the quorum, or the client's refusal.
      assert.match(err.message, /claim for 'tcp .*' #0: not committed within 1000 ms: etcd/);
      return true;
    });
    // Its own deadline, not etcd's (about 7 s without a leader), as the words above say; and never before
    // it: the pool fails a call only once Date.now() has passed its deadline.
    const took = Date.now() - t0;
    assert.ok(took >= 950, `took ${took} ms`);
  });
});
