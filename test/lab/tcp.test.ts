import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { parseIperfServerCsv } from '../../src/lab/iperf.js';
import { parseBytes, receive, send, type Progress } from '../../src/lab/tcp.js';
import { freePort } from '../../src/launcher/free-port.js';

describe('nfstate tcp: a transfer that checks itself', () => {
  it('the receiver hashes exactly what the sender sent', { timeout: 30_000 }, async () => {
    const port = await freePort();
    const progress: Progress[] = [];
    let listening!: () => void;
    const up = new Promise<void>((resolve) => (listening = resolve));
    const received = receive({ host: '127.0.0.1', port, idleMs: 5000 }, (p) => {
      progress.push(p);
      listening();
    });
    await up;
    const sent = await send({ host: '127.0.0.1', port, bytes: 5 * 1024 * 1024 + 7, idleMs: 5000 });
    const got = await received;
    assert.equal(sent.completed, true, JSON.stringify(sent));
    assert.equal(got.completed, true, JSON.stringify(got));
    assert.equal(got.bytes, 5 * 1024 * 1024 + 7);
    assert.equal(got.sha256, sent.sha256);
    assert.equal(got.error, null);
    assert.ok(progress.length >= 1);
    // The stream is the same for the same length: another run hashes the same.
    const again = await (async () => {
      const p2 = await freePort();
      let ready!: () => void;
      const listeningAgain = new Promise<void>((resolve) => (ready = resolve));
      const r = receive({ host: '127.0.0.1', port: p2, idleMs: 5000 }, () => ready());
      await listeningAgain;
      await send({ host: '127.0.0.1', port: p2, bytes: 5 * 1024 * 1024 + 7, idleMs: 5000 });
      return r;
    })();
    assert.equal(again.sha256, sent.sha256);
  });

  it(
    'a stream that stops without a reset is reported idle, its last stall counted',
    { timeout: 30_000 },
    async () => {
      const port = await freePort();
      let listening!: () => void;
      const up = new Promise<void>((resolve) => (listening = resolve));
      const received = receive({ host: '127.0.0.1', port, idleMs: 300 }, () => listening());
      await up;
      const stuck = net.connect(port, '127.0.0.1', () => stuck.write('only this'));
      const got = await received;
      stuck.destroy();
      assert.equal(got.completed, false);
      assert.equal(got.error, 'idle');
      assert.equal(got.bytes, 9);
      assert.ok(got.max_stall_ms >= 300, `stall ${got.max_stall_ms}`);
    },
  );

  it(
    'a sender that never connects leaves the receiver idle, not waiting for ever',
    { timeout: 30_000 },
    async () => {
      const got = await receive({ host: '127.0.0.1', port: await freePort(), idleMs: 200 }, () => undefined);
      assert.deepEqual([got.completed, got.error, got.bytes], [false, 'idle', 0]);
    },
  );

  it('a reset is reported as one', { timeout: 30_000 }, async () => {
    const port = await freePort();
    let listening!: () => void;
    const up = new Promise<void>((resolve) => (listening = resolve));
    const received = receive({ host: '127.0.0.1', port, idleMs: 5000 }, () => listening());
    await up;
    const s = net.connect(port, '127.0.0.1', () => {
      s.write('some');
      // Once the data is across: a reset right behind a write can go out as an orderly close.
      setTimeout(() => s.resetAndDestroy(), 50);
    });
    const got = await received;
    assert.equal(got.completed, false);
    assert.equal(got.error, 'reset');
  });

  it('byte counts and iperf server reports', { timeout: 60_000 }, () => {
    assert.equal(parseBytes('100M'), 100 * 1024 * 1024);
    assert.equal(parseBytes('4096'), 4096);
    assert.equal(parseBytes('1g'), 1024 ** 3);
    assert.throws(() => parseBytes('1.5M'));
    assert.deepEqual(
      parseIperfServerCsv(
        '19700101000000,203.0.113.1,17152,198.51.100.10,5201,1,0.0-4.4,4364748,7851773,1.053,272583,340782,79.987,8',
      ),
      { lost: 272583, total: 340782, seconds: 4.4 },
    );
    assert.equal(parseIperfServerCsv('[  1] local 198.51.100.10 port 5201'), undefined);
  });
});
