import assert from 'node:assert/strict';
import { request } from 'node:http';
import { test } from 'node:test';
import { ErrorCode, NfsError } from '../src/errors.js';
import { AdminServer, MAX_BODY_BYTES } from '../src/admin-server.js';
import { Histogram, MetricsRegistry, escapeHelp, escapeLabelValue } from '../src/metrics.js';
import { adminCall } from '../src/admin-call.js';
import type { MetricSample, MetricSource } from '../src/types.js';

function source(samples: MetricSample[]): MetricSource {
  return { collect: (out) => out.push(...samples) };
}

void test(
  'render groups by name with the HELP and TYPE of the catalog, sorted; names it lacks: counters by _total, no HELP',
  { timeout: 60_000 },
  () => {
    const reg = new MetricsRegistry();
    reg.add(source([['nfstate_switch_packets_total', { dir: 'out' }, 2]]));
    reg.add(
      source([
        ['nfstate_switch_packets_total', { dir: 'in' }, 5],
        ['nfstate_nf_flows', {}, 12],
      ]),
    );
    assert.equal(
      reg.render(),
      [
        '# HELP nfstate_metrics_collect_errors_total Scrapes in which a metric source failed (its series were left out).',
        '# TYPE nfstate_metrics_collect_errors_total counter',
        'nfstate_metrics_collect_errors_total 0',
        '# HELP nfstate_nf_flows Flows an instance owns.',
        '# TYPE nfstate_nf_flows gauge',
        'nfstate_nf_flows 12',
        '# TYPE nfstate_switch_packets_total counter',
        'nfstate_switch_packets_total{dir="in"} 5',
        'nfstate_switch_packets_total{dir="out"} 2',
        '',
      ].join('\n'),
    );
  },
);

void test('output does not depend on source or label order', { timeout: 60_000 }, () => {
  const a = source([['m_total', { b: '2', a: '1' }, 1]]);
  const b = source([['g', { x: 'y' }, 3]]);
  const r1 = new MetricsRegistry();
  r1.add(a);
  r1.add(b);
  const r2 = new MetricsRegistry();
  r2.add(b);
  r2.add(source([['m_total', { a: '1', b: '2' }, 1]]));
  assert.equal(r1.render(), r2.render());
  assert.match(r1.render(), /^m_total\{a="1",b="2"\} 1$/m);
});

void test('label values are escaped; special values use the format spelling', { timeout: 60_000 }, () => {
  assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  const reg = new MetricsRegistry();
  reg.add(
    source([
      ['odd', { path: 'C:\\x "y"\n' }, NaN],
      ['inf', {}, Infinity],
      ['ninf', {}, -Infinity],
      ['bad-name.x', { 'bad-label': 'v' }, 1],
    ]),
  );
  const text = reg.render();
  assert.match(text, /^odd\{path="C:\\\\x \\"y\\"\\n"\} NaN$/m);
  assert.match(text, /^inf \+Inf$/m);
  assert.match(text, /^ninf -Inf$/m);
  assert.match(text, /^bad_name_x\{bad_label="v"\} 1$/m);
});

void test('duplicate series are summed; removed sources disappear', { timeout: 60_000 }, () => {
  const reg = new MetricsRegistry();
  const w1 = source([['nfstate_nf_packets_total', { instance: '0' }, 3]]);
  const w2 = source([['nfstate_nf_packets_total', { instance: '0' }, 4]]);
  reg.add(w1);
  reg.add(w2);
  assert.match(reg.render(), /^nfstate_nf_packets_total\{instance="0"\} 7$/m);
  reg.remove(w2);
  assert.match(reg.render(), /^nfstate_nf_packets_total\{instance="0"\} 3$/m);
});

