/**
 * Fuzzing the `local` global store's protocol (src/global/sequencer-wire.ts). The server's sessions are fed
 * authentic frames (encodeFrame with the key, the right nonce in front) whose bodies are valid, damaged or
 * random, through the same code a TCP socket drives; a model of the body layouts predicts which frames
 * are dropped, and the server's drop count must equal it. The client's body decoder gets every kind of
 * server body. Bad bodies may only end in a counted drop or NFS_ERR_STATE, never another exception.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { NfsError } from '../../src/errors.js';
import { SequencerClient } from '../../src/global/sequencer-client.js';
import { SequencerServer } from '../../src/global/sequencer-server.js';
import { SequencerFrame } from '../../src/global/sequencer-wire.js';
import { silentLogger } from '../../src/log.js';
import { ByteReader, ByteWriter } from '../../src/state/bytes.js';
import { encodeFrame, FrameDecoder } from '../../src/wire/frame.js';
import { concat, mutate, report, Rng } from './corpus.js';

const KEY = randomBytes(32);
const FRAMES = 3000;
const CLIENT_BODIES = 3000;

/**
 * Stands in for the TCP socket of one connection: what the server writes is decoded as frames, what the
 * test "receives" is emitted as data, and destroy closes it as a socket would.
 */
class FakeSocket extends EventEmitter {
  destroyed = false;
  writableLength = 0;
  readonly frames: { type: number; body: Uint8Array }[] = [];
  private readonly decoder = new FrameDecoder({ key: KEY, maxFrame: 64 << 20 });

  setNoDelay(): this {
    return this;
  }

  write(chunk: Uint8Array): boolean {
    this.decoder.push(chunk, (type, _seq, body) => this.frames.push({ type, body: body.slice() }));
    return true;
  }

  destroy(): this {
    if (!this.destroyed) {
      this.destroyed = true;
      this.emit('close');
    }
    return this;
  }
}

/** One session with the server, after both HELLOs: bodies go out with the server's nonce in front. */
class Conn {
  readonly socket = new FakeSocket();
  private seq = 0;
  readonly serverNonce: Uint8Array;
  readonly nonce = randomBytes(8);

  constructor(server: SequencerServer) {
    (server as unknown as { accept(s: net.Socket): void }).accept(this.socket as unknown as net.Socket);
    const hello = this.socket.frames.shift()!;
    assert.equal(hello.type, SequencerFrame.HELLO);
    this.serverNonce = hello.body;
    this.send(SequencerFrame.HELLO, this.nonce, false);
  }

  send(type: number, payload: Uint8Array, withNonce = true): void {
    const body = withNonce ? concat(this.serverNonce, payload) : payload;
    this.socket.emit('data', Buffer.from(encodeFrame(type, ++this.seq, body, KEY)));
  }
}

interface Update {
  id: string;
  data: Uint8Array;
}

function writeUpdates(w: ByteWriter, updates: readonly Update[]): void {
  w.u32(updates.length);
  for (const u of updates) {
    w.bytes(new TextEncoder().encode(u.id));
    w.bytes(u.data);
  }
}

const strict = new TextDecoder('utf-8', { fatal: true });

/** The update list layout: whether `b` from `at` holds `count` whole updates with UTF-8 ids. */
function updatesParse(dv: DataView, b: Uint8Array, at: number): boolean {
  if (b.length - at < 4) return false;
  const count = dv.getUint32(at);
  at += 4;
  if (count * 8 > b.length - at) return false;
  for (let i = 0; i < count; i++) {
    for (let field = 0; field < 2; field++) {
      if (b.length - at < 4) return false;
      const n = dv.getUint32(at);
      at += 4;
      if (n > b.length - at) return false;
      if (field === 0) {
        try {
          strict.decode(b.subarray(at, at + n));
        } catch {
          return false;
        }
      }
      at += n;
    }
  }
  return true;
}

type Outcome = 'ok' | 'dropped' | 'malformed';

/** What the server must do with a body (after the nonce) of a frame of `type`, by the layouts above. */
function serverModel(type: number, b: Uint8Array): Outcome {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  switch (type) {
    case SequencerFrame.SUBMIT:
      return b.length >= 8 && updatesParse(dv, b, 8) ? 'ok' : 'malformed';
    case SequencerFrame.WATCH:
      return b.length >= 16 ? 'ok' : 'malformed';
    case SequencerFrame.UNWATCH:
      return b.length >= 8 ? 'ok' : 'malformed';
    default:
      return 'dropped';
  }
}

