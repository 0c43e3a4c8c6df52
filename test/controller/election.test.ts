import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { Etcd3 } from 'etcd3';
import {
  Demotion,
  LeaderElection,
  type Leader,
  type LeaderElectionOptions,
} from '../../src/controller/election.js';
import { ErrorCode, NfsError } from '../../src/errors.js';
import { startEtcd, type EtcdCluster } from '../../src/global/etcd-local.js';
import { silentLogger } from '../../src/log.js';
import type { MetricSample } from '../../src/types.js';
import { until } from '../helpers/poll.js';

const TTL = 2;
/** A lease TTL longer than any test here runs: such a lease never expires while the test looks. */
const OUTLIVES_TEST_S = 3600;

/** A prefix of its own for each test: they share one etcd cluster. */
function freshPrefix(): string {
  return `election-${randomBytes(4).toString('hex')}/`;
}

/** A started election, stopped when the test ends. */
async function candidate(
  t: TestContext,
  hosts: string[],
  prefix: string,
  id: string,
  options: Partial<LeaderElectionOptions> = {},
): Promise<LeaderElection> {
  const e = new LeaderElection({
    hosts,
    prefix,
    id,
    value: `{"admin":"${id}"}`,
    ttlSeconds: TTL,
    logger: silentLogger,
    ...options,
  });
  await e.start();
  t.after(() => e.stop());
  return e;
}

function sample(e: LeaderElection, name: string): number {
  const out: MetricSample[] = [];
  e.collect(out);
  const s = out.find(([n]) => n === name);
  assert.ok(s !== undefined, `no sample ${name}`);
  return s[2];
}

/** Resolves with how long `p` took to settle, in ms; rejects as it does. */
async function timed(p: Promise<unknown>, since = performance.now()): Promise<number> {
  await p;
  return performance.now() - since;
}

/** Whether `p` is still pending after the current tasks. */
async function pending(p: Promise<unknown>): Promise<boolean> {
  const marker = Symbol('pending');
  const r = await Promise.race([
    p.then(
      () => 'settled',
      () => 'settled',
    ),
    new Promise((r) => setImmediate(() => r(marker))),
  ]);
  return r === marker;
}

/** A loopback URL where nothing listens. */
async function closedPort(): Promise<string> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return `http://127.0.0.1:${port}`;
}

/** A loopback URL that accepts connections and never answers, like a member cut off by a partition. */
async function blackhole(t: TestContext): Promise<string> {
  const sockets = new Set<net.Socket>();
  const s = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
  });
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    s.close();
  });
  return `http://127.0.0.1:${(s.address() as net.AddressInfo).port}`;
}

/** Resolves once `n` candidates hold a key under `prefix`. */
async function inLine(hosts: string[], prefix: string, n: number): Promise<void> {
  const raw = new Etcd3({ hosts });
  try {
    await until(async () => (await raw.getAll().prefix(prefix).keys()).length >= n);
  } finally {
    raw.close();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The index of the member that is etcd's raft leader. */
async function raftLeader(cluster: EtcdCluster): Promise<number> {
  const status = await Promise.all(
    cluster.clientUrls.map(async (url) => {
      const res = await fetch(`${url}/v3/maintenance/status`, { method: 'POST', body: '{}' });
      return (await res.json()) as { header: { member_id: string }; leader: string };
    }),
  );
  const i = status.findIndex((s) => s.header.member_id === s.leader);
  assert.ok(i >= 0, 'no member leads');
  return i;
}

type StopMode = 'lead' | 'at-once' | 'waiting' | 'unreachable' | 'blackhole';

const electionModule = new URL('../../src/controller/election.js', import.meta.url).href;
const logModule = new URL('../../src/log.js', import.meta.url).href;

/**
 * A process of its own with one election, in `mode`: `hold` campaigns, prints "leading" and stays. The
 * others campaign and watch the leader, print "stopping" and stop, and must then exit on their own:
 * `lead` once it leads, `at-once` at once (the watch is still being created), `waiting` while it waits
 * behind another leader, `unreachable` after 3 s of failing to reach etcd (etcd3's reconnect backoff
 * has grown by then), `blackhole` after 3 s of calls to a member that never answers.
 */
function child(hosts: string[], prefix: string, id: string, mode: 'hold' | StopMode): ChildProcess {
  const script = `
    const cfg = JSON.parse(process.env.ELECTION_CHILD);
    const { LeaderElection } = await import(cfg.electionModule);
    const { silentLogger } = await import(cfg.logModule);
    const e = new LeaderElection({ hosts: cfg.hosts, prefix: cfg.prefix, id: cfg.id, ttlSeconds: cfg.ttl, logger: silentLogger });
    await e.start();
    if (cfg.mode === 'hold') {
      await e.campaign();
      console.log('leading');
    } else {
      const run = e.campaign().catch(() => undefined);
      e.watchLeader(() => undefined);
      if (cfg.mode === 'lead') await run;
      else if (cfg.mode !== 'at-once') {
        await new Promise((r) => setTimeout(r, cfg.mode === 'waiting' ? 500 : 3000));
      }
      console.log('stopping');
      await e.stop();
      await run;
    }
  `;
  const env = {
    ...process.env,
    ELECTION_CHILD: JSON.stringify({ electionModule, logModule, hosts, prefix, id, ttl: TTL, mode }),
  };
  return spawn(process.execPath, ['--input-type=module', '-e', script], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
}

/** Resolves once the child prints `line`. */
async function printed(p: ChildProcess, line: string): Promise<void> {
  let out = '';
  await new Promise<void>((resolve, reject) => {
    p.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.split('\n').includes(line)) resolve();
    });
    p.once('exit', (code) => {
      reject(new Error(`child exited (${String(code)}) before printing ${line}: ${out}`));
    });
  });
}

