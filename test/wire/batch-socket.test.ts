import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import {
  IO_FALLBACK_REASON,
  MAX_DATAGRAM,
  NATIVE_IO,
  openBatchSocket,
  type BatchSocket,
} from '../../src/wire/batch-socket.js';
import { until } from '../helpers/poll.js';

/** A receiver that keeps each datagram's first two bytes (a sender's number and a sequence number). */
async function receiver(io: 'auto' | 'node'): Promise<{ s: BatchSocket; got: number[][] }> {
  const got: number[][] = [];
  const s = await openBatchSocket('127.0.0.1', 0, (d) => got.push([d[0]!, d[1]!, d.length]), io);
  return { s, got };
}

async function closedPort(): Promise<number> {
  const u = dgram.createSocket('udp4');
  u.bind(0, '127.0.0.1');
  await once(u, 'listening');
  const port = u.address().port;
  u.close();
  return port;
}

// Where the addon is built (a C compiler and Node's headers), both paths; else node:dgram alone.
const paths: ('auto' | 'node')[] = NATIVE_IO ? ['auto', 'node'] : ['node'];

describe('BatchSocket', { timeout: 60_000 }, () => {
  it('says why datagrams go through node:dgram, when they do', () => {
    assert.equal(IO_FALLBACK_REASON === undefined, NATIVE_IO);
  });

  for (const io of paths) {
    const name = io === 'auto' && NATIVE_IO ? 'native' : 'node:dgram';

    it(`${name}: delivers every datagram, in order per destination, whatever the batches`, async () => {
      const a = await receiver(io);
      const b = await receiver(io);
      const tx = await openBatchSocket('127.0.0.1', 0, () => undefined, io);
      assert.equal(tx.native, name === 'native');
      await tx.dest(0, '127.0.0.1', a.s.port);
      await tx.dest(1, '127.0.0.1', b.s.port);
      // 3000 datagrams in bursts of 1 to 200, alternating destinations in runs: more than one batch
      // and more than the queue holds, as the node:dgram path sends each at once.
      const buf = new Uint8Array(3000 * 64);
      let seq = 0;
      for (let burst = 1; seq < 3000; burst = (burst * 7) % 200 || 1) {
        for (let k = 0; k < burst && seq < 3000; k++, seq++) {
          const at = seq * 64;
          const to = Math.floor(seq / 3) % 2;
          buf[at] = to;
          buf[at + 1] = seq & 0xff;
          tx.queue(to, buf, at, 20 + (seq % 40));
        }
        tx.flush();
        await new Promise((r) => setImmediate(r));
      }
      await until(() => a.got.length + b.got.length === 3000);
      assert.equal(a.got.length + b.got.length, 3000);
      for (const [who, r] of [
        [0, a],
        [1, b],
      ] as const) {
        const seqs = r.got.map((g) => g[1]!);
        assert.ok(
          r.got.every((g) => g[0] === who),
          'each datagram reached its own destination',
        );
        let wraps = 0;
        for (let i = 1; i < seqs.length; i++) if (seqs[i]! < seqs[i - 1]!) wraps++;
        assert.ok(wraps <= Math.ceil(3000 / 256), `in order: ${wraps} wraps`);
      }
      assert.equal(tx.sendErrors, 0);
      for (const s of [a.s, b.s, tx]) s.close();
    });

    it(`${name}: runs of one length, to destinations taken in turns, arrive as the same datagrams`, async () => {
      // The native path sends each run to one destination as one GSO send and receives it whole (UDP_GRO):
      // every datagram must come out with its own length and bytes, in order per destination.
      const bytes: Uint8Array[][] = [[], []];
      const rx = await Promise.all(
        bytes.map((mine) => openBatchSocket('127.0.0.1', 0, (d) => mine.push(d.slice()), io)),
      );
      const tx = await openBatchSocket('127.0.0.1', 0, () => undefined, io);
      for (const [i, r] of rx.entries()) await tx.dest(i, '127.0.0.1', r.port);
      const N = 2400;
      const len = (seq: number): number => (seq % 100 === 99 ? 300 + (seq % 7) : 1400);
      const buf = new Uint8Array(N * 1400);
      for (let seq = 0; seq < N; seq++) {
        const at = seq * 1400;
        for (let k = 0; k < len(seq); k++) buf[at + k] = (seq * 31 + k) & 0xff;
        tx.queue(seq % 2, buf, at, len(seq));
        if (seq % 500 === 499) tx.flush();
      }
      tx.flush();
      await until(() => bytes[0]!.length + bytes[1]!.length === N);
      for (const to of [0, 1]) {
        const mine = [...Array(N).keys()].filter((seq) => seq % 2 === to);
        assert.equal(bytes[to]!.length, mine.length);
        mine.forEach((seq, i) => {
          const d = bytes[to]![i]!;
          assert.equal(d.length, len(seq), `datagram ${seq}: its own length`);
          assert.ok(
            d.every((b, k) => b === ((seq * 31 + k) & 0xff)),
            `datagram ${seq}: its own bytes`,
          );
        });
      }
      assert.equal(tx.sendErrors, 0);
      for (const s of [...rx, tx]) s.close();
    });

    it(`${name}: drops and counts a datagram longer than ${MAX_DATAGRAM} bytes, and passes the rest`, async () => {
      const r = await receiver(io);
      const u = dgram.createSocket('udp4');
      u.send(new Uint8Array(MAX_DATAGRAM + 1), r.s.port, '127.0.0.1');
      u.send(new Uint8Array(MAX_DATAGRAM), r.s.port, '127.0.0.1');
      await until(() => r.got.length === 1 && r.s.oversize === 1);
      assert.deepEqual(
        r.got.map((g) => g[2]),
        [MAX_DATAGRAM],
      );
      assert.equal(r.s.oversize, 1);
      u.close();
      r.s.close();
    });

    it(`${name}: counts what a closed destination refuses, and sends on once it is replaced`, async () => {
      const r = await receiver(io);
      const tx = await openBatchSocket('127.0.0.1', 0, () => undefined, io);
      await tx.dest(0, '127.0.0.1', await closedPort());
      const buf = new Uint8Array(64);
      for (let i = 0; i < 20 && tx.sendErrors === 0; i++) {
        tx.queue(0, buf, 0, 32);
        tx.flush();
        await new Promise((res) => setTimeout(res, 10));
      }
      assert.ok(tx.sendErrors > 0, 'the refusals are counted');
      await tx.dest(0, '127.0.0.1', r.s.port);
      tx.queue(0, buf, 0, 32);
      tx.flush();
      await until(() => r.got.length === 1);
      assert.equal(r.got.length, 1);
      tx.close();
      r.s.close();
    });
  }
});
