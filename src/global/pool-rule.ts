/**
 * The rule of the strong pools (strong-pool.ts): the replicated state machine every instance applies to the
 * same log, so every instance holds the same state, and the layout of its updates. StrongPools proposes and
 * applies; an instance's worker threads mirror the applied state (state/global-strong.ts).
 *
 *   const state = new PoolState('nat.port', 1024, 65535);
 *   const u = decodePoolUpdate(committed.data);   // undefined: not an update this version reads
 *   if (u !== undefined) state.apply(u);          // a value, EXHAUSTED or LOST
 *
 * The rule. A value is held by (pool, owner, incarnation), and updates apply in log order:
 *   - CLAIM v: if that owner's incarnation already holds a value, nothing changes and the claim answers
 *     with that value (a replay after failover, or two instances claiming for one flow). Otherwise the
 *     claim wins v if v is free, and loses if v is taken or outside the pool.
 *   - CLAIM_ANY: the same, but it takes the lowest free value, or answers -1 when none is free.
 *   - RELEASE: frees what the owner's incarnation holds, if anything. A later claim for the same
 *     incarnation is a new claim: a replay of a flow that had already ended gets some free value, and
 *     its replayed release frees that.
 *   - DECIDE c (`decide`, no pool needed): the first decision for (name, owner, incarnation) in log order
 *     is c, and every later one answers with it (DecisionState; the newest 2^20 are kept).
 *
 * Update layout, the data of one update (big-endian; `str` is a u32 length and UTF-8 bytes):
 *
 *   +---------+------+---------------+-----------------------+------+-------+
 *   | version | op   | incarnation   | candidate             | pool | owner |
 *   | u8 = 1  | u8   | u53 (8 bytes) | u53, CLAIM and DECIDE | str  | str   |
 *   +---------+------+---------------+-----------------------+------+-------+
 *   op: 1 CLAIM, 2 CLAIM_ANY, 3 RELEASE, 4 DECIDE (its candidate + 1, since "none" is -1; pool: its name)
 *
 * An update that does not decode (another version, truncated, trailing bytes, bad UTF-8) is counted and
 * skipped, and one for a pool this instance did not define is counted and ignored: the same at every
 * instance that defines the same pools, so the state stays the same everywhere.
 */
import { isUtf8 } from 'node:buffer';
import { ByteReader, ByteWriter } from '../state/bytes.js';
import { LowestFree } from '../state/lowest-free.js';

export const PoolOp = { CLAIM: 1, CLAIM_ANY: 2, RELEASE: 3, DECIDE: 4 } as const;
export type PoolOp = (typeof PoolOp)[keyof typeof PoolOp];

const POOL_UPDATE_VERSION = 1;

/** One update of the pools' log, decoded. */
export interface PoolUpdate {
  readonly op: PoolOp;
  readonly pool: string;
  readonly owner: string;
  readonly incarnation: number;
  /** The value a CLAIM proposes, or a DECIDE (-1 and up); -1 for the other ops. */
  readonly candidate: number;
}

const utf8 = new TextEncoder();

export function encodePoolUpdate(u: PoolUpdate): Uint8Array {
  const w = new ByteWriter(64);
  w.u8(POOL_UPDATE_VERSION);
  w.u8(u.op);
  w.u53(u.incarnation);
  if (u.op === PoolOp.CLAIM) w.u53(u.candidate);
  // A decision may be -1 (none); it travels as candidate + 1.
  else if (u.op === PoolOp.DECIDE) w.u53(u.candidate + 1);
  w.bytes(utf8.encode(u.pool));
  w.bytes(utf8.encode(u.owner));
  return w.view().slice();
}

/** The update in `data`, or undefined when it is not one this version can read. */
export function decodePoolUpdate(data: Uint8Array): PoolUpdate | undefined {
  try {
    const r = new ByteReader(data);
    if (r.u8() !== POOL_UPDATE_VERSION) return undefined;
    const op = r.u8();
    if (op !== PoolOp.CLAIM && op !== PoolOp.CLAIM_ANY && op !== PoolOp.RELEASE && op !== PoolOp.DECIDE)
      return undefined;
    const incarnation = r.u53();
    const candidate = op === PoolOp.CLAIM ? r.u53() : op === PoolOp.DECIDE ? r.u53() - 1 : -1;
    const pool = r.bytes();
    const owner = r.bytes();
    if (r.remaining !== 0 || !Number.isSafeInteger(incarnation) || !Number.isSafeInteger(candidate)) {
      return undefined;
    }
    if (!isUtf8(pool) || !isUtf8(owner)) return undefined;
    return { op, pool: text(pool), owner: text(owner), incarnation, candidate };
  } catch {
    return undefined;
  }
}

