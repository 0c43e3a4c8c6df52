/**
 * One NF instance: a UDP socket for stamped packets, W worker threads that each own the flows whose hash
 * falls in their shard, and an admin HTTP port (/metrics, /healthz, /digest).
 *
 *   const nf = new NfInstance({ id: 'nf-0', host: '127.0.0.1', port: 0, threads: 2, ... });
 *   const { port, workers } = await nf.start();  // the main port, and each worker's own port
 *   await nf.stop();
 *
 * Each worker has a port of its own, and the switch sends a flow's packets straight to the worker that owns
 * it (the same flow hash modulo W as here), so they cost this thread nothing. The main port takes what
 * needs this thread: the switch's copies for the flows this instance is the secondary of (kept in the
 * replay log), a moved flow's parked packets, and packets from a switch that knows no worker ports. For
 * the last two it reads the flow hash at fixed offsets, copies the datagram into its worker's pending
 * batch, and transfers each batch as one ArrayBuffer when the receive burst ends (setImmediate) or the
 * batch fills. Workers send their output themselves.
 */
import type { EventLoopUtilization } from 'node:perf_hooks';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { LoadReport } from '../controller/load-report.js';
import type { AdminServer } from '../admin-server.js';
import { createNf } from '../nfs/index.js';
import { mergeGlobal } from '../state/digest.js';
import { LocalGlobalState } from '../state/global-local.js';
import type { RunDigest } from '../state/digest.js';
import type { FlowKey, Logger, MetricSample, MetricSource } from '../types.js';
import { dropReasonName } from '../types.js';
import { flowHash, flowKeyString } from '../packet/flow-key.js';
import { datagramFlowHash, isCopy, readTuple, stampAt, stampSeq } from './dispatch.js';
import type { Tuple } from './dispatch.js';
import { ReplayLog } from './replay-log.js';
import { FlowTable } from '../packet/flow-table.js';
import { ErrorCode, NfsError } from '../errors.js';
import { StampFlag } from '../wire/geneve.js';
import { openBatchSocket, type BatchSocket } from '../wire/batch-socket.js';
import type { FromWorker, MoveFlow, MoveOp, MoveResult, ToWorker, WorkerInit } from './messages.js';
import { COUNTER_SLOTS, DROPS_AT, WORKER_COUNTERS } from './messages.js';
import type { Guarantee } from './guarantee.js';
import type { ProcessorOptions } from './processor.js';
import type { Peer } from './replication.js';
import { ReplicaStore } from './replica-store.js';
import { Replicator } from './replicator.js';
import { MAX_REPLICAS } from '../state/crdt/index.js';
import type { GlobalStore } from '../global/store.js';
import { StrongGlobalState } from '../state/global-strong.js';
import { EventualShare } from './eventual-share.js';
import { StrongBridge } from './strong-bridge.js';

/** What a takeover did (see NfInstance.takeOver). */
export interface TakeoverReport {
  flows: number;
  /** Flows resumed from a replica; the others (first batch never closed) start from their copies. */
  with_state: number;
  /** Replicas that were behind (a lost delta awaiting repair): their flows continue from copies alone. */
  stale: number;
  /** Kept copies replayed. */
  replayed: number;
  /** Flows whose kept copies did not start where their state ends: packets lost in the failure. */
  gaps: number;
  /** From handing the flows to the workers until every worker had replayed them. */
  ms: number;
}

export interface NfInstanceOptions {
  id: string;
  host: string;
  port: number;
  /** The first worker's own port, each next worker's one above it (absent or 0: any free ports). */
  workerPort?: number;
  threads: number;
  nf: { type: string; config: Record<string, unknown> };
  processor: ProcessorOptions;
  egress: { host: string; port: number };
  /** This instance's index among all instances, and their number: pools are split by it. */
  partition: { index: number; count: number };
  /**
   * Replication to the cluster: the members whose replication frames this instance accepts (itself
   * included or not), and the cluster key (hex) that authenticates them. Absent: no replication.
   */
  cluster?: { members: readonly string[]; key: string; port?: number };
  /**
   * The deployment's log for strong global state: the NF's pools are decided in it, the same for every
   * instance (global/strong-pool.ts), and this instance owns the store from `start` on. Absent: each worker
   * has its own share of each pool (`partition`).
   */
  strong?: GlobalStore;
  logger: Logger;
}