/** What the client must do with a server body, by the same layouts. */
function clientModel(type: number, b: Uint8Array): 'ok' | 'malformed' {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const bytesAt = (at: number): boolean => b.length - at >= 4 && dv.getUint32(at) <= b.length - at - 4;
  switch (type) {
    case SequencerFrame.RESULT:
      return b.length >= 24 ? 'ok' : 'malformed';
    case SequencerFrame.FAIL:
      // No submit is pending here, and the message of an answer nobody waits for is not read.
      return b.length >= 8 ? 'ok' : 'malformed';
    case SequencerFrame.WATCH_FAIL:
      return b.length >= 8 && bytesAt(8) ? 'ok' : 'malformed';
    case SequencerFrame.UPDATES:
      // The revision is a u53: one at 2^53 or above is refused, as it could never be passed.
      return b.length >= 16 && dv.getUint32(8) <= 0x1fffff && updatesParse(dv, b, 16) ? 'ok' : 'malformed';
    default:
      return 'malformed';
  }
}

function validUpdates(rng: Rng): Update[] {
  return Array.from({ length: rng.int(4) }, () => ({
    id: rng.pick(['nat:', 'lb:', 'ids:', 'ü:']) + String(rng.int(500)),
    data: rng.bytes(rng.int(12)),
  }));
}

/** A server-bound body of a random kind, valid before any damage. */
function serverBody(rng: Rng, head: number): { type: number; payload: Uint8Array } {
  const w = new ByteWriter(64);
  const type = rng.pick([
    SequencerFrame.SUBMIT,
    SequencerFrame.SUBMIT,
    SequencerFrame.WATCH,
    SequencerFrame.UNWATCH,
    SequencerFrame.HELLO,
    SequencerFrame.RESULT,
    0,
    99,
  ]);
  if (type === SequencerFrame.SUBMIT) {
    w.u53(rng.int(1 << 20));
    writeUpdates(w, validUpdates(rng));
  } else if (type === SequencerFrame.WATCH) {
    w.u53(1 + rng.int(4));
    w.u53(rng.pick([Math.max(0, head - rng.int(3)), head + 1 + rng.int(10)]));
  } else if (type === SequencerFrame.UNWATCH) {
    w.u53(1 + rng.int(4));
  } else {
    w.raw(rng.bytes(rng.int(16)));
  }
  return { type, payload: w.view().slice() };
}