// A fatal TextDecoder costs microseconds per short string; checking first and then decoding does not.
function text(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8');
}

/** What a claim came to when it applied: a value, or one of these. */
export const EXHAUSTED = -1;
export const LOST = -2;

export interface Holding {
  readonly owner: string;
  readonly incarnation: number;
  readonly value: number;
}

export function holdingKey(owner: string, incarnation: number): string {
  return `${incarnation} ${owner}`;
}

/**
 * One pool's applied state, the same at every instance that applies the same log: what StrongPools keeps,
 * and what an instance's worker threads mirror from it (state/global-strong.ts).
 */
export class PoolState {
  readonly byValue = new Map<number, Holding>();
  readonly byOwner = new Map<string, Holding>();
  /** Lowest free in the applied state: where CLAIM_ANY takes from. */
  private readonly free: LowestFree;
  private readonly isFree = (v: number): boolean => !this.byValue.has(v);

  constructor(
    readonly name: string,
    readonly first: number,
    readonly last: number,
  ) {
    this.free = new LowestFree(first, last);
  }

  get size(): number {
    return this.last - this.first + 1;
  }

  /** Applies one decoded update; returns what it came to (a value, EXHAUSTED or LOST; -1 for a release of nothing). */
  apply(u: PoolUpdate): number {
    return u.op === PoolOp.RELEASE
      ? this.applyRelease(u.owner, u.incarnation)
      : this.applyClaim(u.owner, u.incarnation, u.op === PoolOp.CLAIM ? u.candidate : -1);
  }

  valueOf(owner: string, incarnation: number): number | undefined {
    return this.byOwner.get(holdingKey(owner, incarnation))?.value;
  }

  private applyClaim(owner: string, incarnation: number, candidate: number): number {
    const key = holdingKey(owner, incarnation);
    const held = this.byOwner.get(key);
    if (held !== undefined) return held.value;
    let value = candidate;
    if (candidate < 0) {
      value = this.free.take(this.isFree);
      if (value < 0) return EXHAUSTED;
    } else if (candidate < this.first || candidate > this.last || this.byValue.has(candidate)) {
      return LOST;
    }
    const h: Holding = { owner, incarnation, value };
    this.byValue.set(value, h);
    this.byOwner.set(key, h);
    return value;
  }

  private applyRelease(owner: string, incarnation: number): number {
    const key = holdingKey(owner, incarnation);
    const h = this.byOwner.get(key);
    if (h === undefined) return -1;
    this.byOwner.delete(key);
    this.byValue.delete(h.value);
    this.free.offer(h.value);
    this.released(h.value);
    return h.value;
  }

  /** A value went back to the pool: only a proposer has more to do. */
  protected released: (value: number) => void = () => undefined;
}

/**
 * Decisions in the log: per (name, owner, incarnation), the first DECIDE applied wins, and a later one for
 * the same answers with it, so a successor that replays a flow's first packet gets the choice the failed
 * instance made (an lb backend by least connections, a NAT inbound mapping). Only the newest
 * MAX_DECISIONS are kept, evicted in log order, the same at every instance: a decision matters only until
 * the flow's first batch is replicated, a batch timeout later.
 */
export class DecisionState {
  private readonly values = new Map<string, number>();
  private order: string[] = [];
  private head = 0;

  apply(u: PoolUpdate): number {
    const key = decisionKey(u.pool, u.owner, u.incarnation);
    const made = this.values.get(key);
    if (made !== undefined) return made;
    this.values.set(key, u.candidate);
    this.order.push(key);
    if (this.values.size > MAX_DECISIONS) {
      this.values.delete(this.order[this.head++]!);
      if (this.head * 2 > this.order.length) {
        this.order = this.order.slice(this.head);
        this.head = 0;
      }
    }
    return u.candidate;
  }

  valueOf(name: string, owner: string, incarnation: number): number | undefined {
    return this.values.get(decisionKey(name, owner, incarnation));
  }

  get size(): number {
    return this.values.size;
  }
}

const MAX_DECISIONS = 1 << 20;

function decisionKey(name: string, owner: string, incarnation: number): string {
  return `${name}\u0000${holdingKey(owner, incarnation)}`;
}
