/**
 * Validation of NF config sections. Every failure is an NfsError with code CONFIG whose message names
 * the field by its path, so a bad deployment file points at the line to fix:
 *
 *   const c = new ConfigReader('nat', config);
 *   const first = c.integer('portFirst', 1024, 1, 65535);   // 'nf.config.portFirst: must be …'
 *   c.done();                                                // rejects fields nobody read
 */
import { ErrorCode, NfsError } from '../errors.js';
import { parseCidr, parseIpv4, type Cidr } from '../packet/flow-key.js';

export function configError(path: string, what: string): NfsError {
  return new NfsError(ErrorCode.CONFIG, `nf.config.${path}: ${what}`);
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An IPv4 address, as an unsigned 32-bit number. */
export function ipv4At(path: string, v: unknown): number {
  if (typeof v !== 'string') throw configError(path, `must be an IPv4 address string, got ${typeof v}`);
  try {
    return parseIpv4(v) >>> 0;
  } catch (err) {
    throw new NfsError(ErrorCode.CONFIG, `nf.config.${path}: '${v}' is not an IPv4 address`, { cause: err });
  }
}

export function cidrAt(path: string, v: unknown): Cidr {
  if (typeof v !== 'string') throw configError(path, `must be a CIDR string such as '10.0.0.0/8'`);
  try {
    return parseCidr(v);
  } catch (err) {
    throw new NfsError(ErrorCode.CONFIG, `nf.config.${path}: '${v}' is not a CIDR such as '10.0.0.0/8'`, {
      cause: err,
    });
  }
}

/**
 * Reads one config record. Fields are read by name with a default; `done()` then rejects any field
 * that was not read, so a misspelt option fails loudly instead of silently taking its default. `type`
 * is allowed because deployment files often keep it inside the NF's own section.
 */
export class ConfigReader {
  private readonly seen = new Set<string>(['type']);

  constructor(
    private readonly prefix: string,
    private readonly config: Record<string, unknown>,
  ) {}

  path(field: string): string {
    return this.prefix === '' ? field : `${this.prefix}.${field}`;
  }

  raw(field: string): unknown {
    this.seen.add(field);
    return this.config[field];
  }

  integer(field: string, dflt: number | undefined, min: number, max: number): number {
    const v = this.raw(field);
    if (v === undefined) {
      if (dflt === undefined) throw configError(this.path(field), 'is required');
      return dflt;
    }
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      throw configError(this.path(field), `must be an integer, got ${JSON.stringify(v)}`);
    }
    if (v < min || v > max) throw configError(this.path(field), `must be in [${min}, ${max}], got ${v}`);
    return v;
  }

  optionalInteger(field: string, min: number, max: number): number | undefined {
    if (this.raw(field) === undefined) return undefined;
    return this.integer(field, undefined, min, max);
  }

  boolean(field: string, dflt: boolean): boolean {
    const v = this.raw(field);
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') throw configError(this.path(field), `must be true or false`);
    return v;
  }

  oneOf<T extends string>(field: string, dflt: T, allowed: readonly T[]): T {
    const v = this.raw(field);
    if (v === undefined) return dflt;
    const hit = allowed.find((a) => a === v);
    if (hit === undefined) {
      throw configError(this.path(field), `must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
    }
    return hit;
  }

  ipv4(field: string, dflt: string): number {
    const v = this.raw(field);
    return ipv4At(this.path(field), v ?? dflt);
  }

  cidr(field: string, dflt: string): Cidr {
    const v = this.raw(field);
    return cidrAt(this.path(field), v ?? dflt);
  }

  done(): void {
    for (const field of Object.keys(this.config)) {
      if (!this.seen.has(field)) throw configError(this.path(field), 'unknown field');
    }
  }
}
