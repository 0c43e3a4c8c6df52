/**
 * The wall clock agrees across processes: a reading taken in another process between two readings here lies
 * between them. Latency at the sink is one process's reading minus another's, so clocks that disagree by
 * more than the path's length turn latencies negative.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { ManualClock, stepTimer, wallClock } from '../src/clock.js';
import { repoPath } from './helpers/paths.js';

const ROUNDS = 50;

test('another process reads the wall clock between two readings here', { timeout: 30_000 }, async () => {
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const { wallClock } = await import(${JSON.stringify(repoPath('dist/src/clock.js'))});
       process.stdin.on('data', () => process.stdout.write(wallClock.now() + '\\n'));`,
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  try {
    const lines: AsyncIterator<string, undefined> = createInterface({ input: child.stdout })[
      Symbol.asyncIterator
    ]();
    for (let i = 0; i < ROUNDS; i++) {
      const before = wallClock.now();
      child.stdin.write('?');
      const { value } = await lines.next();
      const after = wallClock.now();
      const theirs = Number(value);
      assert.ok(before <= theirs && theirs <= after, `round ${i}: ${before} <= ${theirs} <= ${after}`);
    }
  } finally {
    child.kill();
    await once(child, 'exit');
  }
});

test(
  'stepTimer: each mark is the time since the one before; a step never marked is absent',
  { timeout: 5000 },
  () => {
    const clock = new ManualClock();
    const { steps, mark } = stepTimer<'a' | 'b' | 'c'>(clock);
    clock.advance(1.234);
    mark('a');
    clock.advance(10);
    mark('b');
    assert.deepEqual(steps, { a: 1.23, b: 10 });
  },
);
