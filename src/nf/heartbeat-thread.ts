/**
 * An NF instance's heartbeat thread (started by liveness.ts): it sends the heartbeats and answers the
 * controller's probes, so that neither waits for the instance's event loop, however busy. It stops beating
 * when that loop stops making progress for `hangMs` (a hang, not a busy spell): an instance that cannot
 * run its own code must be found out, and its silence is how.
 */
import dgram from 'node:dgram';
import { workerData } from 'node:worker_threads';
import { encodeHeartbeat, isProbeFor } from '../controller/detector.js';

export interface HeartbeatInit {
  id: string;
  token: Uint8Array;
  host: string;
  port: number;
  heartbeatMs: number;
  hangMs: number;
  /** One Int32 the instance's event loop increments while it runs. */
  progress: SharedArrayBuffer;
}

const init = workerData as HeartbeatInit;
const progress = new Int32Array(init.progress);
const socket = dgram.createSocket('udp4');
socket.on('error', () => undefined);
let seq = 0;
let seen = Atomics.load(progress, 0);
let progressAt = Date.now();

function hung(): boolean {
  const now = Date.now();
  const v = Atomics.load(progress, 0);
  if (v !== seen) {
    seen = v;
    progressAt = now;
  }
  return now - progressAt > init.hangMs;
}

function beat(): void {
  if (hung()) return;
  socket.send(encodeHeartbeat(init.id, ++seq, init.token), init.port, init.host);
}

socket.on('message', (msg) => {
  if (isProbeFor(msg, init.id, init.token)) beat();
});

setInterval(beat, init.heartbeatMs);

socket.bind(0, () => {
  beat();
});
