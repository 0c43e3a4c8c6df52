/**
 * How every command ends: its exit code, and what it says when it fails.
 *
 *   0  it did what was asked (`--help` and `--version` too)
 *   1  it ran and something failed: a check (the run says why, one line each), a role, a timeout, a refusal
 *   2  it was used wrongly: an unknown command or option (with commander's "did you mean"), a bad value,
 *      a bad config or input file (NFS_ERR_USAGE, NFS_ERR_CONFIG, NFS_ERR_PCAP)
 *
 * An error is one line on stderr, `nfstate: NFS_ERR_…: message` (docs/errors.md lists the codes; an error
 * that is not one of them is a bug, shown with its stack and no code). With `--json` on the command line,
 * stdout gets it too, as one JSON object, `{"error":{"code","message","retriable"}}`, so that a script that
 * reads the command's JSON reads its failure the same way.
 */
import { CommanderError } from 'commander';
import { ErrorCode, NfsError } from '../errors.js';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

const USAGE_CODES: ReadonlySet<string> = new Set([ErrorCode.USAGE, ErrorCode.CONFIG, ErrorCode.PCAP]);

export interface Ending {
  exitCode: number;
  /** Absent where there is nothing to say: help or the version was printed. */
  error?: { code?: string; message: string; retriable: boolean };
  /** A bug's stack, for stderr only. */
  stack?: string;
}

/** The exit code and error line for what a command threw. */
export function endingOf(err: unknown): Ending {
  // InvalidArgumentError, which option parsers and actions throw, is a CommanderError too.
  if (err instanceof CommanderError) {
    if (err.exitCode === 0) return { exitCode: EXIT_OK };
    // No command given: the help it printed (to stderr) says all there is.
    if (err.code === 'commander.help') return { exitCode: EXIT_USAGE };
    return {
      exitCode: EXIT_USAGE,
      // One line: commander puts its "did you mean" on a line of its own.
      error: {
        code: ErrorCode.USAGE,
        message: err.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' '),
        retriable: false,
      },
    };
  }
  if (err instanceof NfsError)
    return {
      exitCode: USAGE_CODES.has(err.code) ? EXIT_USAGE : EXIT_FAILED,
      error: { code: err.code, message: err.message, retriable: err.retriable },
    };
  const message = err instanceof Error ? err.message : String(err);
  return {
    exitCode: EXIT_FAILED,
    error: { message, retriable: false },
    ...(err instanceof Error && err.stack !== undefined ? { stack: err.stack } : {}),
  };
}

/** Says why the command failed (stderr; stdout too, as JSON, under `json`) and returns its exit code. */
export function endWith(
  err: unknown,
  json: boolean,
  out: (s: string) => void = (s) => process.stdout.write(s),
  errOut: (s: string) => void = (s) => process.stderr.write(s),
): number {
  const e = endingOf(err);
  if (e.error !== undefined) {
    const code = e.error.code === undefined ? '' : `${e.error.code}: `;
    errOut(`nfstate: ${code}${e.stack ?? e.error.message}\n`);
    if (json) out(JSON.stringify({ error: e.error }) + '\n');
  }
  return e.exitCode;
}
