/**
 * A coarse hashed timer wheel for the many deadlines of the data path: idle flows, batch time bounds,
 * reorder-gap timeouts. One `setInterval` per worker calls `advance(now)`; there is never a `setTimeout`
 * per flow, and adding a deadline is an array push.
 *
 *   const wheel = new TimerWheel<Flow>(10, 1024);       // 10 ms ticks, ~10 s per revolution
 *   wheel.add(flow, flow.lastSeen + idleMs);
 *   setInterval(() => wheel.advance(clock.now(), onIdle), 10);
 *
 * Layout: slot s holds every item whose due tick t satisfies t % slots === s, in two parallel arrays
 * (items and their absolute due ticks). Item time `at` is due at tick ceil(at / tickMs), so an item is
 * fired only once `now >= at` (never early) and, when `advance` runs at least once per tick, at most one
 * tick late. An item further out than one revolution shares its slot with nearer ones and is skipped on
 * each pass until its own tick comes, so no rounds counter is needed.
 *
 *   slot:   0        1        2       …  slots-1
 *         [a@0,    [b@1]    []          [z@slots-1,
 *          y@slots]                       w@2·slots-1]
 *
 * Deletion is lazy and the caller's job: there is no `remove`. When a flow's deadline moves (a packet
 * refreshed `lastSeen`), leave the old entry in place; the expire callback checks the real deadline and
 * re-adds the item if it moved:
 *
 *   wheel.advance(now, (flow) => {
 *     if (flow.closed) return;                              // already gone: drop the stale entry
 *     const due = flow.lastSeen + idleMs;
 *     if (due > now) wheel.add(flow, due);                  // refreshed since: wait again
 *     else expireFlow(flow);
 *   });
 *
 * So a busy flow costs at most one wheel entry per idle period, not one per packet.
 */
import { ErrorCode, NfsError } from './errors.js';

export class TimerWheel<T> {
  readonly tickMs: number;
  readonly slots: number;
  private readonly items: T[][] = [];
  private readonly ticks: number[][] = [];
  // Every tick below `tick` has been processed; the slot of `tick` itself is scanned again on each
  // advance, because items can be added to it (or be not yet due in it) after it was first scanned.
  private tick = 0;
  private count = 0;

  constructor(tickMs: number, slots: number) {
    if (!(tickMs > 0) || !Number.isFinite(tickMs)) {
      throw new NfsError(ErrorCode.USAGE, `timer wheel: tickMs must be a positive number (got ${tickMs})`);
    }
    if (!Number.isInteger(slots) || slots < 1) {
      throw new NfsError(ErrorCode.USAGE, `timer wheel: slots must be an integer >= 1 (got ${slots})`);
    }
    this.tickMs = tickMs;
    this.slots = slots;
    for (let i = 0; i < slots; i++) {
      this.items.push([]);
      this.ticks.push([]);
    }
  }

  /** Items waiting to fire, stale entries included. */
  get size(): number {
    return this.count;
  }

  /** Schedules `item` to fire at the first `advance(now)` with `now >= atMs`. Past times fire next advance. */
  add(item: T, atMs: number): void {
    if (Number.isNaN(atMs)) throw new NfsError(ErrorCode.USAGE, 'timer wheel: deadline is NaN');
    let due = Math.ceil(atMs / this.tickMs);
    // Division can round a fractional quotient onto an integer; never let that make an item early.
    if (due * this.tickMs < atMs) due++;
    if (due < this.tick) due = this.tick;
    else if (!Number.isFinite(due)) due = Number.MAX_SAFE_INTEGER;
    const slot = due % this.slots;
    this.items[slot]!.push(item);
    this.ticks[slot]!.push(due);
    this.count++;
  }

  /**
   * Fires every item due at or before `nowMs`, in no particular order. `expire` may call `add` (the
   * lazy-deletion pattern): an item re-added as already due fires on the next `advance`, not in this one,
   * so a callback that keeps re-adding cannot loop forever. If `expire` throws, the error propagates and
   * the next `advance` resumes where this one stopped.
   */
  advance(nowMs: number, expire: (item: T) => void): void {
    let target = Math.floor(nowMs / this.tickMs);
    if (target * this.tickMs > nowMs) target--;
    if (!(target >= this.tick)) return;
    const from = this.tick;
    // Set first so that items re-added from `expire` as already due land in the target slot. That slot is
    // scanned first, so they wait for the next advance instead of firing again in this one.
    this.tick = target;
    try {
      this.scan(target % this.slots, target, expire);
      // Then the earlier ticks, newest first; a jump of a revolution or more visits every slot once,
      // and entries are kept or fired by their own due tick.
      const steps = Math.min(target - from, this.slots - 1);
      for (let i = 1; i <= steps; i++) this.scan((target - i) % this.slots, target, expire);
    } catch (err) {
      // Rescan the whole range next time, so no slot is skipped for a revolution.
      this.tick = from;
      throw err;
    }
  }

  /** Drops every entry without firing it. */
  clear(): void {
    for (let s = 0; s < this.slots; s++) {
      this.items[s]!.length = 0;
      this.ticks[s]!.length = 0;
    }
    this.count = 0;
  }

  private scan(slot: number, target: number, expire: (item: T) => void): void {
    const items = this.items[slot]!;
    const ticks = this.ticks[slot]!;
    // Entries appended by `expire` during this scan sit beyond `end` and are kept as they are.
    const end = items.length;
    let kept = 0;
    let next = 0;
    try {
      while (next < end) {
        const i = next++;
        const due = ticks[i]!;
        const item = items[i]!;
        if (due <= target) {
          this.count--;
          expire(item);
        } else {
          items[kept] = item;
          ticks[kept] = due;
          kept++;
        }
      }
    } finally {
      // Compact in place, also when `expire` threw (then the unscanned rest is kept): the arrays keep
      // their capacity, so steady state allocates nothing.
      const len = items.length;
      for (let j = next; j < len; j++) {
        items[kept] = items[j]!;
        ticks[kept] = ticks[j]!;
        kept++;
      }
      items.length = kept;
      ticks.length = kept;
    }
  }
}
