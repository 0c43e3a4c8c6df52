/**
 * An NF instance's worker thread: owns one shard of flows (chosen by flow hash), processes the batches
 * of datagrams the main thread transfers to it, and sends its output from its own socket, so that
 * receiving and sending run on different threads.
 */
import dgram from 'node:dgram';
import { parentPort, workerData } from 'node:worker_threads';
import { wallClock } from '../clock.js';
import { createLogger } from '../log.js';
import { createNf } from '../nfs/index.js';
import { LocalGlobalState } from '../state/global-local.js';
import type { FromWorker, ToWorker, WorkerInit } from './messages.js';
import { DROPS_AT, WORKER_COUNTERS } from './messages.js';
import { FlowProcessor } from './processor.js';
import type { FrozenFlow } from './processor.js';
import { flowKeyString } from '../packet/flow-key.js';
import { RecordKind, writeRecord } from './replication.js';
import { ByteWriter } from '../state/bytes.js';

const init = workerData as WorkerInit;
const port = parentPort!;
const logger = createLogger('nf-worker', { fields: { instance: init.instance, worker: init.index } });
const global = new LocalGlobalState({ partition: init.partition });
const nf = createNf(init.nf.type, init.nf.config, global);
const socket = dgram.createSocket('udp4');
let sendErrors = 0;
socket.on('error', () => {
  sendErrors++;
});

const processor = new FlowProcessor(
  nf,
  global,
  init.options,
  (buf, offset, length) => {
    socket.send(buf, offset, length);
  },
  wallClock,
  (event) => {
    logger.info('nf event', event);
  },
);

// Closed batches wait here until the next tick (or until the block is big), then go to the main thread
// in one transfer, which sends them to the cluster in one frame per peer.
const records = new ByteWriter(64 * 1024);
const RECORDS_FLUSH_BYTES = 256 * 1024;
if (init.replicate) {
  processor.onBatch = (flow, version, bytes, full) => {
    writeRecord(records, flow.key, version, full ? RecordKind.FULL : RecordKind.DELTA, bytes);
    if (records.length >= RECORDS_FLUSH_BYTES) shipRecords();
  };
  const none = new Uint8Array(0);
  processor.onEnd = (flow) => {
    writeRecord(records, flow.key, flow.version, RecordKind.END, none);
  };
}
/** After-replication release: output waiting for its records block (by ship number) to be acknowledged. */
const awaiting: { ship: number; out: (Uint8Array | number)[] }[] = [];
let ships = 0;

function shipRecords(): void {
  if (records.length === 0) return;
  const block = records.view().slice().buffer;
  records.reset();
  const ship = ++ships;
  if (init.options.release === 'after-replication') awaiting.push({ ship, out: processor.takeCommitted() });
  port.postMessage({ type: 'records', records: block, ship } satisfies FromWorker, [block]);
}

function commit(ship: number): void {
  while (awaiting.length > 0 && awaiting[0]!.ship <= ship) {
    const { out } = awaiting.shift()!;
    for (let i = 0; i < out.length; i += 3) {
      socket.send(out[i] as Uint8Array, out[i + 1] as number, out[i + 2] as number);
    }
  }
}

// Moves: where each frozen flow's parked packets go once its end-of-move marker arrives.
const destinations = new Map<string, { host: string; port: number }>();
const forwarder = dgram.createSocket('udp4');
forwarder.on('error', () => {
  sendErrors++;
});
processor.onMarker = (key) => {
  const to = destinations.get(flowKeyString(key));
  if (to === undefined) return;
  destinations.delete(flowKeyString(key));
  const forwarded = processor.handOver(key, (buf, offset, length) => {
    forwarder.send(buf, offset, length, to.port, to.host);
  });
  // The flow left: its replicas go (an END record) before anyone asks.
  shipRecords();
  port.postMessage({ type: 'handedOver', key, forwarded } satisfies FromWorker);
};

function move(msg: Extract<ToWorker, { type: 'move' }>): void {
  let ok = true;
  let frozen: FrozenFlow | undefined;
  switch (msg.op) {
    case 'expect':
      processor.expect(msg.key);
      break;
    case 'freeze':
      frozen = processor.freeze(msg.key);
      ok = frozen !== undefined && msg.to !== undefined;
      if (ok) destinations.set(flowKeyString(msg.key), msg.to!);
      // The batch the freeze closed goes to the peers now, so an intra-cluster destination can catch up.
      shipRecords();
      break;
    case 'install':
      processor.install(msg.key, msg.state!, msg.expected!);
      shipRecords();
      break;
    case 'abort':
      destinations.delete(flowKeyString(msg.key));
      processor.abort(msg.key);
      break;
    case 'forget':
      processor.forget(msg.key);
      shipRecords();
      break;
  }
  port.postMessage({
    type: 'moved',
    id: msg.id,
    ok,
    ...(frozen === undefined ? {} : { frozen }),
  } satisfies FromWorker);
}

const shared = new Float64Array(init.counters);
function publish(): void {
  const c = processor.counters;
  for (let i = 0; i < WORKER_COUNTERS.length; i++) {
    const name = WORKER_COUNTERS[i]!;
    shared[i] = name === 'flows' ? processor.flows.size : c[name];
  }
  for (let r = 0; r < c.drops.length; r++) shared[DROPS_AT + r] = c.drops[r]!;
}

function onBatch(ab: ArrayBuffer): void {
  const bytes = new Uint8Array(ab);
  const end = bytes.length;
  let at = 0;
  while (at + 2 <= end) {
    const n = (bytes[at]! << 8) | bytes[at + 1]!;
    at += 2;
    processor.receive(bytes, at, Math.min(n, end - at));
    at += n;
  }
}

const tickMs = Math.max(1, Math.min(init.options.batchTimeoutMs, 10));
// Records go out at most this often (or when the block is big): fewer, larger frames to the peers.
const SHIP_EVERY_MS = 20;
let shippedAt = 0;
const ticker = setInterval(() => {
  const now = wallClock.now();
  processor.tick(now);
  if (now - shippedAt >= SHIP_EVERY_MS) {
    shippedAt = now;
    shipRecords();
  }
  publish();
}, tickMs);

function reply(msg: FromWorker): void {
  port.postMessage(msg);
}

port.on('message', (msg: ToWorker) => {
  if (msg instanceof ArrayBuffer) return onBatch(msg);
  if (msg.type === 'commit') return commit(msg.ship);
  if (msg.type === 'resend') {
    processor.resend(msg.key);
    return;
  }
  if (msg.type === 'move') return move(msg);
  if (msg.type === 'digest') {
    processor.flushBatches();
    shipRecords();
    publish();
    return reply({ type: 'digest', digest: processor.digest() });
  }
  clearInterval(ticker);
  processor.flushBatches();
  shipRecords();
  publish();
  if (sendErrors > 0) logger.warn('send errors', { count: sendErrors });
  forwarder.close();
  socket.close(() => {
    reply({ type: 'stopped' });
    port.close();
  });
});

socket.connect(init.egress.port, init.egress.host, () => {
  reply({ type: 'ready' });
});
