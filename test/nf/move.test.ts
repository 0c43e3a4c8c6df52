import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../../src/clock.js';
import type { Guarantee } from '../../src/nf/guarantee.js';
import type { ProcessorOptions } from '../../src/nf/processor.js';
import { FlowProcessor } from '../../src/nf/processor.js';
import { Chain } from '../../src/nfs/chain.js';
import { createNf } from '../../src/nfs/index.js';
import { flowKeyOf } from '../../src/packet/flow-key.js';
import { Packet } from '../../src/packet/packet.js';
import { LocalGlobalState } from '../../src/state/global-local.js';
import { DECISION_PENDING } from '../../src/state/global-strong.js';
import type { NetworkFunction } from '../../src/types.js';
import { DropReason, Verdict } from '../../src/types.js';
import { STAMP_HEADER_LENGTH, StampFlag, StampView } from '../../src/wire/geneve.js';
import { stamped } from '../helpers/packets.js';

const OPTIONS: ProcessorOptions = {
  batchSize: 4,
  batchTimeoutMs: 1e9,
  maxHeld: 256,
  gapTimeoutMs: 1e9,
  flowIdleMs: 1e12,
};

function node(
  name: string,
  log: string[],
  clock = new ManualClock(),
  options = OPTIONS,
  nf: (global: LocalGlobalState) => NetworkFunction<unknown> = (global) => createNf('ids', {}, global),
) {
  const global = new LocalGlobalState();
  const view = new StampView();
  const p = new FlowProcessor(
    nf(global),
    global,
    options,
    (buf, offset, length) => {
      view.parse(buf, offset, length);
      log.push(`${name}:${view.seq}`);
    },
    clock,
  );
  return p;
}

const key = (() => {
  const d = stamped({ flow: 0, seq: 1 });
  const pkt = new Packet();
  pkt.parse(d, STAMP_HEADER_LENGTH, d.length - STAMP_HEADER_LENGTH);
  return flowKeyOf(pkt);
})();

function feed(p: FlowProcessor, seqs: Iterable<number>): void {
  for (const seq of seqs) {
    const d = stamped({ flow: 0, seq });
    p.receive(d, 0, d.length);
  }
}

function marker(seq: number): Uint8Array {
  return stamped({ flow: 0, seq, flags: StampFlag.END_OF_MOVE });
}

const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);

