/**
 * One kernel TCP transfer through a lab, with a fault in the middle: the instance that owns the connection
 * is killed (kill -9), paused (SIGSTOP, woken with SIGCONT once failed over), or the connection is moved to
 * another instance, inside its cluster or across. The tests assert on it, `nfstate bench tcp-failover`
 * repeats it.
 *
 *   const r = await tcpCase(lab, 'kill', { bytes: 100 * 2 ** 20, port: 5001 });
 *   r.survived;            // completed at both ends, equal SHA-256 and bytes, no reset
 *   r.receiver.max_stall_ms;
 */
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ErrorCode, NfsError } from '../errors.js';
import { adminCall } from '../admin-call.js';
import { wallClock } from '../clock.js';
import type { FailoverRecord, FlowOwner, MoveRecord } from '../controller/records.js';
import { EXIT_FENCED } from '../launcher/roles.js';
import type { Lab } from './lab.js';
import type { Progress, TcpReport } from './tcp.js';

const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));

export const TCP_CASES = ['none', 'kill', 'pause', 'move-intra', 'move-inter'] as const;
export type TcpCase = (typeof TCP_CASES)[number];

export interface TcpCaseOptions {
  bytes: number;
  port: number;
  /**
   * `nfstate` (default): to the server's address, through the deployment; `kernel`: to its address on the
   * kernel's path (the lab's router namespace), for the baseline. Only case `none` goes the kernel's way.
   */
  path?: 'nfstate' | 'kernel';
  /** The fault comes once the receiver has this share of the bytes (default 0.3). */
  at?: number;
  /** Either end gives up after this long without progress (a broken connection). */
  idleMs?: number;
}

export interface TcpCaseResult {
  case: TcpCase;
  /** Completed at both ends with the same bytes and SHA-256, and no reset. */
  survived: boolean;
  bytes_ok: boolean;
  reset: boolean;
  /** The connection as the switch named it, and the instance that owned it when the fault came. */
  flow: string;
  owner: string;
  /**
   * When the kill or the pause came, on the clock the controller's records use (one machine's wall
   * clock): the failover's `declared_at` and `took_over_at` minus this are how long after the fault.
   */
  fault_at?: number;
  /** What the fault did: the failover record, or the move record. */
  failover?: FailoverRecord;
  move?: MoveRecord;
  /** Paused: the instance exited as fenced once woken. */
  woke_fenced?: boolean;
  sender: TcpReport;
  receiver: TcpReport;
}

const FAILOVER_WAIT_MS = 15_000;
const FENCED_EXIT_WAIT_MS = 10_000;

/** Lines of JSON a child prints, one callback each. */
function jsonLines(stream: NodeJS.ReadableStream, each: (v: unknown) => void): void {
  createInterface({ input: stream }).on('line', (line) => {
    try {
      each(JSON.parse(line) as unknown);
    } catch {
      // not ours
    }
  });
}

