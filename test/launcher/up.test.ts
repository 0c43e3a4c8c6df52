import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { ErrorCode, NfsError } from '../../src/errors.js';
import type { Endpoints } from '../../src/launcher/local.js';
import { adminCall } from '../../src/admin-call.js';
import { CLI, nfstate } from '../helpers/cli.js';
import { textCollector } from '../helpers/packets.js';
import { metrics, sample, until } from '../helpers/poll.js';

/** What `nfstate up` prints first. */
type Up = Endpoints & { logs: string; operator_key: string };

describe('nfstate up', { timeout: 600_000 }, () => {
  it('runs a topology: plain UDP in the front door comes out at the egress destination, bad input is counted, metrics are served, SIGINT stops it', async (t) => {
    const { socket: dest, port: destPort, got } = await textCollector();
    const dir = mkdtempSync(join(tmpdir(), 'nfstate-up-'));
    const file = join(dir, 'topology.yaml');
    writeFileSync(
      file,
      [
        'nf: { type: ids }',
        'clusters: 1',
        'perCluster: 2',
        'threads: 1',
        `egress: { deliver: "127.0.0.1:${destPort}" }`,
        '',
      ].join('\n'),
    );
    const child = spawn(process.execPath, [CLI, 'up', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    // A failed assertion must not leave the deployment running: the file would never end.
    t.after(() => {
      if (child.exitCode === null) child.kill('SIGINT');
    });
    const lines = createInterface({ input: child.stdout });
    const [first] = (await once(lines, 'line')) as [string];
    const ends = JSON.parse(first) as Up;
    assert.equal(ends.instances.length, 2);

    const client = dgram.createSocket('udp4');
    for (let i = 0; i < 20; i++) client.send(`hello ${i}`, ends.ingress.servicePort, '127.0.0.1');
    await until(() => got.length === 20);
    assert.deepEqual(
      got,
      Array.from({ length: 20 }, (_, i) => `hello ${i}`),
    );

    const garbage = [
      Buffer.alloc(0),
      Buffer.from('not a packet'),
      Buffer.alloc(60, 0xff),
      Buffer.alloc(36, 0),
    ];
    for (const g of garbage) {
      client.send(g, ends.ingress.port, '127.0.0.1');
      for (const inst of ends.instances) client.send(g, inst.port, '127.0.0.1');
      client.send(g, ends.sink.port, '127.0.0.1');
    }
    await new Promise((r) => setTimeout(r, 300));
    const ingress = await metrics(ends.ingress.admin);
    assert.equal(sample(ingress, 'nfstate_ingress_forwarded_total'), 20);
    assert.ok(sample(ingress, 'nfstate_ingress_received_total') >= 24);
    for (const inst of ends.instances) {
      const m = await metrics(inst.admin);
      const dropped = m
        .split('\n')
        .filter((l) => l.startsWith('nfstate_nf_dropped_total{'))
        .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
      assert.equal(dropped, garbage.length, `instance ${inst.id} counts each bad datagram once`);
    }
    // The controller knows both instances, their cluster, and their load (reports every 100 ms).
    const registry = (await (await fetch(`http://127.0.0.1:${ends.controller.admin}/instances`)).json()) as {
      id: string;
      cluster: string;
      reported_ms_ago: number | null;
    }[];
    assert.deepEqual(
      registry.map((i) => i.cluster),
      ['c0', 'c0'],
    );
    assert.ok(
      registry.every((i) => i.reported_ms_ago !== null),
      `every instance has reported its load: ${JSON.stringify(registry)}`,
    );
    // And the reports keep coming (how recent the last one is depends on the scheduler, not on nfstate).
    const reports = async (): Promise<number> =>
      sample(await metrics(ends.controller.admin), 'nfstate_controller_load_reports_total');
    const reported = await reports();
    await until(async () => (await reports()) > reported);
    assert.ok((await reports()) > reported, 'load reports keep coming');
    const sink = await metrics(ends.sink.admin);
    assert.equal(sample(sink, 'nfstate_sink_delivered_total'), 20);

    // Still working after the garbage.
    client.send('after', ends.ingress.servicePort, '127.0.0.1');
    await until(() => got.length === 21);
    assert.equal(got[20], 'after');

    // The admin APIs take no change without a signature: not unsigned, not with a wrong key, and the
    // operator's key (written by up, readable by its user only) signs only what an operator may ask.
    const operatorKey = Buffer.from(readFileSync(ends.operator_key, 'utf8').trim(), 'hex');
    assert.equal(statSync(ends.operator_key).mode & 0o077, 0);
    const flow = `udp 127.0.0.1:${client.address().port} 127.0.0.1:${ends.ingress.servicePort}`;
    const refused = async (port: number, path: string, body: unknown, key?: Buffer): Promise<void> => {
      await assert.rejects(
        adminCall('127.0.0.1', port, path, body, key === undefined ? {} : { key }),
        (err) => {
          assert.ok(err instanceof NfsError && err.code === ErrorCode.AUTH, String(err));
          return true;
        },
      );
    };
    await refused(ends.ingress.admin, '/rules', { flow, primary: 'nf-1', epoch: 5 });
    await refused(ends.ingress.admin, '/rules', { flow, primary: 'nf-1', epoch: 5 }, Buffer.alloc(32, 1));
    await refused(ends.ingress.admin, '/rules', { flow, primary: 'nf-1', epoch: 5 }, operatorKey);
    await refused(ends.ingress.admin, '/live', { instances: ['nf-1'] }, operatorKey);
    await refused(ends.instances[0]!.admin, '/move/install', { flows: [] }, operatorKey);
    await refused(ends.controller.admin, '/fail', { id: 'nf-0' });
    await refused(ends.sink.admin, '/fence', { emitter: 1 });
    const rules = (await (await fetch(`http://127.0.0.1:${ends.ingress.admin}/rules`)).json()) as unknown[];
    assert.deepEqual(rules, [], 'nothing refused was installed');
    const rejected = await metrics(ends.ingress.admin);
    assert.equal(sample(rejected, 'nfstate_admin_rejected_total', 'reason="missing"'), 1);
    assert.equal(sample(rejected, 'nfstate_admin_rejected_total', 'reason="bad_auth"'), 3);
    // An operator call signed with the operator key is taken.
    const lb = await adminCall(
      '127.0.0.1',
      ends.controller.admin,
      '/lb',
      { enabled: false },
      { key: operatorKey },
    );
    assert.equal((lb.options as { enabled: boolean }).enabled, false);
    client.send('still', ends.ingress.servicePort, '127.0.0.1');
    await until(() => got.length === 21);
    assert.equal(await (await fetch(`http://127.0.0.1:${ends.controller.admin}/failures`)).text(), '[]');

    child.kill('SIGINT');
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0);
    client.close();
    dest.close();
  });

  it('scale add: its launcher starts an instance that joins a cluster and takes new flows; past the spare pool slices it says so', async (t) => {
    const file = join(mkdtempSync(join(tmpdir(), 'nfstate-up-')), 'topology.yaml');
    writeFileSync(
      file,
      ['nf: { type: ids }', 'clusters: 1', 'perCluster: 2', 'threads: 1', 'spareInstances: 1', ''].join('\n'),
    );
    const child = spawn(process.execPath, [CLI, 'up', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    // A failed assertion must not leave the deployment running: the file would never end.
    t.after(() => {
      if (child.exitCode === null) child.kill('SIGINT');
    });
    const [first] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
    const ends = JSON.parse(first) as Up;
    const controller = `127.0.0.1:${ends.controller.admin}`;
    const unsigned = await nfstate(['scale', 'add', '--controller', controller]);
    assert.equal(unsigned.code, 2, 'the key file is required');
    assert.match(unsigned.stderr, /--key-file/);
    const wrong = join(mkdtempSync(join(tmpdir(), 'nfstate-key-')), 'wrong.key');
    writeFileSync(wrong, '11'.repeat(32));
    const forged = await nfstate(['scale', 'add', '--controller', controller, '--key-file', wrong]);
    assert.notEqual(forged.code, 0);
    assert.match(forged.stderr, /not authenticated \(bad_auth\)/);
    const key = ['--key-file', ends.operator_key];
    const r = await nfstate(['scale', 'add', '--controller', controller, ...key, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { added } = JSON.parse(r.stdout) as { added: { id: string; cluster: string }[] };
    assert.deepEqual(
      added.map((a) => [a.id, a.cluster]),
      [['nf-2', 'c1']],
    );
    const onNewcomer = async (): Promise<number> =>
      (
        (await (await fetch(`http://${controller}/flows?owner=nf-2`)).json()) as {
          flows: unknown[];
        }
      ).flows.length;
    const clients = Array.from({ length: 30 }, () => dgram.createSocket('udp4'));
    for (const c of clients) c.send('a new flow', ends.ingress.servicePort, '127.0.0.1');
    await until(async () => (await onNewcomer()) > 0);
    assert.ok((await onNewcomer()) > 0, 'new flows are placed on the newcomer');
    for (const c of clients) c.close();

    const full = await nfstate(['scale', 'add', '--controller', controller, ...key]);
    assert.equal(full.code, 2);
    assert.match(full.stderr, /add 1: 3 instances started of at most 3.*spareInstances/);
    child.kill('SIGINT');
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, 'the added instance stops with the rest');
  });
});
