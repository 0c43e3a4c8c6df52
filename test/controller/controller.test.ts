import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { encodeLoadReport } from '../../src/controller/load-report.js';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { wallClock } from '../../src/clock.js';
import { Controller } from '../../src/controller/controller.js';
import type { ControllerSnapshot, OpenMove, Restored } from '../../src/controller/journal.js';
import { silentLogger } from '../../src/log.js';
import type { FailoverRecord } from '../../src/controller/controller.js';
import { AdminServer } from '../../src/admin-server.js';
import { MetricsRegistry, metricSum } from '../../src/metrics.js';
import { adminCall } from '../../src/admin-call.js';
import type { Logger } from '../../src/types.js';
import type { FakeAdmin } from '../helpers/admin.js';
import { fakeAdmin } from '../helpers/admin.js';

interface Push {
  version: number;
  cluster: string;
  members: string[];
  peers: { id: string; port: number }[];
}

/**
 * Stands in for an instance's admin port: records the cluster configurations pushed to it, and the gossip
 * peers (the instances outside its cluster) it is told.
 */
async function fakeInstance(): Promise<{
  server: http.Server;
  port: number;
  pushes: Push[];
  gossip: { version: number; gossip: { id: string }[] }[];
}> {
  const pushes: Push[] = [];
  const gossip: { version: number; gossip: { id: string }[] }[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      if (req.url === '/cluster') pushes.push(JSON.parse(body) as Push);
      else if (req.url === '/gossip') gossip.push(JSON.parse(body) as (typeof gossip)[number]);
      res.end('{"ok":true}');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, pushes, gossip };
}

describe('Controller', { timeout: 120_000 }, () => {
  const admin = new AdminServer({ host: '127.0.0.1', port: 0, registry: new MetricsRegistry() });
  const controller = new Controller({ clusterSize: 2, host: '127.0.0.1' }, silentLogger, wallClock);
  let base = '';
  let reportPort = 0;
  const fakes: Awaited<ReturnType<typeof fakeInstance>>[] = [];

  before(async () => {
    reportPort = await controller.start(admin);
    base = `http://127.0.0.1:${await admin.start()}`;
    for (let i = 0; i < 3; i++) fakes.push(await fakeInstance());
  });

  after(async () => {
    controller.stop();
    await admin.stop();
    for (const f of fakes) f.server.close();
  });

  const register = (i: number): Promise<Response> =>
    fetch(`${base}/register`, {
      method: 'POST',
      body: JSON.stringify({
        id: `nf-${i}`,
        host: '127.0.0.1',
        port: 1000 + i,
        replication: 2000 + i,
        admin: fakes[i]!.port,
      }),
    });

  /** Each registered instance's token, which signs its heartbeats and load reports. */
  const tokens: Buffer[] = [];

  it('forms clusters of k as instances register, and tells each member its peers', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await register(i);
      assert.equal(res.status, 200);
      const answer = (await res.json()) as { report: number; token: string };
      assert.equal(answer.report, reportPort);
      tokens.push(Buffer.from(answer.token, 'hex'));
    }
    const clusters = (await (await fetch(`${base}/clusters`)).json()) as {
      id: string;
      members: string[];
    }[];
    assert.deepEqual(clusters, [
      { id: 'c0', members: ['nf-0', 'nf-1'] },
      { id: 'c1', members: ['nf-2'] },
    ]);
    const last0 = fakes[0]!.pushes.at(-1)!;
    assert.deepEqual(last0.members, ['nf-0', 'nf-1']);
    assert.deepEqual(
      last0.peers.map((p) => [p.id, p.port]),
      [['nf-1', 2001]],
    );
    assert.ok(
      fakes[0]!.pushes.every((p, i, all) => i === 0 || p.version > all[i - 1]!.version),
      'versions rise',
    );
    assert.deepEqual(fakes[2]!.pushes.at(-1)!.peers, []);
    // Eventual global state goes beyond the cluster: each instance is told the instances outside its own.
    assert.deepEqual(
      fakes.map((f) => f.gossip.at(-1)!.gossip.map((g) => g.id)),
      [['nf-2'], ['nf-2'], ['nf-0', 'nf-1']],
    );
    const instances = (await (await fetch(`${base}/instances`)).json()) as {
      id: string;
      secondary: string | null;
    }[];
    assert.deepEqual(
      instances.map((i) => [i.id, i.secondary]),
      [
        ['nf-0', 'nf-1'],
        ['nf-1', 'nf-0'],
        ['nf-2', null],
      ],
    );
  });

  it('keeps the latest load report of each instance and counts bad, forged and replayed ones', async () => {
    const s = dgram.createSocket('udp4');
    const send = (m: Uint8Array | string): void => {
      s.send(m, reportPort, '127.0.0.1');
    };
    const load = { received: 10, processed: 9, flows: 3, busy: 0.25, queue: 1 };
    const good = encodeLoadReport('nf-1', 1, load, tokens[1]!);
    send(good);
    const bad = [
      'not json',
      JSON.stringify({ id: 'nf-1', seq: 2, ...load }),
      good,
      encodeLoadReport('nf-1', 3, { ...load, busy: 1 }, tokens[0]!),
      encodeLoadReport('nf-9', 4, load, tokens[1]!),
      encodeLoadReport('nf-1', 5, { ...load, received: -1 }, tokens[1]!),
      Buffer.concat([
        Buffer.from(JSON.stringify({ id: 'nf-1', seq: 6, ...load, queue: 900 })),
        good.subarray(-16),
      ]),
    ];
    // One at a time: a replay must come after the original to be one.
    for (const m of bad) {
      await new Promise((r) => setTimeout(r, 20));
      send(m);
    }
    for (let i = 0; i < 100 && controller.reports + controller.badReports < 1 + bad.length; i++)
      await new Promise((r) => setTimeout(r, 10));
    s.close();
    assert.equal(controller.reports, 1);
    assert.equal(controller.badReports, bad.length);
    const instances = (await (await fetch(`${base}/instances`)).json()) as { id: string; load: unknown }[];
    assert.deepEqual(instances.find((i) => i.id === 'nf-1')?.load, {
      received: 10,
      processed: 9,
      flows: 3,
      busy: 0.25,
      queue: 1,
    });
  });

  it('rejects a malformed registration with a clear error', async () => {
    const res = await fetch(`${base}/register`, {
      method: 'POST',
      body: JSON.stringify({ id: 'x', host: 'h', port: -1 }),
    });
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { error: string }).error, /register\.port/);
  });
});

