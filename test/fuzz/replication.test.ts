/**
 * Fuzzing the batch replication receiver (src/nf/replication.ts, ReplicaStore) through a real TCP
 * connection: authentic REPLICATE frames (encodeFrame with the cluster key) whose bodies are valid,
 * damaged or random record lists, so that the damage reaches the record decoder rather than the frame's
 * tag check. A model of the record rules in docs/wire-format.md predicts every count the store keeps —
 * records applied, frames refused as malformed, gaps and the repairs they ask for — and the store must
 * match it, acknowledge every frame and keep the connection.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { NfsError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { ReplicaStore } from '../../src/nf/replica-store.js';
import { RecordKind, ReplicationFrame, writeRecord } from '../../src/nf/replication.js';
import { canonicalKey } from '../../src/packet/flow-key.js';
import { ByteReader, ByteWriter } from '../../src/state/bytes.js';
import { CrdtGlobalState } from '../../src/state/global-crdt.js';
import { LocalGlobalState } from '../../src/state/global-local.js';
import type { FlowKey, NetworkFunction } from '../../src/types.js';
import { encodeFrame, FrameDecoder } from '../../src/wire/frame.js';
import { mutate, report, Rng } from './corpus.js';

const KEY = randomBytes(32);
const ORIGIN = 'nf-a';
const BULK = 4000;
const RECORD_HEADER = 38;

/** An NF whose state is a list of bytes and whose delta appends bytes: any bytes decode, so every count is exact. */
const bytesNf = {
  name: 'bytes',
  codec: {
    decodeFull: (r: ByteReader): number[] => {
      const s: number[] = [];
      while (r.remaining > 0) s.push(r.u8());
      return s;
    },
    applyDelta: (s: number[], r: ByteReader): void => {
      while (r.remaining > 0) s.push(r.u8());
    },
    encodeFull: (s: number[], w: ByteWriter): void => {
      for (const b of s) w.u8(b);
    },
    mark: (): number => 0,
    encodeDelta: (): void => undefined,
  },
  allocations: () => ({}),
  initFlow: () => [],
  process: () => 0,
  releaseFlow: () => undefined,
} as unknown as NetworkFunction<unknown>;

/** One authenticated connection to the store, as a peer instance opens it. */
class Peer {
  private readonly socket: net.Socket;
  private readonly decoder = new FrameDecoder({ key: KEY, maxFrame: 1 << 20 });
  private seq = 0;
  acks = 0;
  repairs = 0;
  lastAck = 0;
  private waiting: { seq: number; done: () => void } | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.decoder.push(chunk, (type, _seq, body) => {
        if (type === ReplicationFrame.REPAIR) this.repairs++;
        if (type !== ReplicationFrame.ACK) return;
        this.acks++;
        this.lastAck = new ByteReader(body).u53();
        if (this.waiting !== undefined && this.lastAck >= this.waiting.seq) {
          this.waiting.done();
          this.waiting = undefined;
        }
      });
    });
  }

  static async open(port: number, hello: string | null = ORIGIN): Promise<Peer> {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    const peer = new Peer(socket);
    if (hello !== null) peer.frame(ReplicationFrame.HELLO, new TextEncoder().encode(hello));
    return peer;
  }

  frame(type: number, body: Uint8Array): number {
    this.socket.write(encodeFrame(type, ++this.seq, body, KEY));
    return this.seq;
  }

  raw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Sends a REPLICATE frame; resolves once the store acknowledged it. */
  replicate(body: Uint8Array): Promise<void> {
    const seq = this.frame(ReplicationFrame.REPLICATE, body);
    return this.acked(seq);
  }

  acked(seq: number): Promise<void> {
    if (this.lastAck >= seq) return Promise.resolve();
    return new Promise((done) => {
      this.waiting = { seq, done };
    });
  }

  get closed(): Promise<boolean> {
    if (this.socket.destroyed) return Promise.resolve(true);
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve(true));
      setTimeout(() => resolve(this.socket.destroyed), 2000).unref();
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

interface Rec {
  key: FlowKey;
  version: number;
  next: number;
  born: number;
  kind: number;
  state: Uint8Array;
}

function body(records: readonly Rec[]): Uint8Array {
  const w = new ByteWriter(256);
  for (const r of records)
    writeRecord(w, { key: r.key, version: r.version, expected: r.next, born: r.born }, r.kind, r.state);
  return w.view().slice();
}

/** The store's rules, kept apart from its code: what a frame body does to the replicas and counters. */
class Model {
  readonly versions = new Map<string, { version: number; stale: boolean }>();
  records = 0;
  malformed = 0;
  gaps = 0;
  globals: Uint8Array[] = [];