const BATCH_BYTES = 256 * 1024;
/** Copies a secondary keeps for its primaries' flows, at most (about 10^5 typical packets). */
const REPLAY_LOG_BYTES = 64 * 1024 * 1024;
/** A flow whose copies no record trimmed for this long has left its primary: they go. */
const REPLAY_LOG_IDLE_MS = 10_000;
const MIN_TRANSFER_PACKETS = 64;
const MAX_DEFERRALS = 3;

class Shard {
  readonly pending = new Uint8Array(BATCH_BYTES);
  used = 0;
  /** After-replication release: [replicator send, worker ship] pairs not yet acknowledged. */
  readonly awaiting: number[] = [];
  lastElu: EventLoopUtilization | undefined;
  readonly view: Float64Array;
  constructor(
    readonly worker: Worker,
    counters: SharedArrayBuffer,
  ) {
    this.view = new Float64Array(counters);
  }
}

export class NfInstance implements MetricSource {
  /** Stamped packets in (batch-socket.ts); the workers send the output. */
  private socket: BatchSocket | undefined;
  private shards: Shard[] = [];
  /** The shards' workers, in shard order. */
  private readonly workers: Worker[] = [];
  /** Eventual global state: joined for the workers, gossiped beyond the cluster. */
  private readonly eventual: EventualShare;
  /** Strong global state: the log's pools, mirrored in every worker. */
  private strong: StrongBridge | undefined;
  private flushScheduled = false;
  private pendingPackets = 0;
  /** Datagrams handed towards the workers: the difference to what they have taken is the queue. */
  private dispatched = 0;
  private packetsAtLastTurn = 0;
  private deferrals = 0;
  private started = false;
  private stopped = false;
  /** The one reply each worker is awaited for at a time (ready, digest, stopped). */
  private readonly replies = new Map<
    Worker,
    { resolve: (msg: FromWorker) => void; reject: (err: Error) => void }
  >();
  private replicator: Replicator | undefined;
  private lastElu: EventLoopUtilization | undefined;
  private clusterVersion = 0;
  private gossipVersion = 0;
  private moveIds = 0;
  private readonly moveReplies = new Map<number, (m: Extract<FromWorker, { type: 'moved' }>) => void>();
  /** Per flow: a move's source waiting for its hand-over, or the hand-over that came first. */
  private readonly handOvers = new Map<string, ((parked: number) => void) | number>();
  readonly replicas: ReplicaStore | undefined;
  /** As a secondary: copies of the primaries' packets since their last replicated batch. */
  readonly replayLog: ReplayLog | undefined;
  /** Flows taken over in a failover (clock ms when): their copies, until the switch is re-pointed, run here. */
  private readonly adopted = new FlowTable<number>();
  private readonly tuple: Tuple = { srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 };
  private coarseNow = Date.now();
  private sweeper: NodeJS.Timeout | undefined;
  /** Copies whose datagram carried no flow. */
  badCopies = 0;
  /** Called when a worker dies: the instance can no longer own its flows. */
  onFatal: (err: Error) => void = () => undefined;

  constructor(private readonly options: NfInstanceOptions) {
    this.eventual = new EventualShare(
      { self: options.id, key: Buffer.from(options.cluster?.key ?? '', 'hex'), sources: options.threads },
      this.workers,
      options.logger,
    );
    if (options.cluster !== undefined) {
      this.replicas = new ReplicaStore(
        {
          members: options.cluster.members,
          key: Buffer.from(options.cluster.key, 'hex'),
          nf: createNf(options.nf.type, options.nf.config, new LocalGlobalState()),
          // The cluster's primaries release output this way too (one topology).
          resumeBeforeLastBatch: options.processor.release === 'after-replication',
        },
        options.logger,
      );
      const log = new ReplayLog({
        maxBytes: REPLAY_LOG_BYTES,
        idleMs: options.processor.flowIdleMs + REPLAY_LOG_IDLE_MS,
      });
      this.replayLog = log;
      this.replicas.onCovered = (key, next) => {
        log.trim(key, next, this.coarseNow);
      };
      this.replicas.onGlobal = (states) => {
        this.eventual.spread(false, states);
      };
    }
  }

