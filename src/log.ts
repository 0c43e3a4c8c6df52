/**
 * Structured logging: one JSON object per line, so a deployment's interleaved logs stay machine-readable
 * (`jq`, log shippers) and every line says which component wrote it. Loggers are passed to components in
 * their constructors; nothing here is global.
 *
 *   const log = createLogger('switch', { fields: { instance: 3 } });
 *   log.warn('stale rule', { epoch: 7 });
 *   // {"t":"2025-01-01T00:00:00.000Z","level":"warn","component":"switch","msg":"stale rule","instance":3,"epoch":7}
 */
import type { Logger } from './types.js';

export type LogLevel = 'info' | 'warn' | 'error';

export interface LoggerOptions {
  /** Receives each line without its trailing newline. Default: process.stderr, newline-terminated. */
  write?: (line: string) => void;
  /** Fields added to every line (an instance id, a cluster id). */
  fields?: Record<string, unknown>;
  /** Wall-clock source for the `t` field; injectable so tests get stable output. */
  now?: () => number;
}

// The four keys every line starts with; caller fields cannot overwrite them, so a field named `msg` can
// never make a line lie about what was logged.
const RESERVED = new Set(['t', 'level', 'component', 'msg']);

export function createLogger(component: string, opts: LoggerOptions = {}): Logger {
  const write = opts.write ?? defaultWrite;
  const base = opts.fields ?? {};
  const now = opts.now ?? Date.now;

  const emit = (level: LogLevel, msg: string, fields: Record<string, unknown> | undefined): void => {
    const line: Record<string, unknown> = { t: new Date(now()).toISOString(), level, component, msg };
    copyFields(line, base);
    if (fields !== undefined) copyFields(line, fields);
    write(stringify(line));
  };

  return {
    info: (msg, fields) => {
      emit('info', msg, fields);
    },
    warn: (msg, fields) => {
      emit('warn', msg, fields);
    },
    error: (msg, fields) => {
      emit('error', msg, fields);
    },
  };
}

/** A logger that drops everything; the default collaborator for components built without one. */
export const silentLogger: Logger = Object.freeze({
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
});

function defaultWrite(line: string): void {
  process.stderr.write(line + '\n');
}

function copyFields(into: Record<string, unknown>, from: Record<string, unknown>): void {
  for (const key of Object.keys(from)) {
    if (!RESERVED.has(key)) into[key] = from[key];
  }
}

// JSON.stringify turns an Error into `{}` and throws on bigint and cycles; a log call must never throw
// and must keep an error's message and code, because that is usually why the line was written.
function stringify(line: Record<string, unknown>): string {
  try {
    return JSON.stringify(line, replacer);
  } catch {
    return JSON.stringify({
      t: line.t,
      level: line.level,
      component: line.component,
      msg: line.msg,
      logError: 'fields not serializable',
    });
  }
}

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: value.message };
    const code = (value as { code?: unknown }).code;
    if (code !== undefined) out.code = code;
    if (value.cause !== undefined) out.cause = value.cause;
    return out;
  }
  return value;
}
