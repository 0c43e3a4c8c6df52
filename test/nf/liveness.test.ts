import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { wallClock } from '../../src/clock.js';
import type { FailureInfo } from '../../src/controller/detector.js';
import { DEFAULT_FAILURE, FailureDetector, looksLikeHeartbeat } from '../../src/controller/detector.js';
import { repoPath } from '../helpers/paths.js';
import { until } from '../helpers/poll.js';

const TOKEN = Buffer.alloc(16, 9);
const dir = mkdtempSync(join(tmpdir(), 'nfstate-liveness-'));

/**
 * A process that reports to `port` as an NF instance does (liveness.ts), and on a line of stdin blocks its
 * event loop (`block MS`) or stops in order (`stop`).
 */
function instance(id: string, port: number): ChildProcess {
  const module = pathToFileURL(repoPath('dist/src/nf/liveness.js')).href;
  const script = `
    const { reportToController } = await import(${JSON.stringify(module)});
    const load = () => ({ received: 0, processed: 0, flows: 0, busy: 0, queue: 0 });
    const stop = reportToController(${JSON.stringify(id)}, Buffer.from('${TOKEN.toString('hex')}', 'hex'),
      { host: '127.0.0.1', report: ${port} }, ${DEFAULT_FAILURE.heartbeatMs}, load);
    process.stdin.on('data', (d) => {
      const [cmd, ms] = d.toString().trim().split(' ');
      if (cmd === 'block') {
        const end = Date.now() + Number(ms);
        while (Date.now() < end);
        process.stdout.write('done\\n');
      }
      if (cmd === 'stop') {
        stop();
        setTimeout(() => process.exit(0), 200);
      }
    });
    process.stdout.write('ready\\n');`;
  const file = join(dir, `${id}.mjs`);
  writeFileSync(file, script);
  return spawn(process.execPath, [file], { stdio: ['pipe', 'pipe', 'inherit'] });
}

async function line(p: ChildProcess, want: string): Promise<void> {
  let seen = '';
  while (!seen.includes(want)) seen += String((await once(p.stdout!, 'data'))[0]);
}

describe('heartbeats from their own thread, and the probe', { timeout: 120_000 }, () => {
  const socket = dgram.createSocket('udp4');
  const fdu = new FailureDetector(DEFAULT_FAILURE, wallClock);
  const failed = new Map<string, FailureInfo>();
  const children: ChildProcess[] = [];

  before(async () => {
    fdu.onFailed = (id, info) => failed.set(id, info);
    fdu.onProbe = (to, probe) => socket.send(probe, to.port, to.address);
    socket.on('message', (msg, from) => {
      if (looksLikeHeartbeat(msg)) fdu.receive(msg, from);
    });
    socket.bind(0, '127.0.0.1');
    await once(socket, 'listening');
    fdu.start();
  });

  after(() => {
    fdu.stop();
    socket.close();
    for (const c of children) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  async function start(id: string): Promise<ChildProcess> {
    const p = instance(id, socket.address().port);
    children.push(p);
    fdu.watch(id, TOKEN);
    await line(p, 'ready');
    // Until its first heartbeat an instance has a second's grace; after, it is suspected within 30 intervals.
    await until(() => (fdu.suspectAfterMs(id) ?? Infinity) < 30 * DEFAULT_FAILURE.heartbeatMs);
    return p;
  }

  it(
    'keeps beating while the event loop is blocked, so a busy instance is no failure',
    { timeout: 30_000 },
    async () => {
      const p = await start('busy');
      const before = fdu.heartbeats;
      p.stdin!.write('block 600\n');
      await line(p, 'done');
      assert.ok(fdu.heartbeats > before, 'heartbeats came while the event loop was blocked');
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(failed.has('busy'), false, `declared failed: ${JSON.stringify(failed.get('busy'))}`);
    },
  );

  it(
    'falls silent when the event loop stays blocked past the hang bound, and is declared',
    { timeout: 30_000 },
    async () => {
      const p = await start('hung');
      p.stdin!.write('block 4000\n');
      await until(() => failed.has('hung'), 10_000);
      assert.equal(failed.get('hung')?.how, 'heartbeats');
      await line(p, 'done');
    },
  );

  it('is declared failed when paused, after an unanswered probe', { timeout: 30_000 }, async () => {
    const p = await start('paused');
    const probes = fdu.probes;
    p.kill('SIGSTOP');
    await until(() => failed.has('paused'), 10_000);
    p.kill('SIGCONT');
    assert.equal(failed.get('paused')?.how, 'heartbeats');
    assert.ok(fdu.probes > probes, 'probed before declared');
  });

  it('says goodbye when stopped in order: its silence then is no failure', { timeout: 30_000 }, async () => {
    const p = await start('leaving');
    p.stdin!.write('stop\n');
    await once(p, 'exit');
    await until(() => fdu.suspectAfterMs('leaving') === undefined, 2000);
    assert.equal(fdu.suspectAfterMs('leaving'), undefined, 'no longer watched');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(failed.has('leaving'), false);
  });
});