describe('moving a flow between processors', { timeout: 60_000 }, () => {
  it('loses nothing, reorders nothing, and ends with the state of a run without the move', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 0, max: 10 }),
        fc.integer({ min: 0, max: 10 }),
        (before, parkedAtSource, earlyAtDestination) => {
          const log: string[] = [];
          const src = node('src', log);
          const dst = node('dst', log);
          feed(src, range(1, before));
          // The controller prepares the destination, then freezes the source.
          dst.expect(key);
          const frozen = src.freeze(key)!;
          assert.equal(frozen.expected, before + 1);
          // Packets still routed to the source are parked there; after the rule changes, new ones reach the
          // destination, possibly before the state does.
          const cut = before + parkedAtSource;
          feed(src, range(before + 1, cut));
          feed(dst, range(cut + 1, cut + earlyAtDestination));
          dst.install(key, frozen.state, frozen.expected);
          // The switch's marker reaches the source, which forwards what it parked.
          let moved = 0;
          src.onMarker = (k) => {
            moved = src.handOver(k, (buf, offset, length) => {
              const copy = buf.slice(offset, offset + length);
              assert.ok((new StampView().parse(copy, 0, copy.length), true));
              dst.receive(copy, 0, copy.length);
            });
          };
          const m = marker(cut);
          src.receive(m, 0, m.length);
          assert.equal(moved, parkedAtSource);
          feed(dst, range(cut + earlyAtDestination + 1, cut + earlyAtDestination + 3));
          const last = cut + earlyAtDestination + 3;
          const seqs = log.map((l) => Number(l.split(':')[1]));
          assert.deepEqual(seqs, range(1, last), 'every packet once, in stamp order');
          assert.ok(log.slice(before).every((l) => l.startsWith('dst')));
          assert.equal(src.flows.size, 0);
          // Same final state as one processor that saw everything.
          const ref = node('ref', []);
          feed(ref, range(1, last));
          assert.equal(dst.digest().flows[0]!.digest, ref.digest().flows[0]!.digest);
        },
      ),
      { numRuns: 60, interruptAfterTimeLimit: 3000 },
    );
  });

  it('an aborted move leaves the flow with its source, nothing lost', () => {
    const log: string[] = [];
    const src = node('src', log);
    feed(src, range(1, 5));
    src.freeze(key);
    feed(src, range(6, 9));
    assert.equal(log.length, 5, 'parked while frozen');
    src.abort(key);
    feed(src, [10]);
    assert.deepEqual(
      log.map((l) => Number(l.split(':')[1])),
      range(1, 10),
    );
  });

  it('an install that comes after its move was called off is refused: the flow keeps one owner', () => {
    const log: string[] = [];
    const src = node('src', log);
    const dst = node('dst', log);
    feed(src, range(1, 5));
    dst.expect(key);
    const frozen = src.freeze(key)!;
    // The controller gave up at its deadline: the abort reached both sides before the install did.
    src.abort(key);
    dst.forget(key);
    assert.equal(dst.install(key, frozen.state, frozen.expected), false);
    assert.equal(dst.has(key), false);
    assert.equal(dst.flows.size, 0);
    feed(src, [6]);
    assert.equal(src.has(key), true);
    assert.deepEqual(
      log.map((l) => Number(l.split(':')[1])),
      range(1, 6),
    );
  });

  it('a chain flow whose first packet waits for a global decision is not frozen until it is decided', () => {
    // The second NF of the chain waits for a decision (a NAT's port claim) on the first packet, which the
    // first NF has already seen: the state holds the first NF's part, and the packet waits outside it.
    let waits = 1;
    const gate: NetworkFunction<object> = {
      name: 'gate',
      codec: {
        encodeFull: () => undefined,
        decodeFull: () => ({}),
        mark: () => 0,
        encodeDelta: () => undefined,
        applyDelta: () => undefined,
      },
      initFlow: () => {
        if (waits-- > 0) throw DECISION_PENDING;
        return {};
      },
      process: () => Verdict.FORWARD,
      releaseFlow: () => undefined,
      allocations: () => ({}),
    };
    const log: string[] = [];
    const src = node(
      'src',
      log,
      new ManualClock(),
      OPTIONS,
      (g) => new Chain([createNf('ids', {}, g), gate]),
    );
    feed(src, range(1, 3));
    assert.deepEqual(log, [], 'the first packet waits, the others behind it');
    assert.equal(src.freeze(key), undefined, 'a freeze now would leave the waiting packet behind');
    src.decided(key);
    assert.deepEqual(seqsOf(log), range(1, 3));
    assert.notEqual(src.freeze(key), undefined, 'decided, the flow moves as any other');
  });

  it('counts an end-of-move marker for a flow that is not moving, and ignores it', () => {
    const src = node('src', []);
    feed(src, range(1, 3));
    const m = marker(3);
    src.receive(m, 0, m.length);
    assert.equal(src.counters.strayMarkers, 1);
    feed(src, [4]);
    assert.equal(src.counters.processed, 4);
    assert.equal(src.counters.drops[DropReason.DUPLICATE], 0);
  });
});

/**
 * One move of flow 0 under `guarantee`: the source processes 1..before, freezes, parks the next `parked`
 * packets; the destination gets `fresh` packets from the switch — the first `early` of them before its
 * state is installed — interleaved (as `order` says) with what the source forwards after the end-of-move
 * marker.
 */
