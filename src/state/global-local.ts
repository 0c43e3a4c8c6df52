/**
 * Process-local global state: the embedded default for one process and the reference that the
 * distributed implementations are compared against. `GivenGlobalState` is the oracle's variant: it
 * replays the allocations and decisions a deployment made, so a single-process re-run of the same
 * traffic ends with the same per-flow state.
 *
 *   const global = new LocalGlobalState();
 *   const ports = global.pool('nat.port', 1024, 65535);
 *   ports.acquire(key);                                // 1024, then 1025 for the next flow …
 *   global.counters('lb.conns').add(2, 1);
 *
 *   const oracle = new GivenGlobalState(new Map([[flowKeyString(key), { 'nat.port': 40001 }]]));
 */
import { ErrorCode, NfsError } from '../errors.js';
import { canonicalKey, flowKeyString } from '../packet/flow-key.js';
import { LowestFree } from './lowest-free.js';
import type {
  FlowKey,
  GlobalSnapshot,
  GlobalState,
  SharedCounters,
  SharedPool,
  SharedSets,
} from '../types.js';

/** The owner's name: the same for both directions of a flow. */
export function ownerName(k: FlowKey): string {
  return flowKeyString(canonicalKey(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto));
}

/**
 * Slice `index` of `count` equal slices of [first, last] (the last one takes the remainder), or undefined
 * when the range has fewer values than slices.
 */
export function sliceOf(
  first: number,
  last: number,
  { index, count }: Partition,
): [number, number] | undefined {
  const size = Math.floor((last - first + 1) / count);
  if (size < 1) return undefined;
  const from = first + index * size;
  return [from, index === count - 1 ? last : from + size - 1];
}

/** Where a pool learns the value an owner must get (the oracle's replay); undefined: choose freely. */
type GivenLookup = (owner: string, poolName: string) => number | undefined;

/**
 * A pool of the integers [first, last]. Free values are handed out lowest first (lowest-free.ts).
 * Forced (given) values can be taken out of that order: `free` then holds stale entries for them, which
 * it drops because they are owned.
 */
class LocalPool implements SharedPool {
  readonly size: number;
  private readonly free: LowestFree;
  private readonly isFree = (v: number): boolean => !this.owners.has(v);
  /** value → its current owner, and the owner's key string → value (acquire is idempotent per flow). */
  private readonly owners = new Map<number, FlowKey>();
  private readonly ownerKeys = new Map<number, string>();
  private readonly byOwner = new Map<string, number>();
  /**
   * Earlier holders of a value that a forced acquire took over, oldest first. The deployment handed the
   * value on only after its holder released it, so the next release of the value belongs to the oldest.
   */
  private readonly displaced = new Map<number, string[]>();

  constructor(
    readonly name: string,
    readonly first: number,
    readonly last: number,
    private readonly given: GivenLookup | undefined,
  ) {
    this.size = last - first + 1;
    this.free = new LowestFree(first, last);
  }

  get inUse(): number {
    return this.owners.size;
  }

  acquire(owner: FlowKey): number {
    const k = ownerName(owner);
    const held = this.byOwner.get(k);
    if (held !== undefined) return held;
    const forced = this.given?.(k, this.name);
    if (forced !== undefined && Number.isInteger(forced) && forced >= this.first && forced <= this.last) {
      const previous = this.ownerKeys.get(forced);
      if (previous !== undefined) {
        const queue = this.displaced.get(forced);
        if (queue === undefined) this.displaced.set(forced, [previous]);
        else queue.push(previous);
      }
      this.take(forced, owner, k);
      return forced;
    }
    const v = this.free.take(this.isFree);
    if (v >= 0) this.take(v, owner, k);
    return v;
  }

  release(value: number): void {
    const queue = this.displaced.get(value);
    if (queue !== undefined) {
      const oldest = queue.shift()!;
      if (queue.length === 0) this.displaced.delete(value);
      this.byOwner.delete(oldest);
      return;
    }
    const k = this.ownerKeys.get(value);
    if (k === undefined) return;
    this.owners.delete(value);
    this.ownerKeys.delete(value);
    this.byOwner.delete(k);
    this.free.offer(value);
  }

  ownerOf(value: number): FlowKey | undefined {
    return this.owners.get(value);
  }

  snapshot(): { value: number; owner: string }[] {
    const out: { value: number; owner: string }[] = [];
    for (const [value, k] of this.ownerKeys) out.push({ value, owner: k });
    return out.sort((a, b) => a.value - b.value);
  }

  private take(value: number, owner: FlowKey, k: string): void {
    // A copy, because the caller's key object belongs to the runtime.
    const { srcIp, dstIp, srcPort, dstPort, proto } = owner;
    this.owners.set(value, { srcIp, dstIp, srcPort, dstPort, proto });
    this.ownerKeys.set(value, k);
    this.byOwner.set(k, value);
  }
}

class LocalCounters implements SharedCounters {
  readonly values = new Map<number, number>();

  add(key: number, delta: number): number {
    const v = (this.values.get(key) ?? 0) + delta;
    this.values.set(key, v);
    return v;
  }

  get(key: number): number {
    return this.values.get(key) ?? 0;
  }
}

class LocalSets implements SharedSets {
  readonly values = new Map<number, Set<number>>();

