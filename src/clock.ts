/**
 * The wall clock every role stamps and measures with: high resolution, in fractional milliseconds since
 * the Unix epoch. Components take a Clock so tests can drive time.
 */
import type { Clock } from './types.js';

export const wallClock: Clock = { now: () => performance.timeOrigin + performance.now() };

/** A duration in ms to two decimals, as the records and reports give them. */
export function round2(ms: number): number {
  return Math.round(ms * 100) / 100;
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
