import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import type { Endpoints } from '../../src/launcher/local.js';
import { CLI, nfstate } from '../helpers/cli.js';
import { metrics, sample, until } from '../helpers/poll.js';

describe('nfstate up', () => {
  it('runs a topology: plain UDP in the front door comes out at the egress destination, bad input is counted, metrics are served, SIGINT stops it', async () => {
    const dest = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
    const got: string[] = [];
    dest.on('message', (m) => got.push(m.toString()));
    dest.bind(0, '127.0.0.1');
    await once(dest, 'listening');
    const dir = mkdtempSync(join(tmpdir(), 'nfstate-up-'));
    const file = join(dir, 'topology.yaml');
    writeFileSync(
      file,
      [
        'nf: { type: ids }',
        'clusters: 1',
        'perCluster: 2',
        'threads: 1',
        `egress: { deliver: "127.0.0.1:${dest.address().port}" }`,
        '',
      ].join('\n'),
    );
    const child = spawn(process.execPath, [CLI, 'up', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = createInterface({ input: child.stdout });
    const [first] = (await once(lines, 'line')) as [string];
    const ends = JSON.parse(first) as Endpoints;
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
    assert.ok(registry.every((i) => i.reported_ms_ago !== null && i.reported_ms_ago < 2000));
    const sink = await metrics(ends.sink.admin);
    assert.equal(sample(sink, 'nfstate_sink_delivered_total'), 20);

    // Still working after the garbage.
    client.send('after', ends.ingress.servicePort, '127.0.0.1');
    await until(() => got.length === 21);
    assert.equal(got[20], 'after');

    // The controller's rule API: pin the client's flow to nf-1, then watch the rule count its packets.
    const flow = `udp 127.0.0.1:${client.address().port} 127.0.0.1:${ends.ingress.servicePort}`;
    const post = (body: unknown): Promise<Response> =>
      fetch(`http://127.0.0.1:${ends.ingress.admin}/rules`, { method: 'POST', body: JSON.stringify(body) });
    const ok = await post({ flow, primary: 'nf-1', epoch: 5 });
    assert.equal(ok.status, 200);
    assert.deepEqual(await ok.json(), { installed: true });
    const stale = await post({ flow, primary: 'nf-0', epoch: 4 });
    assert.deepEqual(await stale.json(), { installed: false });
    const bad = await post({ flow, primary: 'nf-9', epoch: 6 });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /rule\.primary/);
    client.send('pinned', ends.ingress.servicePort, '127.0.0.1');
    await until(() => got.length === 22);
    const rules = (await (await fetch(`http://127.0.0.1:${ends.ingress.admin}/rules`)).json()) as {
      flow: string;
      primary: string;
      packets: number;
    }[];
    assert.deepEqual(
      rules.map((r) => [r.primary, r.packets]),
      [['nf-1', 1]],
    );

    // Take nf-0 out of the default placement: new flows (without rules) all go to nf-1.
    const live = await fetch(`http://127.0.0.1:${ends.ingress.admin}/live`, {
      method: 'POST',
      body: JSON.stringify({ instances: ['nf-1'] }),
    });
    assert.deepEqual(((await live.json()) as { live: string[] }).live, ['nf-1']);
    const before = await metrics(ends.instances[0]!.admin);
    const others = Array.from({ length: 10 }, () => dgram.createSocket('udp4'));
    for (const o of others) o.send('spread', ends.ingress.servicePort, '127.0.0.1');
    await until(() => got.length === 32);
    const after = await metrics(ends.instances[0]!.admin);
    assert.equal(sample(after, 'nfstate_nf_processed_total'), sample(before, 'nfstate_nf_processed_total'));
    for (const o of others) o.close();

    child.kill('SIGINT');
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0);
    client.close();
    dest.close();
  });

  it('scale add: its launcher starts an instance that joins a cluster and takes new flows; past the spare pool slices it says so', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'nfstate-up-')), 'topology.yaml');
    writeFileSync(
      file,
      ['nf: { type: ids }', 'clusters: 1', 'perCluster: 2', 'threads: 1', 'spareInstances: 1', ''].join('\n'),
    );
    const child = spawn(process.execPath, [CLI, 'up', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const [first] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
    const ends = JSON.parse(first) as Endpoints;
    const controller = `127.0.0.1:${ends.controller.admin}`;
    const r = await nfstate(['scale', 'add', '--controller', controller, '--json']);
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

    const full = await nfstate(['scale', 'add', '--controller', controller]);
    assert.equal(full.code, 2);
    assert.match(full.stderr, /add 1: 3 instances started of at most 3.*spareInstances/);
    child.kill('SIGINT');
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0, 'the added instance stops with the rest');
  });
});