  apply(b: Uint8Array): void {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    let at = 0;
    while (at < b.length) {
      if (b.length - at < RECORD_HEADER || b[at + 33]! > RecordKind.GLOBAL) {
        this.malformed++;
        return;
      }
      const n = dv.getUint32(at + 34);
      if (n > b.length - at - RECORD_HEADER) {
        this.malformed++;
        return;
      }
      const k = canonicalKey(
        dv.getUint32(at + 1),
        dv.getUint32(at + 5),
        dv.getUint16(at + 9),
        dv.getUint16(at + 11),
        b[at]!,
      );
      const id = `${k.proto}/${k.srcIp}:${k.srcPort}/${k.dstIp}:${k.dstPort}`;
      const version = dv.getUint32(at + 13);
      const kind = b[at + 33]!;
      this.records++;
      const r = this.versions.get(id);
      if (kind === RecordKind.GLOBAL) this.globals.push(b.slice(at + RECORD_HEADER, at + RECORD_HEADER + n));
      else if (kind === RecordKind.END) this.versions.delete(id);
      else if (kind === RecordKind.FULL) this.versions.set(id, { version, stale: false });
      else if (r !== undefined && !r.stale && r.version === version - 1) r.version = version;
      else {
        this.gaps++;
        if (r !== undefined) r.stale = true;
      }
      at += RECORD_HEADER + n;
    }
  }
}

/** Valid eventual global state: a CRDT delta with a few counters and set members. */
function crdtDelta(rng: Rng, replica: number): Uint8Array {
  const g = new CrdtGlobalState(new LocalGlobalState(), { replica });
  g.bind(1 + rng.int(1000), 1 + rng.int(1000));
  for (let i = rng.int(4); i >= 0; i--)
    g.counters(rng.pick(['ids.bytes', 'lb.backends'])).add(rng.u32(), rng.int(100) - 50);
  for (let i = rng.int(3); i >= 0; i--) g.sets('ids.seen').add(rng.u32(), rng.int(1000));
  g.unbind();
  return g.takeDelta();
}

