// @ts-check
/**
 * The flow meter's tests, as an NF author writes them: nfstate's compliance suite (codec, deltas,
 * determinism, odd packets), then what the meter itself promises. Run with `node --test` after `npm run
 * build` (the tests import nfstate's compiled entry points).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Verdict } from 'nfstate/nf';
import { checkCompliance, Driver, expectConfigError, ip, LocalGlobalState, udp } from 'nfstate/testing';
import createFlowMeter from './flow-meter.js';

test('flow-meter passes the compliance suite', { timeout: 60_000 }, () => {
  checkCompliance({
    label: 'flow-meter',
    create: (global) => createFlowMeter({ rate: 10, burst: 3 }, global),
    ips: ['10.0.0.1', '10.0.0.2', '192.0.2.1'],
    ports: [53, 80, 1234],
  });
});

test('a burst passes, the rest is policed until the bucket fills again', { timeout: 60_000 }, () => {
  const global = new LocalGlobalState();
  const d = new Driver(createFlowMeter({ rate: 10, burst: 3 }, global), global);
  const packet = udp('10.0.0.1', 1234, '192.0.2.1', 53, 'q');
  const verdicts = [0, 0, 0, 0, 0].map(() => d.send(packet, 0).verdict);
  assert.deepEqual(verdicts, [Verdict.FORWARD, Verdict.FORWARD, Verdict.FORWARD, Verdict.DROP, Verdict.DROP]);
  // 10 packets a second: one more after 100 ms.
  assert.equal(d.send(packet, 100).verdict, Verdict.FORWARD);
  assert.equal(d.send(packet, 0).verdict, Verdict.DROP);
  const state = d.flowOf(packet)?.state;
  assert.deepEqual({ passed: state?.passed, policed: state?.policed }, { passed: 4, policed: 3 });
});

test('policed packets count per source across flows; each flow is reported once', { timeout: 60_000 }, () => {
  const global = new LocalGlobalState();
  const d = new Driver(createFlowMeter({ rate: 1, burst: 1 }, global), global);
  const events = [];
  for (const port of [1000, 1001]) {
    for (let i = 0; i < 3; i++) events.push(...d.send(udp('10.0.0.7', port, '192.0.2.1', 53), 0).events);
  }
  assert.equal(global.counters('meter.policed').get(ip('10.0.0.7')), 4);
  assert.deepEqual(
    events.map((e) => e.type),
    ['policed', 'policed'],
  );
});

test('config: rate and burst are positive integers, nothing else is taken', { timeout: 60_000 }, () => {
  const global = new LocalGlobalState();
  expectConfigError(() => createFlowMeter({ rate: 0 }, global), 'rate');
  expectConfigError(() => createFlowMeter({ burst: 1.5 }, global), 'burst');
  expectConfigError(() => createFlowMeter({ rat: 10 }, global), 'rat');
});
