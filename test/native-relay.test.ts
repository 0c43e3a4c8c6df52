import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { repoPath } from './helpers/paths.js';

const source = repoPath('native', 'relay.c');
const hasCc = spawnSync('cc', ['--version'], { stdio: 'ignore' }).status === 0;

const dir = mkdtempSync(join(tmpdir(), 'nfstate-relay-'));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function bind(socket: Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve(socket.address().port);
    });
  });
}

/** Resolves with the relay's port once it says it is listening. */
function listening(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      err += chunk;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(err);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => {
      reject(new Error(`relay exited with ${String(code)}: ${err}`));
    });
  });
}

void test(
  'relay forwards every datagram in order and reports counts on SIGTERM',
  { skip: !hasCc && 'no cc', timeout: 120_000 },
  async () => {
    const binary = join(dir, 'relay');
    const cc = spawnSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', binary, source], {
      encoding: 'utf8',
    });
    assert.equal(cc.status, 0, cc.stderr);

    const sink = createSocket({ type: 'udp4', recvBufferSize: 1 << 22 });
    const sinkPort = await bind(sink);
    const relay = spawn(binary, ['0', '127.0.0.1', String(sinkPort)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const sender = createSocket('udp4');
    try {
      const relayPort = await listening(relay);
      const got: number[] = [];
      const badLength: number[] = [];
      let waiter: (() => void) | undefined;
      sink.on('message', (msg) => {
        const i = msg.readUInt32BE(0);
        got.push(i);
        if (msg.length !== 4 + ((i + 1) % 100)) badLength.push(i);
        waiter?.();
      });
      const total = 1000;
      const window = 100;
      // Windows of 100 keep the test independent of socket buffer sizes: loss here would be the test's own.
      for (let start = 0; start < total; start += window) {
        const arrived = new Promise<void>((resolve) => {
          waiter = () => {
            if (got.length >= start + window) resolve();
          };
        });
        for (let i = start; i < start + window; i++) {
          const msg = Buffer.alloc(4 + ((i + 1) % 100), 0xab);
          msg.writeUInt32BE(i, 0);
          await new Promise<void>((resolve, reject) => {
            sender.send(msg, relayPort, '127.0.0.1', (err) => {
              if (err) reject(err);
              else resolve();
            });
          });
        }
        await arrived;
      }
      assert.deepEqual(
        got,
        Array.from({ length: total }, (_, i) => i),
      );
      assert.deepEqual(badLength, [], 'datagram lengths preserved');

      let out = '';
      relay.stdout.setEncoding('utf8');
      relay.stdout.on('data', (c: string) => (out += c));
      // 'close', not 'exit': it waits for stdout to be drained.
      const exited = new Promise<number | null>((resolve) => relay.once('close', resolve));
      relay.kill('SIGTERM');
      assert.equal(await exited, 0);
      assert.deepEqual(JSON.parse(out.trim()), { received: total, sent: total });
    } finally {
      relay.kill('SIGKILL');
      sender.close();
      sink.close();
    }
  },
);