void test(
  'a histogram renders as one metric: cumulative buckets by bound, +Inf, sum and count per label set',
  { timeout: 60_000 },
  () => {
    const a = new Histogram('nfstate_replication_ack_seconds', [0.001, 0.01, 0.1]);
    const b = new Histogram('nfstate_replication_ack_seconds', [0.001, 0.01, 0.1]);
    for (const v of [0.0005, 0.001, 0.005, 0.05, 3]) a.observe(v);
    b.observe(0.02);
    const reg = new MetricsRegistry();
    // Peer nf-2 collected first, and "+Inf" sorts first as text: the order served is by label set, then by bound.
    reg.add({
      collect: (out) => {
        b.collect(out, { peer: 'nf-2' });
        a.collect(out, { peer: 'nf-1' });
      },
    });
    const text = reg.render();
    const family = text.slice(text.indexOf('# HELP nfstate_replication_ack_seconds'));
    assert.equal(
      family.split('\n').slice(0, 14).join('\n'),
      [
        "# HELP nfstate_replication_ack_seconds From sending a batch's records to a peer until it acknowledged them.",
        '# TYPE nfstate_replication_ack_seconds histogram',
        'nfstate_replication_ack_seconds_bucket{le="0.001",peer="nf-1"} 2',
        'nfstate_replication_ack_seconds_bucket{le="0.01",peer="nf-1"} 3',
        'nfstate_replication_ack_seconds_bucket{le="0.1",peer="nf-1"} 4',
        'nfstate_replication_ack_seconds_bucket{le="+Inf",peer="nf-1"} 5',
        'nfstate_replication_ack_seconds_sum{peer="nf-1"} 3.0565',
        'nfstate_replication_ack_seconds_count{peer="nf-1"} 5',
        'nfstate_replication_ack_seconds_bucket{le="0.001",peer="nf-2"} 0',
        'nfstate_replication_ack_seconds_bucket{le="0.01",peer="nf-2"} 0',
        'nfstate_replication_ack_seconds_bucket{le="0.1",peer="nf-2"} 1',
        'nfstate_replication_ack_seconds_bucket{le="+Inf",peer="nf-2"} 1',
        'nfstate_replication_ack_seconds_sum{peer="nf-2"} 0.02',
        'nfstate_replication_ack_seconds_count{peer="nf-2"} 1',
      ].join('\n'),
    );
  },
);

void test('HELP text escapes backslashes and newlines, and nothing else', { timeout: 60_000 }, () => {
  assert.equal(escapeHelp('a\\b "c"\nd'), 'a\\\\b "c"\\nd');
});

void test('a throwing source is skipped and counted, not fatal', { timeout: 60_000 }, () => {
  const reg = new MetricsRegistry();
  reg.add({
    collect(out) {
      out.push(['partial_total', {}, 1]);
      throw new Error('boom');
    },
  });
  reg.add(source([['ok', {}, 1]]));
  const text = reg.render();
  assert.doesNotMatch(text, /partial_total/);
  assert.match(text, /^ok 1$/m);
  assert.match(text, /^nfstate_metrics_collect_errors_total 1$/m);
});

interface Reply {
  status: number;
  type: string | undefined;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

function call(port: number, method: string, path: string, body?: string | Buffer): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        resolve({
          status: res.statusCode ?? 0,
          type: res.headers['content-type'],
          body: Buffer.concat(chunks).toString('utf8'),
          headers: res.headers,
        });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

void test('admin server: metrics, healthz, routes, and error mapping', { timeout: 60_000 }, async () => {
  const reg = new MetricsRegistry();
  reg.add(source([['nfstate_switch_packets_total', {}, 9]]));
  const admin = new AdminServer({ port: 0, registry: reg });
  admin.route('POST', '/echo', (body) => ({ got: body }));
  admin.route('POST', '/async', async (body) => {
    await new Promise((r) => setImmediate(r));
    return { n: (body as { n: number }).n + 1 };
  });
  admin.route('POST', '/nfs-error', () => {
    throw new NfsError(ErrorCode.STATE, 'no such flow');
  });
  admin.route('POST', '/busy', () => {
    throw new NfsError(ErrorCode.STATE, 'flow is moving', { retriable: true });
  });
  admin.route('GET', '/crash', () => {
    throw new Error('bug');
  });
  admin.route('GET', '/query', (q) => q);
  admin.route('GET', '/nothing', () => undefined);

  const port = await admin.start();
  assert.ok(port > 0);
  assert.equal(admin.port, port);
  assert.equal(await admin.start(), port, 'start twice returns the same port');
  try {
    const metrics = await call(port, 'GET', '/metrics');
    assert.equal(metrics.status, 200);
    assert.equal(metrics.type, 'text/plain; version=0.0.4; charset=utf-8');
    assert.match(metrics.body, /^nfstate_switch_packets_total 9$/m);

    const health = await call(port, 'GET', '/healthz');
    assert.deepEqual([health.status, JSON.parse(health.body)], [200, { ok: true }]);

    const echo = await call(port, 'POST', '/echo', JSON.stringify({ a: [1, 2] }));
    assert.equal(echo.type, 'application/json');
    assert.deepEqual(JSON.parse(echo.body), { got: { a: [1, 2] } });
    assert.deepEqual(JSON.parse((await call(port, 'POST', '/echo')).body), {}, 'empty body is undefined');

    assert.deepEqual(JSON.parse((await call(port, 'POST', '/async', '{"n":1}')).body), { n: 2 });

    const bad = await call(port, 'POST', '/echo', '{not json');
    assert.equal(bad.status, 400);
    assert.match((JSON.parse(bad.body) as { error: string }).error, /bad JSON/);

    const nfs = await call(port, 'POST', '/nfs-error', '{}');
    assert.deepEqual(
      [nfs.status, JSON.parse(nfs.body)],
      [400, { error: 'no such flow', code: 'NFS_ERR_STATE', retriable: false }],
    );
    // The client turns a refusal back into the same code and retry hint; a crash stays NFS_ERR_PROCESS.
    await assert.rejects(
      adminCall('127.0.0.1', port, '/busy', {}),
      (err: unknown) =>
        err instanceof NfsError &&
        err.code === ErrorCode.STATE &&
        err.retriable &&
        /flow is moving/.test(err.message),
    );
    await assert.rejects(
      adminCall('127.0.0.1', port, '/crash'),
      (err: unknown) => err instanceof NfsError && err.code === ErrorCode.PROCESS && !err.retriable,
    );

    const crash = await call(port, 'GET', '/crash');
    assert.deepEqual([crash.status, JSON.parse(crash.body)], [500, { error: 'bug' }]);

    assert.deepEqual(JSON.parse((await call(port, 'GET', '/query?flow=7&x=a')).body), { flow: '7', x: 'a' });
    assert.deepEqual(JSON.parse((await call(port, 'GET', '/nothing')).body), {});

    assert.equal((await call(port, 'GET', '/missing')).status, 404);
    const wrong = await call(port, 'GET', '/echo');
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.allow, 'POST');
    assert.equal((await call(port, 'DELETE', '/healthz')).status, 405);
  } finally {
    await admin.stop();
    await admin.stop();
  }
  assert.equal(admin.port, 0);
});