  get port(): number {
    return this.socket!.port;
  }

  /** Each worker's own port, in shard order: the switch sends a flow's packets to its worker there. */
  workerPorts: number[] = [];

  async start(): Promise<{ port: number; replication: number; workers: number[] }> {
    if (this.started)
      return { port: this.port, replication: this.replicas?.port ?? 0, workers: this.workerPorts };
    this.started = true;
    const { options } = this;
    // Workers would each fail on a bad NF config; fail here instead, with the config's own message. The
    // pools the NF declares are the ones the log decides.
    const declared = new StrongGlobalState(new LocalGlobalState());
    createNf(options.nf.type, options.nf.config, declared);
    if (options.workerPort && options.workerPort + options.threads - 1 > 65535)
      throw new NfsError(
        ErrorCode.CONFIG,
        `instance: worker ports from ${options.workerPort} for ${options.threads} threads go past 65535`,
      );
    const replicas = options.partition.count * options.threads;
    if (replicas > MAX_REPLICAS)
      throw new NfsError(
        ErrorCode.CONFIG,
        `instance: ${options.partition.count} instances × ${options.threads} threads is more than the ` +
          `${MAX_REPLICAS} replicas of eventual global state (each worker is one); use fewer threads or instances`,
      );
    const workerUrl = new URL('./worker.js', import.meta.url);
    for (let i = 0; i < options.threads; i++) {
      const counters = new SharedArrayBuffer(COUNTER_SLOTS * 8);
      const init: WorkerInit = {
        index: i,
        instance: options.id,
        nf: options.nf,
        // Output can only wait for acknowledgements where there are peers to acknowledge.
        options: {
          ...options.processor,
          release: options.cluster === undefined ? 'immediate' : (options.processor.release ?? 'immediate'),
        },
        egress: options.egress,
        host: options.host,
        port: options.workerPort ? options.workerPort + i : 0,
        partition: {
          index: options.partition.index * options.threads + i,
          count: options.partition.count * options.threads,
        },
        counters,
        strong: options.strong !== undefined,
        replicate: options.cluster !== undefined,
        // Unique in the deployment like the partition, which no two workers, now or later, share.
        replica: options.partition.index * options.threads + i,
      };
      const worker = new Worker(workerUrl, { workerData: init });
      const shard = new Shard(worker, counters);
      worker.on('message', (msg: FromWorker) => {
        if (msg.type === 'records') this.replicate(shard, i, msg.records, msg.ship, msg.global);
        else if (msg.type === 'snapshot')
          this.replicator?.catchUp(msg.peer, msg.round, i, new Uint8Array(msg.records), msg.last);
        else if (msg.type === 'moved') this.moveReplies.get(msg.id)?.(msg);
        else if (msg.type === 'handedOver') this.handedOver(msg.key, msg.parked);
        else if (msg.type === 'strong') this.strong?.ask(i, msg.requests);
        else this.replies.get(worker)?.resolve(msg);
      });
      worker.on('error', (err) => {
        options.logger.error('worker failed', { worker: i, error: String(err) });
        this.replies.get(worker)?.reject(err);
        this.onFatal(err);
      });
      this.shards.push(shard);
      this.workers.push(worker);
    }
    const ready = await Promise.all(this.shards.map((s) => this.ask(s.worker, 'ready')));
    // Output held until the peers acknowledge its batch refers to the bytes it came in: those of a
    // transferred batch stay, a socket's receive buffer does not. So under after-replication release the
    // switch sends here, and the workers get their packets in transfers, without a copy each.
    if (options.processor.release !== 'after-replication' || options.cluster === undefined)
      this.workerPorts = ready.map((m) => (m.type === 'ready' ? m.port : 0));
    // Before any packet: the workers' mirrors get the log from its start.
    if (options.strong !== undefined) {
      this.strong = new StrongBridge(
        options.strong,
        { self: options.id, slice: options.partition },
        this.workers,
        options.logger,
      );
      await options.strong.start();
      await this.strong.start(declared);
    }
    // Load is measured from here: starting up is not load.
    this.lastElu = performance.eventLoopUtilization();
    for (const s of this.shards) s.lastElu = s.worker.performance.eventLoopUtilization();
    this.socket = await openBatchSocket(options.host, options.port, (msg) => {
      this.dispatch(msg);
    });
    const replication =
      this.replicas === undefined ? 0 : await this.replicas.listen(options.host, options.cluster?.port ?? 0);
    if (this.replicas !== undefined) this.eventual.startMerging();
    this.sweeper = setInterval(() => {
      this.coarseNow = Date.now();
      this.replayLog?.sweep(this.coarseNow);
      const old: FlowKey[] = [];
      for (const [key, at] of this.adopted.entries())
        if (this.coarseNow - at > REPLAY_LOG_IDLE_MS) old.push(key);
      for (const key of old) this.adopted.delete(key);
    }, 1000);
    this.sweeper.unref();
    options.logger.info('nf instance listening', { port: this.port, threads: options.threads, replication });
    return { port: this.port, replication, workers: this.workerPorts };
  }

