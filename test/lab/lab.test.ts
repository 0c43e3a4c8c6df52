/**
 * Real hosts' kernel TCP through a deployment in network namespaces (`nfstate lab`): a 100 MB transfer
 * from the client to the server through [firewall (strict), nat] survives kill -9, SIGSTOP and moves of the
 * instance that owns it — completed at both ends, the same SHA-256, no reset — and breaks without
 * replication, which shows the check can fail. The lab leaves nothing behind, also after a crash.
 * Needs root (CI runs as root); skipped otherwise.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { NfsError } from '../../src/errors.js';
import { tcpCase, type TcpCaseResult } from '../../src/lab/faults.js';
import { Lab, labTopology } from '../../src/lab/lab.js';
import { alive, ipBatch, linksHere, namespaces, pidsIn } from '../../src/lab/netns.js';

const CLI = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const skip = process.getuid?.() === 0 ? false : 'needs root (network namespaces)';
const MB = 1024 * 1024;
const BYTES = 100 * MB;

function logDir(): string {
  return mkdtempSync(join(tmpdir(), 'nfstate-lab-test-'));
}

/** Every process in the lab's namespaces now. */
async function labPids(prefix: string): Promise<number[]> {
  const out: number[] = [];
  for (const ns of await namespaces(prefix)) out.push(...(await pidsIn(ns)));
  return out;
}

async function assertGone(prefix: string, pids: readonly number[]): Promise<void> {
  assert.deepEqual(await namespaces(prefix), [], 'no namespace left');
  assert.deepEqual(await linksHere(prefix), [], 'no link left in the root namespace');
  // A killed process is reaped by its parent a moment later.
  for (let i = 0; i < 50 && pids.some(alive); i++) await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(pids.filter(alive), [], 'no process of the lab left');
}

function survived(r: TcpCaseResult): void {
  const why = JSON.stringify({ sender: r.sender, receiver: r.receiver, failover: r.failover, move: r.move });
  assert.equal(r.receiver.bytes, BYTES, why);
  assert.equal(r.receiver.sha256, r.sender.sha256, why);
  assert.equal(r.reset, false, why);
  assert.equal(r.survived, true, why);
}

describe('lab: kernel TCP through [firewall (strict), nat] survives', { skip, timeout: 600_000 }, () => {
  const prefix = 'nflt-';
  const dir = logDir();
  let lab: Lab;

  before(async () => {
    lab = await Lab.start({ topology: labTopology(), logDir: dir, prefix });
  });

  after(async () => {
    const pids = await labPids(prefix);
    await (lab as Lab | undefined)?.stop();
    await assertGone(prefix, pids);
    rmSync(dir, { recursive: true, force: true });
  });

  test('kill -9 of the instance that owns the connection', { timeout: 120_000 }, async () => {
    const r = await tcpCase(lab, 'kill', { bytes: BYTES, port: 5001 });
    survived(r);
    assert.equal(r.failover?.error, undefined, JSON.stringify(r.failover));
    assert.ok(r.failover!.with_state >= 1, 'the successor resumed from a replica');
    console.log(`kill: longest stall ${r.receiver.max_stall_ms} ms`);
  });

  test(
    'SIGSTOP of the owner (a silent failure), then SIGCONT: the woken instance is fenced',
    { timeout: 120_000 },
    async () => {
      const r = await tcpCase(lab, 'pause', { bytes: BYTES, port: 5002 });
      survived(r);
      assert.equal(r.woke_fenced, true, 'the woken instance exited as fenced');
      console.log(`pause: longest stall ${r.receiver.max_stall_ms} ms`);
    },
  );

  test('a move to another instance of its cluster', { timeout: 120_000 }, async () => {
    const r = await tcpCase(lab, 'move-intra', { bytes: BYTES, port: 5003 });
    survived(r);
    assert.equal(r.move?.aborted, false, JSON.stringify(r.move));
    assert.equal(r.move.intra, true);
    console.log(`move inside the cluster: longest stall ${r.receiver.max_stall_ms} ms`);
  });

  test('a move to another cluster', { timeout: 120_000 }, async () => {
    const r = await tcpCase(lab, 'move-inter', { bytes: BYTES, port: 5004 });
    survived(r);
    assert.equal(r.move?.aborted, false, JSON.stringify(r.move));
    assert.equal(r.move.intra, false);
    console.log(`move across clusters: longest stall ${r.receiver.max_stall_ms} ms`);
  });
});

test(
  'without replication, killing the owner breaks the connection (the control)',
  { skip, timeout: 180_000 },
  async () => {
    const prefix = 'nflt-';
    const dir = logDir();
    const lab = await Lab.start({ topology: labTopology({ replication: 'off' }), logDir: dir, prefix });
    try {
      const r = await tcpCase(lab, 'kill', { bytes: BYTES, port: 5005, idleMs: 3000 });
      assert.equal(r.survived, false, JSON.stringify({ sender: r.sender, receiver: r.receiver }));
      assert.ok(r.receiver.bytes < BYTES, 'the transfer stopped short');
      assert.match(r.failover?.error ?? '', /replication is off/);
    } finally {
      await lab.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test(
  'a lab that crashed is removed by nfstate lab down: no namespace, link or process left',
  { skip, timeout: 120_000 },
  async () => {
    const prefix = 'nflc-';
    const child = spawn(
      process.execPath,
      [CLI, 'lab', '--prefix', prefix, '--clusters', '1', '--per-cluster', '2'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    const described = await new Promise<Record<string, unknown>>((resolve, reject) => {
      createInterface({ input: child.stdout }).once('line', (line) =>
        resolve(JSON.parse(line) as Record<string, unknown>),
      );
      child.once('exit', (code) => reject(new Error(`nfstate lab exited (${code}) before it was up`)));
    });
    assert.equal(described.prefix, prefix);
    // The operator's key for this run, readable by its user only.
    assert.match(readFileSync(described.operator_key as string, 'utf8'), /^[0-9a-f]{64}\n$/);
    assert.equal(statSync(described.operator_key as string).mode & 0o077, 0);
    assert.ok((await namespaces(prefix)).length >= 7, 'hosts, bridge and roles each in a namespace');
    const pids = await labPids(prefix);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    assert.ok((await namespaces(prefix)).length > 0, 'a crash leaves the namespaces behind');
    const down = spawn(process.execPath, [CLI, 'lab', 'down', '--prefix', prefix], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    down.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const code = await new Promise((resolve) => down.once('exit', resolve));
    assert.equal(code, 0);
    const removed = JSON.parse(out) as { namespaces: string[] };
    assert.ok(removed.namespaces.length >= 7);
    await assertGone(prefix, pids);
  },
);

test('the lab needs root and says so', { timeout: 60_000 }, async () => {
  const real = process.getuid!;
  process.getuid = () => 1000;
  try {
    await assert.rejects(
      Lab.start({ topology: labTopology(), logDir: tmpdir(), prefix: 'nflr-' }),
      (err: unknown) => err instanceof NfsError && /needs root/.test(err.message),
    );
  } finally {
    process.getuid = real;
  }
});

test(
  "an ip batch for a namespace that is gone rejects with ip's reason, however much it had to write",
  { skip, timeout: 60_000 },
  async () => {
    // More than a pipe holds, so the write is still going when ip exits without reading it.
    const commands = Array.from({ length: 40_000 }, (_, i) => `link show dev nflx${i}`);
    await assert.rejects(
      ipBatch(commands, 'nflx-no-such-namespace'),
      (err: unknown) => err instanceof NfsError && /nflx-no-such-namespace/.test(err.message),
    );
  },
);
