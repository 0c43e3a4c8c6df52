/**
 * Reading typed fields out of a parsed topology (config.ts): each reader takes the field's path, applies its
 * default, and throws FieldError naming the path and what was wrong, with the bad value shown short.
 */
import { isIPv4 } from 'node:net';
import { ErrorCode, NfsError } from '../errors.js';

/**
 * The first invalid field: `path` locates it (for line numbers in a file), `message` is what the user
 * reads. Internal; callers see NfsError CONFIG.
 */
export class FieldError extends Error {
  constructor(
    readonly path: readonly string[],
    message: string,
  ) {
    super(message);
  }
}

export type Mapping = Record<string, unknown>;

/** Splits and checks "host:port" (port 1..65535); the host is an IPv4 address or a DNS name. */
export function parseHostPort(value: string, field: string): { host: string; port: number } {
  const colon = value.lastIndexOf(':');
  const host = value.slice(0, colon);
  const portText = value.slice(colon + 1);
  const port = /^[0-9]{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (colon <= 0 || !(port >= 1 && port <= 65535) || !(isIPv4(host) || isHostName(host))) {
    throw new NfsError(
      ErrorCode.CONFIG,
      `${field}: must be "host:port" with port 1..65535 (got ${describe(value)})`,
    );
  }
  return { host, port };
}

export function oneOf<T extends string>(
  obj: Mapping,
  path: readonly string[],
  modes: readonly T[],
  def: T,
): T {
  const v = obj[path[path.length - 1]!];
  if (v === undefined) return def;
  if (typeof v !== 'string' || !(modes as readonly string[]).includes(v)) {
    throw new FieldError(path, `${path.join('.')}: must be one of ${modes.join(', ')} (got ${describe(v)})`);
  }
  return v as T;
}

/** A list of http(s) URLs (etcd members' client URLs); absent: none. */
export function urls(obj: Mapping, path: readonly string[]): string[] {
  const v = obj[path[path.length - 1]!];
  if (v === undefined || v === null) return [];
  const field = path.join('.');
  if (!Array.isArray(v)) throw new FieldError(path, `${field}: must be a list of URLs (got ${describe(v)})`);
  return v.map((u, i) => {
    if (typeof u === 'string' && /^https?:\/\/[^/\s]+$/.test(u)) return u;
    throw new FieldError(
      [...path, String(i)],
      `${field}[${i}]: must be a URL like http://127.0.0.1:2379 (got ${describe(u)})`,
    );
  });
}

/** A nested section; absent or null (a YAML key with nothing under it) means all defaults. */
export function section(root: Mapping, key: string, known: readonly string[]): Mapping {
  const v = root[key];
  return v === undefined || v === null ? {} : mapping(v, [key], key, known);
}

export function mapping(
  v: unknown,
  path: readonly string[],
  name: string,
  known: readonly string[],
): Mapping {
  if (!isMapping(v)) throw new FieldError(path, `${name}: must be a mapping (got ${describe(v)})`);
  for (const key of Object.keys(v)) {
    if (known.includes(key)) continue;
    const near = suggest(key, known);
    const hint = near === undefined ? `expected one of ${known.join(', ')}` : `did you mean '${near}'?`;
    const prefix = path.length === 0 ? '' : `${path.join('.')}: `;
    throw new FieldError([...path, key], `${prefix}unknown field '${key}' (${hint})`);
  }
  return v;
}

export function int(obj: Mapping, path: readonly string[], def: number, min: number, max?: number): number {
  const v = obj[path[path.length - 1]!];
  if (v === undefined) return def;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= min && (max === undefined || v <= max))
    return v;
  const range = max === undefined ? `>= ${min}` : `${min}..${max}`;
  throw new FieldError(path, `${path.join('.')}: must be an integer ${range} (got ${describe(v)})`);
}

export function bool(obj: Mapping, path: readonly string[], def: boolean): boolean {
  const v = obj[path[path.length - 1]!];
  if (v === undefined) return def;
  if (typeof v === 'boolean') return v;
  throw new FieldError(path, `${path.join('.')}: must be true or false (got ${describe(v)})`);
}

export function positive(obj: Mapping, path: readonly string[], def: number): number {
  const v = obj[path[path.length - 1]!];
  if (v === undefined) return def;
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v;
  throw new FieldError(path, `${path.join('.')}: must be a number > 0 (got ${describe(v)})`);
}

export function ipv4(obj: Mapping, path: readonly string[], def: string): string {
  const v = obj[path[path.length - 1]!];
  if (v === undefined) return def;
  if (typeof v === 'string' && isIPv4(v)) return v;
  throw new FieldError(
    path,
    `${path.join('.')}: must be an IPv4 address like 127.0.0.1 (got ${describe(v)})`,
  );
}

export function hostPortOrNull(obj: Mapping, path: readonly string[]): string | null {
  const v = obj[path[path.length - 1]!];
  if (v === undefined || v === null) return null;
  const field = path.join('.');
  if (typeof v === 'string') {
    try {
      parseHostPort(v, field);
      return v;
    } catch {
      // reported below with the null alternative spelled out
    }
  }
  throw new FieldError(path, `${field}: must be null or "host:port" with port 1..65535 (got ${describe(v)})`);
}

export function pathOrNull(obj: Mapping, path: readonly string[]): string | null {
  const v = obj[path[path.length - 1]!];
  if (v === undefined || v === null) return null;
  if (typeof v === 'string' && v.length > 0) return v;
  throw new FieldError(path, `${path.join('.')}: must be null or a file path (got ${describe(v)})`);
}

export function isMapping(v: unknown): v is Mapping {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isHostName(s: string): boolean {
  return s.length <= 253 && /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,62})(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,62}))*$/.test(s);
}

/** How a bad value is shown in a message: short, and unambiguous about its type. */
export function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return typeof v;
}

/** The closest known field by case-insensitive edit distance, if it is close enough to be a typo. */
export function suggest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = candidate;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined;
}

/** Levenshtein distance, one row at a time. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row.push(Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost));
    }
    prev = row;
  }
  return prev[b.length]!;
}
