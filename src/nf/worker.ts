/**
 * An NF instance's worker thread: owns one shard of flows (chosen by flow hash). Its own socket takes the
 * packets the switch sends its flows and sends its output; the batches the main thread transfers (replays,
 * a moved flow's parked packets) are processed the same way.
 */
import dgram from 'node:dgram';
import { parentPort, workerData } from 'node:worker_threads';
import { wallClock } from '../clock.js';
import { createLogger } from '../log.js';
import { createNf, loadNfModules } from '../nfs/index.js';
import { LocalGlobalState } from '../state/global-local.js';
import type { FromWorker, MoveResult, ToWorker, WorkerInit } from './messages.js';
import { DROPS_AT, WORKER_COUNTERS } from './messages.js';
import { FlowProcessor } from './processor.js';
import { DropReason, type FlowKey } from '../types.js';
import { StampFlag, StampView } from '../wire/geneve.js';
import { flowKeyString } from '../packet/flow-key.js';
import { RecordKind, writeGlobalRecord, writeRecord } from './replication.js';
import { ByteWriter } from '../state/bytes.js';
import { CrdtGlobalState } from '../state/global-crdt.js';
import { StrongGlobalState } from '../state/global-strong.js';
import { openBatchSocket } from '../wire/batch-socket.js';

const init = workerData as WorkerInit;
const port = parentPort!;
const logger = createLogger('nf-worker', { fields: { instance: init.instance, worker: init.index } });
// Counters and sets are CRDTs, replicated with the flows' records. Pools are the deployment's strong ones,
// or without a log, this worker's share.
const strong = init.strong
  ? new StrongGlobalState(new LocalGlobalState(), (key: FlowKey): boolean => processor.has(key))
  : undefined;
const global = new CrdtGlobalState(strong ?? new LocalGlobalState({ partition: init.partition }), {
  replica: init.replica,
});
await loadNfModules(init.nf);
const nf = createNf(init.nf.type, init.nf.config, global);
let badMerges = 0;
let sendErrors = 0;

const processor: FlowProcessor = new FlowProcessor(
  nf,
  global,
  init.options,
  (buf, offset, length) => {
    egress.queue(0, buf, offset, length);
  },
  wallClock,
  (event) => {
    logger.info('nf event', event);
  },
);
const tickMs = Math.max(1, Math.min(init.options.batchTimeoutMs, 10));
/**
 * The ticker runs every tickMs while time-driven work waits (open batches, gaps, freezes, records to ship),
 * and every IDLE_TICK_MS otherwise, when only idle flows may expire: an idle worker wakes ten times a second
 * rather than a hundred, which on a machine running many instances is most of their idle CPU. Whatever
 * brings work (packets, a move, a strong answer) sets it fast again first.
 */
const IDLE_TICK_MS = 100;
let tickEvery = 0;
let ticker: NodeJS.Timeout | undefined;
// Input from the switch, and output to the egress in batches: each batch received ends with a flush
// (batch-socket.ts), and then the claims its flows asked for go out.
const afterBatch = { queued: false };
const egress = await openBatchSocket(init.host, init.port, (d) => {
  processor.receive(d, 0, d.length);
  if (afterBatch.queued) return;
  afterBatch.queued = true;
  queueMicrotask(askAfterBatch);
});
await egress.dest(0, init.egress.host, init.egress.port);
function askAfterBatch(): void {
  afterBatch.queued = false;
  wake();
  askStrong();
}

// Closed batches wait here until the next tick (or until the block is big), then go to the main thread
// in one transfer, which sends them to the cluster in one frame per peer.
const records = new ByteWriter(64 * 1024);
const RECORDS_FLUSH_BYTES = 256 * 1024;
if (init.replicate) {
  processor.onBatch = (flow, _version, bytes, full) => {
    writeRecord(records, flow, full ? RecordKind.FULL : RecordKind.DELTA, bytes);
    if (records.length >= RECORDS_FLUSH_BYTES) shipRecords();
  };
  const none = new Uint8Array(0);
  processor.onEnd = (flow) => {
    writeRecord(records, flow, RecordKind.END, none);
  };
}
/** After-replication release: output waiting for its records block (by ship number) to be acknowledged. */
const awaiting: { ship: number; out: (Uint8Array | number)[] }[] = [];
let ships = 0;

/**
 * Sends the records gathered since the last call to the main thread, and with them, last, what changed in
 * the eventual global state meanwhile (or all of it, `full`): in the same frame as the flow records whose
 * packets made those changes, as exactly-once counting under replay needs (crdt/index.ts). The main thread
 * also passes the global part to this instance's other workers and to the rest of the deployment.
 */
function shipRecords(full = false): void {
  if (!init.replicate) return;
  const state = full ? global.encodeFull() : global.takeDelta();
  if (state.length > 0) writeGlobalRecord(records, state);
  if (records.length === 0) return;
  const block = records.view().slice().buffer;
  records.reset();
  const ship = ++ships;
  if (init.options.release === 'after-replication') awaiting.push({ ship, out: processor.takeCommitted() });
  const eventual = state.length > 0 ? state.slice().buffer : undefined;
  port.postMessage(
    {
      type: 'records',
      records: block,
      ship,
      ...(eventual === undefined ? {} : { global: eventual }),
    } satisfies FromWorker,
    eventual === undefined ? [block] : [block, eventual],
  );
}

