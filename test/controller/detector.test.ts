import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import type { FailureInfo } from '../../src/controller/detector.js';
import type { ProbeAddress } from '../../src/controller/detector.js';
import {
  decodeHeartbeat,
  encodeHeartbeat,
  encodeProbe,
  FailureDetector,
  isProbeFor,
} from '../../src/controller/detector.js';

/** Every instance's token here; a test that needs another names its own. */
const KEY = Buffer.alloc(16, 7);

/** A detector at 50 ms × 3, checked every 10 ms of manual time as the real one is. */
function setup(): {
  fdu: FailureDetector;
  clock: ManualClock;
  failed: [string, FailureInfo][];
  run: (ms: number, beat?: (t: number) => void) => void;
} {
  const clock = new ManualClock(0);
  const fdu = new FailureDetector({ heartbeatMs: 50, missCount: 3, probeMs: 0 }, clock);
  const failed: [string, FailureInfo][] = [];
  fdu.onFailed = (id, info) => failed.push([id, info]);
  fdu.check();
  const run = (ms: number, beat?: (t: number) => void): void => {
    for (let i = 0; i < ms; i += 10) {
      clock.advance(10);
      beat?.(clock.now());
      fdu.check();
    }
  };
  return { fdu, clock, failed, run };
}

describe('heartbeat wire format', { timeout: 60_000 }, () => {
  it('round-trips id and sequence number, with the tag of the bytes before it', () => {
    const msg = encodeHeartbeat('nf-12', 0xfffffffe, KEY);
    assert.deepEqual([...msg.subarray(0, 4)], [0x4e, 0x48, 2, 5]);
    assert.equal(msg.length, 8 + 5 + 16);
    const hb = decodeHeartbeat(msg)!;
    assert.deepEqual([hb.id, hb.seq], ['nf-12', 0xfffffffe]);
    assert.deepEqual(hb.signed, msg.subarray(0, 13));
    assert.deepEqual(hb.tag, msg.subarray(13));
  });

  it('rejects every truncation, a wrong magic or version, and trailing bytes', () => {
    const msg = encodeHeartbeat('nf-1', 7, KEY);
    for (let n = 0; n < msg.length; n++) assert.equal(decodeHeartbeat(msg.subarray(0, n)), undefined);
    for (const at of [0, 1, 2]) {
      const bad = msg.slice();
      bad[at] = bad[at]! ^ 0xff;
      assert.equal(decodeHeartbeat(bad), undefined);
    }
    assert.equal(decodeHeartbeat(new Uint8Array([...msg, 0])), undefined);
    assert.equal(decodeHeartbeat(new Uint8Array([0x4e, 0x48, 2, 0, 0, 0, 0, 1, ...KEY])), undefined);
  });

  it('decodes in place from a larger buffer', () => {
    const msg = encodeHeartbeat('nf-3', 9, KEY);
    const big = new Uint8Array(msg.length + 6);
    big.set(msg, 3);
    const hb = decodeHeartbeat(big.subarray(3, 3 + msg.length))!;
    assert.deepEqual([hb.id, hb.seq], ['nf-3', 9]);
  });
});