  /**
   * Sends a worker's records block to the peers. In after-replication mode, remembers which send carried
   * it so that the worker can release the block's packets once every peer has acknowledged it.
   */
  private replicate(
    shard: Shard,
    source: number,
    records: ArrayBuffer,
    ship: number,
    global: ArrayBuffer | undefined,
  ): void {
    const k = this.replicator?.send(new Uint8Array(records), source);
    if (global !== undefined) this.eventual.spread(true, [new Uint8Array(global)]);
    if (this.options.processor.release !== 'after-replication') return;
    // The send may have committed already, inside the call (no peer connected, or each skipped it while
    // its catch-up was due): then no acknowledgement is coming for it.
    if (k === undefined || k <= this.replicator!.committed)
      shard.worker.postMessage({ type: 'commit', ship } satisfies ToWorker);
    else shard.awaiting.push(k, ship);
  }

  private readonly commit = (k: number): void => {
    for (const shard of this.shards) {
      const q = shard.awaiting;
      let n = 0;
      let ship = 0;
      while (n < q.length && q[n]! <= k) {
        ship = q[n + 1]!;
        n += 2;
      }
      if (n === 0) continue;
      q.splice(0, n);
      shard.worker.postMessage({ type: 'commit', ship } satisfies ToWorker);
    }
  };

  /**
   * The cluster changed (configuration `version`, rising): accept frames from `members`, replicate to
   * `peers`. Without `peers` only the members change: a controller first lets every member accept a
   * newcomer, then has them connect, so that no first connection is refused. Once connected, the eventual
   * global state is shared in full (shareGlobal). No-op without replication.
   */
  async setCluster(version: number, members: readonly string[], peers?: readonly Peer[]): Promise<void> {
    // A configuration older than the one applied arrived late: the newer one already holds.
    if (this.replicas === undefined || version <= this.clusterVersion) return;
    this.clusterVersion = version;
    this.replicas.setMembers(members);
    if (peers === undefined) return;
    await this.replicateTo(peers);
    this.eventual.share();
  }

  /**
   * The instances outside the cluster changed (`version`, rising): eventual global state goes to `peers`
   * from now on, and is accepted from them (nothing else of theirs is).
   */
  async setGossip(version: number, peers: readonly Peer[]): Promise<void> {
    if (this.replicas === undefined || version <= this.gossipVersion) return;
    this.gossipVersion = version;
    this.replicas.setGossip(peers.map((p) => p.id));
    await this.eventual.setGossip(peers);
  }

