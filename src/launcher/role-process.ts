/**
 * One role of a local deployment as a child process: forked with an IPC channel, ready once it says which
 * ports it listens on, asked for digests and reports over the channel, and stopped in order (or killed, when
 * it cannot answer). See roles.ts for the other end.
 *
 *   const env = { ...process.env, [ROLE_SPEC_ENV]: JSON.stringify(spec) };
 *   const p = new RoleProcess('sink', fork(CLI, ['role', 'sink', 'sink'], { env, stdio }), logPath);
 *   const ports = await p.ports;             // rejects if it exits or is not ready in time
 *   await p.request({ type: 'report' });
 *   await p.stop();
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ErrorCode, NfsError } from '../errors.js';
import type { ProvisionRequest, RoleCommand, RoleReply } from './roles.js';

/**
 * The environment variable that carries a role's JSON spec, deployment key included: the environment of a
 * process is readable by its user only, unlike its command line.
 */
export const ROLE_SPEC_ENV = 'NFSTATE_ROLE_SPEC';

const START_TIMEOUT_MS = 20_000;
const REPLY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5000;

/** The last line of a log file, shortened; empty when it cannot be read. */
function lastLine(path: string): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').at(-1)!.slice(0, 500);
  } catch {
    return '';
  }
}

export class RoleProcess {
  readonly ports: Promise<Record<string, number>>;
  /** An NF instance's worker ports, once `ports` resolved (none for the other roles). */
  workers: readonly number[] = [];
  private readonly waiting: ((msg: RoleReply) => void)[] = [];
  exited = false;
  /** The exit status once it exited (null: killed by a signal). */
  exitCode: number | null = null;
  /** The role asks for more NF instances (the controller does, for POST /instances). */
  onProvision: ((req: ProvisionRequest) => void) | undefined;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    /** Its log, whose last line says why it exited during start. */
    log: string,
  ) {
    this.ports = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new NfsError(ErrorCode.PROCESS, `${name}: not ready within ${START_TIMEOUT_MS} ms`));
      }, START_TIMEOUT_MS);
      child.on('message', (msg: RoleReply | ProvisionRequest) => {
        if (msg.type === 'ready') {
          clearTimeout(timer);
          this.workers = msg.workers ?? [];
          resolve(msg.ports);
        } else if (msg.type === 'provision') {
          this.onProvision?.(msg);
        } else {
          this.waiting.shift()?.(msg);
        }
      });
      child.on('exit', (code, signal) => {
        this.exited = true;
        this.exitCode = code;
        clearTimeout(timer);
        reject(
          new NfsError(
            ErrorCode.PROCESS,
            `${name}: exited during start (code ${code}, signal ${signal}): ${lastLine(log)}`,
          ),
        );
        for (const w of this.waiting.splice(0)) w({ type: 'error', error: `${name} exited` });
      });
    });
    // A failed start is reported through `ports`; keep the rejection from going unhandled meanwhile.
    this.ports.catch(() => undefined);
  }

  request(cmd: RoleCommand): Promise<RoleReply> {
    if (this.exited || !this.child.connected)
      return Promise.resolve({ type: 'error', error: `${this.name} has exited` });
    return new Promise((resolve) => {
      const answer = (msg: RoleReply): void => {
        clearTimeout(timer);
        resolve(msg);
      };
      // A late reply still belongs to this request, so its waiter stays in line after the timeout.
      const timer = setTimeout(() => {
        resolve({ type: 'error', error: `${this.name}: no reply to ${cmd.type}` });
      }, REPLY_TIMEOUT_MS);
      this.waiting.push(answer);
      // A child killed but not yet reaped still looks connected; the send then fails with EPIPE, which
      // without a callback would be an 'error' event that no one handles.
      this.child.send(cmd, (err) => {
        if (err === null) return;
        // Never sent, so no reply will come for it: out of the line (unless the exit emptied it already).
        const at = this.waiting.indexOf(answer);
        if (at >= 0) this.waiting.splice(at, 1);
        answer({ type: 'error', error: `${this.name}: ${err.message}` });
      });
    });
  }

  /**
   * Asks the role to stop in order. One that cannot answer — killed and not yet reaped, or stopped by
   * SIGSTOP — is killed when its time is up, so that stopping a deployment never hangs on it.
   */
  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    const timer = setTimeout(() => this.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await this.request({ type: 'stop' });
    await exited;
    clearTimeout(timer);
  }
}
