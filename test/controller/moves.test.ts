import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { wallClock } from '../../src/clock.js';
import type { MoveRecord } from '../../src/controller/controller.js';
import { Controller } from '../../src/controller/controller.js';
import { silentLogger } from '../../src/log.js';
import { AdminServer } from '../../src/admin-server.js';
import { MetricsRegistry } from '../../src/metrics.js';
import type { FakeAdmin, FakeReply } from '../helpers/admin.js';
import { fakeAdmin, HANG } from '../helpers/admin.js';
import { until } from '../helpers/poll.js';

type Replies = Record<string, (body: unknown) => FakeReply | Promise<FakeReply>>;
interface Body {
  flows: string[];
  rules: { flow: string; primary: string }[];
}
const list = (b: unknown): string[] => (b as Body).flows;

/** An NF instance that goes along with every step of a move, each answer per flow. */
function willing(overrides: Replies = {}): Replies {
  return {
    '/move/freeze': (b) => [
      200,
      { flows: list(b).map(() => ({ version: 1, expected: 10, last_delta_bytes: 5, full_bytes: 50 })) },
    ],
    '/move/install': (b) => [200, { ok: list(b).map(() => true) }],
    '/move/commit': (b) => [200, { ok: list(b).map(() => true) }],
    '/move/finish': (b) => [200, { parked: list(b).map(() => 2) }],
    ...overrides,
  };
}

const flow = (i: number): string => `udp 10.0.0.${i + 1}:5000 198.51.100.10:80`;

/**
 * A controller with three fake instances (nf-0 and nf-1 own flows, nf-2 is where they go, all in one cluster)
 * and a fake ingress; `owners` says which instance owns each flow.
 */