describe('FailureDetector', { timeout: 60_000 }, () => {
  it('declares a watched instance failed when an operator says so, heartbeats or not, once', () => {
    const { fdu, failed, run } = setup();
    fdu.watch('nf-0', KEY);
    run(20, (t) => fdu.receive(encodeHeartbeat('nf-0', t, KEY)));
    assert.equal(fdu.fail('nf-0'), true);
    assert.deepEqual(
      failed.map(([id, f]) => [id, f.how]),
      [['nf-0', 'operator']],
    );
    assert.equal(fdu.isFailed('nf-0'), true);
    assert.equal(fdu.fail('nf-0'), false, 'failed already');
    assert.equal(fdu.fail('nf-9'), false, 'not watched');
    assert.equal(failed.length, 1);
  });

  it('declares an instance failed after missCount silent intervals, not before', () => {
    const { fdu, failed, run } = setup();
    fdu.watch('nf-0', KEY);
    fdu.receive(encodeHeartbeat('nf-0', 1, KEY));
    run(150);
    assert.equal(failed.length, 0, 'exactly missCount intervals of silence is not yet a failure');
    assert.equal(fdu.isFailed('nf-0'), false);
    run(10);
    assert.equal(failed.length, 1);
    const [id, info] = failed[0]!;
    assert.equal(id, 'nf-0');
    assert.equal(info.lastSeenMs, 0);
    assert.equal(info.detectMs, 160);
    assert.equal(fdu.isFailed('nf-0'), true);
    assert.deepEqual(fdu.list(), [
      { id: 'nf-0', at: 160, last_seen: 0, detect_ms: 160, how: 'heartbeats', fenced_heartbeats: 0 },
    ]);
    run(1000);
    assert.equal(failed.length, 1, 'declared once');
  });

  it('declares an instance failed at once when its liveness connection closes, once and only if watched', () => {
    const { fdu, failed, run } = setup();
    fdu.watch('nf-0', KEY);
    fdu.watch('nf-1', KEY);
    fdu.receive(encodeHeartbeat('nf-0', 1, KEY));
    run(20);
    fdu.lost('nf-0');
    assert.deepEqual(failed, [['nf-0', { lastSeenMs: 0, detectMs: 20, how: 'connection' }]]);
    fdu.lost('nf-0');
    fdu.receive(encodeHeartbeat('nf-1', 0, KEY));
    fdu.lost('nf-1');
    fdu.lost('nf-9');
    run(1000);
    assert.equal(failed.length, 1, 'a goodbye, or an instance never watched, is no failure');
  });

  it('counts silence from registration when no heartbeat ever comes, with time to start beating', () => {
    const { fdu, failed, run } = setup();
    run(100);
    fdu.watch('nf-0', KEY);
    run(1000);
    assert.equal(failed.length, 0, 'a second to send the first heartbeat');
    run(10);
    assert.deepEqual(
      failed.map(([id]) => id),
      ['nf-0'],
    );
  });

  it('keeps alive an instance whose heartbeats jitter within the bound', () => {
    const { fdu, failed, run } = setup();
    fdu.watch('nf-0', KEY);
    fdu.watch('nf-1', KEY);
    let seq = 0;
    let next = 0;
    // Gaps from 10 to 140 ms, pseudo-random but fixed: never missCount × heartbeatMs of silence.
    let r = 12345;
    run(10_000, (t) => {
      if (t < next) return;
      seq++;
      fdu.receive(encodeHeartbeat('nf-0', seq, KEY));
      fdu.receive(encodeHeartbeat('nf-1', seq, KEY));
      r = (r * 1103515245 + 12345) % 2 ** 31;
      next = t + 10 + 10 * (r % 14);
    });
    assert.equal(failed.length, 0);
    assert.equal(fdu.heartbeats, 2 * seq);
  });

  it('takes a load report as a sign of life', () => {
    const { fdu, failed, run } = setup();
    fdu.watch('nf-0', KEY);
    run(2000, (t) => {
      if (t % 100 === 0) assert.equal(fdu.alive('nf-0'), true);
    });
    assert.equal(failed.length, 0);
  });

  it('keeps a failed instance failed when it sends again, and counts what it sends', () => {
    const { fdu, failed, run } = setup();
    fdu.watch('nf-0', KEY);
    fdu.watch('nf-1', KEY);
    fdu.receive(encodeHeartbeat('nf-0', 1, KEY));
    let seq = 0;
    const both = (t: number): void => {
      if (t % 50 !== 0) return;
      seq++;
      fdu.receive(encodeHeartbeat('nf-1', seq, KEY));
    };
    run(200, both);
    assert.deepEqual(
      failed.map(([id]) => id),
      ['nf-0'],
    );
    // It wakes up: its heartbeats and its load reports are fenced, and it may not register again.
    let late = 0;
    run(500, (t) => {
      both(t);
      if (t % 50 === 0) fdu.receive(encodeHeartbeat('nf-0', ++late, KEY));
    });
    assert.equal(fdu.alive('nf-0'), false);
    fdu.watch('nf-0', KEY);
    run(500, both);
    assert.equal(fdu.isFailed('nf-0'), true);
    assert.equal(failed.length, 1);
    assert.equal(fdu.fencedHeartbeats, late + 1);
    assert.equal(fdu.list()[0]!.fenced_heartbeats, late + 1);
    assert.equal(fdu.isFailed('nf-1'), false);
  });

  it('counts garbage, unknown ids and replayed sequence numbers as bad, and they keep nobody alive', () => {
    const { fdu, failed, run } = setup();
    fdu.watch('nf-0', KEY);
    fdu.receive(encodeHeartbeat('nf-0', 5, KEY));
    const bad = [
      new Uint8Array(0),
      new Uint8Array([1, 2, 3]),
      Buffer.from('not a heartbeat at all'),
      encodeHeartbeat('nf-9', 1, KEY),
      encodeHeartbeat('nf-0', 5, KEY),
      encodeHeartbeat('nf-0', 4, KEY),
    ];
    run(150, () => {
      for (const m of bad) fdu.receive(m);
    });
    assert.equal(fdu.heartbeats, 1);
    assert.equal(fdu.badHeartbeats, 15 * bad.length);
    run(10);
    assert.deepEqual(
      failed.map(([id]) => id),
      ['nf-0'],
    );
  });

  it("refuses heartbeats and goodbyes without the instance's own tag: forged ones keep nobody alive and end no watch", () => {
    const { fdu, failed, run } = setup();
    const other = Buffer.alloc(16, 9);
    // Four that beat as they should, so that two silent ones are not a mass silence.
    const healthy = ['nf-2', 'nf-3', 'nf-4', 'nf-5'];
    for (const id of ['nf-0', ...healthy]) fdu.watch(id, KEY);
    fdu.watch('nf-1', other);
    fdu.receive(encodeHeartbeat('nf-0', 1, KEY));
    fdu.receive(encodeHeartbeat('nf-1', 1, other));
    // A forger knows the format and the ids, not the tokens: nf-0's key does not sign for nf-1.
    fdu.receive(encodeHeartbeat('nf-1', 0, KEY));
    const tampered = encodeHeartbeat('nf-0', 2, KEY);
    tampered[7] = 3;
    run(300, (t) => {
      fdu.receive(encodeHeartbeat('nf-0', 100 + t, other));
      fdu.receive(tampered);
      for (const id of healthy) fdu.receive(encodeHeartbeat(id, t, KEY));
    });
    assert.equal(fdu.heartbeats, 2 + 30 * healthy.length);
    assert.equal(fdu.badHeartbeats, 1 + 2 * 30);
    assert.deepEqual(failed.map(([id]) => id).sort(), ['nf-0', 'nf-1']);
    // After the declaration only the instance's own tag counts as its fenced heartbeat.
    fdu.receive(encodeHeartbeat('nf-0', 500, other));
    assert.equal(fdu.fencedHeartbeats, 0);
    fdu.receive(encodeHeartbeat('nf-0', 500, KEY));
    assert.equal(fdu.fencedHeartbeats, 1);
  });

  it('forgets an instance that left in order, or said goodbye', () => {
    const { fdu, failed, run } = setup();
    fdu.watch('nf-0', KEY);
    fdu.watch('nf-1', KEY);
    fdu.forget('nf-0');
    fdu.receive(encodeHeartbeat('nf-1', 1, KEY));
    fdu.receive(encodeHeartbeat('nf-1', 0, KEY));
    run(1000);
    assert.equal(failed.length, 0);
    assert.equal(fdu.badHeartbeats, 0);
  });

  it('declares nobody failed on the first check after the controller itself stalled', () => {
    const { fdu, clock, failed, run } = setup();
    fdu.watch('nf-0', KEY);
    clock.advance(1000);
    fdu.check();
    assert.equal(failed.length, 0, 'heartbeats queued during the stall are read after this check');
    fdu.receive(encodeHeartbeat('nf-0', 1, KEY));
    run(100);
    assert.equal(failed.length, 0);
    run(100);
    assert.deepEqual(
      failed.map(([id]) => id),
      ['nf-0'],
    );
  });

  it('exports its counters', () => {
    const { fdu } = setup();
    fdu.receive(new Uint8Array([0]));
    const out: (readonly [string, Record<string, string>, number])[] = [];
    fdu.collect(out);
    assert.deepEqual(
      out.map(([name, , v]) => [name, v]),
      [
        ['nfstate_fdu_failures_total', 0],
        ['nfstate_fdu_heartbeats_total', 0],
        ['nfstate_fdu_bad_heartbeats_total', 1],
        ['nfstate_fdu_fenced_heartbeats_total', 0],
        ['nfstate_fdu_suspended_checks_total', 0],
        ['nfstate_fdu_probes_total', 0],
        ['nfstate_fdu_suspicions_cleared_total', 0],
      ],
    );
  });

  it('declares nobody while more than a third of the instances are silent at once, then the one still silent', () => {
    const { fdu, failed, run } = setup();
    const ids = Array.from({ length: 6 }, (_, i) => `nf-${i}`);
    let seq = 0;
    const beat = (who: readonly string[]) => (): void => {
      seq++;
      for (const id of who) fdu.receive(encodeHeartbeat(id, seq, KEY));
    };
    for (const id of ids) fdu.watch(id, KEY);
    beat(ids)();
    // Three of six fall silent together (the host stalled): no one is declared.
    run(400, beat(ids.slice(3)));
    assert.equal(failed.length, 0);
    assert.ok(fdu.suspended > 0);
    // Two of them come back; the one that stays silent is one in six, and is declared.
    run(200, beat(ids.slice(1)));
    assert.deepEqual(
      failed.map(([id]) => id),
      ['nf-0'],
    );
  });
});

