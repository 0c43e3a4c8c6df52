/**
 * What the command's parts share: option parsers that say which flag was wrong, and waiting for Ctrl-C.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { InvalidArgumentError, Option } from 'commander';
import type { BalancerOptions } from '../controller/balancer.js';
import { suggest } from '../launcher/config-fields.js';
import { isNfType, nfTypes } from '../nfs/index.js';

/** Parses an integer option in [min, max], naming the flag when it is not one. */
export function int(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}`);
    }
    return n;
  };
}

/** Resolves on the first SIGINT or SIGTERM. */
export function signalled(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
}

export const NF_HELP = `network function: ${nfTypes.join(', ')}, or the path of an NF module (*.js, docs/nfs.md)`;

/** A built-in NF type, or the absolute path of an NF module (a path given relative to the working directory). */
export function nfArg(flag: string) {
  return (v: string): string => {
    if (isNfType(v)) return v;
    if (/\.m?js$/.test(v)) {
      const file = resolve(v);
      if (!existsSync(file)) throw new InvalidArgumentError(`${flag}: no such file ${file}`);
      return file;
    }
    const near = suggest(v, nfTypes);
    throw new InvalidArgumentError(
      `${flag}: unknown NF '${v}' (expected ${nfTypes.join(', ')}, or the path of a module${near === undefined ? '' : `; did you mean '${near}'?`})`,
    );
  };
}

export function readJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new InvalidArgumentError(`${what} must be JSON`);
  }
}

export function lbOption(): Option {
  return new Option('--lb <on|off>', 'the load-balancing unit').choices(['on', 'off']);
}

/** `--switch`: what routes the traffic of `demo` and `up`. */
export function switchOption(): Option {
  return new Option(
    '--switch <switch>',
    "what routes the traffic: the ingress's own switch, or an Open vSwitch bridge in front of it (userspace datapath in a network namespace: root and Debian's openvswitch-switch); hosts then send VXLAN to the bridge",
  )
    .choices(['builtin', 'ovs'])
    .default('builtin');
}

/** The load-balancing flags (`--lb`, `--capacity`, `--cooldown`) over `base`. */
export function lbFlags<T extends Partial<BalancerOptions>>(base: T, o: Record<string, unknown>): T {
  return {
    ...base,
    ...(o.lb === undefined ? {} : { enabled: o.lb === 'on' }),
    ...(o.capacity === undefined ? {} : { capacityPps: o.capacity as number }),
    ...(o.cooldown === undefined ? {} : { cooldownMs: o.cooldown as number }),
  };
}

/** The deployment key from --key-file, as hex; undefined without the flag. */
export function keyFlag(o: Record<string, unknown>): string | undefined {
  if (typeof o.keyFile !== 'string') return undefined;
  let text: string;
  try {
    text = readFileSync(o.keyFile, 'utf8').trim();
  } catch (err) {
    throw new InvalidArgumentError(`--key-file: cannot read ${o.keyFile} (${(err as Error).message})`);
  }
  if (!/^([0-9a-f]{2}){16,}$/i.test(text))
    throw new InvalidArgumentError(`--key-file: ${o.keyFile} must hold at least 16 bytes of hex`);
  return text;
}
