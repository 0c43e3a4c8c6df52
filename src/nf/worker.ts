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
const ticker = setInterval(() => {
  processor.tick(wallClock.now());
  publish();
}, tickMs);

function reply(msg: FromWorker): void {
  port.postMessage(msg);
}

port.on('message', (msg: ToWorker) => {
  if (msg instanceof ArrayBuffer) return onBatch(msg);
  if (msg.type === 'digest') {
    processor.flushBatches();
    publish();
    return reply({ type: 'digest', digest: processor.digest() });
  }
  clearInterval(ticker);
  processor.flushBatches();
  publish();
  if (sendErrors > 0) logger.warn('send errors', { count: sendErrors });
  socket.close(() => {
    reply({ type: 'stopped' });
    port.close();
  });
});

socket.connect(init.egress.port, init.egress.host, () => {
  reply({ type: 'ready' });
});