/**
 * A connection to a peer came up: it gets the full state of every flow here, at its current version, so
 * that a move to it right away ships only a delta. Open batches close first, which makes every version
 * exact; their records reach the other peers in the block shipped before the catch-up.
 */
function snapshot(peer: string, round: number): void {
  processor.flushBatches();
  shipRecords();
  const block = new ByteWriter(64 * 1024);
  const state = new ByteWriter(1024);
  const post = (last: boolean): void => {
    const records = block.view().slice().buffer;
    block.reset();
    port.postMessage({ type: 'snapshot', peer, round, records, last } satisfies FromWorker, [records]);
  };
  for (const [, flow] of processor.flows.entries()) {
    // A flow still arriving in a move has no state here yet.
    if (flow.state === undefined) continue;
    state.reset();
    nf.codec.encodeFull(flow.state, state);
    writeRecord(block, flow, RecordKind.FULL, state.view());
    if (block.length >= RECORDS_FLUSH_BYTES) post(false);
  }
  post(true);
}

function commit(ship: number): void {
  while (awaiting.length > 0 && awaiting[0]!.ship <= ship) {
    const { out } = awaiting.shift()!;
    for (let i = 0; i < out.length; i += 3) {
      egress.queue(0, out[i] as Uint8Array, out[i + 1] as number, out[i + 2] as number);
    }
  }
}

// Moves: where each frozen flow's parked packets go once its end-of-move marker arrives, and where their
// copies go: the destination's secondary, which the switch's copies reach only from the re-point on.
const destinations = new Map<
  string,
  { host: string; port: number; copyTo: { host: string; port: number } | undefined }
>();
const copyView = new StampView();
const forwarder = dgram.createSocket('udp4');
forwarder.on('error', () => {
  sendErrors++;
});
function handOver(key: FlowKey, marker?: Uint8Array): number {
  const k = flowKeyString(key);
  const to = destinations.get(k);
  if (to === undefined) return 0;
  destinations.delete(k);
  const parked = processor.handOver(
    key,
    (buf, offset, length) => {
      forwarder.send(buf, offset, length, to.port, to.host);
      const copyTo = to.copyTo;
      if (copyTo === undefined) return;
      // A move's rare path: one allocation per parked packet is fine. The marker is no packet to keep.
      const copy = Buffer.from(buf.subarray(offset, offset + length));
      if (copyView.parse(copy, 0, length) !== DropReason.NONE) return;
      if ((copyView.flags & StampFlag.END_OF_MOVE) !== 0) return;
      copyView.setFlags(copyView.flags | StampFlag.COPY);
      forwarder.send(copy, copyTo.port, copyTo.host);
    },
    marker,
  );
  // The flow left: its replicas go (an END record) before anyone asks.
  shipRecords();
  return parked;
}

processor.onMarker = (key, buf, offset, length) => {
  if (!destinations.has(flowKeyString(key))) return;
  // A copy: the marker may have come in the socket's receive buffer, which the next batch overwrites.
  const parked = handOver(key, buf.slice(offset, offset + length));
  port.postMessage({ type: 'handedOver', key, parked } satisfies FromWorker);
};

function move(msg: Extract<ToWorker, { type: 'move' }>): void {
  const results: MoveResult[] = [];
  for (const f of msg.flows) {
    switch (msg.op) {
      case 'expect':
        processor.expect(f.key, msg.guarantee);
        results.push({ ok: true });
        break;
      case 'freeze': {
        const frozen = processor.freeze(f.key, msg.guarantee, msg.deadlineMs);
        if (frozen !== undefined && msg.to !== undefined) {
          destinations.set(flowKeyString(f.key), { ...msg.to, copyTo: msg.copyTo });
          results.push({ ok: true, frozen });
        } else results.push({ ok: false });
        break;
      }
      case 'commit':
        results.push({ ok: processor.commit(f.key) });
        break;
      case 'install':
        results.push({ ok: processor.install(f.key, f.state!, f.expected!, msg.waitMs) });
        break;
      case 'handOver': {
        const frozen = destinations.has(flowKeyString(f.key));
        results.push({ ok: frozen, parked: frozen ? handOver(f.key) : 0 });
        break;
      }
      case 'abort':
        destinations.delete(flowKeyString(f.key));
        processor.abort(f.key);
        results.push({ ok: true });
        break;
      case 'forget':
        processor.forget(f.key);
        results.push({ ok: true });
        break;
      case 'adopt':
        if (f.state !== undefined) processor.adopt(f.key, f.state, f.expected!, f.born!);
        if (f.replay !== undefined) onBatch(f.replay);
        results.push({ ok: true });
        break;
    }
  }
  // The batches a freeze closed go to the peers now, so an intra-cluster destination can catch up; an
  // installed or adopted flow's state and a forgotten flow's end reach this instance's own peers.
  if (msg.op === 'freeze' || msg.op === 'install' || msg.op === 'adopt' || msg.op === 'forget') shipRecords();
  port.postMessage({ type: 'moved', id: msg.id, results } satisfies FromWorker);
}