/** A detector at 20 ms × 3 with a 50 ms probe, checked every 4 ms as the real one is. */
function probing(): {
  fdu: FailureDetector;
  failed: [string, FailureInfo][];
  probes: [ProbeAddress, Uint8Array][];
  run: (ms: number, each?: (t: number) => void) => void;
} {
  const clock = new ManualClock(0);
  const fdu = new FailureDetector({ heartbeatMs: 20, missCount: 3, probeMs: 50 }, clock);
  const failed: [string, FailureInfo][] = [];
  const probes: [ProbeAddress, Uint8Array][] = [];
  fdu.onFailed = (id, info) => failed.push([id, info]);
  fdu.onProbe = (to, probe) => probes.push([to, probe]);
  fdu.check();
  const run = (ms: number, each?: (t: number) => void): void => {
    for (let i = 0; i < ms; i += 4) {
      clock.advance(4);
      each?.(clock.now());
      fdu.check();
    }
  };
  return { fdu, failed, probes, run };
}

const FROM = { address: '127.0.0.1', port: 40001 };

describe('FailureDetector with probes', { timeout: 60_000 }, () => {
  it('probes a silent instance where its heartbeats came from, twice, then declares it failed', () => {
    const { fdu, failed, probes, run } = probing();
    fdu.watch('nf-0', KEY);
    fdu.receive(encodeHeartbeat('nf-0', 1, KEY), FROM);
    run(60);
    assert.equal(probes.length, 0, 'three intervals of silence are not yet suspicious');
    run(8);
    assert.equal(probes.length, 1);
    assert.deepEqual(probes[0]![0], FROM);
    assert.ok(isProbeFor(probes[0]![1], 'nf-0', KEY));
    run(44);
    assert.equal(failed.length, 0, 'the probe has 50 ms to be answered');
    assert.equal(probes.length, 2, 'one more probe halfway, in case the first was lost');
    run(8);
    assert.deepEqual(
      failed.map(([id, f]) => [id, f.how]),
      [['nf-0', 'heartbeats']],
    );
    assert.ok(failed[0]![1].detectMs > 110 && failed[0]![1].detectMs <= 124, `${failed[0]![1].detectMs}`);
    assert.equal(fdu.probes, 2);
  });

  it('keeps an instance that answers its probe, and counts the suspicion cleared', () => {
    const { fdu, failed, probes, run } = probing();
    fdu.watch('nf-0', KEY);
    let seq = 0;
    fdu.receive(encodeHeartbeat('nf-0', ++seq, KEY), FROM);
    // Its heartbeats stall (a busy thread), but each probe is answered at once.
    let answered = 0;
    run(600, () => {
      if (probes.length === answered) return;
      answered = probes.length;
      fdu.receive(encodeHeartbeat('nf-0', ++seq, KEY), FROM);
    });
    assert.equal(failed.length, 0);
    assert.ok(fdu.cleared >= 5, `${fdu.cleared} suspicions cleared`);
    assert.equal(fdu.cleared, fdu.probes);
  });

  it('declares at suspicion an instance whose heartbeats never came: there is nowhere to probe', () => {
    const { fdu, failed, probes, run } = probing();
    fdu.watch('nf-0', KEY);
    run(1004);
    assert.equal(probes.length, 0);
    assert.equal(failed.length, 1);
  });

  it('waits longer for an instance whose heartbeats jitter, and not for a steady one', () => {
    const { fdu, failed, run } = probing();
    fdu.watch('steady', KEY);
    fdu.watch('jittery', KEY);
    let s = 0;
    let j = 0;
    let nextJ = 0;
    let r = 99;
    run(4000, (t) => {
      if (t % 20 === 0) fdu.receive(encodeHeartbeat('steady', ++s, KEY), FROM);
      if (t >= nextJ) {
        fdu.receive(encodeHeartbeat('jittery', ++j, KEY), { ...FROM, port: 40002 });
        r = (r * 1103515245 + 12345) % 2 ** 31;
        nextJ = t + 8 + 4 * (r % 24);
      }
    });
    assert.equal(failed.length, 0);
    assert.equal(fdu.suspectAfterMs('steady'), 60, 'never under missCount intervals');
    const jittery = fdu.suspectAfterMs('jittery')!;
    assert.ok(jittery > 100 && jittery <= 600, `the jittery one is suspected after ${jittery} ms`);
  });

  it('answers only probes for its own id under its own token', () => {
    const probe = encodeProbe('nf-3', 7, KEY);
    assert.equal(isProbeFor(probe, 'nf-3', KEY), true);
    assert.equal(isProbeFor(probe, 'nf-4', KEY), false);
    assert.equal(isProbeFor(probe, 'nf-3', Buffer.alloc(16, 8)), false);
    assert.equal(isProbeFor(encodeHeartbeat('nf-3', 7, KEY), 'nf-3', KEY), false, 'a heartbeat is no probe');
    for (let n = 0; n < probe.length; n++) assert.equal(isProbeFor(probe.subarray(0, n), 'nf-3', KEY), false);
    for (let at = 0; at < probe.length; at++) {
      const bad = probe.slice();
      bad[at] = bad[at]! ^ 0x01;
      assert.equal(isProbeFor(bad, 'nf-3', KEY), false, `byte ${at} flipped`);
    }
  });
});