  /**
   * Load for the controller: packet counters, how busy the threads are (event-loop utilisation since the
   * last call, the busiest thread's) and the queue (received here, not yet taken by a worker).
   */
  load(): LoadReport {
    let busy = 0;
    const elu = performance.eventLoopUtilization();
    busy = Math.max(busy, performance.eventLoopUtilization(elu, this.lastElu).utilization);
    this.lastElu = elu;
    for (const s of this.shards) {
      const w = s.worker.performance.eventLoopUtilization();
      busy = Math.max(busy, s.worker.performance.eventLoopUtilization(w, s.lastElu).utilization);
      s.lastElu = w;
    }
    return {
      received: this.counter('received'),
      processed: this.counter('processed'),
      flows: this.counter('flows'),
      busy,
      queue: Math.max(0, this.dispatched - this.counter('handed')),
    };
  }

  /**
   * One step of a move of `flows`, each run by the worker that owns it (see FlowProcessor), one message per
   * worker; the results come back in the order of `flows`. A freeze or an install can also wait, up to
   * `settleMs`, until the peers have acknowledged the records it made: the batches a freeze closed, so that
   * an intra-cluster destination's replicas are current when it returns; the states an install took, so
   * that the destination's secondary holds them before the switch sends it the flows' copies.
   */
  async moveStep(
    op: MoveOp,
    flows: readonly MoveFlow[],
    extra: {
      guarantee?: Guarantee;
      to?: { host: string; port: number };
      copyTo?: { host: string; port: number };
      settleMs?: number;
      waitMs?: number;
      deadlineMs?: number;
    } = {},
  ): Promise<MoveResult[]> {
    const byShard = new Map<Shard, number[]>();
    flows.forEach((f, i) => {
      const k = f.key;
      const shard =
        this.shards[flowHash(k.srcIp, k.dstIp, k.srcPort, k.dstPort, k.proto) % this.shards.length]!;
      const list = byShard.get(shard);
      if (list === undefined) byShard.set(shard, [i]);
      else list.push(i);
    });
    const results: MoveResult[] = new Array<MoveResult>(flows.length);
    const { guarantee, to, waitMs, deadlineMs } = extra;
    await Promise.all(
      [...byShard].map(async ([shard, at]) => {
        const id = ++this.moveIds;
        const reply = new Promise<MoveResult[]>((resolve) => {
          this.moveReplies.set(id, (m) => {
            this.moveReplies.delete(id);
            resolve(m.results);
          });
        });
        shard.worker.postMessage({
          type: 'move',
          id,
          op,
          flows: at.map((i) => flows[i]!),
          ...(guarantee === undefined ? {} : { guarantee }),
          ...(to === undefined ? {} : { to }),
          ...(extra.copyTo === undefined ? {} : { copyTo: extra.copyTo }),
          ...(waitMs === undefined ? {} : { waitMs }),
          ...(deadlineMs === undefined ? {} : { deadlineMs }),
        } satisfies ToWorker);
        const r = await reply;
        at.forEach((i, j) => (results[i] = r[j]!));
      }),
    );
    // A flow taken over from a failed instance and moving on is no longer this instance's to replay: once
    // moved inside the cluster this instance may be its new owner's secondary, and its copies must be kept,
    // not processed (which would give the flow a second life here).
    if (op === 'freeze')
      for (let i = 0; i < flows.length; i++) if (results[i]!.ok) this.adopted.delete(flows[i]!.key);
    const settleMs = extra.settleMs ?? 0;
    if ((op === 'freeze' || op === 'install') && settleMs > 0 && results.some((r) => r.ok))
      await this.replicator?.settled(settleMs);
    return results;
  }