export async function tcpCase(lab: Lab, kase: TcpCase, options: TcpCaseOptions): Promise<TcpCaseResult> {
  const idleMs = options.idleMs ?? 10_000;
  const server = lab.hosts.server;
  const controller = lab.endpoints.controller;
  const key = lab.running.adminKey;
  const api = (path: string, body?: unknown): Promise<Record<string, unknown>> =>
    adminCall(controller.host, controller.admin, path, body, { key });
  let progress = 0;
  let listening!: () => void;
  const ready = new Promise<void>((resolve) => (listening = resolve));
  const receiving = new Promise<TcpReport>((resolve, reject) => {
    const child = lab.exec('server', [
      process.execPath,
      CLI,
      'tcp',
      'receive',
      '--port',
      String(options.port),
      '--idle-ms',
      String(idleMs),
    ]);
    jsonLines(child.stdout!, (v) => {
      const o = v as Partial<Progress & TcpReport>;
      if (typeof o.progress === 'number') {
        progress = o.progress;
        listening();
      } else if (o.role === 'receive') resolve(o as TcpReport);
    });
    child.on('exit', (code) => reject(new NfsError(ErrorCode.PROCESS, `tcp receive exited (${code})`)));
  });
  await ready;
  const sending = new Promise<TcpReport>((resolve, reject) => {
    const child = lab.exec('client', [
      process.execPath,
      CLI,
      'tcp',
      'send',
      '--to',
      `${options.path === 'kernel' ? server.kernel : server.address}:${options.port}`,
      '--bytes',
      String(options.bytes),
      '--idle-ms',
      String(idleMs),
    ]);
    jsonLines(child.stdout!, (v) => {
      if ((v as Partial<TcpReport>).role === 'send') resolve(v as TcpReport);
    });
    child.on('exit', (code) => reject(new NfsError(ErrorCode.PROCESS, `tcp send exited (${code})`)));
  });
  const done = Promise.all([sending, receiving]);
  // Until the fault: the transfer must get that far on its own.
  const at = Math.floor(options.bytes * (options.at ?? 0.3));
  await Promise.race([
    done,
    new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (progress >= at) {
          clearInterval(poll);
          resolve();
        }
      }, 10);
      void done.finally(() => clearInterval(poll));
    }),
  ]);
  if (options.path === 'kernel') {
    if (kase !== 'none') throw new NfsError(ErrorCode.CONFIG, `lab: the kernel's path has no ${kase}`);
    const [sender, receiver] = await done;
    return verdict({ case: kase, flow: '', owner: '' }, options.bytes, sender, receiver);
  }
  const flows = ((await api('/flows')) as unknown as { flows: FlowOwner[] }).flows;
  const found = flows.find((f) => f.flow.startsWith('tcp ') && f.flow.endsWith(`:${options.port}`));
  if (found?.owner == null)
    throw new NfsError(ErrorCode.STATE, `lab: no flow to port ${options.port} at the switch`);
  const mine = { flow: found.flow, owner: found.owner };
  const result: Partial<TcpCaseResult> = { case: kase, ...mine };
  const d = lab.running;
  if (kase === 'kill') {
    result.fault_at = wallClock.now();
    d.signal(mine.owner, 'SIGKILL');
    result.failover = await failoverOf(api, mine.owner);
  } else if (kase === 'pause') {
    result.fault_at = wallClock.now();
    d.signal(mine.owner, 'SIGSTOP');
    result.failover = await failoverOf(api, mine.owner);
    const p = d.instance(mine.owner)!;
    const exited = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), FENCED_EXIT_WAIT_MS);
      p.child.once('exit', (code) => {
        clearTimeout(timer);
        resolve(code === EXIT_FENCED);
      });
    });
    d.signal(mine.owner, 'SIGCONT');
    result.woke_fenced = p.exited ? p.exitCode === EXIT_FENCED : await exited;
  } else if (kase === 'move-intra' || kase === 'move-inter') {
    const clusters = (await api('/clusters')) as unknown as { id: string; members: string[] }[];
    const own = clusters.find((c) => c.members.includes(mine.owner));
    const to =
      kase === 'move-intra'
        ? own?.members.find((m) => m !== mine.owner)
        : clusters.find((c) => c !== own && c.members.length > 0)?.members[0];
    if (to === undefined) throw new NfsError(ErrorCode.STATE, `lab: nowhere to move ${mine.flow} (${kase})`);
    result.move = (await api('/move', { flow: mine.flow, to })) as unknown as MoveRecord;
  }
  const [sender, receiver] = await done;
  return verdict({ ...result, case: kase, ...mine }, options.bytes, sender, receiver);
}

/** Survived: both ends completed, with the bytes asked for, the same SHA-256, and no reset. */
function verdict(
  what: Omit<TcpCaseResult, 'survived' | 'bytes_ok' | 'reset' | 'sender' | 'receiver'>,
  bytes: number,
  sender: TcpReport,
  receiver: TcpReport,
): TcpCaseResult {
  const bytesOk =
    sender.bytes === bytes && receiver.bytes === sender.bytes && receiver.sha256 === sender.sha256;
  const reset = sender.error === 'reset' || receiver.error === 'reset';
  return {
    ...what,
    survived: bytesOk && sender.completed && receiver.completed && !reset,
    bytes_ok: bytesOk,
    reset,
    sender,
    receiver,
  };
}

/** The controller's record of the failover of `id`, once it has one. */
async function failoverOf(
  api: (path: string) => Promise<Record<string, unknown>>,
  id: string,
): Promise<FailoverRecord> {
  const deadline = Date.now() + FAILOVER_WAIT_MS;
  while (Date.now() < deadline) {
    const all = (await api('/failovers')) as unknown as FailoverRecord[];
    const mine = all.find((f) => f.id === id);
    if (mine !== undefined) return mine;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new NfsError(ErrorCode.TIMEOUT, `lab: ${id} was not failed over within ${FAILOVER_WAIT_MS} ms`);
}
