import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode, NfsError } from '../src/errors.js';
import { createLogger, silentLogger } from '../src/log.js';

function capture(fields?: Record<string, unknown>) {
  const lines: string[] = [];
  const log = createLogger('switch', {
    write: (l) => lines.push(l),
    now: () => Date.UTC(2025, 0, 2, 3, 4, 5, 6),
    ...(fields === undefined ? {} : { fields }),
  });
  return { log, lines, parsed: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

void test(
  'one JSON line per call, core keys first, then base fields, then call fields',
  { timeout: 60_000 },
  () => {
    const { log, lines } = capture({ instance: 3 });
    log.warn('stale rule', { epoch: 7 });
    assert.equal(lines.length, 1);
    assert.equal(
      lines[0],
      '{"t":"2025-01-02T03:04:05.006Z","level":"warn","component":"switch","msg":"stale rule","instance":3,"epoch":7}',
    );
    assert.ok(!lines[0].includes('\n'));
  },
);

void test('each level is labelled', { timeout: 60_000 }, () => {
  const { log, parsed } = capture();
  log.info('a');
  log.warn('b');
  log.error('c');
  assert.deepEqual(
    parsed().map((l) => l.level),
    ['info', 'warn', 'error'],
  );
});

void test('fields cannot overwrite the core keys', { timeout: 60_000 }, () => {
  const { log, parsed } = capture({ component: 'liar' });
  log.info('real', { msg: 'fake', level: 'error', t: 0 });
  const [line] = parsed();
  assert.equal(line!.msg, 'real');
  assert.equal(line!.level, 'info');
  assert.equal(line!.component, 'switch');
  assert.equal(line!.t, '2025-01-02T03:04:05.006Z');
});

void test('errors keep message and code; bigint becomes a string', { timeout: 60_000 }, () => {
  const { log, parsed } = capture();
  const cause = new Error('disk full');
  log.error('write failed', { err: new NfsError(ErrorCode.PCAP, 'cannot write', { cause }), n: 5n });
  const [line] = parsed();
  assert.deepEqual(line!.err, {
    name: 'NfsError',
    message: 'cannot write',
    code: 'NFS_ERR_PCAP',
    cause: { name: 'Error', message: 'disk full' },
  });
  assert.equal(line!.n, '5');
});

void test('unserializable fields never make a log call throw', { timeout: 60_000 }, () => {
  const { log, parsed } = capture();
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  log.info('loop', { cyclic });
  const [line] = parsed();
  assert.equal(line!.msg, 'loop');
  assert.equal(line!.logError, 'fields not serializable');
});

void test('the default writer writes newline-terminated lines to stderr', { timeout: 60_000 }, (t) => {
  const written: string[] = [];
  t.mock.method(process.stderr, 'write', (chunk: string) => {
    written.push(chunk);
    return true;
  });
  createLogger('x').info('hello');
  t.mock.restoreAll();
  assert.equal(written.length, 1);
  assert.ok(written[0]!.endsWith('}\n'));
  assert.equal((JSON.parse(written[0]!) as { msg: string }).msg, 'hello');
});

void test('silentLogger accepts calls and writes nothing', { timeout: 60_000 }, () => {
  silentLogger.info('x');
  silentLogger.warn('x', { a: 1 });
  silentLogger.error('x');
});