  /**
   * Move source, once the switch is re-pointed: waits up to `ms` for each frozen flow's end-of-move marker to
   * be handled, then hands over the rest anyway — the rule changed before this call, so what was in flight to
   * this instance has arrived by then. Resolves with the packets each flow had parked.
   */
  async finishMoves(keys: readonly FlowKey[], ms: number): Promise<number[]> {
    const names = keys.map(flowKeyString);
    const parked = await new Promise<(number | undefined)[]>((resolve) => {
      const out = new Array<number | undefined>(keys.length).fill(undefined);
      let left = 0;
      const done = (): void => {
        clearTimeout(timer);
        for (const n of names) if (typeof this.handOvers.get(n) === 'function') this.handOvers.delete(n);
        resolve(out);
      };
      names.forEach((n, i) => {
        const already = this.handOvers.get(n);
        if (typeof already === 'number') {
          this.handOvers.delete(n);
          out[i] = already;
          return;
        }
        left++;
        this.handOvers.set(n, (count) => {
          this.handOvers.delete(n);
          out[i] = count;
          if (--left === 0) done();
        });
      });
      const timer = setTimeout(done, ms);
      if (left === 0) done();
    });
    const late = keys.filter((_, i) => parked[i] === undefined);
    if (late.length === 0) return parked as number[];
    const forced = await this.moveStep(
      'handOver',
      late.map((key) => ({ key })),
    );
    let j = 0;
    return parked.map((p, i) => {
      if (p !== undefined) return p;
      const r = forced[j++]!;
      if (r.ok) return r.parked ?? 0;
      // The marker was handled between the wait and the forced hand-over.
      const raced = this.handOvers.get(names[i]!);
      this.handOvers.delete(names[i]!);
      return typeof raced === 'number' ? raced : 0;
    });
  }

  private handedOver(key: FlowKey, parked: number): void {
    const k = flowKeyString(key);
    const waiting = this.handOvers.get(k);
    if (typeof waiting === 'function') waiting(parked);
    else this.handOvers.set(k, parked);
  }

  /**
   * Replicates to `peers` from now on (their replication ports are known now). Connections to peers that
   * stay are kept. Each connection, to a new peer or again after a drop, begins with a catch-up from every
   * worker — the full state of each flow this instance owns — before their further records, so the peer
   * holds current replicas at once (replication.ts).
   */
  async replicateTo(peers: readonly Peer[]): Promise<void> {
    const cluster = this.options.cluster;
    if (cluster === undefined) return;
    if (this.replicator === undefined) {
      this.replicator = new Replicator(
        {
          self: this.options.id,
          key: Buffer.from(cluster.key, 'hex'),
          peers: [],
          sources: this.shards.length,
          catchUps: true,
        },
        this.options.logger,
      );
      this.replicator.onCommit = this.commit;
      this.replicator.onCatchUp = (peer, round) => {
        for (const s of this.shards)
          s.worker.postMessage({ type: 'snapshot', peer, round } satisfies ToWorker);
      };
      this.replicator.onConnected = this.eventual.reconnected;
      this.replicator.onRepair = (key) => {
        const shard =
          this.shards[
            flowHash(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto) % this.shards.length
          ]!;
        shard.worker.postMessage({ type: 'resend', key } satisfies ToWorker);
      };
    }
    await this.replicator.setPeers(peers);
  }

  /**
   * Failover, first step (see Controller.failover): nothing more from `origin` is accepted here, so that its
   * replicas and the copies they do not cover stay as they are until the takeover.
   */
  fenceOrigin(origin: string): void {
    if (this.replicas === undefined)
      throw new NfsError(
        ErrorCode.STATE,
        'fence: this instance does not replicate, so it holds nothing to fence',
      );
    this.replicas.fence(origin);
  }