function scenario(
  guarantee: Guarantee,
  before: number,
  parked: number,
  fresh: number,
  order: readonly boolean[],
  early = 0,
): { log: string[]; src: FlowProcessor; dst: FlowProcessor; last: number } {
  const log: string[] = [];
  const src = node('src', log);
  const dst = node('dst', log);
  feed(src, range(1, before));
  dst.expect(key, guarantee);
  const frozen = src.freeze(key, guarantee)!;
  const cut = before + parked;
  feed(src, range(before + 1, cut));
  assert.equal(src.commit(key), true);
  const switchSeqs = range(cut + 1, cut + fresh);
  let k = Math.min(early, fresh);
  feed(dst, switchSeqs.slice(0, k));
  dst.install(key, frozen.state, frozen.expected);
  const forwarded: Uint8Array[] = [];
  src.onMarker = (k, buf, offset, length) => {
    src.handOver(
      k,
      (b, o, n) => {
        forwarded.push(b.slice(o, o + n));
      },
      buf.subarray(offset, offset + length),
    );
  };
  const m = marker(cut);
  src.receive(m, 0, m.length);
  // Fresh packets and forwarded ones reach the destination in the order `order` picks.
  while (forwarded.length > 0 || k < switchSeqs.length) {
    const fromSource =
      forwarded.length > 0 && (k >= switchSeqs.length || order[(k + forwarded.length) % order.length]);
    if (fromSource) {
      const d = forwarded.shift()!;
      dst.receive(d, 0, d.length);
    } else feed(dst, [switchSeqs[k++]!]);
  }
  return { log, src, dst, last: cut + fresh };
}

const seqsOf = (log: readonly string[]): number[] => log.map((l) => Number(l.split(':')[1]));