describe('LeaderElection', { timeout: 60_000 }, () => {
  it('rejects bad options with NFS_ERR_CONFIG naming the field', () => {
    const base: LeaderElectionOptions = {
      hosts: ['http://127.0.0.1:1'],
      prefix: 'p/',
      id: 'a',
      ttlSeconds: 2,
      logger: silentLogger,
    };
    const bad: [string, Partial<LeaderElectionOptions>][] = [
      ['hosts', { hosts: [] }],
      ['hosts', { hosts: [''] }],
      ['id', { id: '' }],
      ['id', { id: 'x'.repeat(257) }],
      ['ttlSeconds', { ttlSeconds: 0 }],
      ['ttlSeconds', { ttlSeconds: 1.5 }],
      ['ttlSeconds', { ttlSeconds: Number.NaN }],
      ['deadlineMs', { deadlineMs: 0 }],
      ['name', { name: 'a/b' }],
    ];
    for (const [field, options] of bad) {
      assert.throws(
        () => new LeaderElection({ ...base, ...options }),
        (err: unknown) =>
          err instanceof NfsError &&
          err.code === ErrorCode.CONFIG &&
          err.message.startsWith(`election.${field}: `),
        field,
      );
    }
  });

  it('refuses calls before start and after stop, and stops twice', async () => {
    const e = new LeaderElection({
      hosts: ['http://127.0.0.1:1'],
      prefix: 'p/',
      id: 'a',
      ttlSeconds: 2,
      logger: silentLogger,
    });
    const state = (err: unknown) => err instanceof NfsError && err.code === ErrorCode.STATE;
    await assert.rejects(e.campaign(), state);
    await e.stop();
    await e.stop();
    await assert.rejects(e.start(), state);
    assert.throws(() => e.watchLeader(() => undefined), state);
  });
});

