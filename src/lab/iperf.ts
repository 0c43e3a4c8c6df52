/**
 * Real UDP through a lab: iperf (iperf2, Debian's `iperf`) blasts datagrams at a packet rate from the client
 * to a server on the server host, and the loss is iperf's own count, from the server's report.
 *
 *   const r = await udpLoad(lab, { pps: 100_000, payload: 64, seconds: 5, port: 5201 });
 *   r.lost / r.sent;
 */
import { createInterface } from 'node:readline';
import { ErrorCode, NfsError } from '../errors.js';
import type { Lab } from './lab.js';

export interface UdpLoadOptions {
  pps: number;
  /** Datagram payload bytes (iperf's -l). */
  payload: number;
  seconds: number;
  port: number;
}

export interface UdpLoadReport {
  offered_pps: number;
  payload: number;
  seconds: number;
  /** Datagrams the client sent, those the server received, and iperf's loss count. */
  sent: number;
  received: number;
  lost: number;
  loss_pct: number;
  /** What the client managed to send, per second (a 2-core machine may not reach the offered rate). */
  sent_pps: number;
}

/**
 * The server's CSV report line (`-y C`): time, source ip, port, destination ip, port, id, interval, bytes,
 * bits/s, jitter ms, lost, total, lost %, out of order.
 */
export function parseIperfServerCsv(
  line: string,
): { lost: number; total: number; seconds: number } | undefined {
  const f = line.split(',');
  if (f.length < 13) return undefined;
  const [from, to] = (f[6] ?? '').split('-').map(Number);
  const lost = Number(f[10]);
  const total = Number(f[11]);
  if (!Number.isFinite(lost) || !Number.isFinite(total) || total <= 0) return undefined;
  return { lost, total, seconds: (to ?? 0) - (from ?? 0) };
}

export async function udpLoad(lab: Lab, o: UdpLoadOptions): Promise<UdpLoadReport> {
  const server = lab.exec('server', ['iperf', '-s', '-u', '-p', String(o.port), '-y', 'C']);
  const report = new Promise<{ lost: number; total: number }>((resolve, reject) => {
    createInterface({ input: server.stdout! }).on('line', (line) => {
      const r = parseIperfServerCsv(line);
      if (r !== undefined) resolve(r);
    });
    server.on('exit', (code) =>
      reject(
        new NfsError(
          ErrorCode.PROCESS,
          code === 127 || code === 255
            ? "the lab's UDP load needs iperf (Debian: apt-get install iperf)"
            : `iperf -s exited (${code})`,
        ),
      ),
    );
  });
  // iperf -s listens at once; give its socket a moment before the client starts.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const client = lab.exec('client', [
    'iperf',
    '-u',
    '-c',
    lab.hosts.server.address,
    '-p',
    String(o.port),
    '-b',
    `${o.pps}pps`,
    '-l',
    String(o.payload),
    '-t',
    String(o.seconds),
  ]);
  await new Promise((resolve) => client.on('exit', resolve));
  const timer = setTimeout(() => server.kill('SIGKILL'), 5000 + o.seconds * 1000);
  try {
    const { lost, total } = await report;
    return {
      offered_pps: o.pps,
      payload: o.payload,
      seconds: o.seconds,
      sent: total,
      received: total - lost,
      lost,
      loss_pct: Math.round((lost / total) * 10000) / 100,
      sent_pps: Math.round(total / o.seconds),
    };
  } finally {
    clearTimeout(timer);
    server.kill('SIGKILL');
  }
}