describe('fuzz: the global sequencer protocol', { timeout: 60_000 }, () => {
  const servers: SequencerServer[] = [];
  after(async () => {
    for (const s of servers) await s.stop();
  });

  it(`drops exactly the frames the layouts refuse, over ${FRAMES} authentic frames`, (t) => {
    const server = new SequencerServer({ key: KEY, logger: silentLogger });
    servers.push(server);
    const rng = new Rng(0x5eed_0601);
    const expected = { dropped: 0, malformed: 0, ok: 0 };
    let submits = 0;
    let answers = 0;
    let connections = 0;
    let conn: Conn | undefined;
    let sent = 0;
    const close = (): void => {
      if (conn === undefined) return;
      answers += conn.socket.frames.filter(
        (f) => f.type === SequencerFrame.RESULT || f.type === SequencerFrame.FAIL,
      ).length;
      conn.socket.destroy();
      conn = undefined;
    };
    for (let i = 0; i < FRAMES; i++) {
      if (conn === undefined || sent === 50) {
        close();
        conn = new Conn(server);
        connections++;
        sent = 0;
      }
      const { type, payload } = serverBody(rng, server.sequencer.head);
      const kind = rng.int(10);
      const body = kind < 4 ? mutate(payload, rng) : kind === 4 ? rng.bytes(rng.int(40)) : payload;
      // Now and then a foreign nonce in front: a frame recorded on another connection.
      const foreign = rng.int(20) === 0;
      const outcome: Outcome = foreign ? 'dropped' : serverModel(type, body);
      expected[outcome]++;
      if (outcome === 'ok' && type === SequencerFrame.SUBMIT) submits++;
      if (foreign) conn.send(type, concat(randomBytes(8), body), false);
      else conn.send(type, body);
      sent++;
      if (outcome === 'malformed') {
        assert.equal(conn.socket.destroyed, true, 'a body that does not parse ends the connection');
        answers += conn.socket.frames.filter(
          (f) => f.type === SequencerFrame.RESULT || f.type === SequencerFrame.FAIL,
        ).length;
        conn = undefined;
      } else {
        assert.equal(conn.socket.destroyed, false, `frame ${i} (type ${type}) must not end the connection`);
      }
    }
    close();
    assert.equal(server.counts.droppedFrames, expected.dropped + expected.malformed);
    assert.equal(answers, submits, 'every SUBMIT that parses is answered, RESULT or FAIL');
    report(t, 'sequencer server', {
      frames: FRAMES,
      connections,
      ...expected,
      revisions: server.sequencer.head,
    });
  });

  it(`decodes ${CLIENT_BODIES} server bodies in the client, refusing bad ones with NFS_ERR_STATE only`, (t) => {
    const client = new SequencerClient({ host: '127.0.0.1', port: 1, key: KEY, logger: silentLogger });
    const handle = (client as unknown as { handle(type: number, r: ByteReader): void }).handle.bind(client);
    const applied: Update[] = [];
    const watch = client.watch(0, (u) => {
      applied.push({ id: u.id, data: u.data });
    });
    const rng = new Rng(0x5eed_0602);
    const counts = { ok: 0, refused: 0 };
    for (let i = 0; i < CLIENT_BODIES; i++) {
      const w = new ByteWriter(64);
      const type = rng.pick([
        SequencerFrame.RESULT,
        SequencerFrame.FAIL,
        SequencerFrame.UPDATES,
        SequencerFrame.UPDATES,
        SequencerFrame.WATCH_FAIL,
        SequencerFrame.SUBMIT,
        0,
      ]);
      let updates: Update[] = [];
      if (type === SequencerFrame.UPDATES) {
        w.u53(1);
        w.u53(watch.revision + 1 + rng.int(3));
        updates = validUpdates(rng);
        writeUpdates(w, updates);
      } else if (type === SequencerFrame.RESULT) {
        for (let k = 0; k < 2; k++) w.u53(rng.int(1000));
        w.u32(rng.int(5));
        w.u32(rng.int(5));
      } else {
        w.u53(type === SequencerFrame.WATCH_FAIL ? 1000 + rng.int(5) : rng.int(1000));
        w.bytes(rng.bytes(rng.int(20)));
      }
      const clean = rng.int(2) === 0;
      const b = clean ? w.view().slice() : mutate(w.view(), rng);
      const want = clientModel(type, b);
      const before = applied.length;
      try {
        handle(type, new ByteReader(b));
        assert.equal(want, 'ok', `type ${type} body ${Buffer.from(b).toString('hex')}`);
        counts.ok++;
      } catch (err) {
        assert.ok(err instanceof NfsError && err.code === 'NFS_ERR_STATE', String(err));
        assert.equal(want, 'malformed');
        counts.refused++;
      }
      // An intact UPDATES body of the watch delivers its updates, in order, once.
      if (clean && type === SequencerFrame.UPDATES) assert.deepEqual(applied.slice(before), updates);
    }
    report(t, 'sequencer client', { bodies: CLIENT_BODIES, ...counts, applied: applied.length });
  });

  it('keeps serving real clients after damaged frames on real connections', async () => {
    const server = new SequencerServer({ key: KEY, logger: silentLogger });
    servers.push(server);
    await server.listen('127.0.0.1', 0);
    const client = new SequencerClient({
      host: '127.0.0.1',
      port: server.port,
      key: KEY,
      logger: silentLogger,
    });
    await client.start();
    const first = await client.submit([{ id: 'fuzz:1', data: new Uint8Array([1]) }], { deadlineMs: 5000 });
    assert.equal(first.applied, 1);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 64 }), async (garbage) => {
        const s = net.connect(server.port, '127.0.0.1');
        s.on('error', () => undefined);
        // Read what the server sends (its HELLO), so that its end of the stream arrives and closes ours.
        s.resume();
        s.write(garbage);
        s.end();
        await new Promise((r) => s.once('close', r));
      }),
      { seed: 0x5eed_0603, numRuns: 50 },
    );
    const second = await client.submit([{ id: 'fuzz:2', data: new Uint8Array([2]) }], { deadlineMs: 5000 });
    assert.equal(second.applied, 1);
    await client.stop();
  });
});