describe('LeaderElection on a 3-member etcd', { timeout: 600_000 }, () => {
  let etcd: EtcdCluster | undefined;
  let hosts: string[] = [];
  before(async () => {
    etcd = await startEtcd(3);
    hosts = etcd.clientUrls;
  });
  after(async () => {
    await etcd?.stop();
  });

  it('elects a single candidate and publishes its id and value', async (t) => {
    const prefix = freshPrefix();
    const a = await candidate(t, hosts, prefix, 'ctl-a', { value: '{"admin":7000}' });
    const reader = await candidate(t, hosts, prefix, 'reader');
    assert.equal(a.isLeader, false);
    assert.equal(await reader.leader(), undefined);
    await a.campaign();
    assert.equal(a.isLeader, true);
    await a.campaign(); // leading already: at once
    const leader = await reader.leader();
    assert.deepEqual(leader, { id: 'ctl-a', value: '{"admin":7000}', term: a.term });
    assert.equal(sample(a, 'nfstate_election_leader'), 1);
    assert.equal(sample(a, 'nfstate_election_terms_total'), 1);
    assert.equal(sample(reader, 'nfstate_election_leader'), 0);
  });

  it('makes a second candidate wait, and lead when the first resigns, without waiting for its lease', async (t) => {
    const prefix = freshPrefix();
    // a's lease outlives the test: b can come to lead only through the resignation, never by its expiry.
    const a = await candidate(t, hosts, prefix, 'ctl-a', { ttlSeconds: OUTLIVES_TEST_S });
    const b = await candidate(t, hosts, prefix, 'ctl-b');
    let demoted = 0;
    a.onDemoted = () => demoted++;
    await a.campaign();
    const waiting = b.campaign();
    await inLine(hosts, prefix, 2);
    assert.ok(await pending(waiting), 'b waits while a leads');
    assert.equal(b.isLeader, false);
    const since = performance.now();
    const resigning = a.resign();
    assert.equal(a.isLeader, false, 'a stops leading before etcd answers');
    await resigning;
    const ms = await timed(waiting, since);
    t.diagnostic(`resign → new leader: ${ms.toFixed(0)} ms`);
    assert.equal(b.isLeader, true);
    assert.equal((await a.leader())?.id, 'ctl-b');
    assert.ok(b.term! > 0);
    assert.equal(demoted, 0, 'a resignation is no demotion');
    assert.equal(sample(a, 'nfstate_election_resignations_total'), 1);
  });

  it('withdraws a waiting campaign on resign, rejecting it with NFS_ERR_STATE', async (t) => {
    const prefix = freshPrefix();
    const a = await candidate(t, hosts, prefix, 'ctl-a');
    const b = await candidate(t, hosts, prefix, 'ctl-b');
    const c = await candidate(t, hosts, prefix, 'ctl-c');
    await a.campaign();
    const withdrawn = assert.rejects(
      b.campaign(),
      (err: unknown) => err instanceof NfsError && err.code === ErrorCode.STATE,
    );
    const waitingC = c.campaign();
    await inLine(hosts, prefix, 3);
    await b.resign();
    await withdrawn;
    await a.resign();
    await waitingC;
    assert.equal(c.isLeader, true, 'c, not the withdrawn b, is next');
    assert.equal(b.isLeader, false);
  });

  it('replaces a leader whose process is killed, once its lease expires', async (t) => {
    const prefix = freshPrefix();
    const dead = child(hosts, prefix, 'ctl-dead', 'hold');
    t.after(() => dead.kill('SIGKILL'));
    await printed(dead, 'leading');
    const b = await candidate(t, hosts, prefix, 'ctl-b');
    const waiting = b.campaign();
    await inLine(hosts, prefix, 2);
    assert.ok(await pending(waiting));
    const exited = once(dead, 'exit');
    const since = performance.now();
    dead.kill('SIGKILL');
    await exited;
    const ms = await timed(waiting, since);
    t.diagnostic(`kill → new leader: ${ms.toFixed(0)} ms (TTL ${TTL} s)`);
    assert.equal(b.isLeader, true);
    // Nobody revoked the dead leader's lease: its key went when the lease expired, and b's is the only one.
    const raw = new Etcd3({ hosts });
    t.after(() => {
      raw.close();
    });
    assert.equal((await raw.getAll().prefix(prefix).keys()).length, 1);
    assert.equal((await b.leader())?.id, 'ctl-b');
  });

  it('replaces a leader whose client is closed without resigning, once its lease expires', async (t) => {
    const prefix = freshPrefix();
    const a = new LeaderElection({ hosts, prefix, id: 'ctl-a', ttlSeconds: TTL, logger: silentLogger });
    await a.start();
    await a.campaign();
    const b = await candidate(t, hosts, prefix, 'ctl-b');
    const waiting = b.campaign();
    await inLine(hosts, prefix, 2);
    // What a crash leaves behind: no revoke, no renewal. stop() would revoke, so close the client.
    const since = performance.now();
    (a as unknown as { client: Etcd3 }).client.close();
    const ms = await timed(waiting, since);
    t.diagnostic(`client closed → new leader: ${ms.toFixed(0)} ms`);
    assert.equal(b.isLeader, true);
    // Its lease expired a TTL after the last renewal etcd applied, which went out after a's last successful
    // one: past half a TTL since then, a reads itself not leading, by its own clock.
    assert.equal(a.isLeader, false, 'the old leader demotes itself once it cannot renew');
    await a.stop();
  });

  it('tells watchLeader every change of leader, in order', async (t) => {
    const prefix = freshPrefix();
    const a = await candidate(t, hosts, prefix, 'ctl-a');
    const b = await candidate(t, hosts, prefix, 'ctl-b');
    const observer = await candidate(t, hosts, prefix, 'nf-1');
    const seen: (Leader | undefined)[] = [];
    const watch = observer.watchLeader((l) => seen.push(l));
    await until(() => seen.length === 1);
    assert.deepEqual(
      seen.map((l) => l?.id),
      [undefined],
    );
    await a.campaign();
    await until(() => seen.length === 2);
    const waiting = b.campaign();
    await inLine(hosts, prefix, 2);
    await a.resign();
    await waiting;
    await until(() => seen.length === 3);
    await b.resign();
    await until(() => seen.length === 4);
    await sleep(200);
    assert.deepEqual(
      seen.map((l) => l?.id),
      [undefined, 'ctl-a', 'ctl-b', undefined],
    );
    assert.equal(seen[1]?.value, '{"admin":"ctl-a"}');
    const terms = seen.map((l) => l?.term ?? 0);
    assert.ok(terms[2]! > terms[1]!, 'terms grow');
    assert.equal(sample(observer, 'nfstate_election_leader_changes_total'), 3);
    // A late subscriber hears the current state at once; a stopped watch hears nothing more.
    await b.campaign();
    await until(() => seen.length === 5);
    const late: (string | undefined)[] = [];
    observer.watchLeader((l) => late.push(l?.id));
    await until(() => late.length === 1);
    assert.deepEqual(late, ['ctl-b']);
    watch.stop();
    await b.resign();
    await until(() => late.length === 2);
    assert.deepEqual(late, ['ctl-b', undefined]);
    assert.equal(seen.length, 5);
  });

  it('demotes a leader whose key is deleted', async (t) => {
    const prefix = freshPrefix();
    const a = await candidate(t, hosts, prefix, 'ctl-a');
    const reasons: Demotion[] = [];
    a.onDemoted = (r) => reasons.push(r);
    await a.campaign();
    const raw = new Etcd3({ hosts });
    t.after(() => {
      raw.close();
    });
    await raw.delete().prefix(prefix);
    await until(() => reasons.length > 0, 30_000);
    assert.deepEqual(reasons, [Demotion.DELETED]);
    assert.equal(a.isLeader, false);
    assert.equal(sample(a, 'nfstate_election_demotions_total'), 1);
  });

  describe('stop() lets the process exit by itself', { timeout: 120_000 }, () => {
    const modes: [StopMode, string][] = [
      ['lead', 'while leading'],
      ['at-once', 'right after start (the watch still being created)'],
      ['waiting', 'while waiting behind a leader'],
      ['unreachable', 'after failing to reach etcd for a while'],
      ['blackhole', 'after calls to a member that never answers'],
    ];
    for (const [mode, when] of modes) {
      it(when, async (t) => {
        const prefix = freshPrefix();
        if (mode === 'waiting') {
          const holder = await candidate(t, hosts, prefix, 'holder');
          await holder.campaign();
        }
        let childHosts = hosts;
        if (mode === 'unreachable') childHosts = [await closedPort()];
        if (mode === 'blackhole') childHosts = [await blackhole(t)];
        const p = child(childHosts, prefix, `ctl-${mode}`, mode);
        t.after(() => p.kill('SIGKILL'));
        const exited = once(p, 'exit') as Promise<[number | null, string | null]>;
        await printed(p, 'stopping');
        const since = performance.now();
        // Nothing left open keeps it alive: it exits without a signal (one that did not would run into
        // the test's timeout). How soon is the scheduler's business, and shown only as a diagnostic.
        const [code, signal] = await exited;
        t.diagnostic(`stop() → exit: ${(performance.now() - since).toFixed(0)} ms`);
        assert.deepEqual([code, signal], [0, null], 'the child exits by itself');
      });
    }
  });

  it('rejects a pending campaign at stop(), and no lease is left behind', async (t) => {
    const prefix = freshPrefix();
    const a = await candidate(t, hosts, prefix, 'ctl-a');
    await a.campaign();
    const b = new LeaderElection({ hosts, prefix, id: 'ctl-b', ttlSeconds: TTL, logger: silentLogger });
    await b.start();
    const rejected = assert.rejects(
      b.campaign(),
      (err: unknown) => err instanceof NfsError && err.code === ErrorCode.STATE,
    );
    await inLine(hosts, prefix, 2);
    await b.stop();
    await rejected;
    await a.stop();
    assert.equal(a.isLeader, false);
    const raw = new Etcd3({ hosts });
    t.after(() => {
      raw.close();
    });
    assert.deepEqual(await raw.getAll().prefix(prefix).keys(), [], 'stop() revokes: no key is left');
  });
});