const shared = new Float64Array(init.counters);
function publish(): void {
  const c = processor.counters;
  for (let i = 0; i < WORKER_COUNTERS.length; i++) {
    const name = WORKER_COUNTERS[i]!;
    shared[i] =
      name === 'flows'
        ? processor.flows.size
        : name === 'sendErrors'
          ? sendErrors + egress.sendErrors
          : name === 'handed'
            ? handed
            : c[name];
  }
  for (let r = 0; r < c.drops.length; r++) shared[DROPS_AT + r] = c.drops[r]!;
}

/**
 * A long batch sends its output as it goes, this many packets at a time: a takeover's replay (hundreds of
 * packets) ends the far end's stall with its first packets rather than its last.
 */
const OUTPUT_RUN = 64;
let handed = 0;
function onBatch(ab: ArrayBuffer | Uint8Array): void {
  const bytes = ab instanceof Uint8Array ? ab : new Uint8Array(ab);
  const end = bytes.length;
  let at = 0;
  let run = 0;
  while (at + 2 <= end) {
    const n = (bytes[at]! << 8) | bytes[at + 1]!;
    at += 2;
    processor.receive(bytes, at, Math.min(n, end - at), true);
    handed++;
    at += n;
    if (++run === OUTPUT_RUN) {
      run = 0;
      egress.flush();
    }
  }
  egress.flush();
  askStrong();
}

/** The claims and releases this batch's flows asked for, in one message. */
function askStrong(): void {
  if (strong === undefined) return;
  const requests = strong.takeRequests();
  if (requests.length > 0) port.postMessage({ type: 'strong', requests } satisfies FromWorker);
}

function onStrong(msg: Extract<ToWorker, { type: 'strong' }>): void {
  strong!.applyLog(msg.log);
  for (const a of msg.answers) {
    const key = strong!.answer(a.pool, a.owner, a.incarnation, a.value);
    if (key !== undefined) processor.decided(key);
  }
  askStrong();
}

// Records go out at most this often (or when the block is big): fewer, larger frames to the peers.
const SHIP_EVERY_MS = 20;
let shippedAt = 0;
tickAt(tickMs);
function tick(): void {
  const now = wallClock.now();
  processor.tick(now);
  // Flows that ended release what they held.
  askStrong();
  if (now - shippedAt >= SHIP_EVERY_MS) {
    shippedAt = now;
    shipRecords();
  }
  publish();
  if (tickEvery === tickMs && !processor.waiting && records.length === 0) tickAt(IDLE_TICK_MS);
}

function tickAt(ms: number): void {
  clearInterval(ticker);
  tickEvery = ms;
  ticker = setInterval(tick, ms);
}

/** Work arrived: the ticker runs fast until it is done. */
function wake(): void {
  if (ticker !== undefined && tickEvery !== tickMs) tickAt(tickMs);
}

function reply(msg: FromWorker): void {
  port.postMessage(msg);
}

port.on('message', (msg: ToWorker) => {
  wake();
  if (msg instanceof ArrayBuffer) return onBatch(msg);
  if (msg.type === 'commit') return commit(msg.ship);
  if (msg.type === 'strong') return onStrong(msg);
  if (msg.type === 'flush') {
    processor.flushBatches();
    shipRecords();
    return;
  }
  if (msg.type === 'share') {
    shipRecords(true);
    return;
  }
  if (msg.type === 'merge') {
    for (const state of msg.states) {
      try {
        global.merge(new Uint8Array(state));
      } catch (err) {
        // Checked before anything is joined: a bad state changes nothing here.
        if (badMerges++ === 0) logger.warn('global state merge refused', { error: String(err) });
      }
    }
    return;
  }
  if (msg.type === 'emitter') {
    processor.emitter = msg.token;
    return;
  }
  if (msg.type === 'resend') {
    processor.resend(msg.key);
    return;
  }
  if (msg.type === 'move') return move(msg);
  if (msg.type === 'snapshot') return snapshot(msg.peer, msg.round);
  if (msg.type === 'digest') {
    processor.flushBatches();
    shipRecords();
    publish();
    // Counters and sets are compared as the join of every replica (CrdtGlobalState.joinSnapshots): each
    // holds the others' entries too, so their values must not be added up.
    const d = processor.digest();
    return reply({
      type: 'digest',
      digest: {
        flows: d.flows,
        global: { pools: d.global.pools, counters: {}, sets: {} },
        eventual: [Buffer.from(global.encodeFull()).toString('base64')],
      },
    });
  }
  clearInterval(ticker);
  processor.flushBatches();
  shipRecords();
  publish();
  if (sendErrors > 0) logger.warn('send errors', { count: sendErrors });
  if (badMerges > 0) logger.warn('global state merges refused', { count: badMerges });
  forwarder.close();
  egress.close();
  reply({ type: 'stopped' });
  port.close();
});

reply({ type: 'ready', port: egress.port });
