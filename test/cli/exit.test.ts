import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommanderError, InvalidArgumentError } from 'commander';
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, endWith, endingOf } from '../../src/cli/exit.js';
import { ErrorCode, NfsError } from '../../src/errors.js';

describe('how a command ends', () => {
  it('help and the version exit 0 and say nothing more', () => {
    assert.deepEqual(endingOf(new CommanderError(0, 'commander.helpDisplayed', '(outputHelp)')), {
      exitCode: EXIT_OK,
    });
    assert.deepEqual(endingOf(new CommanderError(0, 'commander.version', '0.1.0')), { exitCode: EXIT_OK });
  });

  it('being used wrongly exits 2: commander errors, bad values, config and input files', () => {
    const unknown = endingOf(
      new CommanderError(
        1,
        'commander.unknownCommand',
        "error: unknown command 'demoo'\n(Did you mean demo?)",
      ),
    );
    assert.equal(unknown.exitCode, EXIT_USAGE);
    assert.deepEqual(unknown.error, {
      code: ErrorCode.USAGE,
      message: "unknown command 'demoo' (Did you mean demo?)",
      retriable: false,
    });
    assert.equal(endingOf(new InvalidArgumentError('--rate: must be positive')).exitCode, EXIT_USAGE);
    for (const code of [ErrorCode.CONFIG, ErrorCode.USAGE, ErrorCode.PCAP])
      assert.equal(endingOf(new NfsError(code, 'x')).exitCode, EXIT_USAGE, code);
  });

  it('a failure while it runs exits 1 with its code; a bug shows its stack and no code', () => {
    for (const code of [
      ErrorCode.TIMEOUT,
      ErrorCode.PROCESS,
      ErrorCode.STATE,
      ErrorCode.AUTH,
      ErrorCode.FRAME,
    ])
      assert.equal(endingOf(new NfsError(code, 'x')).exitCode, EXIT_FAILED, code);
    const timeout = endingOf(new NfsError(ErrorCode.TIMEOUT, 'no quorum', { retriable: true }));
    assert.deepEqual(timeout.error, { code: ErrorCode.TIMEOUT, message: 'no quorum', retriable: true });
    const bug = endingOf(new TypeError('x is undefined'));
    assert.equal(bug.exitCode, EXIT_FAILED);
    assert.equal(bug.error?.code, undefined);
    assert.match(bug.stack ?? '', /TypeError: x is undefined/);
  });

  it('says it on stderr with the code, and on stdout as JSON only under --json', () => {
    const err = new NfsError(ErrorCode.STATE, 'no provisioner');
    const out: string[] = [];
    const errOut: string[] = [];
    assert.equal(
      endWith(
        err,
        false,
        (s) => out.push(s),
        (s) => errOut.push(s),
      ),
      EXIT_FAILED,
    );
    assert.equal(out.length, 0);
    assert.deepEqual(errOut, ['nfstate: NFS_ERR_STATE: no provisioner\n']);
    endWith(
      err,
      true,
      (s) => out.push(s),
      () => undefined,
    );
    assert.deepEqual(JSON.parse(out[0]!), {
      error: { code: 'NFS_ERR_STATE', message: 'no provisioner', retriable: false },
    });
  });
});