describe('LeaderElection through etcd faults', { timeout: 600_000 }, () => {
  // A leader rides out a stall of etcd (or of itself) that lasts under about 3/8 of its TTL. Losing a
  // follower stalls nothing, but a loaded machine can for a second: twice the usual TTL leaves room for
  // it. Losing the raft leader stalls etcd for an election, about 0.5 s here, over 1 s on a loaded machine.
  const memberFaults = [
    { who: 'a follower', ttl: 2 * TTL, pick: async (c: EtcdCluster) => ((await raftLeader(c)) + 1) % 3 },
    { who: 'the raft leader', ttl: 4 * TTL, pick: raftLeader },
  ];
  for (const { who, ttl, pick } of memberFaults) {
    it(`keeps its leader when ${who} of 3 etcd members is killed (TTL ${ttl} s)`, async (t) => {
      const cluster = await startEtcd(3);
      t.after(() => cluster.stop());
      const hosts = cluster.clientUrls;
      const prefix = freshPrefix();
      const a = await candidate(t, hosts, prefix, 'ctl-a', { ttlSeconds: ttl });
      const b = await candidate(t, hosts, prefix, 'ctl-b', { ttlSeconds: ttl });
      let demoted = 0;
      a.onDemoted = () => demoted++;
      await a.campaign();
      const waiting = b.campaign();
      await cluster.kill(await pick(cluster));
      // A lease that etcd could not renew would have demoted its holder after ttl/2.
      for (let i = 0; i < (ttl * 1000) / 100; i++) {
        assert.equal(a.isLeader, true, 'a leads throughout');
        await sleep(100);
      }
      assert.equal(demoted, 0);
      assert.ok(await pending(waiting), 'b still waits');
      assert.equal((await b.leader())?.id, 'ctl-a');
    });
  }

  it('demotes the leader within half its TTL when etcd loses quorum, elects nobody meanwhile, and one leader after', async (t) => {
    const cluster = await startEtcd(3);
    t.after(() => cluster.stop());
    const hosts = cluster.clientUrls;
    const prefix = freshPrefix();
    const a = await candidate(t, hosts, prefix, 'ctl-a');
    const b = await candidate(t, hosts, prefix, 'ctl-b');
    const demotions: [Demotion, number][] = [];
    await a.campaign();
    const waiting = b.campaign();
    await inLine(hosts, prefix, 2);
    let since = performance.now();
    a.onDemoted = (reason) => demotions.push([reason, performance.now() - since]);
    await Promise.all([cluster.kill(0), cluster.kill(1)]);
    // Both members are gone. The one left, if it led etcd, still renews leases until it steps down (an
    // election timeout, longer on a loaded machine), so when a's last renewal lands is etcd's business:
    // what must hold is that a stops leading, for staleness, and says so once. How long after the kill
    // is a diagnostic.
    since = performance.now();
    await until(() => demotions.length > 0, 30_000);
    assert.equal(a.isLeader, false, 'a stops leading once its lease can no longer be renewed');
    assert.equal(demotions.length, 1);
    const [reason, ms] = demotions[0]!;
    t.diagnostic(`quorum lost → demoted: ${ms.toFixed(0)} ms (${reason})`);
    assert.equal(reason, Demotion.STALE);
    for (let i = 0; i < (TTL * 2000) / 100; i++) {
      assert.ok(![a, b].some((e) => e.isLeader), 'nobody leads without a quorum');
      await sleep(100);
    }
    assert.ok(await pending(waiting));
    assert.equal(demotions.length, 1, 'onDemoted is called once');

    // Quorum returns: the standby that waited leads; the demoted one queues again behind it.
    const back = performance.now();
    cluster.restart(0);
    cluster.restart(1);
    const again = a.campaign();
    const ms2 = await timed(waiting, back);
    t.diagnostic(`quorum back → new leader: ${ms2.toFixed(0)} ms`);
    assert.equal(b.isLeader, true);
    assert.equal(a.isLeader, false);
    assert.ok(await pending(again));
    // The restarted members may still be catching up on the log, and a read through one of them can miss
    // its deadline meanwhile: what must hold is the answer once etcd answers.
    let seen: string | undefined;
    await until(async () => {
      seen = (await a.leader().catch(() => undefined))?.id;
      return seen === 'ctl-b';
    }, 10_000);
    assert.equal(seen, 'ctl-b');
  });
});
