/**
 * Lowest-first allocation over an integer range, for pools that hand values out in order (NAT ports):
 * O(log n) per value taken or given back, with no pass over the range.
 *
 *   const free = new LowestFree(1024, 65535);
 *   const v = free.take((x) => !owners.has(x));  // 1024, or the lowest value given back since
 *   free.offer(v);                               // after its owner let go
 *
 * Invariant: every value the caller counts as free is either at or above `next` (never handed out) or
 * in the min-heap. The caller owns the truth of what is free and passes it to `take`, so values that
 * were taken some other way (a forced allocation, another instance's decision) stay in the heap as
 * stale entries and are dropped when they surface. `queued` keeps one heap entry per value, so the
 * heap never outgrows the part of the range handed out so far.
 */
export class LowestFree {
  private next: number;
  private readonly heap: number[] = [];
  private readonly queued = new Set<number>();

  constructor(
    first: number,
    private readonly last: number,
  ) {
    this.next = first;
  }

  /**
   * Removes and returns the lowest value for which `usable` holds, or -1 when there is none. Values it
   * passes over are forgotten: `offer` them again once they become usable.
   */
  take(usable: (value: number) => boolean): number {
    while (this.heap.length > 0) {
      const v = heapPop(this.heap);
      this.queued.delete(v);
      if (usable(v)) return v;
    }
    while (this.next <= this.last) {
      const v = this.next++;
      if (usable(v)) return v;
    }
    return -1;
  }

  /** Makes `value` a candidate again. */
  offer(value: number): void {
    // Values at or above `next` are reached by `next` itself.
    if (value >= this.next || this.queued.has(value)) return;
    this.queued.add(value);
    heapPush(this.heap, value);
  }
}

function heapPush(h: number[], v: number): void {
  let i = h.length;
  h.push(v);
  while (i > 0) {
    const parent = (i - 1) >> 1;
    const p = h[parent]!;
    if (p <= v) break;
    h[i] = p;
    i = parent;
  }
  h[i] = v;
}

function heapPop(h: number[]): number {
  const top = h[0]!;
  const last = h.pop()!;
  const n = h.length;
  if (n === 0) return top;
  let i = 0;
  for (;;) {
    const l = 2 * i + 1;
    if (l >= n) break;
    const r = l + 1;
    const c = r < n && h[r]! < h[l]! ? r : l;
    if (h[c]! >= last) break;
    h[i] = h[c]!;
    i = c;
  }
  h[i] = last;
  return top;
}