  /**
   * Failover (DESIGN.md §6): `origin` failed and this instance, its secondary, takes over its flows — those it
   * holds replicas of, and `listed` (the switch's flows of the origin; a flow whose first batch never closed
   * there has copies only). Each flow resumes from its replica's state at the sequence number the state
   * covers, and the copies kept since then are replayed in stamp order, marked REPLAY so that the egress
   * drops what the origin had already emitted. From the moment this is called, further copies of these flows
   * are processed here, until the switch sends them here directly. Resolves once every worker has processed
   * its replay.
   */
  async takeOver(origin: string, listed: readonly FlowKey[]): Promise<TakeoverReport> {
    const replicas = this.replicas;
    const log = this.replayLog;
    if (replicas === undefined || log === undefined)
      throw new NfsError(
        ErrorCode.STATE,
        'takeover: this instance does not replicate, so it holds nothing to take over',
      );
    const { flows: states, stale } = replicas.adopt(origin);
    const state = new FlowTable<(typeof states)[number]>();
    for (const a of states) state.set(a.key, a);
    const keys = [...states.map((a) => a.key), ...listed.filter((k) => !state.has(k))];
    const report: TakeoverReport = {
      flows: keys.length,
      with_state: states.length,
      stale,
      replayed: 0,
      gaps: 0,
      ms: 0,
    };
    const now = Date.now();
    const steps: MoveFlow[] = keys.map((key) => {
      const a = state.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
      const from = a?.next ?? 1;
      const { seqs, copies } = log.take(key);
      let i = 0;
      while (i < seqs.length && seqs[i]! < from) i++;
      // The copies must start where the state ends; if not, the packets between were never kept.
      if (i < seqs.length && seqs[i]! > from) report.gaps++;
      this.adopted.set(key, now);
      const step: MoveFlow =
        a === undefined ? { key } : { key, state: a.state, expected: a.next, born: a.born };
      if (i === seqs.length) return step;
      let bytes = 0;
      for (let j = i; j < copies.length; j++) bytes += 2 + copies[j]!.length;
      const replay = new Uint8Array(bytes);
      let at = 0;
      for (let j = i; j < copies.length; j++) {
        const c = copies[j]!;
        const flags = stampAt(c) + 1;
        c[flags] = (c[flags]! & ~StampFlag.COPY) | StampFlag.REPLAY;
        replay[at] = c.length >>> 8;
        replay[at + 1] = c.length & 0xff;
        replay.set(c, at + 2);
        at += 2 + c.length;
      }
      report.replayed += copies.length - i;
      return { ...step, replay };
    });
    const started = performance.now();
    // The failed instance's eventual global state received so far goes to the workers first: a flow's writer
    // continues here, and its counts must include everything up to where its state resumes before the replay
    // adds to them (a join keeps the larger of two partial sums, never their union).
    this.eventual.mergeRound();
    await this.moveStep('adopt', steps);
    report.ms = Math.round((performance.now() - started) * 100) / 100;
    this.options.logger.info('took over a failed instance', { origin, ...report });
    return report;
  }

  /** Closes every open batch and replicates it now: this instance's secondary changed (see Controller). */
  flushBatches(): void {
    for (const s of this.shards) s.worker.postMessage({ type: 'flush' } satisfies ToWorker);
  }

  /** The fencing token the controller gave this instance: every packet emitted from now on carries it. */
  setEmitter(token: number): void {
    for (const s of this.shards) s.worker.postMessage({ type: 'emitter', token } satisfies ToWorker);
  }

  /** Per-flow digests and the merged global state of every worker (closes open batches first). */
  async digest(): Promise<RunDigest> {
    this.flush();
    const parts = await Promise.all(
      this.shards.map(async (s) => {
        const reply = this.ask(s.worker, 'digest');
        s.worker.postMessage({ type: 'digest' });
        const msg = await reply;
        if (msg.type !== 'digest') throw new Error('unexpected worker reply');
        return msg.digest;
      }),
    );
    // The workers shipped their last records before answering; let the peers acknowledge them, so that
    // replicas asked for after this call are as of the same last batch.
    await this.replicator?.settled(2000);
    return {
      flows: parts.flatMap((p) => p.flows),
      global: mergeGlobal(parts.map((p) => p.global)),
      eventual: parts.flatMap((p) => p.eventual ?? []),
    };
  }

  async stop(): Promise<void> {
    if (this.stopped || !this.started) return;
    this.stopped = true;
    clearInterval(this.sweeper);
    await this.strong?.stop();
    await this.options.strong?.stop();
    this.socket?.close();
    this.flush();
    this.replicator?.stop();
    this.eventual.stop();
    await this.replicas?.stop();
    await Promise.all(
      this.shards.map(async (s) => {
        const done = this.ask(s.worker, 'stopped');
        s.worker.postMessage({ type: 'stop' });
        await done;
        await s.worker.terminate();
      }),
    );
  }

