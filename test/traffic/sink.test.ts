import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';
import { Sink } from '../../src/traffic/sink.js';
import { DropReason } from '../../src/types.js';
import { LinkType, PcapWriter, readPcap } from '../../src/traffic/pcap.js';
import { STAMP_HEADER_LENGTH, StampFlag, StampView } from '../../src/wire/geneve.js';
import { stamped } from '../helpers/packets.js';

function sink(): Sink {
  return new Sink({ host: '127.0.0.1', port: 0 }, silentLogger, new ManualClock(1_700_000_000_010));
}

describe('Sink', { timeout: 60_000 }, () => {
  it('counts delivered, reordered and duplicated per flow by stamp, and drops replays already delivered', () => {
    const s = sink();
    for (const seq of [1, 2, 4, 3, 3, 5]) s.onDatagram(stamped({ flow: 0, seq, timeMs: 1_700_000_000_000 }));
    s.onDatagram(stamped({ flow: 1, seq: 1, timeMs: 1_700_000_000_000 }));
    s.onDatagram(stamped({ flow: 1, seq: 1, flags: StampFlag.REPLAY, timeMs: 1_700_000_000_000 }));
    const r = s.report();
    assert.deepEqual([r.delivered, r.reordered, r.duplicated, r.replays], [6, 1, 1, 1]);
    const f0 = r.flows.find((f) => f.delivered === 5)!;
    assert.deepEqual([f0.maxSeq, f0.reordered, f0.duplicated], [5, 1, 1]);
    assert.equal(r.latency.count, 6);
    assert.ok(Math.abs(r.latency.p50 - 10_000) < 20, `latency from the stamp: ${r.latency.p50} us`);
  });

  it('drops a fenced emitter’s output for packets stamped from the fence on, and passes what came before', () => {
    const s = sink();
    const from = (emitter: number, seq: number, timeMs: number, flags = 0): Uint8Array => {
      const buf = stamped({ flow: 0, seq, timeMs, flags });
      const v = new StampView();
      v.parse(buf, 0, buf.length);
      v.setEmitter(emitter);
      return buf;
    };
    s.onDatagram(from(7, 1, 1000));
    s.fence(7, 1003);
    // Stamped before the fence: the successor's state covers it and replays it not; this output is the only one.
    s.onDatagram(from(7, 2, 1002));
    // Stamped from the fence on: the successor replays it.
    s.onDatagram(from(7, 4, 1003));
    s.onDatagram(from(9, 3, 1002.5, StampFlag.REPLAY));
    s.onDatagram(from(9, 4, 1003, StampFlag.REPLAY));
    // The fenced instance, still running, emits what its successor replayed first: dropped, no duplicate.
    s.onDatagram(from(7, 3, 1002.5));
    const r = s.report();
    assert.deepEqual([r.delivered, r.fenced, r.duplicated, r.replays, r.reordered], [4, 2, 0, 0, 0]);
    // A second fence only moves the point earlier; 0 drops everything.
    s.fence(7, 2000);
    s.onDatagram(from(7, 5, 1500));
    s.fence(7, 0);
    s.onDatagram(from(7, 6, 1));
    assert.deepEqual([s.report().delivered, s.report().fenced], [4, 4]);
    assert.throws(() => {
      s.fence(0);
    }, /fencing token/);
    assert.throws(() => {
      s.fence(7, -1);
    }, /since_ms/);
  });

  it('handles sequence numbers far apart without trouble', () => {
    const s = sink();
    s.onDatagram(stamped({ flow: 0, seq: 1 }));
    s.onDatagram(stamped({ flow: 0, seq: 1_000_000 }));
    s.onDatagram(stamped({ flow: 0, seq: 1_000_000 }));
    assert.deepEqual([s.delivered, s.duplicated], [2, 1]);
  });

  it('writes what it delivers to pcap, inner packets only', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'nfstate-sink-')), 'out.pcap');
    const s = new Sink(
      { host: '127.0.0.1', port: 0, pcap: new PcapWriter(path, LinkType.RAW) },
      silentLogger,
      new ManualClock(),
    );
    const sent = [1, 2, 2, 3].map((seq) => stamped({ flow: 4, seq }));
    for (const d of sent) s.onDatagram(d);
    void s.stop();
    const file = readPcap(path);
    const records = [...file.records].map((r) => r.data);
    assert.deepEqual(
      records,
      [sent[0]!, sent[1]!, sent[3]!].map((d) => d.subarray(STAMP_HEADER_LENGTH)),
    );
  });

  it('never throws on garbage and counts it by reason', () => {
    const s = sink();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 120 }), (b) => {
        s.onDatagram(b);
      }),
      { numRuns: 500, interruptAfterTimeLimit: 2000 },
    );
    assert.equal(s.delivered, 0);
    assert.ok(s.drops[DropReason.TRUNCATED]! > 0);
  });
});
