import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../../src/clock.js';
import type { ProcessorOptions } from '../../src/nf/processor.js';
import { FlowProcessor } from '../../src/nf/processor.js';
import { createNf } from '../../src/nfs/index.js';
import { flowKeyOf } from '../../src/packet/flow-key.js';
import { Packet } from '../../src/packet/packet.js';
import { LocalGlobalState } from '../../src/state/global-local.js';
import { DropReason } from '../../src/types.js';
import { STAMP_HEADER_LENGTH, StampFlag, StampView } from '../../src/wire/geneve.js';
import { stamped } from '../helpers/packets.js';

const OPTIONS: ProcessorOptions = {
  batchSize: 4,
  batchTimeoutMs: 1e9,
  maxHeld: 256,
  gapTimeoutMs: 1e9,
  flowIdleMs: 1e12,
};

function node(name: string, log: string[]) {
  const global = new LocalGlobalState();
  const view = new StampView();
  const p = new FlowProcessor(
    createNf('ids', {}, global),
    global,
    OPTIONS,
    (buf, offset, length) => {
      view.parse(buf, offset, length);
      log.push(`${name}:${view.seq}`);
    },
    new ManualClock(),
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

describe('moving a flow between processors', () => {
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