  collect(out: MetricSample[]): void {
    this.strong?.collect(out);
    this.replicator?.collect(out);
    this.replicas?.collect(out);
    this.replayLog?.collect(out);
    out.push(['nfstate_nf_bad_copies_total', { nf: this.options.id }, this.badCopies]);
    this.eventual.collect(out);
    const labels = { nf: this.options.id };
    for (let i = 0; i < WORKER_COUNTERS.length; i++) {
      let sum = 0;
      for (const s of this.shards) sum += s.view[i]!;
      const name = WORKER_COUNTERS[i]!;
      const metric =
        name === 'flows'
          ? 'nfstate_nf_flows'
          : `nfstate_nf_${name.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase())}_total`;
      out.push([metric, labels, sum]);
    }
    for (let r = 1; r < dropReasonName.length; r++) {
      let sum = 0;
      for (const s of this.shards) sum += s.view[DROPS_AT + r]!;
      out.push(['nfstate_nf_dropped_total', { ...labels, reason: dropReasonName[r]! }, sum]);
    }
  }

  /** Sum of one worker counter across shards (tests and summaries). */
  counter(name: (typeof WORKER_COUNTERS)[number]): number {
    const i = WORKER_COUNTERS.indexOf(name);
    let sum = 0;
    for (const s of this.shards) sum += s.view[i]!;
    return sum;
  }

  attach(admin: AdminServer): void {
    admin.registry.add(this);
    admin.route('GET', '/digest', () => this.digest());
  }

  private ask(worker: Worker, type: FromWorker['type']): Promise<FromWorker> {
    return new Promise((resolve, reject) => {
      this.replies.set(worker, {
        resolve: (msg) => {
          if (msg.type === type) resolve(msg);
        },
        reject,
      });
    });
  }

  private dispatch(msg: Uint8Array): void {
    const at = stampAt(msg);
    if (isCopy(msg, at)) this.onCopy(msg, at);
    else this.toWorker(msg);
  }

  /**
   * A copy of a packet of a flow whose secondary this is: kept until a record covers it, or, for a flow this
   * instance took over and the switch still sends to the failed one, processed at once — as a replay, since
   * the failed instance may have processed it too.
   */
  private onCopy(msg: Uint8Array, at: number): void {
    const t = this.tuple;
    if (!readTuple(msg, t)) {
      this.badCopies++;
      return;
    }
    if (this.adopted.get(t.srcIp, t.dstIp, t.srcPort, t.dstPort, t.proto) !== undefined) {
      msg[at + 1] = (msg[at + 1]! & ~StampFlag.COPY) | StampFlag.REPLAY;
      this.toWorker(msg);
    } else this.replayLog?.keep(msg.slice(), t, stampSeq(msg, at), this.coarseNow);
  }

  private toWorker(msg: Uint8Array): void {
    const shards = this.shards;
    const hash = datagramFlowHash(msg);
    const shard = shards[hash % shards.length]!;
    const n = msg.length;
    if (shard.used + 2 + n > BATCH_BYTES) this.send(shard);
    const p = shard.pending;
    p[shard.used] = n >>> 8;
    p[shard.used + 1] = n & 0xff;
    p.set(msg, shard.used + 2);
    shard.used += 2 + n;
    this.pendingPackets++;
    this.dispatched++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flush);
    }
  }

  /**
   * Transfers the pending batches. While packets keep coming and the batches are still small, it waits
   * up to MAX_DEFERRALS more event-loop turns (microseconds each) so that one transfer carries more
   * packets: a transfer costs about as much as a few dozen packets' dispatch.
   */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    const arrived = this.pendingPackets - this.packetsAtLastTurn;
    this.packetsAtLastTurn = this.pendingPackets;
    if (arrived > 0 && this.pendingPackets < MIN_TRANSFER_PACKETS && this.deferrals < MAX_DEFERRALS) {
      this.deferrals++;
      this.flushScheduled = true;
      setImmediate(this.flush);
      return;
    }
    this.deferrals = 0;
    this.pendingPackets = 0;
    this.packetsAtLastTurn = 0;
    for (const s of this.shards) if (s.used > 0) this.send(s);
  };

  private send(shard: Shard): void {
    const batch = shard.pending.buffer.slice(0, shard.used);
    shard.used = 0;
    shard.worker.postMessage(batch, [batch]);
  }
}