void test('admin server: bodies over 1 MiB are refused with 413', { timeout: 60_000 }, async () => {
  const admin = new AdminServer({ port: 0, registry: new MetricsRegistry() });
  let called = false;
  admin.route('POST', '/x', () => {
    called = true;
  });
  const port = await admin.start();
  try {
    const big = Buffer.alloc(MAX_BODY_BYTES + 1, 0x20);
    assert.equal((await call(port, 'POST', '/x', big)).status, 413);
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/x', agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      // No content-length: the limit must hold while streaming, too.
      for (let i = 0; i < 5; i++) req.write(Buffer.alloc(MAX_BODY_BYTES / 4, 0x20));
      req.end();
    });
    assert.equal(chunked, 413);
    assert.ok(!called);
    const ok = Buffer.alloc(MAX_BODY_BYTES, 0x20);
    ok.write('{}');
    assert.equal((await call(port, 'POST', '/x', ok)).status, 200);
    assert.ok(called);
  } finally {
    await admin.stop();
  }
});

void test(
  'admin server: stop before start, restart after stop, busy port is an NfsError',
  { timeout: 60_000 },
  async () => {
    const a = new AdminServer({ port: 0, registry: new MetricsRegistry() });
    await a.stop();
    const first = await a.start();
    await a.stop();
    const second = await a.start();
    assert.ok(second > 0);
    const b = new AdminServer({ port: second, registry: new MetricsRegistry() });
    await assert.rejects(
      b.start(),
      (err: unknown) => err instanceof NfsError && err.code === ErrorCode.PROCESS,
    );
    await b.stop();
    // A start issued while a stop is in flight binds again after the close.
    const stopping = a.stop();
    const third = await a.start();
    await stopping;
    assert.ok(third > 0);
    assert.equal(a.port, third);
    const health = await call(third, 'GET', '/healthz');
    assert.equal(health.status, 200);
    await a.stop();
    assert.ok(first > 0);
    assert.throws(() => new AdminServer({ port: 70000, registry: new MetricsRegistry() }), NfsError);
  },
);

void test('admin server: stop closes idle keep-alive connections', { timeout: 60_000 }, async () => {
  const admin = new AdminServer({ port: 0, registry: new MetricsRegistry() });
  const port = await admin.start();
  const { Agent } = await import('node:http');
  const agent = new Agent({ keepAlive: true });
  await new Promise<void>((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: '/healthz', agent }, (res) => {
      res.resume();
      res.on('end', resolve);
    })
      .on('error', reject)
      .end();
  });
  await admin.stop(); // would hang on the kept-alive socket otherwise
  agent.destroy();
});