  add(key: number, member: number): number {
    let s = this.values.get(key);
    if (s === undefined) {
      s = new Set();
      this.values.set(key, s);
    }
    s.add(member);
    return s.size;
  }

  size(key: number): number {
    return this.values.get(key)?.size ?? 0;
  }
}

/** This process's share of every pool: slice `index` of `count` equal slices. */
export interface Partition {
  index: number;
  count: number;
}

/**
 * All global state in this process's memory. Handles are made once per name, so NFs that resolve the
 * same name share one pool, one counter map, one set map.
 *
 * With a partition, each pool hands out values only from this process's slice of its range, so many
 * processes (every worker of every instance) allocate without ever colliding and without talking to
 * each other: the block allocation many carrier-grade NATs use. What they cannot do is look up an owner
 * in another slice; the strongly consistent stores do that.
 */
export class LocalGlobalState implements GlobalState {
  private readonly pools = new Map<string, LocalPool>();
  private readonly ranges = new Map<string, readonly [number, number]>();
  private readonly counterMaps = new Map<string, LocalCounters>();
  private readonly setMaps = new Map<string, LocalSets>();
  private readonly partition: Partition;

  constructor(options: { partition?: Partition } = {}) {
    this.partition = options.partition ?? { index: 0, count: 1 };
    const { index, count } = this.partition;
    if (!Number.isInteger(count) || count < 1 || !Number.isInteger(index) || index < 0 || index >= count) {
      throw new NfsError(ErrorCode.CONFIG, `global.partition: bad slice ${index} of ${count}`);
    }
  }

  pool(name: string, first: number, last: number): SharedPool {
    const existing = this.pools.get(name);
    if (existing !== undefined) {
      const [f, l] = this.ranges.get(name)!;
      if (f !== first || l !== last) {
        throw new NfsError(
          ErrorCode.CONFIG,
          `global.pool.${name}: already defined as [${f}, ${l}], not [${first}, ${last}]`,
        );
      }
      return existing;
    }
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(last) || first > last) {
      throw new NfsError(ErrorCode.CONFIG, `global.pool.${name}: bad range [${first}, ${last}]`);
    }
    const { count } = this.partition;
    const slice = sliceOf(first, last, this.partition);
    if (slice === undefined) {
      throw new NfsError(
        ErrorCode.CONFIG,
        `global.pool.${name}: [${first}, ${last}] is too small for ${count} partitions`,
      );
    }
    const p = new LocalPool(name, slice[0], slice[1], this.givenLookup());
    this.pools.set(name, p);
    this.ranges.set(name, [first, last]);
    return p;
  }

  counters(name: string): SharedCounters {
    let c = this.counterMaps.get(name);
    if (c === undefined) {
      c = new LocalCounters();
      this.counterMaps.set(name, c);
    }
    return c;
  }

  sets(name: string): SharedSets {
    let s = this.setMaps.get(name);
    if (s === undefined) {
      s = new LocalSets();
      this.setMaps.set(name, s);
    }
    return s;
  }

  decide(_name: string, _key: FlowKey, choose: () => number): number {
    return choose();
  }

  /** One process counts each packet once by itself: there is no replay to tell apart. */
  bind(): void {}
  unbind(): void {}

  /**
   * Everything, with names and keys sorted. Counters that are zero and sets that are empty are left
   * out, so a counter that went up and back down compares equal to one never touched.
   */
  snapshot(): GlobalSnapshot {
    const pools: GlobalSnapshot['pools'] = {};
    for (const name of [...this.pools.keys()].sort()) pools[name] = this.pools.get(name)!.snapshot();
    const counters: GlobalSnapshot['counters'] = {};
    for (const name of [...this.counterMaps.keys()].sort()) {
      const out: Record<string, number> = {};
      const values = this.counterMaps.get(name)!.values;
      for (const key of [...values.keys()].sort((a, b) => a - b)) {
        const v = values.get(key)!;
        if (v !== 0) out[String(key)] = v;
      }
      counters[name] = out;
    }
    const sets: GlobalSnapshot['sets'] = {};
    for (const name of [...this.setMaps.keys()].sort()) {
      const out: Record<string, number[]> = {};
      const values = this.setMaps.get(name)!.values;
      for (const key of [...values.keys()].sort((a, b) => a - b)) {
        const members = values.get(key)!;
        if (members.size > 0) out[String(key)] = [...members].sort((a, b) => a - b);
      }
      sets[name] = out;
    }
    return { pools, counters, sets };
  }

  /** Subclasses that replay a deployment supply the values its flows got. */
  protected givenLookup(): GivenLookup | undefined {
    return undefined;
  }
}

/**
 * The oracle's global state: pool values and decisions come from `given` (flowKeyString → name →
 * value, as the deployment's flows reported through `NetworkFunction.allocations`) where it has them,
 * and are made locally otherwise.
 */
export class GivenGlobalState extends LocalGlobalState {
  constructor(private readonly given: ReadonlyMap<string, Readonly<Record<string, number>>>) {
    super();
  }

  override decide(name: string, key: FlowKey, choose: () => number): number {
    return this.given.get(ownerName(key))?.[name] ?? choose();
  }

  protected override givenLookup(): GivenLookup {
    return (owner, poolName) => this.given.get(owner)?.[poolName];
  }
}
