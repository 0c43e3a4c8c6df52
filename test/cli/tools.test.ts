import assert from 'node:assert/strict';
import { freePort } from '../../src/launcher/free-port.js';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import type { Endpoints } from '../../src/launcher/local.js';
import { LinkType, PcapWriter } from '../../src/traffic/pcap.js';
import { DEFAULT_TRACE, SyntheticTrace } from '../../src/traffic/trace.js';
import { CLI, nfstate } from '../helpers/cli.js';
import { stamped } from '../helpers/packets.js';

const dir = mkdtempSync(join(tmpdir(), 'nfstate-tools-'));

function tracePcap(name: string): string {
  const t = new SyntheticTrace({ ...DEFAULT_TRACE, flows: 10, packets: 6 });
  const path = join(dir, name);
  const w = new PcapWriter(path, LinkType.RAW);
  const buf = new Uint8Array(2048);
  for (let i = 0; i < t.total; i++) w.write(buf, 1_700_000_000_000 + i, 0, t.write(i, buf, 0));
  w.close();
  return path;
}

function firstLine(child: ReturnType<typeof spawn>): Promise<string> {
  return once(createInterface({ input: child.stdout! }), 'line').then(([l]) => l as string);
}

describe('nfstate oracle, gen and sink', { timeout: 600_000 }, () => {
  it('oracle: prints per-flow digests and one run digest, the same every time', async () => {
    const trace = tracePcap('oracle.pcap');
    const a = await nfstate(['oracle', '--nf', 'ids', '--trace', trace]);
    const b = await nfstate(['oracle', '--nf', 'ids', '--trace', trace]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout, b.stdout);
    assert.match(a.stdout, /^10 flows, 60 packets; global: /m);
    assert.match(a.stdout, /^digest [0-9a-f]{32}$/m);
    const json = await nfstate(['oracle', '--nf', 'nat', '--trace', trace, '--json']);
    assert.equal((JSON.parse(json.stdout) as { flows: unknown[] }).flows.length, 10);
  });

  it('gen: sends a synthetic trace and a pcap replay through a running deployment', async () => {
    const file = join(dir, 'up.yaml');
    writeFileSync(file, 'nf: { type: firewall }\nclusters: 1\nperCluster: 1\nthreads: 1\n');
    const up = spawn(process.execPath, [CLI, 'up', '-c', file], { stdio: ['ignore', 'pipe', 'ignore'] });
    const ends = JSON.parse(await firstLine(up)) as Endpoints;
    const target = `127.0.0.1:${ends.ingress.port}`;
    const synthetic = await nfstate([
      'gen',
      '--target',
      target,
      '--flows',
      '5',
      '--packets',
      '20',
      '--rate',
      '5000',
      '--json',
    ]);
    assert.equal(synthetic.code, 0, synthetic.stderr);
    assert.equal((JSON.parse(synthetic.stdout) as { sent: number }).sent, 100);
    const replay = await nfstate([
      'gen',
      '--target',
      target,
      '--pcap',
      tracePcap('replay.pcap'),
      '--rate',
      '5000',
      '--json',
    ]);
    assert.equal((JSON.parse(replay.stdout) as { sent: number }).sent, 60);
    // Its socket for the sink's acknowledgements listens where it was told (loopback by default, at
    // --ack-port, so that a sink can be told it beforehand), not on every address.
    const probe = dgram.createSocket('udp4');
    probe.bind(0, '127.0.0.1');
    await once(probe, 'listening');
    const ackPort = probe.address().port;
    probe.close();
    const slow = spawn(
      process.execPath,
      [
        CLI,
        'gen',
        '--target',
        target,
        '--flows',
        '1',
        '--packets',
        '50',
        '--rate',
        '50',
        '--ack-port',
        String(ackPort),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let bound = NaN;
    for await (const line of createInterface({ input: slow.stderr })) {
      bound = Number(/"ackPort":(\d+)/.exec(line)?.[1]);
      if (!Number.isNaN(bound)) break;
    }
    const sockets = readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1);
    const local = sockets
      .map((l) => l.trim().split(/\s+/)[1])
      .find((a) => a?.endsWith(`:${bound.toString(16).toUpperCase().padStart(4, '0')}`));
    assert.equal(local?.split(':')[0], '0100007F', `ack socket on port ${bound}: ${local}`);
    assert.equal(bound, ackPort, 'bound at --ack-port');
    slow.kill('SIGINT');
    await once(slow, 'exit');
    await new Promise((r) => setTimeout(r, 300));
    const metrics = await (await fetch(`http://127.0.0.1:${ends.sink.admin}/metrics`)).text();
    assert.match(metrics, /^nfstate_sink_delivered_total 160$/m);
    up.kill('SIGINT');
    await once(up, 'exit');
  });

  it('nf and ingress run on their own, wired by hand as on separate hosts', async () => {
    const sink = spawn(process.execPath, [CLI, 'sink', '--port', '0'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const sinkLines = createInterface({ input: sink.stdout });
    const [s0] = (await once(sinkLines, 'line')) as [string];
    const sinkPort = (JSON.parse(s0) as { port: number }).port;
    // Two instances of one cluster, replicating to each other on ports fixed in advance, as on two hosts.
    const replicationPorts = await Promise.all([0, 1].map(() => freePort()));
    const keyFile = join(mkdtempSync(join(tmpdir(), 'nfstate-key-')), 'deployment.key');
    writeFileSync(keyFile, 'ab'.repeat(32) + '\n', { mode: 0o600 });
    const nfs = [0, 1].map((i) =>
      spawn(
        process.execPath,
        [
          CLI,
          'nf',
          '--nf',
          'nat',
          '--id',
          `nf-${i}`,
          '--threads',
          '1',
          '--partition',
          `${i}/2`,
          '--egress',
          `127.0.0.1:${sinkPort}`,
          '--key-file',
          keyFile,
          '--replication-port',
          String(replicationPorts[i]),
          '--replicate-to',
          `nf-${1 - i}=127.0.0.1:${replicationPorts[1 - i]}`,
        ],
        { stdio: ['ignore', 'pipe', 'ignore'] },
      ),
    );
    const readyNfs = await Promise.all(
      nfs.map(async (c) => JSON.parse(await firstLine(c)) as { port: number; admin: number }),
    );
    const nfPorts = readyNfs.map((r) => r.port);
    const nfAdmins = readyNfs.map((r) => r.admin);
    const ingress = spawn(
      process.execPath,
      [CLI, 'ingress', '--instances', nfPorts.map((p, i) => `nf-${i}=127.0.0.1:${p}`).join(',')],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    const ingressPort = (JSON.parse(await firstLine(ingress)) as { port: number }).port;
    const gen = await nfstate([
      'gen',
      '--target',
      `127.0.0.1:${ingressPort}`,
      '--flows',
      '8',
      '--packets',
      '10',
      '--json',
    ]);
    assert.equal((JSON.parse(gen.stdout) as { sent: number }).sent, 80);
    await new Promise((r) => setTimeout(r, 300));
    const report = once(sinkLines, 'line');
    sink.kill('SIGINT');
    const r = JSON.parse(((await report) as [string])[0]) as {
      delivered: number;
      reordered: number;
      flows: number;
    };
    assert.deepEqual([r.delivered, r.reordered, r.flows], [80, 0, 8]);
    const replicas = await Promise.all(
      nfAdmins.map(async (port) => {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        return Number(/^nfstate_replication_replicas (\d+)$/m.exec(text)?.[1]);
      }),
    );
    assert.equal(replicas[0]! + replicas[1]!, 8, 'each instance holds the flows the other owns');
    for (const c of [ingress, ...nfs]) {
      c.kill('SIGINT');
      const [code] = (await once(c, 'exit')) as [number | null];
      assert.equal(code, 0);
    }
  });

  it('a controller started by hand cannot start instances (scale add says so); one started with --controller joins', async () => {
    const controller = spawn(process.execPath, [CLI, 'controller', '--cluster-size', '2'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const { admin } = JSON.parse(await firstLine(controller)) as { admin: number };
    // Started without a key file, its admin API is open, on loopback only: any key passes.
    const keyFile = join(mkdtempSync(join(tmpdir(), 'nfstate-key-')), 'operator.key');
    writeFileSync(keyFile, 'cd'.repeat(32));
    const r = await nfstate(['scale', 'add', '--controller', `127.0.0.1:${admin}`, '--key-file', keyFile]);
    assert.equal(r.code, 1, 'it ran, and the controller refused');
    assert.equal(r.stdout, '');
    assert.match(
      r.stderr.trim(),
      /^nfstate: NFS_ERR_STATE: .*no provisioner.*`nfstate nf --controller HOST:PORT/,
    );
    const nf = spawn(
      process.execPath,
      [
        CLI,
        'nf',
        '--nf',
        'ids',
        '--id',
        'nf-7',
        '--threads',
        '1',
        '--egress',
        '127.0.0.1:9',
        '--controller',
        `127.0.0.1:${admin}`,
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    await firstLine(nf);
    const instances = (await (await fetch(`http://127.0.0.1:${admin}/instances`)).json()) as {
      id: string;
      cluster: string;
    }[];
    assert.deepEqual(
      instances.map((i) => [i.id, i.cluster]),
      [['nf-7', 'c0']],
    );
    for (const c of [nf, controller]) {
      c.kill('SIGINT');
      const [code] = (await once(c, 'exit')) as [number | null];
      assert.equal(code, 0);
    }
  });

  it('sink: counts stamped packets by flow and prints a report on SIGINT', async () => {
    const sink = spawn(process.execPath, [CLI, 'sink', '--port', '0'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const lines = createInterface({ input: sink.stdout });
    const [first] = (await once(lines, 'line')) as [string];
    const { port: listening } = JSON.parse(first) as { port: number };
    const client = dgram.createSocket('udp4');
    for (const seq of [1, 2, 4, 3, 3]) client.send(stamped({ flow: 1, seq }), listening, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 200));
    const report = once(lines, 'line');
    sink.kill('SIGINT');
    const [last] = (await report) as [string];
    const r = JSON.parse(last) as { delivered: number; reordered: number; duplicated: number; flows: number };
    assert.deepEqual([r.delivered, r.reordered, r.duplicated, r.flows], [4, 1, 1, 1]);
    client.close();
  });
});
