/**
 * What tells the controller that an NF instance lives: heartbeats from a thread of their own
 * (heartbeat-thread.ts), load reports, and a TCP liveness connection that the kernel closes when the
 * process dies.
 *
 *   const stopReports = reportToController(id, token, { host, report }, heartbeatMs, () => nf.load());
 *   const stopLiveness = keepLiveness(id, token, { host, port: liveness }, logger);
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import { encodeHeartbeat } from '../controller/detector.js';
import { encodeLoadReport, type LoadReport } from '../controller/load-report.js';
import type { Logger } from '../types.js';
import type { HeartbeatInit } from './heartbeat-thread.js';

/** Exit status of an NF instance that learns it was failed over (see runNf). */
export const EXIT_FENCED = 3;

const LIVENESS_RETRY_MS = 200;
const LOAD_REPORT_MS = 100;
/**
 * The event loop may stall this long before the heartbeats stop: far above any busy spell (a GC, a
 * burst of packets, a state transfer), far below what a hung instance may cost.
 */
const HANG_MS = 2000;

/**
 * The instance's liveness connection to the controller, held open for the life of the process: when it dies,
 * the kernel closes it and the controller knows at once. Without it (a refused connection) the heartbeats
 * still tell. When the controller goes (a standby takes over at the same address, journal.ts) it connects
 * again. Returns the orderly goodbye.
 */
export function keepLiveness(
  id: string,
  token: string,
  at: { host: string; port: number },
  logger: Logger,
): () => void {
  let socket: net.Socket | undefined;
  let leaving = false;
  const connect = (): void => {
    const s = net.connect(at.port, at.host);
    socket = s;
    s.setNoDelay(true);
    s.on('error', () => undefined);
    // The controller failed this instance over while it could not answer (paused, cut off): another
    // instance owns its flows now, and the egress and the peers refuse what it sends. It must not go on.
    s.on('data', (chunk: Buffer) => {
      if (!chunk.toString('utf8').includes('fenced')) return;
      logger.error("fenced by the controller: another instance took over this one's flows; exiting");
      process.exit(EXIT_FENCED);
    });
    s.on('close', () => {
      if (!leaving) setTimeout(connect, LIVENESS_RETRY_MS).unref();
    });
    s.write(`${id} ${token}\n`);
  };
  connect();
  return () => {
    leaving = true;
    socket?.end('bye\n');
  };
}

/**
 * Heartbeats to the controller's failure detection unit every `heartbeatMs`, the first at once, from their
 * own thread (which also answers the controller's probes), and load reports every 100 ms from this one.
 * Returns what stops both, with a goodbye (sequence number 0), so that an orderly stop is not taken for a
 * failure.
 */
export function reportToController(
  id: string,
  token: Buffer,
  to: { host: string; report: number },
  heartbeatMs: number,
  load: () => LoadReport,
): () => void {
  const progress = new SharedArrayBuffer(4);
  const beats = new Worker(new URL('./heartbeat-thread.js', import.meta.url), {
    workerData: {
      id,
      token: new Uint8Array(token),
      host: to.host,
      port: to.report,
      heartbeatMs,
      hangMs: HANG_MS,
      progress,
    } satisfies HeartbeatInit,
  });
  beats.unref();
  const counter = new Int32Array(progress);
  const alive = setInterval(() => Atomics.add(counter, 0, 1), heartbeatMs);
  alive.unref();
  const socket = dgram.createSocket('udp4');
  socket.on('error', () => undefined);
  socket.unref();
  let reportSeq = 0;
  const reports = setInterval(() => {
    socket.send(encodeLoadReport(id, ++reportSeq, load(), token), to.report, to.host);
  }, LOAD_REPORT_MS);
  reports.unref();
  return () => {
    clearInterval(alive);
    clearInterval(reports);
    void beats.terminate();
    // The goodbye goes from here, at once: the process may exit before that thread would run again. A
    // heartbeat of that thread's that comes after it changes nothing (detector.ts).
    socket.send(encodeHeartbeat(id, 0, token), to.report, to.host, () => {
      socket.close();
    });
  };
}
