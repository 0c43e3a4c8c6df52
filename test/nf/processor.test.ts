import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../../src/clock.js';
import type { ProcessorOptions } from '../../src/nf/processor.js';
import { FlowProcessor } from '../../src/nf/processor.js';
import { createNf } from '../../src/nfs/index.js';
import { ByteReader } from '../../src/state/bytes.js';
import { LocalGlobalState } from '../../src/state/global-local.js';
import { DropReason } from '../../src/types.js';
import { buildUdp } from '../../src/packet/build.js';
import { FLOW_HEADER_LENGTH, StampView, writeStampHeader } from '../../src/wire/geneve.js';
import { stamped } from '../helpers/packets.js';

const OPTIONS: ProcessorOptions = {
  batchSize: 4,
  batchTimeoutMs: 5,
  maxHeld: 64,
  gapTimeoutMs: 100,
  flowIdleMs: 60_000,
};

function harness(nfType = 'ids', options: ProcessorOptions = OPTIONS) {
  const clock = new ManualClock();
  const global = new LocalGlobalState();
  const nf = createNf(nfType, {}, global);
  const out: { flow: number; seq: number }[] = [];
  const view = new StampView();
  const p = new FlowProcessor(
    nf,
    global,
    options,
    (buf, offset, length) => {
      assert.equal(view.parse(buf, offset, length), DropReason.NONE);
      // The test packets carry their flow index in the first payload byte.
      out.push({ flow: buf[offset + length - 8]!, seq: view.seq });
    },
    clock,
  );
  const feed = (d: Uint8Array): void => {
    p.receive(d, 0, d.length);
  };
  return { p, out, clock, feed, nf };
}

function packets(flows: number, perFlow: number): Uint8Array[] {
  const all: Uint8Array[] = [];
  for (let seq = 1; seq <= perFlow; seq++)
    for (let f = 0; f < flows; f++) all.push(stamped({ flow: f, seq }));
  return all;
}

function assertInOrder(out: { flow: number; seq: number }[], flows: number, perFlow: number): void {
  for (let f = 0; f < flows; f++) {
    const seqs = out.filter((o) => o.flow === f).map((o) => o.seq);
    assert.deepEqual(
      seqs,
      Array.from({ length: perFlow }, (_, i) => i + 1),
    );
  }
}

