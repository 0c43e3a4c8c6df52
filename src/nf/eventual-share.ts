/**
 * An instance's part in eventual global state (CRDTs): what its workers ship and what other instances send
 * is joined here and handed to every worker once per MERGE_MS, and what its own workers made goes beyond
 * the cluster (whose peers have it in the records frame) to every other instance, one gossip frame per
 * peer per GOSSIP_MS. Joining here makes a worker merge one state per round instead of every shipment of
 * every peer's worker: on a busy machine the messages, more than the merges, were what cost.
 *
 *   const share = new EventualShare({ self: 'nf-1', key, sources: 2 }, workers, logger);
 *   share.startMerging();
 *   share.spread(true, [delta]);          // a worker's shipment; false: from another instance
 *   await share.setGossip([{ id: 'nf-5', host, port }]);
 *   share.stop();
 */
import type { Worker } from 'node:worker_threads';
import { ByteWriter } from '../state/bytes.js';
import { CrdtGlobalState } from '../state/global-crdt.js';
import { LocalGlobalState } from '../state/global-local.js';
import type { Logger, MetricSample, MetricSource } from '../types.js';
import type { ToWorker } from './messages.js';
import { writeGlobalRecord, type Peer } from './replication.js';
import { Replicator } from './replicator.js';

/** The accumulators join counters and sets only. */
const NO_POOLS = new LocalGlobalState();
/**
 * How often eventual global state goes to the instances outside the cluster: what the detections that read
 * it across the deployment lag by, against one frame per peer per round.
 */
const GOSSIP_MS = 200;
/** How often the workers join the eventual global state the instance received. */
const MERGE_MS = 50;
/** Connections come up in bursts (a cluster forming): one full share for the burst. */
const SHARE_AFTER_CONNECT_MS = 50;

export interface EventualShareOptions {
  self: string;
  /** The cluster key, which authenticates gossip frames as it does replication's. */
  key: Buffer;
  /** How many workers ship state (the gossip connections' sources). */
  sources: number;
}

export class EventualShare implements MetricSource {
  /** Eventual global states that did not decode. */
  bad = 0;
  private gossiper: Replicator | undefined;
  private readonly frame = new ByteWriter(64 * 1024);
  /**
   * What this instance's workers changed since the last gossip round, joined: an entry updated many times
   * in a round travels once, and each peer merges one state per round instead of one per worker shipment.
   */
  private gossipOut: CrdtGlobalState | undefined;
  /** Eventual global state received since the last merge round, joined. */
  private mergeOut: CrdtGlobalState | undefined;
  private merger: NodeJS.Timeout | undefined;
  private gossipTimer: NodeJS.Timeout | undefined;
  private sharing: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: EventualShareOptions,
    private readonly workers: readonly Worker[],
    private readonly logger: Logger,
  ) {}

  /** Workers join what arrived once per MERGE_MS from now on. */
  startMerging(): void {
    this.merger ??= setInterval(this.mergeRound, MERGE_MS);
  }

  /**
   * Eventual global state (deltas, or all of it), from this instance's workers (`fromWorker`) or from other
   * instances: joined for the next merge round (merging a worker's own entries back changes nothing), and a
   * worker's also for the next gossip round.
   */
  spread(fromWorker: boolean, states: readonly Uint8Array[]): void {
    try {
      this.mergeOut ??= new CrdtGlobalState(NO_POOLS, { replica: 0 });
      for (const st of states) this.mergeOut.merge(st);
      if (!fromWorker || this.gossiper === undefined) return;
      this.gossipOut ??= new CrdtGlobalState(NO_POOLS, { replica: 0 });
      for (const st of states) this.gossipOut.merge(st);
    } catch (err) {
      // Decoded before anything is joined: a bad state changes nothing.
      this.bad++;
      this.logger.warn('eventual global state refused', { error: String(err) });
    }
  }

  /** Eventual global state goes to `peers` (the instances outside the cluster) from now on. */
  async setGossip(peers: readonly Peer[]): Promise<void> {
    if (this.gossiper === undefined) {
      this.gossiper = new Replicator(
        { self: this.options.self, key: this.options.key, peers: [], sources: this.options.sources },
        this.logger,
      );
      this.gossiper.onConnected = this.reconnected;
    }
    this.gossipTimer ??= setInterval(() => {
      this.gossipRound();
    }, GOSSIP_MS);
    // Gossip has no catch-up of flows: the full global state each worker sends next is all they need.
    await this.gossiper.setPeers(peers);
    this.share();
  }

  /**
   * Every worker sends all its eventual global state once: a newcomer learns it, and after a failover the
   * entries the failed instance sent only to its cluster reach everyone (deltas carry a replica's own
   * changes only, crdt/index.ts). Merging what one already has changes nothing.
   */
  share(): void {
    for (const w of this.workers) w.postMessage({ type: 'share' } satisfies ToWorker);
  }

  /** A replication or gossip connection came up: share all eventual global state once, soon (debounced). */
  readonly reconnected = (): void => {
    if (this.sharing !== undefined) return;
    this.sharing = setTimeout(() => {
      this.sharing = undefined;
      this.share();
    }, SHARE_AFTER_CONNECT_MS);
  };

  stop(): void {
    this.gossiper?.stop();
    clearInterval(this.gossipTimer);
    clearInterval(this.merger);
    clearTimeout(this.sharing);
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_nf_bad_global_states_total', { nf: this.options.self }, this.bad]);
  }

  /** What arrived since the last round, to every worker now (a takeover does this before its replay). */
  readonly mergeRound = (): void => {
    const joined = this.mergeOut;
    if (joined === undefined) return;
    this.mergeOut = undefined;
    const state = joined.encodeFull();
    for (const w of this.workers) {
      const copy = new Uint8Array(state).buffer;
      w.postMessage({ type: 'merge', states: [copy] } satisfies ToWorker, [copy]);
    }
  };

  /** One frame per gossip peer per round, however many deltas the workers made meanwhile. */
  private gossipRound(): void {
    if (this.gossipOut === undefined || this.gossiper === undefined) return;
    this.frame.reset();
    writeGlobalRecord(this.frame, this.gossipOut.encodeFull());
    this.gossipOut = undefined;
    this.gossiper.send(this.frame.view());
  }
}
