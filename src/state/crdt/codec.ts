/**
 * What every CRDT encoding shares: a two-byte header naming the type and the format version, and the
 * checks that turn bad bytes into an NfsError (NFS_ERR_STATE) before anything is built from them.
 *
 *   +------+---------+------------------------+
 *   | kind | version | body (per type)        |
 *   |  u8  |   u8    |                        |
 *   +------+---------+------------------------+
 *
 * A full state and a delta have the same encoding: a delta is a state.
 */
import { ErrorCode, NfsError } from '../../errors.js';
import type { ByteReader, ByteWriter } from '../bytes.js';

export const CrdtKind = {
  PN_COUNTER: 1,
  MAX_REGISTER: 2,
  OR_SET: 3,
  COUNT_MIN: 4,
  HYPERLOGLOG: 5,
} as const;
export type CrdtKind = (typeof CrdtKind)[keyof typeof CrdtKind];

const kindName: Record<number, string> = {
  [CrdtKind.PN_COUNTER]: 'pn-counter map',
  [CrdtKind.MAX_REGISTER]: 'max-register map',
  [CrdtKind.OR_SET]: 'or-set map',
  [CrdtKind.COUNT_MIN]: 'count-min sketch',
  [CrdtKind.HYPERLOGLOG]: 'hyperloglog',
};

export const CRDT_FORMAT_VERSION = 1;

/** Replica ids are 0 … MAX_REPLICAS - 1. */
export const MAX_REPLICAS = 1024;

export function writeHeader(w: ByteWriter, kind: CrdtKind): void {
  w.u8(kind);
  w.u8(CRDT_FORMAT_VERSION);
}

/** Bad bytes inside a decode; `decodeWith` adds which type was being read. */
export function malformed(message: string): NfsError {
  return new NfsError(ErrorCode.STATE, message);
}

/** A state that cannot be merged into this one (a sketch of another shape). */
export function mismatch(kind: CrdtKind, message: string): NfsError {
  return new NfsError(ErrorCode.STATE, `crdt ${kindName[kind]!}: ${message}`);
}

/**
 * Reads and checks the header, then runs `body`. Every error inside, truncation included, comes out as
 * one NfsError naming the type, so a log line says which state was bad.
 */
export function decodeWith<T>(r: ByteReader, kind: CrdtKind, body: () => T): T {
  try {
    const k = r.u8();
    if (k !== kind) throw malformed(`expected kind ${kind}, got ${k} (${kindName[k] ?? 'unknown'})`);
    const version = r.u8();
    if (version !== CRDT_FORMAT_VERSION) {
      throw malformed(`format version ${version} is not supported (${CRDT_FORMAT_VERSION} is)`);
    }
    return body();
  } catch (e) {
    if (!(e instanceof NfsError)) throw e;
    throw new NfsError(ErrorCode.STATE, `crdt ${kindName[kind]!}: ${e.message}`, { cause: e });
  }
}

/** An entry count, checked against the bytes left, so that garbage cannot make us allocate gigabytes. */
export function readCount(r: ByteReader, entryBytes: number, what: string): number {
  const n = r.u32();
  if (n * entryBytes > r.remaining) {
    throw malformed(`${n} ${what} need ${n * entryBytes} bytes, ${r.remaining} left`);
  }
  return n;
}

/** A u53 field that must be a safe integer within [min, max]. */
export function readInt(r: ByteReader, what: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  const v = r.u53();
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw malformed(`${what} ${v} is out of range [${min}, ${max}]`);
  }
  return v;
}

export function readReplica(r: ByteReader): number {
  const id = r.u16();
  if (id >= MAX_REPLICAS) throw malformed(`replica id ${id} is not below ${MAX_REPLICAS}`);
  return id;
}

export function usage(message: string): NfsError {
  return new NfsError(ErrorCode.USAGE, message);
}

export function checkReplica(replica: number): number {
  if (!Number.isInteger(replica) || replica < 0 || replica >= MAX_REPLICAS) {
    throw usage(`crdt: replica id must be an integer 0..${MAX_REPLICAS - 1} (got ${replica})`);
  }
  return replica;
}

/** Keys are unsigned 32-bit integers: IPv4 addresses, ports, backend indices. */
export function isU32(v: number): boolean {
  return v >>> 0 === v;
}

export function isCount(v: number): boolean {
  return Number.isSafeInteger(v) && v >= 0;
}
