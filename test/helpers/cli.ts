/**
 * Runs the real `nfstate` command (the compiled one, as a user would) and collects its output.
 */
import { execFile } from 'node:child_process';
import { repoPath } from './paths.js';

/** The compiled command, as `npm install` leaves it. */
export const CLI = repoPath('dist', 'src', 'cli', 'main.js');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `env` is added to this process's environment. */
export function nfstate(
  args: readonly string[],
  timeoutMs = 120_000,
  env: Record<string, string> = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ...env } },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