describe('Controller elasticity', { timeout: 120_000 }, () => {
  const register = (
    base: string,
    id: string,
    admin: number,
    workers: unknown = [7001, 7002],
  ): Promise<Response> =>
    fetch(`${base}/register`, {
      method: 'POST',
      body: JSON.stringify({ id, host: '127.0.0.1', port: 7000, workers, replication: 8000, admin }),
    });
  const clusters = async (base: string): Promise<{ id: string; members: string[] }[]> =>
    (await (await fetch(`${base}/clusters`)).json()) as { id: string; members: string[] }[];
  const lastPeers = (f: FakeAdmin): string[] =>
    (
      (f.calls.filter((c) => c.path === '/cluster' && 'peers' in (c.body as object)).at(-1)?.body ?? {}) as {
        peers: { id: string }[];
      }
    ).peers.map((p) => p.id);

  it('a newcomer joins a cluster with room, else forms a new one; members accept it before they connect; the ingress learns it and makes it live', async () => {
    const admin = new AdminServer({ host: '127.0.0.1', port: 0, registry: new MetricsRegistry() });
    const controller = new Controller({ clusterSize: 2, host: '127.0.0.1' }, silentLogger, wallClock);
    await controller.start(admin);
    const base = `http://127.0.0.1:${await admin.start()}`;
    const nfs = await Promise.all(Array.from({ length: 5 }, () => fakeAdmin({})));
    const ingress = await fakeAdmin({});
    for (let i = 0; i < 3; i++) assert.equal((await register(base, `nf-${i}`, nfs[i]!.port)).status, 200);
    assert.equal(ingress.calls.length, 0, 'no ingress yet: it gets the registered instances when it starts');
    // The launcher listed nf-0 and nf-1 for it; nf-2 registered since: the answer names it.
    const answer = (await (
      await fetch(`${base}/ingress`, {
        method: 'POST',
        body: JSON.stringify({ host: '127.0.0.1', admin: ingress.port, instances: ['nf-0', 'nf-1'] }),
      })
    ).json()) as {
      instances: { id: string; port: number; workers: number[] }[];
      secondaries: Record<string, string | null>;
    };
    assert.deepEqual(
      answer.instances.map((i) => [i.id, i.workers]),
      [['nf-2', [7001, 7002]]],
    );
    assert.deepEqual(Object.keys(answer.secondaries).sort(), ['nf-0', 'nf-1', 'nf-2']);

    // Worker ports that are no ports are refused, naming the field.
    for (const bad of [[0], ['7001'], 7001, Array.from({ length: 65 }, (_, i) => 7001 + i)]) {
      const refused = await register(base, 'nf-9', nfs[4]!.port, bad);
      assert.equal(refused.status, 400, JSON.stringify(bad));
      assert.match(await refused.text(), /"error":"register\.workers: .*"code":"NFS_ERR_CONFIG"/);
    }

    // c0 = {nf-0, nf-1} is full, c1 = {nf-2} has room: nf-3 joins c1.
    assert.equal((await register(base, 'nf-3', nfs[3]!.port)).status, 200);
    assert.deepEqual(await clusters(base), [
      { id: 'c0', members: ['nf-0', 'nf-1'] },
      { id: 'c1', members: ['nf-2', 'nf-3'] },
    ]);
    assert.deepEqual(lastPeers(nfs[2]!), ['nf-3']);
    assert.deepEqual(lastPeers(nfs[3]!), ['nf-2']);
    assert.equal(nfs[0]!.calls.filter((c) => c.path === '/cluster').length, 4, 'c0 was not reconfigured');
    // Every member of c1 accepted nf-3 (a push without peers) before any was told to connect to it.
    const pushes = [nfs[2]!, nfs[3]!].map((f) =>
      f.calls
        .filter((c) => c.path === '/cluster')
        .slice(-2)
        .map((c) => c.body as { version: number; peers?: unknown }),
    );
    for (const [accept, connect] of pushes) {
      assert.equal(accept!.peers, undefined);
      assert.ok(connect!.peers !== undefined);
    }
    assert.ok(Math.max(...pushes.map((p) => p[0]!.version)) < Math.min(...pushes.map((p) => p[1]!.version)));
    assert.deepEqual(
      ingress.calls.map((c) => [c.path, c.body]),
      [
        ['/instances', { id: 'nf-3', host: '127.0.0.1', port: 7000, workers: [7001, 7002] }],
        ['/live', { instances: ['nf-0', 'nf-1', 'nf-2', 'nf-3'] }],
        // Only the changed secondaries; nf-2 had none, and closes its batches so nf-3 starts from them.
        ['/secondaries', { secondaries: { 'nf-2': 'nf-3', 'nf-3': 'nf-2' } }],
      ],
    );
    assert.equal(nfs[2]!.calls.filter((c) => c.path === '/flush').length, 1);

    // Every cluster is full: nf-4 forms a new one, alone, and replicates to nobody yet.
    assert.equal((await register(base, 'nf-4', nfs[4]!.port)).status, 200);
    assert.deepEqual((await clusters(base)).at(-1), { id: 'c2', members: ['nf-4'] });
    assert.deepEqual(lastPeers(nfs[4]!), []);
    const instances = (await (await fetch(`${base}/instances`)).json()) as { id: string; live: boolean }[];
    assert.ok(instances.every((i) => i.live));
    controller.stop();
    await admin.stop();
    await Promise.all([...nfs, ingress].map((f) => f.close()));
  });

  it('an instance the ingress cannot take is not left registered, and no live set names it', async () => {
    const admin = new AdminServer({ host: '127.0.0.1', port: 0, registry: new MetricsRegistry() });
    const controller = new Controller({ clusterSize: 2, host: '127.0.0.1' }, silentLogger, wallClock);
    await controller.start(admin);
    const base = `http://127.0.0.1:${await admin.start()}`;
    const nfs = [await fakeAdmin({}), await fakeAdmin({})];
    const ingress = await fakeAdmin({
      '/instances': () => [400, { error: 'instance.port: out of range' }],
    });
    assert.equal((await register(base, 'nf-0', nfs[0]!.port)).status, 200);
    await fetch(`${base}/ingress`, {
      method: 'POST',
      body: JSON.stringify({ host: '127.0.0.1', admin: ingress.port }),
    });
    const refused = await register(base, 'nf-1', nfs[1]!.port);
    assert.equal(refused.status, 400);
    assert.match(((await refused.json()) as { error: string }).error, /instance\.port/);
    const instances = (await (await fetch(`${base}/instances`)).json()) as { id: string }[];
    assert.deepEqual(
      instances.map((i) => i.id),
      ['nf-0'],
    );
    assert.deepEqual(await clusters(base), [{ id: 'c0', members: ['nf-0'] }]);
    assert.deepEqual(lastPeers(nfs[0]!), [], 'nf-0 no longer replicates to it');
    const lives = ingress.calls.filter((c) => c.path === '/live');
    assert.ok(lives.every((c) => !(c.body as { instances: string[] }).instances.includes('nf-1')));
    controller.stop();
    await admin.stop();
    await Promise.all([...nfs, ingress].map((f) => f.close()));
  });

  it('POST /instances starts instances through the provisioner, or says clearly that there is none', async () => {
    const nf = await fakeAdmin({});
    let base = '';
    const provisioner = {
      add: async (count: number): Promise<string[]> => {
        // As a launcher's instance would: it registers before the launcher answers.
        const ids = Array.from({ length: count }, (_, i) => `nf-${10 + i}`);
        for (const id of ids) await register(base, id, nf.port);
        return ids;
      },
    };
    const run = async (
      withProvisioner: boolean,
      body: unknown,
    ): Promise<[number, Record<string, unknown>]> => {
      const admin = new AdminServer({ host: '127.0.0.1', port: 0, registry: new MetricsRegistry() });
      const controller = new Controller(
        { clusterSize: 4, host: '127.0.0.1', ...(withProvisioner ? { provisioner } : {}) },
        silentLogger,
        wallClock,
      );
      await controller.start(admin);
      base = `http://127.0.0.1:${await admin.start()}`;
      const res = await fetch(`${base}/instances`, { method: 'POST', body: JSON.stringify(body) });
      const reply = (await res.json()) as Record<string, unknown>;
      controller.stop();
      await admin.stop();
      return [res.status, reply];
    };

    const [status, reply] = await run(false, {});
    assert.equal(status, 400);
    assert.equal(reply.code, 'NFS_ERR_STATE');
    assert.match(reply.error as string, /no provisioner.*nfstate nf --controller/);

    const [ok, added] = await run(true, { count: 2 });
    assert.equal(ok, 200);
    const list = added.added as { id: string; cluster: string; ms: number }[];
    assert.deepEqual(
      list.map((a) => [a.id, a.cluster]),
      [
        ['nf-10', 'c0'],
        ['nf-11', 'c0'],
      ],
    );
    assert.ok(list.every((a) => a.ms >= 0));

    for (const bad of [{ count: 0 }, { count: 1.5 }, { count: 'two' }, { host: 7 }]) {
      const [code, r] = await run(true, bad);
      assert.equal(code, 400, JSON.stringify(bad));
      assert.match(r.error as string, /instances\.(count|host)/);
    }
    await nf.close();
  });

  it('GET /flows lists every running flow with its owner, from the ingress; ?owner= filters', async () => {
    const admin = new AdminServer({ host: '127.0.0.1', port: 0, registry: new MetricsRegistry() });
    const controller = new Controller({ clusterSize: 4, host: '127.0.0.1' }, silentLogger, wallClock);
    await controller.start(admin);
    const base = `http://127.0.0.1:${await admin.start()}`;
    const noIngress = await fetch(`${base}/flows`);
    assert.equal(noIngress.status, 400);
    assert.match(((await noIngress.json()) as { error: string }).error, /no ingress/);
    const flows = [
      { flow: 'udp 10.0.0.1:5000 198.51.100.10:80', owner: 'nf-0', packets: 12 },
      { flow: 'udp 10.0.0.2:5000 198.51.100.10:80', owner: 'nf-1', packets: 3 },
      { flow: 'tcp 10.0.0.3:4000 198.51.100.10:80', owner: 'nf-0', packets: 40 },
    ];
    const nf = await fakeAdmin({});
    const ingress = await fakeAdmin({
      '/flows': (_, q) => [
        200,
        { flows: flows.filter((f) => !q.has('owner') || f.owner === q.get('owner')) },
      ],
    });
    for (const id of ['nf-0', 'nf-1']) await register(base, id, nf.port);
    await fetch(`${base}/ingress`, {
      method: 'POST',
      body: JSON.stringify({ host: '127.0.0.1', admin: ingress.port }),
    });
    const all = (await (await fetch(`${base}/flows`)).json()) as { flows: unknown[] };
    assert.deepEqual(all.flows, flows);
    const one = (await (await fetch(`${base}/flows?owner=nf-0`)).json()) as { flows: { flow: string }[] };
    assert.deepEqual(
      one.flows.map((f) => f.flow),
      [flows[0]!.flow, flows[2]!.flow],
    );
    const unknown = await fetch(`${base}/flows?owner=nf-9`);
    assert.equal(unknown.status, 400);
    assert.match(((await unknown.json()) as { error: string }).error, /flows\.owner: no instance "nf-9"/);
    controller.stop();
    await admin.stop();
    await Promise.all([nf.close(), ingress.close()]);
  });
});

/** The move half of a journal: records what begins and ends. */
function openMoves(): {
  begun: OpenMove[];
  ended: string[];
  beginMove(m: OpenMove): Promise<void>;
  endMove(id: string): Promise<void>;
} {
  const begun: OpenMove[] = [];
  const ended: string[] = [];
  return {
    begun,
    ended,
    beginMove: (m) => Promise.resolve(void begun.push(m)),
    endMove: (id) => Promise.resolve(void ended.push(id)),
  };
}

describe('Controller: failover', { timeout: 120_000 }, () => {
  it('fences a failed instance at its successor first, then at the egress from the switch’s stamp clock, then has it taken over', async () => {
    // An instance declared failed may still be working (a false alarm): until it learns it is fenced it goes
    // on emitting and replicating. The successor must refuse its records before the egress starts dropping
    // its output, or a record would cover packets whose output was dropped, and nobody would replay them.
    const flow = 'udp 10.0.0.1:1000 198.51.100.10:80';
    const order: string[] = [];
    const logged =
      (who: string, reply: unknown = { ok: true }) =>
      (body: unknown, query: URLSearchParams): [number, unknown] => {
        const q = query.toString();
        order.push(`${who} ${q === '' ? '' : `?${q} `}${JSON.stringify(body ?? null)}`);
        return [200, typeof reply === 'function' ? (reply as (b: unknown) => unknown)(body) : reply];
      };
    const ingress = await fakeAdmin({
      '/live': logged('ingress /live'),
      '/flows': logged('ingress /flows', {
        flows: [{ flow, owner: 'nf-0', packets: 5 }],
        stamp_ms: 1234.5,
      }),
      '/rules': logged('ingress /rules', (b: unknown) => ({
        installed: (b as { rules: unknown[] }).rules.map(() => true),
      })),
    });
    const egress = await fakeAdmin({ '/fence': logged('egress /fence') });
    const successor = await fakeAdmin({
      '/takeover/fence': logged('nf-1 /takeover/fence'),
      '/takeover': logged('nf-1 /takeover', { flows: 1, with_state: 1, replayed: 2, gaps: 0, ms: 1 }),
    });
    const failed = await fakeAdmin({});
    const admin = new AdminServer({ host: '127.0.0.1', port: 0, registry: new MetricsRegistry() });
    const c = new Controller(
      {
        clusterSize: 2,
        host: '127.0.0.1',
        egress: { host: '127.0.0.1', admin: egress.port },
        // Declared by the operator only: no heartbeat comes in this test.
        failure: { heartbeatMs: 50, missCount: 1000, probeMs: 0 },
        restore: twoInOneCluster(failed.port, successor.port, ingress.port),
      },
      silentLogger,
      wallClock,
    );
    await c.start(admin);
    const port = await admin.start();
    const api = (path: string, body?: unknown): Promise<Record<string, unknown>> =>
      adminCall('127.0.0.1', port, path, body);
    try {
      await assert.rejects(api('/fail', { id: 'nf-9' }), /fail\.id: no live instance "nf-9"/);
      await api('/fail', { id: 'nf-0' });
      for (let i = 0; i < 200 && ((await api('/failovers')) as unknown as unknown[]).length === 0; i++)
        await new Promise((r) => setTimeout(r, 10));
      const [record] = (await api('/failovers')) as unknown as FailoverRecord[];
      assert.equal(record?.error, undefined, JSON.stringify(record));
      assert.equal(record?.successor, 'nf-1');
      assert.deepEqual(order.slice(0, 5), [
        'nf-1 /takeover/fence {"origin":"nf-0"}',
        'ingress /live {"instances":["nf-1"]}',
        'ingress /flows ?owner=nf-0 null',
        'egress /fence {"emitter":1,"since_ms":1234.5}',
        `nf-1 /takeover {"origin":"nf-0","flows":["${flow}"]}`,
      ]);
      assert.ok(order[5]?.startsWith('ingress /rules {"rules":[{"flow"'), 'then the re-point');
      // The record times each of those steps, in their order.
      assert.deepEqual(Object.keys(record.steps_ms ?? {}), [
        'fenced',
        'listed',
        'egress',
        'takeover',
        'repointed',
      ]);
      assert.ok(Object.values(record.steps_ms ?? {}).every((ms) => ms >= 0));
      assert.deepEqual(
        ((await api('/failures')) as unknown as { id: string; how: string }[]).map((f) => [f.id, f.how]),
        [['nf-0', 'operator']],
      );
    } finally {
      c.stop();
      await admin.stop();
      await Promise.all([ingress.close(), egress.close(), successor.close(), failed.close()]);
    }
  });
});

interface LogLine {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}

/** A logger that keeps every line. */
function recordingLogger(): Logger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at =
    (level: string) =>
    (msg: string, fields: Record<string, unknown> = {}): void =>
      void lines.push({ level, msg, fields });
  return { lines, info: at('info'), warn: at('warn'), error: at('error') };
}