describe('move guarantees', { timeout: 60_000 }, () => {
  const split = [
    fc.integer({ min: 1, max: 20 }),
    fc.integer({ min: 0, max: 12 }),
    fc.integer({ min: 0, max: 12 }),
    fc.array(fc.boolean(), { minLength: 1, maxLength: 30 }),
    fc.integer({ min: 0, max: 4 }),
  ] as const;

  it('order-preserving: every packet once, in stamp order, whatever the split and arrival order', () => {
    fc.assert(
      fc.property(...split, (before, parked, fresh, order, early) => {
        const { log, dst, last } = scenario('order-preserving', before, parked, fresh, order, early);
        assert.deepEqual(seqsOf(log), range(1, last));
        const ref = node('ref', []);
        feed(ref, range(1, last));
        assert.equal(dst.digest().flows[0]!.digest, ref.digest().flows[0]!.digest);
      }),
      { numRuns: 100, interruptAfterTimeLimit: 3000 },
    );
  });

  it('loss-free: every packet once; the source’s may come behind the switch’s', () => {
    let reordered = 0;
    fc.assert(
      fc.property(...split, (before, parked, fresh, order, early) => {
        const { log, src, dst, last } = scenario('loss-free', before, parked, fresh, order, early);
        const seqs = seqsOf(log);
        assert.deepEqual(
          [...seqs].sort((a, b) => a - b),
          range(1, last),
          'nothing lost, nothing twice',
        );
        if (seqs.some((s, i) => i > 0 && s < seqs[i - 1]!)) reordered++;
        assert.equal(dst.counters.drops[DropReason.DUPLICATE], 0);
        assert.equal(src.flows.size, 0);
        // The forwarded marker (or the last late packet) ends the catching up: the flow is ordinary again.
        feed(dst, [last + 1, last + 3, last + 2]);
        assert.deepEqual(seqsOf(log).slice(-3), [last + 1, last + 2, last + 3]);
      }),
      { numRuns: 100, interruptAfterTimeLimit: 3000 },
    );
    assert.ok(reordered > 0, 'some runs process the source’s packets behind the switch’s');
  });

  it('none: never twice; what the source parked is dropped and counted, the destination starts at once', () => {
    fc.assert(
      fc.property(...split, (before, parked, fresh, order, early) => {
        const { log, src, dst, last } = scenario('none', before, parked, fresh, order, early);
        const seqs = seqsOf(log);
        assert.equal(new Set(seqs).size, seqs.length, 'no duplicates');
        assert.deepEqual(seqs, [...range(1, before), ...range(before + parked + 1, last)]);
        assert.equal(src.counters.drops[DropReason.MOVE_DISCARDED], parked);
        assert.equal(seqs.length + parked, last);
        assert.equal(dst.counters.drops[DropReason.DUPLICATE], 0);
      }),
      { numRuns: 100, interruptAfterTimeLimit: 3000 },
    );
  });

  it('loss-free: a sequence number the source never had is given up when its marker comes', () => {
    const log: string[] = [];
    const src = node('src', log);
    const dst = node('dst', log);
    feed(src, range(1, 3));
    dst.expect(key, 'loss-free');
    const frozen = src.freeze(key, 'loss-free')!;
    feed(src, [4, 6]); // 5 was lost on its way to the source
    dst.install(key, frozen.state, frozen.expected);
    feed(dst, [7, 8]);
    const forwarded: Uint8Array[] = [];
    src.onMarker = (k, buf, offset, length) => {
      src.handOver(k, (b, o, n) => forwarded.push(b.slice(o, o + n)), buf.subarray(offset, offset + length));
    };
    const m = marker(6);
    src.receive(m, 0, m.length);
    for (const d of forwarded) dst.receive(d, 0, d.length);
    assert.deepEqual(seqsOf(log), [1, 2, 3, 7, 8, 4, 6]);
    assert.equal(dst.counters.gapSkipped, 1);
    assert.equal(dst.counters.lateProcessed, 2);
    feed(dst, [9]);
    assert.deepEqual(seqsOf(log).at(-1), 9);
  });

  it('order-preserving: the destination waits for the source past the gap timeout, as long as it was told', () => {
    const clock = new ManualClock();
    const log: string[] = [];
    const src = node('src', log, clock, { ...OPTIONS, gapTimeoutMs: 100 });
    const dst = node('dst', log, clock, { ...OPTIONS, gapTimeoutMs: 100 });
    feed(src, range(1, 3));
    dst.expect(key);
    const frozen = src.freeze(key)!;
    feed(src, [4, 5]);
    dst.install(key, frozen.state, frozen.expected, 1000);
    feed(dst, [6, 7]);
    clock.advance(900);
    dst.tick(clock.now());
    assert.equal(dst.counters.gapSkipped, 0, 'still within the wait');
    src.onMarker = (k) => {
      src.handOver(k, (b, o, n) => {
        const d = b.slice(o, o + n);
        dst.receive(d, 0, d.length);
      });
    };
    const m = marker(5);
    src.receive(m, 0, m.length);
    assert.deepEqual(seqsOf(log), range(1, 7));
    // With nothing from the source, the gap goes once the wait and then the gap timeout have passed.
    feed(dst, [9]);
    clock.advance(150);
    dst.tick(clock.now());
    assert.equal(dst.counters.gapSkipped, 0, 'the gap timeout counts from the end of the wait');
    clock.advance(100);
    dst.tick(clock.now());
    assert.equal(dst.counters.gapSkipped, 1);
    assert.deepEqual(seqsOf(log).at(-1), 9);
  });

  it('a source not committed by the move’s deadline takes the flow back, losing nothing', () => {
    const clock = new ManualClock();
    const log: string[] = [];
    const src = node('src', log, clock);
    feed(src, range(1, 2));
    src.freeze(key, 'order-preserving', 100);
    feed(src, range(3, 5));
    clock.advance(50);
    src.tick(clock.now());
    assert.equal(log.length, 2, 'parked while the move may still commit');
    clock.advance(60);
    src.tick(clock.now());
    assert.equal(src.counters.moveTimeouts, 1);
    assert.equal(src.commit(key), false, 'a late commit fails: the switch is never re-pointed');
    feed(src, [6]);
    assert.deepEqual(seqsOf(log), range(1, 6));
  });

  it('a source whose parked packets reach the bound before the re-point takes the flow back, losing nothing', () => {
    const log: string[] = [];
    const src = node('src', log);
    feed(src, range(1, 2));
    src.freeze(key);
    feed(src, range(3, 3 + OPTIONS.maxHeld));
    assert.equal(src.counters.moveOverflows, 1);
    assert.equal(src.commit(key), false, 'the controller learns the move cannot go on');
    src.abort(key);
    feed(src, [4 + OPTIONS.maxHeld]);
    assert.deepEqual(seqsOf(log), range(1, 4 + OPTIONS.maxHeld));
    assert.equal(src.counters.drops[DropReason.BUFFER_FULL], 0);
  });

  it('once the re-point is under way, the source parks up to twice the bound, then drops and counts', () => {
    const src = node('src', []);
    feed(src, [1]);
    src.freeze(key);
    assert.equal(src.commit(key), true);
    feed(src, range(2, 1 + 2 * OPTIONS.maxHeld + 1));
    assert.equal(src.counters.moveOverflows, 0);
    assert.equal(src.counters.parked, 2 * OPTIONS.maxHeld);
    assert.equal(src.counters.drops[DropReason.BUFFER_FULL], 1);
  });
});