async function setup(opts: {
  moveTimeoutMs?: number;
  src?: Replies;
  dst?: Replies;
  ingress?: Replies;
  owners: Record<string, string>;
}) {
  const admin = new AdminServer({ host: '127.0.0.1', port: 0, registry: new MetricsRegistry() });
  const controller = new Controller(
    {
      clusterSize: 4,
      host: '127.0.0.1',
      ...(opts.moveTimeoutMs === undefined ? {} : { moveTimeoutMs: opts.moveTimeoutMs }),
    },
    silentLogger,
    wallClock,
  );
  await controller.start(admin);
  const base = `http://127.0.0.1:${await admin.start()}`;
  const nf = [
    await fakeAdmin(willing(opts.src)),
    await fakeAdmin(willing(opts.src)),
    await fakeAdmin(willing(opts.dst)),
  ];
  const ingress = await fakeAdmin({
    '/owner': (b) => [200, { owners: list(b).map((f) => opts.owners[f] ?? null) }],
    '/rules': (b) => [200, { installed: (b as Body).rules.map(() => true) }],
    ...opts.ingress,
  });
  for (const [i, f] of nf.entries()) {
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
  const move = async (body: unknown): Promise<{ status: number; json: unknown }> => {
    const res = await fetch(`${base}/move`, { method: 'POST', body: JSON.stringify(body) });
    return { status: res.status, json: await res.json() };
  };
  const close = async (): Promise<void> => {
    controller.stop();
    await admin.stop();
    for (const f of [...nf, ingress]) await f.close();
  };
  return { nf, ingress, move, close };
}

const paths = (f: FakeAdmin, prefix = '/move'): string[] =>
  f.calls.map((c) => c.path).filter((p) => p.startsWith(prefix));

describe('Controller: batched moves', { timeout: 60_000 }, () => {
  it('makes one exchange per source, each step carrying its list, and answers one record per flow', async (t) => {
    const owners = { [flow(0)]: 'nf-0', [flow(1)]: 'nf-1', [flow(2)]: 'nf-0' };
    const d = await setup({ owners });
    const { status, json } = await d.move({
      flows: [flow(0), flow(1), flow(2)],
      to: 'nf-2',
      guarantee: 'loss-free',
    });
    t.after(() => d.close());
    assert.equal(status, 200);
    const records = json as MoveRecord[];
    assert.deepEqual(
      records.map((r) => [
        r.flow,
        r.from,
        r.group,
        r.aborted,
        r.guarantee,
        r.intra,
        r.state_bytes,
        r.buffered,
      ]),
      [
        [flow(0), 'nf-0', 2, false, 'loss-free', true, 5, 2],
        [flow(1), 'nf-1', 1, false, 'loss-free', true, 5, 2],
        [flow(2), 'nf-0', 2, false, 'loss-free', true, 5, 2],
      ],
    );
    const [nf0, nf1, nf2] = d.nf as [FakeAdmin, FakeAdmin, FakeAdmin];
    assert.deepEqual(paths(nf0), ['/move/freeze', '/move/commit', '/move/finish']);
    assert.deepEqual(list(nf0.calls.find((c) => c.path === '/move/freeze')!.body), [flow(0), flow(2)]);
    assert.deepEqual(paths(nf1), ['/move/freeze', '/move/commit', '/move/finish']);
    assert.deepEqual(paths(nf2).sort(), ['/move/expect', '/move/expect', '/move/install', '/move/install']);
    assert.ok(
      nf2.calls.every(
        (c) => c.path !== '/move/expect' || (c.body as { guarantee: string }).guarantee === 'loss-free',
      ),
    );
    const rules = d.ingress.calls.filter((c) => c.path === '/rules').map((c) => (c.body as Body).rules);
    assert.equal(rules.length, 2, 'one switch update per source');
    assert.deepEqual(rules.map((r) => r.map((x) => x.flow)).sort(), [[flow(0), flow(2)], [flow(1)]]);
    assert.equal(d.ingress.calls.filter((c) => c.path === '/owner').length, 1, 'owners asked once');
    // Each record says where its exchange's time went, step by step.
    for (const r of records)
      assert.deepEqual(Object.keys(r.steps_ms ?? {}), ['frozen', 'installed', 'repointed', 'handed_over']);
  });

  it('refuses a flow already moving, already there, or without an owner on its own, never the whole batch', async (t) => {
    let release = (): void => undefined;
    const gate = new Promise<void>((r) => (release = r));
    const owners = { [flow(0)]: 'nf-0', [flow(1)]: 'nf-0', [flow(2)]: 'nf-2' };
    const d = await setup({
      owners,
      src: {
        '/move/finish': async (b) => {
          if (list(b).includes(flow(0))) await gate;
          return [200, { parked: list(b).map(() => 0) }];
        },
      },
    });
    t.after(() => d.close());
    const first = d.move({ flow: flow(0), to: 'nf-2' });
    await until(() => paths(d.nf[0]!).includes('/move/finish'));
    const { json } = await d.move({ flows: [flow(0), flow(1), flow(2), flow(9)], to: 'nf-2' });
    release();
    const records = json as MoveRecord[];
    assert.deepEqual(
      records.map((r) => [r.flow, r.aborted, r.refused ?? false]),
      [
        [flow(0), true, true],
        [flow(1), false, false],
        [flow(2), true, true],
        [flow(9), true, true],
      ],
    );
    assert.match(records[0]!.error!, /already moving/);
    assert.match(records[2]!.error!, /already on nf-2/);
    assert.match(records[3]!.error!, /no known owner/);
    assert.equal(((await first).json as MoveRecord).aborted, false);
  });

  it('rejects a malformed batch with a clear error', async (t) => {
    const d = await setup({ owners: {} });
    t.after(() => d.close());
    for (const [body, field] of [
      [{ flows: 'x', to: 'nf-2' }, 'move.flows'],
      [{ flows: [], to: 'nf-2' }, 'move.flows'],
      [{ flows: [flow(0)], to: 'nf-2', guarantee: 'sometimes' }, 'move.guarantee'],
      [{ flows: [flow(0)], to: 'nf-7' }, 'move.to'],
      [{ flows: ['not a flow'], to: 'nf-2' }, ''],
    ] as const) {
      const { status, json } = await d.move(body);
      assert.equal(status, 400, JSON.stringify(body));
      assert.ok((json as { error: string }).error.includes(field), (json as { error: string }).error);
    }
  });
});

describe('Controller: bounded moves', { timeout: 60_000 }, () => {
  it('a destination that does not answer: the move aborts at its deadline, and the source resumes', async (t) => {
    const d = await setup({
      owners: { [flow(0)]: 'nf-0' },
      moveTimeoutMs: 200,
      dst: { '/move/expect': () => HANG },
    });
    t.after(() => d.close());
    const { json } = await d.move({ flow: flow(0), to: 'nf-2' });
    const r = json as MoveRecord;
    assert.equal(r.aborted, true);
    assert.equal(r.code, 'NFS_ERR_TIMEOUT');
    assert.deepEqual(paths(d.nf[0]!), ['/move/freeze', '/move/abort'], 'the source resumes the flow');
    assert.deepEqual(Object.keys(r.steps_ms ?? {}), ['frozen'], 'only the steps it reached');
    await until(() => paths(d.nf[2]!).includes('/move/abort'));
    assert.ok(paths(d.nf[2]!).includes('/move/abort'), 'the destination is told to forget');
    assert.ok(!d.ingress.calls.some((c) => c.path === '/rules'));
  });

  it('a destination that fails after the source froze the flow: both sides are undone, the switch untouched', async (t) => {
    const d = await setup({
      owners: { [flow(0)]: 'nf-0' },
      dst: { '/move/install': () => [500, { error: 'gone' }] },
    });
    t.after(() => d.close());
    const { json } = await d.move({ flow: flow(0), to: 'nf-2' });
    assert.equal((json as MoveRecord).aborted, true);
    assert.deepEqual(
      paths(d.nf[0]!),
      ['/move/freeze', '/move/commit', '/move/abort'],
      'the source resumes the flow',
    );
    await until(() => paths(d.nf[2]!).includes('/move/abort'));
    assert.ok(!d.ingress.calls.some((c) => c.path === '/rules'), 'the switch never changed');
  });

  it('a source that froze but does not answer is told to resume', async (t) => {
    const d = await setup({
      owners: { [flow(0)]: 'nf-0' },
      moveTimeoutMs: 200,
      src: { '/move/freeze': () => HANG },
    });
    t.after(() => d.close());
    const { json } = await d.move({ flow: flow(0), to: 'nf-2' });
    assert.equal((json as MoveRecord).code, 'NFS_ERR_TIMEOUT');
    const abort = d.nf[0]!.calls.find((c) => c.path === '/move/abort');
    assert.deepEqual(abort?.body, { flows: [flow(0)], side: 'source' });
    assert.ok(!d.ingress.calls.some((c) => c.path === '/rules'));
  });

  it('a flow whose source took it back (parked packets at the bound) aborts alone', async (t) => {
    const owners = { [flow(0)]: 'nf-0', [flow(1)]: 'nf-0' };
    const d = await setup({
      owners,
      src: { '/move/commit': (b) => [200, { ok: list(b).map((f) => f !== flow(0)) }] },
    });
    t.after(() => d.close());
    const { json } = await d.move({ flows: [flow(0), flow(1)], to: 'nf-2' });
    const records = json as MoveRecord[];
    assert.deepEqual(
      records.map((r) => r.aborted),
      [true, false],
    );
    assert.match(records[0]!.error!, /took it back/);
    const rules = d.ingress.calls.find((c) => c.path === '/rules')!.body as Body;
    assert.deepEqual(
      rules.rules.map((r) => r.flow),
      [flow(1)],
    );
    assert.deepEqual(d.nf[0]!.calls.find((c) => c.path === '/move/abort')?.body, {
      flows: [flow(0)],
      side: 'source',
    });
    assert.deepEqual(list(d.nf[0]!.calls.find((c) => c.path === '/move/finish')!.body), [flow(1)]);
  });

  it('a re-point whose answer is late is asked again, never given up on: the switch may still apply it', async (t) => {
    let asked = 0;
    const d = await setup({
      owners: { [flow(0)]: 'nf-0' },
      moveTimeoutMs: 200,
      ingress: {
        '/rules': (b) => (asked++ === 0 ? HANG : [200, { installed: (b as Body).rules.map(() => true) }]),
      },
    });
    t.after(() => d.close());
    const { json } = await d.move({ flow: flow(0), to: 'nf-2' });
    assert.equal((json as MoveRecord).aborted, false);
    const rules = d.ingress.calls.filter((c) => c.path === '/rules').map((c) => c.body);
    assert.equal(rules.length, 2);
    assert.deepEqual(rules[0], rules[1], 'the same request, same epoch');
    assert.ok(paths(d.nf[0]!).includes('/move/finish'));
    assert.ok(!paths(d.nf[0]!).includes('/move/abort'));
  });
});
