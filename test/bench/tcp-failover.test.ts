import assert from 'node:assert/strict';
import { it } from 'node:test';
import { summariseCases } from '../../bench/experiments/tcp-failover.js';
import type { Row } from '../../bench/experiments/harness.js';

function row(c: string, survived: number, stall: number, extra: Partial<Row> = {}): Row {
  return {
    series: 'nfstate',
    x: 1,
    repeat: 1,
    case: c,
    survived,
    bytes_ok: survived,
    stall_ms: stall,
    ...extra,
  };
}

it('tcp-failover: a move case counts the moves that were done apart from the transfers that survived', () => {
  const rows: Row[] = [
    row('kill', 1, 40),
    row('kill', 0, 3000),
    row('move-intra', 1, 20, { move_ms: 12, move_aborted: 0 }),
    // The source took the flow back: the transfer survived, but no move happened.
    row('move-intra', 1, 15, { move_ms: 30, move_aborted: 1 }),
    { series: 'nfstate', x: 4, repeat: 3, case: 'move-intra', error: 'the lab failed' },
  ];
  const cases = summariseCases(rows);
  const kill = cases.find((c) => c.case === 'kill')!;
  assert.deepEqual(kill, {
    case: 'kill',
    runs: 2,
    survived: 1,
    bytes_ok: 1,
    stall_ms: { p50: 1520, max: 3000 },
  });
  assert.equal('moved' in kill, false, 'only move cases count moves');
  const move = cases.find((c) => c.case === 'move-intra')!;
  assert.equal(move.runs, 3);
  assert.equal(move.survived, 2);
  assert.equal(move.moved, 1, 'the aborted move is not counted as done');
  assert.deepEqual(move.stall_ms, { p50: 17.5, max: 20 });
  assert.equal(
    cases.some((c) => c.case === 'pause'),
    false,
    'a case without runs is left out',
  );
});
