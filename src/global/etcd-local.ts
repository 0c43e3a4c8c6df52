/**
 * A real etcd cluster on loopback, for the tests, the benches and a demo that brings its own: members in a
 * temporary directory, fast elections, and SIGKILL per member for fault injection.
 *
 *   const cluster = await startEtcd(3);
 *   const store = new EtcdGlobalStore({ hosts: cluster.clientUrls, prefix: 't/', logger });
 *   cluster.kill(0);            // a minority: writes go on
 *   cluster.restart(0);         // the same member again, on its data directory
 *   cluster.signal(1, 'SIGSTOP'); // silent until SIGCONT
 *   await cluster.stop();       // kills what is left, removes the directory
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, NfsError } from '../errors.js';
import { freePort } from '../launcher/free-port.js';

/**
 * The members' election timeout. A leader cut off from its quorum also steps down after it, and until
 * then it still renews leases.
 */
const ETCD_ELECTION_TIMEOUT_MS = 250;

export const ETCD_BIN = process.env.ETCD_BIN ?? '/usr/bin/etcd';

export interface EtcdCluster {
  readonly clientUrls: string[];
  /** SIGKILLs member `i`; resolves once it is gone. */
  kill(i: number): Promise<void>;
  /**
   * Starts member `i` again on its data directory, after `kill(i)`; a no-op while it runs. It serves
   * once it rejoins a quorum (poll its `/health`).
   */
  restart(i: number): void;
  /** Sends member `i` a signal (SIGSTOP, SIGCONT: a silent member); false when it is not running. */
  signal(i: number, signal: NodeJS.Signals): boolean;
  stop(): Promise<void>;
}

/** Whether the member at `url` answers its health check as healthy. */
export async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(500) });
    return res.ok && ((await res.json()) as { health?: string }).health === 'true';
  } catch {
    return false;
  }
}

/** Starts `members` etcd members and waits until every one reports healthy (a leader is elected). */
export async function startEtcd(members = 3, timeoutMs = 15_000): Promise<EtcdCluster> {
  if (!existsSync(ETCD_BIN)) {
    throw new NfsError(
      ErrorCode.CONFIG,
      `etcd: no binary at ${ETCD_BIN} (install Debian's etcd-server, or set ETCD_BIN)`,
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'nfstate-etcd-'));
  const names = Array.from({ length: members }, (_, i) => `m${i}`);
  const clientPorts: number[] = [];
  const peerPorts: number[] = [];
  for (let i = 0; i < members; i++) {
    clientPorts.push(await freePort());
    peerPorts.push(await freePort());
  }
  const clientUrls = clientPorts.map((p) => `http://127.0.0.1:${p}`);
  const peerUrls = peerPorts.map((p) => `http://127.0.0.1:${p}`);
  const initial = names.map((n, i) => `${n}=${peerUrls[i]!}`).join(',');
  const member = (i: number): ChildProcess => {
    const name = names[i]!;
    const p = spawn(
      ETCD_BIN,
      [
        `--name=${name}`,
        `--data-dir=${join(dir, name)}`,
        `--listen-client-urls=${clientUrls[i]!}`,
        `--advertise-client-urls=${clientUrls[i]!}`,
        `--listen-peer-urls=${peerUrls[i]!}`,
        `--initial-advertise-peer-urls=${peerUrls[i]!}`,
        `--initial-cluster=${initial}`,
        '--initial-cluster-state=new',
        `--initial-cluster-token=${dir}`,
        // Loopback round trips are well under a millisecond: short timers make elections take ~0.3 s.
        '--heartbeat-interval=25',
        `--election-timeout=${ETCD_ELECTION_TIMEOUT_MS}`,
        '--logger=zap',
        '--log-outputs=stderr',
        '--log-level=error',
      ],
      { stdio: ['ignore', 'ignore', 'ignore'] },
    );
    p.on('error', () => undefined);
    return p;
  };
  const procs: (ChildProcess | undefined)[] = names.map((_, i) => member(i));
  const kill = async (i: number): Promise<void> => {
    const p = procs[i];
    procs[i] = undefined;
    if (p === undefined || p.exitCode !== null || p.signalCode !== null) return;
    const exited = once(p, 'exit');
    p.kill('SIGKILL');
    await exited;
  };
  // A test run that is killed must not leave members behind.
  const orphans = (): void => {
    for (const p of procs) p?.kill('SIGKILL');
  };
  process.once('exit', orphans);
  const stop = async (): Promise<void> => {
    process.off('exit', orphans);
    await Promise.all(names.map((_, i) => kill(i)));
    rmSync(dir, { recursive: true, force: true });
  };
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await Promise.all(clientUrls.map(healthy));
    if (ok.every(Boolean)) break;
    if (Date.now() > end) {
      await stop();
      throw new NfsError(
        ErrorCode.PROCESS,
        `etcd (${ETCD_BIN}) did not become healthy within ${timeoutMs} ms`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const restart = (i: number): void => {
    if (i < 0 || i >= members) throw new RangeError(`etcd: no member ${i}`);
    // With a data directory, etcd ignores the --initial-cluster flags and rejoins as the member it was.
    procs[i] ??= member(i);
  };
  const signal = (i: number, sig: NodeJS.Signals): boolean => {
    const p = procs[i];
    return p !== undefined && p.exitCode === null && p.signalCode === null && p.kill(sig);
  };
  return { clientUrls, kill, restart, signal, stop };
}
