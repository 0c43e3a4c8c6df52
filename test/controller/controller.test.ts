import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { wallClock } from '../../src/clock.js';
import { Controller } from '../../src/controller/controller.js';
import { silentLogger } from '../../src/log.js';
import { AdminServer, MetricsRegistry } from '../../src/metrics.js';

interface Push {
  version: number;
  cluster: string;
  members: string[];
  peers: { id: string; port: number }[];
}

/** Stands in for an instance's admin port: records the cluster configurations pushed to it. */
async function fakeInstance(): Promise<{ server: http.Server; port: number; pushes: Push[] }> {
  const pushes: Push[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      pushes.push(JSON.parse(body) as Push);
      res.end('{"ok":true}');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, pushes };
}

describe('Controller', () => {
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

  it('forms clusters of k as instances register, and tells each member its peers', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await register(i);
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { report: number }).report, reportPort);
    }
    const clusters = (await (await fetch(`${base}/clusters`)).json()) as { id: string; members: string[] }[];
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

  it('keeps the latest load report of each instance and counts bad ones', async () => {
    const s = dgram.createSocket('udp4');
    const send = (m: string): void => {
      s.send(m, reportPort, '127.0.0.1');
    };
    send(JSON.stringify({ id: 'nf-1', received: 10, processed: 9, flows: 3, busy: 0.25 }));
    send('not json');
    send(JSON.stringify({ id: 'nf-9', received: 1, processed: 1, flows: 1, busy: 0 }));
    send(JSON.stringify({ id: 'nf-1', received: -1, processed: 1, flows: 1, busy: 0 }));
    for (let i = 0; i < 100 && controller.reports + controller.badReports < 4; i++)
      await new Promise((r) => setTimeout(r, 10));
    s.close();
    assert.equal(controller.reports, 1);
    assert.equal(controller.badReports, 3);
    const instances = (await (await fetch(`${base}/instances`)).json()) as { id: string; load: unknown }[];
    assert.deepEqual(instances.find((i) => i.id === 'nf-1')?.load, {
      received: 10,
      processed: 9,
      flows: 3,
      busy: 0.25,
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

describe('Controller moves', () => {
  /** An instance or ingress admin API that answers each path with a canned reply and records the calls. */
  async function fake(replies: Record<string, (body: unknown) => [number, unknown]>) {
    const calls: { path: string; body: unknown }[] = [];
    const server = http.createServer((req, res) => {
      let text = '';
      req.on('data', (c: Buffer) => (text += c.toString()));
      req.on('end', () => {
        const path = (req.url ?? '').split('?')[0]!;
        const body = text === '' ? undefined : (JSON.parse(text) as unknown);
        calls.push({ path, body });
        const [status, reply] = replies[path]?.(body) ?? [200, { ok: true }];
        res.statusCode = status;
        res.end(JSON.stringify(reply));
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return { server, port: (server.address() as AddressInfo).port, calls };
  }

  it('undoes both sides when the destination fails after the source froze the flow', async () => {
    const admin = new AdminServer({ host: '127.0.0.1', port: 0, registry: new MetricsRegistry() });
    const controller = new Controller({ clusterSize: 4, host: '127.0.0.1' }, silentLogger, wallClock);
    await controller.start(admin);
    const base = `http://127.0.0.1:${await admin.start()}`;
    const src = await fake({
      '/move/freeze': () => [200, { version: 3, expected: 91, last_delta_bytes: 24, full_bytes: 41 }],
    });
    // The destination accepts the flow, then dies (here: fails) before it can take the state.
    const dst = await fake({ '/move/install': () => [500, { error: 'gone' }] });
    const ingress = await fake({ '/owner': () => [200, { owner: 'nf-0' }] });
    for (const [i, f] of [src, dst].entries()) {
      const res = await fetch(`${base}/register`, {
        method: 'POST',
        body: JSON.stringify({ id: `nf-${i}`, host: '127.0.0.1', port: 1, replication: 2, admin: f.port }),
      });
      assert.equal(res.status, 200);
    }
    await fetch(`${base}/ingress`, {
      method: 'POST',
      body: JSON.stringify({ host: '127.0.0.1', admin: ingress.port }),
    });
    const flow = 'udp 10.0.0.1:5000 198.51.100.10:80';
    const res = await fetch(`${base}/move`, { method: 'POST', body: JSON.stringify({ flow, to: 'nf-1' }) });
    const record = (await res.json()) as { aborted: boolean; from: string; to: string };
    assert.equal(record.aborted, true);
    assert.deepEqual(
      src.calls.map((c) => c.path).filter((p) => p.startsWith('/move')),
      ['/move/freeze', '/move/state', '/move/abort'],
      'the source resumes the flow',
    );
    assert.ok(dst.calls.some((c) => c.path === '/move/abort'));
    assert.ok(!ingress.calls.some((c) => c.path === '/rules'), 'the switch never changed');
    controller.stop();
    await admin.stop();
    for (const f of [src, dst, ingress]) f.server.close();
  });
});
