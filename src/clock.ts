/**
 * The wall clock every role stamps and measures with: high resolution, in fractional milliseconds since
 * the Unix epoch. Components take a Clock so tests can drive time.
 */
import type { Clock } from './types.js';

/**
 * Where `performance.now()`'s zero lies on the system's real-time clock, for this thread. Not
 * `performance.timeOrigin`: a process takes it once at start from two clock reads that the scheduler can
 * pull apart, and never again, so a process started while the machine was busy, or before the system clock
 * was stepped, disagrees with the others by milliseconds, more than a packet's whole path between processes,
 * and a sink then sees packets arrive before they were stamped.
 *
 * Every read of `Date.now()` (the real time rounded down to a millisecond) taken with `performance.now()`
 * just after it is a lower bound of the anchor, and the read just after `Date.now()` steps to a new
 * millisecond is within a loop turn of it; preemption and a late step only lower a read. So the anchor is the
 * highest of the reads over several steps (the first few can all come late while the loop is being
 * compiled): within microseconds of the system clock, and so of every other process and thread on the
 * machine, for a wait of some milliseconds when the module loads. Each later check reads once more and keeps
 * a higher read.
 */
function realTimeAnchor(): number {
  let anchor = -Infinity;
  let last = Date.now();
  for (let steps = 0; steps < STEPS;) {
    const ms = Date.now();
    const read = ms - performance.now();
    if (read > anchor) anchor = read;
    if (ms !== last) {
      last = ms;
      steps++;
    }
  }
  return anchor;
}

/** How many steps of `Date.now()` the anchor is read over: the highest read settled by the fifth in trials. */
const STEPS = 8;
/** How often a thread checks that the system clock was not stepped since its anchor was read. */
const CHECK_MS = 1_000;
/** How far `Date.now()` may lie from the anchored clock before it counts as stepped: its rounding, and slack. */
const SLACK_MS = 0.1;

let anchor = realTimeAnchor();

// A stepped system clock (a time sync, a resumed virtual machine) moves every thread's anchor within a
// check. Reading again stalls the thread for some milliseconds, which only a step costs.
setInterval(() => {
  const read = Date.now() - performance.now();
  const ahead = anchor - read;
  if (ahead < -SLACK_MS || ahead > 1 + SLACK_MS) anchor = realTimeAnchor();
  else if (read > anchor) anchor = read;
}, CHECK_MS).unref();

export const wallClock: Clock = { now: () => anchor + performance.now() };

/** A duration in ms to two decimals, as the records and reports give them. */
export function round2(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/**
 * Times consecutive steps of one piece of work: `mark(step)` records, under `step`, the ms since the
 * previous mark (the first: since the timer was made). A step never marked is absent from `steps`.
 */
export function stepTimer<S extends string>(
  clock: Clock,
): { steps: Partial<Record<S, number>>; mark: (step: S) => void } {
  const steps: Partial<Record<S, number>> = {};
  let last = clock.now();
  return {
    steps,
    mark: (step) => {
      const now = clock.now();
      steps[step] = round2(now - last);
      last = now;
    },
  };
}

/** A clock that moves only when told to, for tests. */
export class ManualClock implements Clock {
  constructor(private t = 1_700_000_000_000) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
  set(ms: number): void {
    this.t = ms;
  }
}
