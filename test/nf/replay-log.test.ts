import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Tuple } from '../../src/nf/dispatch.js';
import { ReplayLog } from '../../src/nf/replay-log.js';
import { canonicalKey } from '../../src/packet/flow-key.js';

const t: Tuple = { srcIp: 0x0a000001, dstIp: 0xc633640a, srcPort: 10000, dstPort: 80, proto: 17 };
const key = canonicalKey(t.srcIp, t.dstIp, t.srcPort, t.dstPort, t.proto);
/** The same flow seen from the other direction. */
const reply: Tuple = {
  srcIp: t.dstIp,
  dstIp: t.srcIp,
  srcPort: t.dstPort,
  dstPort: t.srcPort,
  proto: t.proto,
};
const copy = (seq: number): Uint8Array => new Uint8Array(100).fill(seq & 0xff);

describe('ReplayLog (a secondary’s kept copies)', { timeout: 60_000 }, () => {
  it('keeps copies in stamp order, once each, whatever order they come in and from either direction', () => {
    const log = new ReplayLog({ maxBytes: 1 << 20, idleMs: 1000 });
    for (const seq of [1, 2, 4, 3, 3, 5]) log.keep(copy(seq), seq % 2 === 0 ? reply : t, seq, 0);
    const { seqs, copies } = log.take(key);
    assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
    assert.deepEqual(
      copies.map((c) => c[0]),
      [1, 2, 3, 4, 5],
    );
    assert.equal(log.size, 0, 'taken: the flow is forgotten');
    assert.deepEqual(log.take(key), { seqs: [], copies: [] });
  });

  it('drops what a record covers, and everything when the flow ended', () => {
    const log = new ReplayLog({ maxBytes: 1 << 20, idleMs: 1000 });
    for (let seq = 1; seq <= 10; seq++) log.keep(copy(seq), t, seq, 0);
    log.trim(key, 7);
    assert.equal(log.trimmed, 6);
    log.trim(key, 3);
    assert.deepEqual(log.take(key).seqs, [7, 8, 9, 10]);
    for (let seq = 11; seq <= 12; seq++) log.keep(copy(seq), t, seq, 0);
    log.trim(key, Infinity);
    assert.equal(log.size, 0);
    const samples: (readonly [string, Record<string, string>, number])[] = [];
    log.collect(samples);
    assert.equal(samples.find(([n]) => n === 'nfstate_replay_log_bytes')?.[2], 0);
  });

  it('does not keep a copy that comes after the record covering it', () => {
    const log = new ReplayLog({ maxBytes: 1 << 20, idleMs: 1000 });
    log.trim(key, 5);
    for (let seq = 3; seq <= 6; seq++) log.keep(copy(seq), t, seq, 0);
    assert.deepEqual(log.take(key).seqs, [5, 6]);
    assert.equal(log.trimmed, 2);
  });

  it('refuses copies past its byte bound, counted, and sweeps flows no record trims', () => {
    const log = new ReplayLog({ maxBytes: 450, idleMs: 1000 });
    for (let seq = 1; seq <= 6; seq++) log.keep(copy(seq), t, seq, 0);
    assert.equal(log.refused, 2);
    assert.deepEqual(log.take(key).seqs, [1, 2, 3, 4]);
    log.keep(copy(1), t, 1, 0);
    log.sweep(500);
    assert.equal(log.size, 1);
    log.sweep(1000);
    assert.equal(log.size, 0);
    assert.equal(log.swept, 1);
    // Its bytes were given back: a full bound's worth fits again.
    for (let seq = 1; seq <= 4; seq++) log.keep(copy(seq), t, seq, 0);
    assert.equal(log.refused, 2);
  });
});
