/**
 * Linux network namespaces through iproute2's `ip`, for the lab: one `ip -batch` run per namespace, so
 * that building a testbed of a dozen namespaces costs a dozen processes, not hundreds.
 *
 *   await ipBatch(['netns add lab-a', 'link add v0 netns lab-a type veth peer name v-a netns lab-br']);
 *   await ipBatch(['link set v0 up', 'addr add 198.18.0.2/24 dev v0'], 'lab-a');
 *   await namespaces('lab-');   // ['lab-a', 'lab-br']
 *
 * Every failure is an NfsError naming the command and what `ip` said.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { ErrorCode, NfsError } from '../errors.js';

const run = promisify(execFile);
const TIMEOUT_MS = 20_000;

/** Runs `ip` with `args`; resolves with its standard output. */
export async function ip(args: readonly string[]): Promise<string> {
  try {
    const { stdout } = await run('ip', [...args], { timeout: TIMEOUT_MS });
    return stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT')
      throw new NfsError(ErrorCode.CONFIG, "lab: the 'ip' command (iproute2) is not installed", {
        cause: err,
      });
    throw new NfsError(ErrorCode.PROCESS, `ip ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`, {
      cause: err,
    });
  }
}

/**
 * Runs `commands` (each an `ip` command line without the `ip`) in one `ip -batch` process, in namespace
 * `netns` when given. Stops at the first that fails, naming it.
 */
export function ipBatch(commands: readonly string[], netns?: string): Promise<void> {
  const args = [...(netns === undefined ? [] : ['-n', netns]), '-batch', '-'];
  return new Promise((resolve, reject) => {
    const child = spawn('ip', args, { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        err.code === 'ENOENT'
          ? new NfsError(ErrorCode.CONFIG, "lab: the 'ip' command (iproute2) is not installed", {
              cause: err,
            })
          : err,
      );
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) return resolve();
      // `ip -batch` names the failing line: "Command failed -:3".
      const line = /Command failed -:(\d+)/.exec(stderr);
      const which = line === null ? '' : ` (${commands[Number(line[1]) - 1] ?? '?'})`;
      reject(
        new NfsError(
          ErrorCode.PROCESS,
          `ip${netns === undefined ? '' : ` -n ${netns}`} -batch${which}: ${stderr.trim().split('\n')[0]}`,
        ),
      );
    });
    // `ip` may exit before it reads everything (a namespace that is gone fails it at once): the write then
    // fails with EPIPE, and 'close' reports why from ip's own words.
    child.stdin.on('error', () => undefined);
    child.stdin.end(commands.join('\n') + '\n');
  });
}

/** The network namespaces whose names start with `prefix`. */
export async function namespaces(prefix: string): Promise<string[]> {
  const out = await ip(['netns', 'list']);
  return out
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name.startsWith(prefix));
}

/** The processes that run in namespace `netns`. */
export async function pidsIn(netns: string): Promise<number[]> {
  const out = await ip(['netns', 'pids', netns]).catch(() => '');
  return out
    .split('\n')
    .map(Number)
    .filter((pid) => Number.isInteger(pid) && pid > 0);
}

/** Links in this (the root) namespace whose names start with `prefix`. */
export async function linksHere(prefix: string): Promise<string[]> {
  const out = await ip(['-o', 'link', 'show']);
  return out
    .split('\n')
    .map((line) => /^\d+: ([^:@]+)/.exec(line)?.[1] ?? '')
    .filter((name) => name.startsWith(prefix));
}

/** Whether a process with this pid runs (signal 0 tests without sending anything). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