describe('fuzz: replication frames and records', { timeout: 60_000 }, () => {
  let store: ReplicaStore;
  const globals = { merged: 0, refused: 0, other: 0 };
  const sink = new CrdtGlobalState(new LocalGlobalState(), { replica: 999 });

  before(async () => {
    store = new ReplicaStore({ members: [ORIGIN], key: KEY, nf: bytesNf }, silentLogger);
    store.onGlobal = (states) => {
      for (const s of states) {
        try {
          sink.merge(s);
          globals.merged++;
        } catch (err) {
          if (err instanceof NfsError) globals.refused++;
          else globals.other++;
        }
      }
    };
    await store.listen('127.0.0.1', 0);
  });

  after(async () => {
    await store.stop();
  });

  it('applies every record list the writer makes: full state, deltas on top, and the end of a flow', async () => {
    const peer = await Peer.open(store.port);
    let flow = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 40 }),
        fc.array(fc.uint8Array({ maxLength: 20 }), { maxLength: 40 }),
        fc.integer({ min: 1, max: 0xffffff00 }),
        fc.boolean(),
        async (full, deltas, version, end) => {
          flow++;
          const key = canonicalKey(0x0a000000 + flow, 0xc0000201, 1024 + (flow % 60000), 80, 6);
          const recs: Rec[] = [{ key, version, next: 1, born: 7, kind: RecordKind.FULL, state: full }];
          deltas.forEach((d, i) =>
            recs.push({
              key,
              version: version + i + 1,
              next: i + 2,
              born: 7,
              kind: RecordKind.DELTA,
              state: d,
            }),
          );
          await peer.replicate(body(recs));
          const last = version + deltas.length;
          const want = Uint8Array.from([...full, ...deltas.flatMap((d) => [...d])]);
          assert.deepEqual(Array.from(store.stateOf(ORIGIN, key, last) ?? []), Array.from(want));
          assert.notEqual(store.stateOf(ORIGIN, key, last), undefined);
          assert.equal(store.stateOf(ORIGIN, key, last + 1), undefined);
          if (end) {
            await peer.replicate(
              body([
                { key, version: last, next: 0, born: 0, kind: RecordKind.END, state: new Uint8Array(0) },
              ]),
            );
            assert.equal(store.stateOf(ORIGIN, key, last), undefined);
          }
        },
      ),
      {
        seed: 0x5eed_0501,
        numRuns: 150,
        interruptAfterTimeLimit: 10_000,
        // An empty full state with deltas on top: materialising it once looped for ever (a writer of size 0).
        examples: [[new Uint8Array(0), [Uint8Array.of(1), Uint8Array.of(2, 3)], 1, false]],
      },
    );
    assert.equal(store.drops.malformed + store.drops.gap + store.drops.bad_frame, 0);
    peer.close();
  });

  it(`matches the model on ${BULK} authentic frames of valid, damaged and random records`, async (t) => {
    const rng = new Rng(0x5eed_0502);
    const peer = await Peer.open(store.port);
    const model = new Model();
    const base = {
      records: store.records,
      malformed: store.drops.malformed,
      gap: store.drops.gap,
      repairs: store.repairsRequested,
    };
    const keys = Array.from({ length: 12 }, (_, i) =>
      canonicalKey(0x0b000000 + i, 0xc0000202, 2000 + i, 443, 17),
    );
    const version = new Map<FlowKey, number>();
    let last = 0;
    let damaged = 0;
    let random = 0;
    for (let f = 0; f < BULK; f++) {
      const recs: Rec[] = [];
      for (let i = 1 + rng.int(5); i > 0; i--) {
        const key = rng.pick(keys);
        const v = version.get(key) ?? 0;
        const pick = rng.int(10);
        const kind =
          pick < 3
            ? RecordKind.FULL
            : pick < 7
              ? RecordKind.DELTA
              : pick < 8
                ? RecordKind.END
                : RecordKind.GLOBAL;
        if (kind === RecordKind.GLOBAL) {
          const state = crdtDelta(rng, 1 + rng.int(8));
          const zero = canonicalKey(0, 0, 0, 0, 0);
          recs.push({
            key: zero,
            version: 0,
            next: 0,
            born: 0,
            kind,
            state: rng.int(3) === 0 ? mutate(state, rng) : state,
          });
          continue;
        }
        const next =
          kind === RecordKind.FULL
            ? v + 1
            : kind === RecordKind.DELTA
              ? rng.int(8) === 0
                ? v + 5
                : v + 1
              : v;
        version.set(key, next);
        recs.push({ key, version: next, next: next * 30, born: 1, kind, state: rng.bytes(rng.int(24)) });
      }
      let b = body(recs);
      if (f % 10 === 9) {
        b = rng.bytes(rng.int(120));
        random++;
      } else if (rng.int(2) === 0) {
        b = mutate(b, rng);
        damaged++;
      }
      model.apply(b);
      last = peer.frame(ReplicationFrame.REPLICATE, b);
    }
    await peer.acked(last);
    const got = {
      records: store.records - base.records,
      malformed: store.drops.malformed - base.malformed,
      gap: store.drops.gap - base.gap,
      repairs: store.repairsRequested - base.repairs,
    };
    assert.deepEqual(got, {
      records: model.records,
      malformed: model.malformed,
      gap: model.gaps,
      repairs: model.gaps,
    });
    assert.equal(peer.acks, BULK, 'every frame is acknowledged');
    assert.equal(store.drops.bad_frame + store.drops.no_hello + store.drops.not_member, 0);
    assert.equal(globals.other, 0, 'global state that does not decode is refused with NFS_ERR_STATE');
    assert.equal(globals.merged + globals.refused, model.globals.length);
    // The connection is still open and still applies, and what was applied can be read.
    await peer.replicate(new Uint8Array(0));
    for (const key of keys) store.stateOf(ORIGIN, key, version.get(key) ?? 0);
    assert.ok(Array.isArray(store.digests()[ORIGIN]));
    peer.close();
    report(t, 'replication', {
      frames: BULK,
      damaged,
      random,
      records: got.records,
      malformed: got.malformed,
      gap: got.gap,
      globalMerged: globals.merged,
      globalRefused: globals.refused,
    });
  });

  it('closes a connection that does not begin with a member HELLO, or that sends what is not a frame, and counts why', async (t) => {
    const rng = new Rng(0x5eed_0503);
    const before = { ...store.drops };
    const n = 40;
    for (let i = 0; i < n; i++) {
      // No HELLO: a REPLICATE first.
      let p = await Peer.open(store.port, null);
      p.frame(ReplicationFrame.REPLICATE, new Uint8Array(0));
      assert.ok(await p.closed);
      // A HELLO from someone who is not a member (random bytes as its id).
      p = await Peer.open(store.port, Buffer.from(rng.bytes(1 + rng.int(20))).toString('latin1'));
      assert.ok(await p.closed);
      // After the HELLO, a frame under another key, or a length no frame may have.
      p = await Peer.open(store.port, ORIGIN);
      if (i % 2 === 0) p.raw(encodeFrame(ReplicationFrame.REPLICATE, 2, rng.bytes(30), randomBytes(32)));
      else p.raw(Uint8Array.of(0xff, 0xff, 0xff, 0xff));
      assert.ok(await p.closed);
    }
    const d = {
      no_hello: store.drops.no_hello - before.no_hello,
      not_member: store.drops.not_member - before.not_member,
      bad_frame: store.drops.bad_frame - before.bad_frame,
    };
    assert.deepEqual(d, { no_hello: n, not_member: n, bad_frame: n });
    report(t, 'replication connections', { refused: 3 * n, ...d });
  });
});