async function until(what: string, done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(done(), `timed out waiting until ${what}`);
}

describe(
  'Controller: a failover’s reconfiguration is retried, logged and counted',
  { timeout: 120_000 },
  () => {
    /**
     * nf-0 (of nf-0 and nf-1, one cluster) is declared failed and fails over to nf-1, whose admin API and the
     * ingress's answer with `successor` and `ingress` besides what a failover needs.
     */
    async function failover(
      successorReplies: Parameters<typeof fakeAdmin>[0],
      ingressReplies: Parameters<typeof fakeAdmin>[0],
      check: (t: {
        c: Controller;
        log: LogLine[];
        metric: (name: string, step: string) => number;
        successor: FakeAdmin;
        ingress: FakeAdmin;
      }) => Promise<void>,
    ): Promise<void> {
      const ingress = await fakeAdmin({
        '/flows': () => [200, { flows: [], stamp_ms: 1 }],
        ...ingressReplies,
      });
      const successor = await fakeAdmin({
        '/takeover': () => [200, { flows: 0, with_state: 0, replayed: 0, gaps: 0, ms: 1 }],
        ...successorReplies,
      });
      const failed = await fakeAdmin({});
      const registry = new MetricsRegistry();
      const admin = new AdminServer({ host: '127.0.0.1', port: 0, registry });
      const logger = recordingLogger();
      const c = new Controller(
        {
          clusterSize: 2,
          host: '127.0.0.1',
          failure: { heartbeatMs: 50, missCount: 1000, probeMs: 0 },
          restore: twoInOneCluster(failed.port, successor.port, ingress.port),
        },
        logger,
        wallClock,
      );
      await c.start(admin);
      try {
        assert.ok(c.detector.fail('nf-0'));
        await until('nf-0 is failed over', () => c.failovers.length === 1);
        await check({
          c,
          log: logger.lines,
          metric: (name, step) => metricSum(registry.render(), name, `step="${step}"`),
          successor,
          ingress,
        });
      } finally {
        c.stop();
        await Promise.all([ingress.close(), successor.close(), failed.close()]);
      }
    }

    it('a cluster configuration that fails once is logged, counted, and done again', async () => {
      let clusterCalls = 0;
      await failover(
        { '/cluster': () => (++clusterCalls === 1 ? [500, { error: 'not now' }] : [200, { ok: true }]) },
        {},
        async ({ c, log, metric, successor }) => {
          await until('the retry succeeded', () => log.some((l) => l.msg === 'reconfigured after a retry'));
          const warned = log.find((l) => l.level === 'warn' && l.msg.startsWith('reconfiguration failed'));
          assert.deepEqual(
            { ...warned?.fields, error: undefined },
            { step: 'configure', id: 'nf-0', cluster: 'c0', try: 1, error: undefined },
          );
          assert.match(String(warned?.fields.error), /not now/);
          // The try that failed, then both rounds of the one that did not: nf-1 is alone in its cluster now.
          const pushes = successor.calls.filter((x) => x.path === '/cluster').map((x) => x.body as Push);
          assert.equal(pushes.length, 3);
          assert.deepEqual(pushes.at(-1)?.members, ['nf-1']);
          assert.deepEqual(pushes.at(-1)?.peers, []);
          assert.equal(metric('nfstate_controller_reconfigure_failures_total', 'configure'), 1);
          assert.equal(metric('nfstate_controller_reconfigure_abandoned_total', 'configure'), 0);
          assert.equal(c.failovers[0]?.reconfigure_error, undefined);
          assert.ok(!log.some((l) => l.msg.startsWith('reconfiguration given up')), JSON.stringify(log));
        },
      );
    });

    it('secondaries the ingress never takes are sent at each try, then given up on, and the record says so', async () => {
      await failover(
        {},
        { '/secondaries': () => [500, { error: 'ingress refuses' }] },
        async ({ c, log, metric, ingress }) => {
          await until('the record says so', () => c.failovers[0]?.reconfigure_error !== undefined);
          assert.match(c.failovers[0]!.reconfigure_error!, /^secondaries: .*ingress refuses/);
          // Each try sends them again: a failed push must not leave them marked as told.
          const sent = ingress.calls.filter((x) => x.path === '/secondaries');
          assert.equal(sent.length, 4);
          for (const s of sent) assert.deepEqual(s.body, { secondaries: { 'nf-1': null } });
          assert.equal(metric('nfstate_controller_reconfigure_failures_total', 'secondaries'), 4);
          assert.equal(metric('nfstate_controller_reconfigure_abandoned_total', 'secondaries'), 1);
          assert.equal(metric('nfstate_controller_reconfigure_failures_total', 'configure'), 0);
          const gaveUp = log.filter(
            (l) => l.level === 'error' && l.msg.startsWith('reconfiguration given up'),
          );
          assert.deepEqual(
            gaveUp.map((l) => [l.fields.id, l.fields.step]),
            [['nf-0', 'secondaries']],
          );
          assert.equal(log.filter((l) => l.msg.startsWith('reconfiguration failed')).length, 3);
        },
      );
    });
  },
);

