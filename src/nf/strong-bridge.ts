/**
 * An instance's part in strong global state: it applies the deployment's log to its pools (StrongPools),
 * passes every update, in log order, to its workers' mirrors, and asks the log for what their flows claim,
 * release and decide, each answer going back to the worker that asked.
 *
 *   const bridge = new StrongBridge(store, { self: 'nf-1', slice: { index: 1, count: 4 } }, workers, logger);
 *   await store.start();
 *   await bridge.start(declared);       // before any packet: the mirrors get the log from its start
 *   bridge.ask(0, requests);            // a worker's 'strong' message
 *   await bridge.stop();                // then the store's own stop
 */
import type { Worker } from 'node:worker_threads';
import { PoolOp } from '../global/pool-rule.js';
import type { GlobalStore } from '../global/store.js';
import { StrongPools } from '../global/strong-pool.js';
import type { Partition } from '../state/global-local.js';
import type { StrongGlobalState, StrongRequest } from '../state/global-strong.js';
import type { Logger, MetricSample, MetricSource } from '../types.js';
import type { StrongAnswer, ToWorker } from './messages.js';

/**
 * How long a new flow waits for its claim before it goes on without a value. Only that flow's packets wait
 * (parked, up to the reorder bound), so this can outlast an etcd leader election on a loaded machine (seen:
 * over 2 s), which must lose nothing; only a lost quorum should fail claims. Each attempt is short, since
 * etcd holds a write sent to a member whose leader died until its own request timeout.
 */
const STRONG_DEADLINE_MS = 8000;
const STRONG_ATTEMPT_MS = 500;

export class StrongBridge implements MetricSource {
  private readonly pools: StrongPools;
  /** Pool updates applied since the last message to the workers. */
  private log: Uint8Array[] = [];
  /** Per worker, what its claims came to since the last message to it. */
  private answers: StrongAnswer[][];
  private flushing: NodeJS.Immediate | undefined;
  /** Calls that failed (no quorum, a deadline): logged once per burst, all counted by StrongPools. */
  private errors = 0;

  constructor(
    store: GlobalStore,
    options: { self: string; slice: Partition },
    private readonly workers: readonly Worker[],
    private readonly logger: Logger,
  ) {
    this.pools = new StrongPools(
      store,
      { ...options, deadlineMs: STRONG_DEADLINE_MS, attemptMs: STRONG_ATTEMPT_MS },
      logger,
    );
    this.answers = workers.map(() => []);
    this.pools.onApplied = (data) => {
      this.log.push(data.slice());
      this.flushSoon();
    };
  }

  /** Defines the pools the NF declared and follows the log (of a started store) from its start. */
  async start(declared: StrongGlobalState): Promise<void> {
    for (const p of declared.declared()) this.pools.define(p.name, p.first, p.last);
    await this.pools.start();
  }

  /** Worker `index`'s flows asked for claims and releases: the log decides, and each claim's flow hears back. */
  ask(index: number, requests: readonly StrongRequest[]): void {
    const pools = this.pools;
    for (const r of requests) {
      if (r.op === PoolOp.RELEASE) {
        pools.release(r.pool, r.owner, r.incarnation).catch((err: unknown) => this.failed('release', err));
        continue;
      }
      const answer = (value: number): void => {
        this.answers[index]!.push({ pool: r.pool, owner: r.owner, incarnation: r.incarnation, value });
        this.flushSoon();
      };
      if (r.op === PoolOp.DECIDE) {
        const own = r.candidate ?? -1;
        pools.decide(r.pool, r.owner, r.incarnation, own).then(answer, (err: unknown) => {
          // The worker's own choice stands; a replay elsewhere may choose again.
          this.failed('decision', err);
          answer(own);
        });
        continue;
      }
      pools.claim(r.pool, r.owner, r.incarnation).then(answer, (err: unknown) => {
        // The flow cannot have a value now: it goes on without one, as with an exhausted pool.
        this.failed('claim', err);
        answer(-1);
      });
    }
  }

  async stop(): Promise<void> {
    clearImmediate(this.flushing);
    await this.pools.stop();
  }

  collect(out: MetricSample[]): void {
    this.pools.collect(out);
  }

  private failed(what: string, err: unknown): void {
    if (this.errors++ % 1000 === 0)
      this.logger.error(`strong global state: ${what} failed`, { error: String(err), failures: this.errors });
  }

  /** The log's updates to every worker, and each its answers, once per turn of the event loop. */
  private flushSoon(): void {
    this.flushing ??= setImmediate(() => {
      this.flushing = undefined;
      const log = this.log;
      this.log = [];
      for (let i = 0; i < this.workers.length; i++) {
        const answers = this.answers[i]!;
        if (log.length === 0 && answers.length === 0) continue;
        this.answers[i] = [];
        this.workers[i]!.postMessage({ type: 'strong', log, answers } satisfies ToWorker);
      }
    });
  }
}
