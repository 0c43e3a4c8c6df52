/**
 * Fuzzing what the controller reads from the instances' datagrams on its report port: heartbeats
 * (src/controller/detector.ts) and load reports (src/controller/load-report.ts). Each is tagged under the
 * instance's token, so any change to a datagram must make it count as bad (a heartbeat) or read as
 * nothing (a report), and every datagram must be counted once.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ManualClock } from '../../src/clock.js';
import {
  decodeHeartbeat,
  encodeHeartbeat,
  FailureDetector,
  looksLikeHeartbeat,
} from '../../src/controller/detector.js';
import { decodeLoadReport, encodeLoadReport, MAX_REPORT_BYTES } from '../../src/controller/load-report.js';
import { mutate, report, Rng, withByte } from './corpus.js';

const TOKEN = randomBytes(32);
const BULK = 6000;
const FC = { seed: 0x5eed_0701, numRuns: 1000, interruptAfterTimeLimit: 10_000 };

const idArb = fc
  .string({ unit: 'grapheme', minLength: 1, maxLength: 60 })
  .filter((s) => Buffer.byteLength(s) <= 255);
const loadArb = fc.record({
  received: fc.nat(),
  processed: fc.nat(),
  flows: fc.nat(),
  busy: fc.double({ min: 0, max: 1, noNaN: true }),
  queue: fc.nat(),
});

function beats(d: FailureDetector): { good: number; bad: number; fenced: number } {
  return { good: d.heartbeats, bad: d.badHeartbeats, fenced: d.fencedHeartbeats };
}

describe('fuzz: heartbeats and load reports', { timeout: 60_000 }, () => {
  it('decodes every heartbeat it encodes, and counts any one-byte change as bad', () => {
    fc.assert(
      fc.property(
        idArb,
        fc.integer({ min: 1, max: 0xffffffff }),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (id, seq, at, xor) => {
          const hb = encodeHeartbeat(id, seq, TOKEN);
          const d = decodeHeartbeat(hb);
          assert.ok(d !== undefined && looksLikeHeartbeat(hb));
          assert.deepEqual([d.id, d.seq], [id, seq]);
          const fdu = new FailureDetector({ heartbeatMs: 50, missCount: 3, probeMs: 50 }, new ManualClock());
          fdu.watch(id, TOKEN);
          const bad = Uint8Array.from(hb);
          bad[at % bad.length]! ^= xor;
          fdu.receive(bad);
          assert.deepEqual(beats(fdu), { good: 0, bad: 1, fenced: 0 });
          fdu.receive(hb);
          fdu.receive(hb);
          assert.deepEqual(
            beats(fdu),
            { good: 1, bad: 2, fenced: 0 },
            'the same heartbeat twice is a replay',
          );
        },
      ),
      FC,
    );
  });

  it('reads back every load report it encodes, and nothing from any changed one', () => {
    fc.assert(
      fc.property(
        idArb,
        fc.nat(),
        loadArb,
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        (id, seq, load, at, value) => {
          const msg = encodeLoadReport(id, seq, load, TOKEN);
          const keyOf = (who: string): Uint8Array | undefined => (who === id ? TOKEN : undefined);
          const got = decodeLoadReport(msg, keyOf);
          if (msg.length > MAX_REPORT_BYTES) assert.equal(got, undefined);
          else assert.deepEqual(got, { id, seq, load: { ...load } });
          const changed = withByte(msg, at, value);
          const again = decodeLoadReport(changed, keyOf);
          if (Buffer.from(changed).equals(msg)) assert.deepEqual(again, got);
          else assert.equal(again, undefined);
          assert.equal(
            decodeLoadReport(msg, () => randomBytes(32)),
            undefined,
            'another key',
          );
        },
      ),
      FC,
    );
  });

  it(`counts each of ${BULK} random, mutated and replayed datagrams once`, (t) => {
    const rng = new Rng(0x5eed_0702);
    const clock = new ManualClock();
    const fdu = new FailureDetector({ heartbeatMs: 50, missCount: 3, probeMs: 50 }, clock);
    fdu.watch('nf-1', TOKEN);
    fdu.watch('nf-2', TOKEN);
    assert.ok(fdu.fail('nf-2'));
    const seq = { 'nf-1': 0, 'nf-2': 0 };
    let accepted = 0;
    const want = { good: 0, bad: 0, fenced: 0 };
    const reports = { read: 0, refused: 0 };
    const keyOf = (id: string): Uint8Array | undefined => (id === 'nf-1' ? TOKEN : undefined);
    for (let i = 0; i < BULK; i++) {
      const id = rng.int(5) === 0 ? 'nf-2' : 'nf-1';
      let s = ++seq[id];
      const clean = encodeHeartbeat(id, s, TOKEN);
      let msg: Uint8Array;
      switch (rng.int(5)) {
        case 0:
          msg = clean;
          break;
        case 1:
          msg = mutate(clean, rng);
          break;
        case 2:
          msg = rng.bytes(rng.int(300));
          break;
        case 3: {
          // A report on the same port, whole or damaged.
          const load = { received: i, processed: i, flows: rng.int(9), busy: 0.5, queue: 0 };
          const whole = encodeLoadReport('nf-1', i, load, TOKEN);
          msg = rng.int(2) === 0 ? whole : mutate(whole, rng);
          break;
        }
        default:
          // A replay: an earlier heartbeat of the same instance, sent again.
          s = Math.max(1, s - 1 - rng.int(3));
          msg = encodeHeartbeat(id, s, TOKEN);
      }
      const genuine = Buffer.from(msg).equals(encodeHeartbeat(id, s, TOKEN));
      if (genuine && id === 'nf-2') want.fenced++;
      else if (genuine && s > accepted) {
        want.good++;
        accepted = s;
      } else want.bad++;
      if (!looksLikeHeartbeat(msg)) {
        // What the controller does with the rest: a load report, or nothing.
        if (decodeLoadReport(msg, keyOf) === undefined) reports.refused++;
        else reports.read++;
      }
      fdu.receive(msg);
      clock.advance(1);
    }
    assert.deepEqual(beats(fdu), want);
    assert.ok(want.good > 0 && want.bad > 0 && want.fenced > 0 && reports.read > 0);
    report(t, 'datagrams', {
      datagrams: BULK,
      heartbeats: want.good,
      bad: want.bad,
      fenced: want.fenced,
      ...reports,
    });
  });
});