/**
 * What a previous leader saved of a deployment of two instances, nf-0 and nf-1 (fencing tokens 1 and 2), in
 * one cluster, with the admin ports given, and the moves it left open.
 */
function twoInOneCluster(nf0: number, nf1: number, ingress: number, moves: OpenMove[] = []): Restored {
  const instance = (id: string, admin: number, emitter: number): Restored['instances'][number] => ({
    id,
    host: '127.0.0.1',
    port: 1000 + emitter,
    workers: [],
    replication: 2000 + emitter,
    admin,
    token: `t${emitter}`,
    emitter,
    live: true,
  });
  return {
    version: 1,
    instances: [instance('nf-0', nf0, 1), instance('nf-1', nf1, 2)],
    clusters: [
      {
        id: 'c0',
        members: [
          { id: 'nf-0', host: '127.0.0.1' },
          { id: 'nf-1', host: '127.0.0.1' },
        ],
      },
    ],
    ingress: { host: '127.0.0.1', admin: ingress },
    failed: [],
    emitters: 2,
    epochCeiling: 1 << 16,
    configCeiling: 5000,
    moves,
  };
}

describe('Controller: a standby carries on from the journal', { timeout: 120_000 }, () => {
  it('settles a move the old leader left open: a re-pointed flow is handed over, any other goes back to its source, pinned there', async () => {
    const [movedFlow, backFlow] = [
      'udp 10.0.0.1:1000 198.51.100.10:80',
      'udp 10.0.0.2:1000 198.51.100.10:80',
    ];
    const ingress = await fakeAdmin({
      '/owner': (body) => [
        200,
        { owners: (body as { flows: string[] }).flows.map((f) => (f === movedFlow ? 'nf-1' : 'nf-0')) },
      ],
      '/rules': (body) => [200, { installed: (body as { rules: unknown[] }).rules.map(() => true) }],
    });
    const src = await fakeAdmin({ '/move/finish': () => [200, { parked: [3] }] });
    const dst = await fakeAdmin({});
    const journal = { ...openMoves(), save: () => Promise.resolve() };
    const admin = new AdminServer({ host: '127.0.0.1', port: 0, registry: new MetricsRegistry() });
    const c = new Controller(
      {
        clusterSize: 2,
        host: '127.0.0.1',
        journal,
        restore: twoInOneCluster(src.port, dst.port, ingress.port, [
          { id: 'm1', src: 'nf-0', dst: 'nf-1', flows: [movedFlow, backFlow] },
        ]),
      },
      silentLogger,
      wallClock,
    );
    await c.start(admin);
    try {
      for (let i = 0; i < 200 && journal.ended.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(journal.ended, ['m1'], 'the move is closed in the journal once settled');
      assert.deepEqual(
        src.calls.map((x) => [x.path, x.body]),
        [
          ['/move/finish', { flows: [movedFlow], wait_ms: 2000 }],
          ['/move/abort', { flows: [backFlow], side: 'source' }],
        ],
      );
      assert.deepEqual(
        dst.calls.map((x) => [x.path, x.body]),
        [['/move/abort', { flows: [backFlow], side: 'destination' }]],
      );
      const rules = ingress.calls.find((x) => x.path === '/rules')!.body as {
        rules: { flow: string; primary: string; epoch: number }[];
      };
      assert.deepEqual(
        rules.rules.map((r) => [r.flow, r.primary]),
        [[backFlow, 'nf-0']],
      );
      assert.ok(rules.rules[0]!.epoch > 1 << 16, 'above every epoch the old leader may have used');
    } finally {
      c.stop();
      await admin.stop();
      await Promise.all([ingress.close(), src.close(), dst.close()]);
    }
  });

  it('saves the registry at each registration; a new controller restores it, fences the failed, and numbers rules above the old ceiling', async () => {
    const saved: ControllerSnapshot[] = [];
    const journal = {
      ...openMoves(),
      save: (s: ControllerSnapshot) => Promise.resolve(void saved.push(structuredClone(s))),
    };
    const fakes = [await fakeInstance(), await fakeInstance(), await fakeInstance()];
    const adminA = new AdminServer({ host: '127.0.0.1', port: 0, registry: new MetricsRegistry() });
    const a = new Controller({ clusterSize: 2, host: '127.0.0.1', journal }, silentLogger, wallClock);
    await a.start(adminA);
    const baseA = `http://127.0.0.1:${await adminA.start()}`;
    const tokens: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${baseA}/register`, {
        method: 'POST',
        body: JSON.stringify({
          id: `nf-${i}`,
          host: '127.0.0.1',
          port: 1000 + i,
          replication: 2000 + i,
          admin: fakes[i]!.port,
        }),
      });
      tokens.push(((await res.json()) as { token: string }).token);
    }
    assert.equal(saved.length, 3, 'one save per registration, before its answer');
    const last = saved.at(-1)!;
    assert.deepEqual(
      last.instances.map((i) => [i.id, i.token, i.emitter]),
      [0, 1, 2].map((i) => [`nf-${i}`, tokens[i], i + 1]),
    );
    a.stop();
    await adminA.stop();

    // nf-2 was declared failed just before the leader died.
    const before = {
      ...last,
      failed: ['nf-2'],
      instances: last.instances.filter((i) => i.id !== 'nf-2'),
      moves: [],
    };
    const adminB = new AdminServer({ host: '127.0.0.1', port: 0, registry: new MetricsRegistry() });
    const b = new Controller(
      { clusterSize: 2, host: '127.0.0.1', journal, restore: before },
      silentLogger,
      wallClock,
    );
    await b.start(adminB);
    const baseB = `http://127.0.0.1:${await adminB.start()}`;
    try {
      const clusters = (await (await fetch(`${baseB}/clusters`)).json()) as {
        id: string;
        members: string[];
      }[];
      // nf-2 was failed: it is in no cluster here, though the snapshot still listed it in c1.
      assert.deepEqual(clusters, [{ id: 'c0', members: ['nf-0', 'nf-1'] }]);
      const listed = (await (await fetch(`${baseB}/instances`)).json()) as {
        id: string;
        secondary: string | null;
      }[];
      assert.deepEqual(
        listed.map((i) => [i.id, i.secondary]),
        [
          ['nf-0', 'nf-1'],
          ['nf-1', 'nf-0'],
        ],
      );
      assert.ok(b.detector.isFailed('nf-2'), 'still fenced');
      const refused = await fetch(`${baseB}/register`, {
        method: 'POST',
        body: JSON.stringify({
          id: 'nf-2',
          host: '127.0.0.1',
          port: 1002,
          replication: 2002,
          admin: fakes[2]!.port,
        }),
      });
      assert.equal(refused.status, 400, 'a failed instance cannot come back under its id');
      // The members keep the newest configuration they got: the new leader's must be newer than any of
      // the old one's, or a newcomer would never be given its mates.
      const oldVersions = fakes.flatMap((f) => f.pushes.map((p) => p.version));
      const newcomer = await fakeInstance();
      fakes.push(newcomer);
      const joined = await fetch(`${baseB}/register`, {
        method: 'POST',
        body: JSON.stringify({
          id: 'nf-3',
          host: '127.0.0.1',
          port: 1003,
          replication: 2003,
          admin: newcomer.port,
        }),
      });
      assert.equal(joined.status, 200, await joined.clone().text());
      assert.ok(newcomer.pushes.length > 0);
      assert.ok(newcomer.pushes.every((p) => p.version > Math.max(...oldVersions)));
      const next = b.snapshot();
      assert.equal(next.emitters, 4, 'fencing tokens go on from where they were: nf-3 got the fourth');
      assert.ok(
        next.epochCeiling > last.epochCeiling,
        'rule epochs start above anything the old leader used',
      );
      assert.equal(saved.at(-1)!.epochCeiling, next.epochCeiling, 'and that is saved at once');
      assert.ok(next.configCeiling > last.configCeiling, 'configuration versions too');
    } finally {
      b.stop();
      await adminB.stop();
      for (const f of fakes) f.server.close();
    }
  });
});
