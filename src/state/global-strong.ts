/**
 * Strongly consistent pools as an NF worker thread sees them (DESIGN.md §7): a mirror of the pools that
 * the instance's main thread applies from the deployment's log (global/strong-pool.ts), and the claims and
 * releases its flows ask for.
 *
 *   const global = new StrongGlobalState(new LocalGlobalState());
 *   const ports = global.pool('nat.port', 1024, 65535);   // the NF, at construction
 *   ports.acquire(key);              // the value this flow incarnation holds, or throws DECISION_PENDING
 *   global.takeRequests();           // the claims to make, for the main thread
 *   global.applyLog(updates);        // the log as it applied in the main thread, in order
 *   global.answer(pool, owner, incarnation, value);   // what a claim came to; the flow runs again
 *
 * A new flow whose NF asks for a value that is not decided yet cannot go on: `acquire` throws
 * DECISION_PENDING, the processor parks the flow's packets (processor.ts, `deciding`) and runs the first
 * one again once the answer is here. That is why an NF acquires before it changes anything else in
 * `initFlow`. Only new flows wait, one round trip to the log; flows that hold their values never do.
 *
 * Holdings are named by (flow, incarnation), the incarnation being the flow's bound writer (its key and
 * the stamp time of its first packet, crdt/pn-counter.ts writerOf). A successor that replays a failed
 * instance's packets binds the same writer, so its claim finds the value the failed instance was given:
 * the outside world keeps seeing the same NAT port. Releases go by value, since a flow that moved has a new
 * writer but still holds what it was given.
 *
 * Decisions (`decide`: an lb backend by least connections, a NAT inbound mapping) go through the log the
 * same way: the worker proposes its own choice and the first one in log order is everyone's, so a replay
 * chooses as the failed instance did. Counters and sets are `inner`'s.
 */
import { parseFlowKeyString } from '../packet/flow-key.js';
import { ownerName } from './global-local.js';
import { DecisionState, PoolOp, PoolState, decodePoolUpdate, type Holding } from '../global/pool-rule.js';
import type {
  FlowKey,
  GlobalSnapshot,
  GlobalState,
  SharedCounters,
  SharedPool,
  SharedSets,
} from '../types.js';

/** Thrown by `acquire` when the flow's value is not decided yet: the caller runs the packet again later. */
export class DecisionPending extends Error {
  constructor() {
    super('a strong global decision is pending');
    this.name = 'DecisionPending';
  }
}

/** One instance, thrown every time: no allocation on the path that throws it. */
export const DECISION_PENDING = new DecisionPending();

/** A claim or release a worker asks its instance's main thread to make. */
export interface StrongRequest {
  op: typeof PoolOp.CLAIM | typeof PoolOp.RELEASE | typeof PoolOp.DECIDE;
  /** The pool, or the decision's name. */
  pool: string;
  owner: string;
  incarnation: number;
  /** A decision's proposal: this worker's own choice. */
  candidate?: number;
}

const NO_REQUESTS: readonly StrongRequest[] = Object.freeze([]);

function requestKey(pool: string, owner: string, incarnation: number): string {
  return `${pool} ${incarnation} ${owner}`;
}

class MirroredPool implements SharedPool {
  readonly state: PoolState;

  constructor(
    private readonly global: StrongGlobalState,
    name: string,
    first: number,
    last: number,
  ) {
    this.state = new PoolState(name, first, last);
  }

  get size(): number {
    return this.state.size;
  }

  get inUse(): number {
    return this.state.byValue.size;
  }

  acquire(owner: FlowKey): number {
    return this.global.claim(this.state, ownerName(owner));
  }

  release(value: number): void {
    const h = this.state.byValue.get(value);
    if (h !== undefined) this.global.release(this.state.name, h.owner, h.incarnation);
  }

  /** Each holding's owner parsed once: the switch asks for every reply packet. */
  private readonly keys = new WeakMap<Holding, FlowKey>();

  ownerOf(value: number): FlowKey | undefined {
    const h = this.state.byValue.get(value);
    if (h === undefined) return undefined;
    let key = this.keys.get(h);
    if (key === undefined) {
      key = parseFlowKeyString(h.owner);
      this.keys.set(h, key);
    }
    return key;
  }
}

export class StrongGlobalState implements GlobalState {
  private readonly pools = new Map<string, MirroredPool>();
  private readonly decisions = new DecisionState();
  private requests: StrongRequest[] = [];
  /** Claims asked for and not answered yet, by requestKey: the flow each one holds up. */
  private readonly waiting = new Map<string, FlowKey>();
  /** Answers not yet taken by the flow's next run (a failed claim answers -1: no value). */
  private readonly answers = new Map<string, number>();
  private incarnation = -1;
  /** Updates of pools this worker does not have (another NF's): counted, not applied. */
  undeclared = 0;
  malformed = 0;

  /**
   * @param owns whether this worker has the flow: its snapshot lists only those flows' holdings, every
   *   instance's mirror holding all of them
   */
  constructor(
    private readonly inner: GlobalState,
    private readonly owns: (flow: FlowKey) => boolean = () => true,
  ) {}