describe('FlowProcessor', { timeout: 60_000 }, () => {
  it('releases in-order packets at once', () => {
    const h = harness();
    for (const d of packets(3, 10)) h.feed(d);
    assertInOrder(h.out, 3, 10);
    assert.equal(h.p.counters.held, 0);
  });

  it('releases packets sent out of order in stamp order, with the same final state', () => {
    const inOrder = harness();
    for (const d of packets(4, 12)) inOrder.feed(d);
    const reference = inOrder.p.digest().flows.sort((a, b) => a.flow.localeCompare(b.flow));
    fc.assert(
      fc.property(fc.shuffledSubarray(packets(4, 12), { minLength: 48, maxLength: 48 }), (shuffled) => {
        const h = harness();
        for (const d of shuffled) h.feed(d);
        assertInOrder(h.out, 4, 12);
        assert.deepEqual(
          h.p.digest().flows.sort((a, b) => a.flow.localeCompare(b.flow)),
          reference,
        );
      }),
      { numRuns: 50, interruptAfterTimeLimit: 3000 },
    );
  });

  it('drops duplicates, held or already processed, and counts them', () => {
    const h = harness();
    h.feed(stamped({ flow: 0, seq: 1 }));
    h.feed(stamped({ flow: 0, seq: 1 }));
    h.feed(stamped({ flow: 0, seq: 3 }));
    h.feed(stamped({ flow: 0, seq: 3 }));
    h.feed(stamped({ flow: 0, seq: 2 }));
    assert.deepEqual(
      h.out.map((o) => o.seq),
      [1, 2, 3],
    );
    assert.equal(h.p.counters.drops[DropReason.DUPLICATE], 2);
  });

  it('skips a gap that never fills after the gap timeout, and counts it', () => {
    const h = harness();
    h.feed(stamped({ flow: 0, seq: 1 }));
    h.feed(stamped({ flow: 0, seq: 3 }));
    h.feed(stamped({ flow: 0, seq: 4 }));
    assert.equal(h.out.length, 1);
    h.clock.advance(50);
    h.p.tick(h.clock.now());
    assert.equal(h.out.length, 1, 'not before the timeout');
    h.clock.advance(60);
    h.p.tick(h.clock.now());
    assert.deepEqual(
      h.out.map((o) => o.seq),
      [1, 3, 4],
    );
    assert.equal(h.p.counters.gapSkipped, 1);
    assert.equal(h.p.counters.drops[DropReason.GAP_TIMEOUT], 1);
    // The late packet is now a duplicate, not a reorder.
    h.feed(stamped({ flow: 0, seq: 2 }));
    assert.equal(h.out.length, 3);
  });

  it('bounds the hold list: overflowing it skips the gap instead of growing', () => {
    const h = harness('ids', { ...OPTIONS, maxHeld: 3 });
    for (const seq of [2, 3, 4, 5]) h.feed(stamped({ flow: 0, seq }));
    assert.deepEqual(
      h.out.map((o) => o.seq),
      [2, 3, 4, 5],
    );
    assert.equal(h.p.counters.gapSkipped, 1);
  });

  it('closes a batch after S packets or T ms, and its deltas rebuild the state', () => {
    const h = harness('ids');
    const replica: { state?: unknown; versions: number[] } = { versions: [] };
    h.p.onBatch = (flow, version, delta, full) => {
      replica.versions.push(version);
      // The first batch of a flow carries its full state: the peer has nothing to apply a delta to.
      assert.equal(full, version === 1);
      if (full) replica.state = h.nf.codec.decodeFull(new ByteReader(delta));
      else h.nf.codec.applyDelta(replica.state, new ByteReader(delta));
      assert.deepEqual(replica.state, flow.state);
    };
    for (let seq = 1; seq <= 9; seq++) h.feed(stamped({ flow: 0, seq }));
    assert.deepEqual(replica.versions, [1, 2], 'two full batches of 4');
    h.clock.advance(5);
    h.p.tick(h.clock.now());
    assert.deepEqual(replica.versions, [1, 2, 3], 'the ninth packet closes on time');
  });

  it('in after-replication mode, holds output until its batch closes, then hands it over in order', () => {
    const h = harness('nat', { ...OPTIONS, release: 'after-replication' });
    for (let seq = 1; seq <= 6; seq++) h.feed(stamped({ flow: 0, seq }));
    assert.deepEqual(h.out, [], 'nothing is emitted directly');
    const committed = h.p.takeCommitted();
    assert.equal(committed.length, 4 * 3, 'the first batch of 4 closed; 5 and 6 are in the open one');
    const view = new StampView();
    const seqs: number[] = [];
    for (let i = 0; i < committed.length; i += 3) {
      view.parse(committed[i] as Uint8Array, committed[i + 1] as number, committed[i + 2] as number);
      seqs.push(view.seq);
    }
    assert.deepEqual(seqs, [1, 2, 3, 4]);
    assert.deepEqual(h.p.takeCommitted(), []);
    h.p.flushBatches();
    assert.equal(h.p.takeCommitted().length, 2 * 3);
  });

  it('never throws on garbage, and counts each drop by reason', () => {
    const h = harness();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        h.feed(bytes);
      }),
      { numRuns: 500, interruptAfterTimeLimit: 2000 },
    );
    const valid = stamped({ flow: 1, seq: 1 });
    fc.assert(
      fc.property(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 }), (at, byte) => {
        const copy = valid.slice();
        copy[at] = byte;
        h.feed(copy);
        h.feed(copy.subarray(0, at));
      }),
      { numRuns: 500, interruptAfterTimeLimit: 2000 },
    );
    const c = h.p.counters;
    assert.ok(c.drops[DropReason.TRUNCATED]! > 0);
    assert.ok(c.drops[DropReason.BAD_CHECKSUM]! > 0);
    assert.ok(c.drops[DropReason.DUPLICATE]! > 0);
  });
});

describe('FlowProcessor: a packet that names its connection', { timeout: 60_000 }, () => {
  it('joins that flow in its stamp order, whatever its own 5-tuple', () => {
    const { p, out, feed } = harness('firewall');
    // Flow 0 is udp 10.0.0.1:10000 198.51.100.10:80. Its reply comes back addressed elsewhere (to a NAT's
    // public port), and the switch named the connection.
    const reply = (seq: number): Uint8Array => {
      const buf = new Uint8Array(FLOW_HEADER_LENGTH + 36);
      writeStampHeader(
        buf,
        0,
        { vni: 1, flags: 0, epoch: 1, seq, timeMs: 1_700_000_000_000 + seq },
        {
          srcIp: 0x0a000001,
          dstIp: 0xc633640a,
          srcPort: 10000,
          dstPort: 80,
          proto: 17,
        },
      );
      const n = buildUdp(buf, FLOW_HEADER_LENGTH, {
        srcIp: 0xc633640a,
        dstIp: 0xcb007101,
        srcPort: 80,
        dstPort: 1024,
        payload: new Uint8Array([0, seq, 1, 2, 3, 4, 5, 6]),
      });
      return buf.subarray(0, FLOW_HEADER_LENGTH + n);
    };
    feed(stamped({ flow: 0, seq: 1 }));
    feed(reply(3));
    feed(stamped({ flow: 0, seq: 2 }));
    assert.deepEqual(
      out.map((o) => o.seq),
      [1, 2, 3],
      'the reply waited for seq 2: one flow',
    );
    assert.equal(p.flows.size, 1);
  });
});