  pool(name: string, first: number, last: number): SharedPool {
    let p = this.pools.get(name);
    if (p === undefined) {
      p = new MirroredPool(this, name, first, last);
      this.pools.set(name, p);
    }
    return p;
  }

  /** The pools the NF declared, for the main thread to define alike. */
  declared(): { name: string; first: number; last: number }[] {
    return [...this.pools.values()].map(({ state: s }) => ({ name: s.name, first: s.first, last: s.last }));
  }

  counters(name: string): SharedCounters {
    return this.inner.counters(name);
  }

  sets(name: string): SharedSets {
    return this.inner.sets(name);
  }

  /**
   * The choice made for this flow incarnation in the log, or this worker's own (`choose`) proposed to it:
   * the first in log order wins, so a successor's replay makes the same choice (throws DECISION_PENDING
   * until the log has answered).
   */
  decide(name: string, key: FlowKey, choose: () => number): number {
    const owner = ownerName(key);
    const incarnation = this.incarnation;
    const made = this.decisions.valueOf(name, owner, incarnation);
    if (made !== undefined) return made;
    return this.awaitAnswer(name, owner, incarnation, () => ({
      op: PoolOp.DECIDE,
      pool: name,
      owner,
      incarnation,
      candidate: choose(),
    }));
  }

  bind(writer: number, seq: number): void {
    this.incarnation = writer;
    this.inner.bind(writer, seq);
  }

  unbind(): void {
    this.incarnation = -1;
    this.inner.unbind();
  }

  /** @internal MirroredPool.acquire. */
  claim(state: PoolState, owner: string): number {
    const incarnation = this.incarnation;
    const held = state.valueOf(owner, incarnation);
    if (held !== undefined) return held;
    return this.awaitAnswer(state.name, owner, incarnation, () => ({
      op: PoolOp.CLAIM,
      pool: state.name,
      owner,
      incarnation,
    }));
  }

  /** The answer the log gave, once; until then the request goes out (once) and the flow waits. */
  private awaitAnswer(
    pool: string,
    owner: string,
    incarnation: number,
    request: () => StrongRequest,
  ): number {
    const key = requestKey(pool, owner, incarnation);
    const answer = this.answers.get(key);
    if (answer !== undefined) {
      this.answers.delete(key);
      return answer;
    }
    if (!this.waiting.has(key)) {
      this.waiting.set(key, parseFlowKeyString(owner));
      this.requests.push(request());
    }
    throw DECISION_PENDING;
  }

  /** @internal MirroredPool.release. */
  release(pool: string, owner: string, incarnation: number): void {
    this.requests.push({ op: PoolOp.RELEASE, pool, owner, incarnation });
  }

  /** The claims and releases asked for since the last call, oldest first. */
  takeRequests(): readonly StrongRequest[] {
    // Asked after every batch of packets: nothing to allocate when no flow asked for anything.
    if (this.requests.length === 0) return NO_REQUESTS;
    const out = this.requests;
    this.requests = [];
    return out;
  }

  /** Pool updates as they applied in the main thread, in log order. */
  applyLog(updates: readonly Uint8Array[]): void {
    for (const data of updates) {
      const u = decodePoolUpdate(data);
      if (u === undefined) {
        this.malformed++;
        continue;
      }
      if (u.op === PoolOp.DECIDE) {
        this.decisions.apply(u);
        continue;
      }
      const p = this.pools.get(u.pool);
      if (p === undefined) this.undeclared++;
      else p.state.apply(u);
    }
  }

  /**
   * What a claim came to: its value, or -1 when there is none to have (the pool is exhausted, or the log
   * could not decide in time). Returns the flow to run again, or undefined when nothing waits for it.
   */
  answer(pool: string, owner: string, incarnation: number, value: number): FlowKey | undefined {
    const key = requestKey(pool, owner, incarnation);
    const flow = this.waiting.get(key);
    if (flow === undefined) return undefined;
    this.waiting.delete(key);
    // The mirror may hold it already; an answer is only needed for what it cannot show (no value).
    const mirrored =
      this.pools.get(pool)?.state.valueOf(owner, incarnation) ??
      this.decisions.valueOf(pool, owner, incarnation);
    if (mirrored === undefined) this.answers.set(key, value);
    return flow;
  }

  /**
   * The holdings of the flows this worker has, so that the deployment's snapshots, merged, list each
   * holding once; counters and sets are `inner`'s.
   */
  snapshot(): GlobalSnapshot {
    const pools: GlobalSnapshot['pools'] = {};
    for (const name of [...this.pools.keys()].sort()) {
      const held = [...this.pools.get(name)!.state.byValue.values()].filter((h) =>
        this.owns(parseFlowKeyString(h.owner)),
      );
      pools[name] = held.map((h) => ({ value: h.value, owner: h.owner })).sort((a, b) => a.value - b.value);
    }
    return { ...this.inner.snapshot(), pools };
  }
}
