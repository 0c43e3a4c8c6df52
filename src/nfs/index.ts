/**
 * The network functions by type name, for config-driven deployment; each instance, each worker and the
 * oracle build their NF here. A type is a built-in's name, or the absolute path of a module whose default
 * export is an `NfFactory` (an NF of the user's own, `nf.module` in a topology), which each process and
 * thread imports once with `loadNfModules` before it builds the NF. A service chain is the type `chain`,
 * whose config lists the NFs in order:
 *
 *   const nf = createNf('nat', { publicIp: '203.0.113.1' }, global);
 *   const chain = createNf('chain', { nfs: [{ type: 'firewall' }, { type: 'nat', config: {} }] }, global);
 *   await loadNfModules({ type: '/opt/nfs/meter.js', config: {} });
 *   const mine = createNf('/opt/nfs/meter.js', { rate: 100 }, global);
 */
import { isAbsolute } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { GlobalState, NetworkFunction, NfFactory } from '../types.js';
import { ErrorCode, NfsError } from '../errors.js';
import { Chain } from './chain.js';
import { configError, isRecord } from './config.js';
import { createFirewall } from './firewall.js';
import { createIds } from './ids.js';
import { createLb } from './lb.js';
import { createNat } from './nat.js';

export const nfTypes = ['nat', 'firewall', 'lb', 'ids'] as const;
export type NfType = (typeof nfTypes)[number];
/** The type of a service chain: `config.nfs` lists its NFs, `{ type, config? }` each. */
export const CHAIN_TYPE = 'chain';

const factories: Readonly<Record<NfType, NfFactory>> = {
  nat: createNat,
  firewall: createFirewall,
  lb: createLb,
  ids: createIds,
};

export function isNfType(type: string): type is NfType {
  return (nfTypes as readonly string[]).includes(type);
}

/** Whether a type names an NF module (an absolute path); built-in types are plain words. */
export function isNfModule(type: string): boolean {
  return isAbsolute(type);
}

/** The factories of the NF modules this process or thread has imported, by path. */
const modules = new Map<string, NfFactory>();

/**
 * Imports the modules `nf` names (itself, or the NFs of a chain), each once per process or thread; built-in
 * types need nothing. Throws NfsError CONFIG when a module cannot be imported or exports no factory.
 */
export async function loadNfModules(nf: { type: string; config: Record<string, unknown> }): Promise<void> {
  const types = nf.type === CHAIN_TYPE && Array.isArray(nf.config.nfs) ? nf.config.nfs : [{ type: nf.type }];
  for (const entry of types) {
    const type: unknown = isRecord(entry) ? entry.type : undefined;
    if (typeof type === 'string' && isNfModule(type) && !modules.has(type))
      modules.set(type, await importFactory(type));
  }
}

async function importFactory(path: string): Promise<NfFactory> {
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(path).href)) as { default?: unknown };
  } catch (err) {
    throw new NfsError(ErrorCode.CONFIG, `nf.module: cannot import ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (typeof mod.default !== 'function')
    throw new NfsError(
      ErrorCode.CONFIG,
      `nf.module: ${path} must export default a function (config, global) => NetworkFunction`,
    );
  const factory = mod.default as NfFactory;
  return (config, global) => checked(factory(config, global), path);
}

/** A module's NF must have what the runtime calls, or it would fail later, in a worker, on the hot path. */
function checked(nf: NetworkFunction<unknown>, path: string): NetworkFunction<unknown> {
  const methods = ['initFlow', 'process', 'releaseFlow', 'allocations'] as const;
  const codec = ['encodeFull', 'decodeFull', 'mark', 'encodeDelta', 'applyDelta'] as const;
  const missing = [
    ...(typeof (nf as Partial<NetworkFunction<unknown>> | null)?.name === 'string' ? [] : ['name']),
    ...methods.filter((m) => typeof nf[m] !== 'function'),
    ...codec
      .filter(
        (m) =>
          typeof (nf.codec as Partial<NetworkFunction<unknown>['codec']> | undefined)?.[m] !== 'function',
      )
      .map((m) => `codec.${m}`),
  ];
  if (missing.length > 0)
    throw new NfsError(ErrorCode.CONFIG, `nf.module: the NF ${path} makes lacks ${missing.join(', ')}`);
  return nf;
}

/** The factory of a built-in type or a loaded module; `field` names the type's place in messages. */
function factoryOf(type: string, field: string): NfFactory {
  if (isNfType(type)) return factories[type];
  if (isNfModule(type)) {
    const factory = modules.get(type);
    if (factory === undefined)
      throw new NfsError(ErrorCode.CONFIG, `${field}: the module ${type} is not loaded (loadNfModules)`);
    return factory;
  }
  throw new NfsError(
    ErrorCode.CONFIG,
    `${field}: unknown NF '${type}' (expected ${nfTypes.join(', ')}, or the path of a module)`,
  );
}

/** Builds a built-in NF or a chain of them; throws NfsError CONFIG for an unknown type or a bad config. */
export function createNf(
  type: string,
  config: Record<string, unknown>,
  global: GlobalState,
): NetworkFunction<unknown> {
  if (type === CHAIN_TYPE) return createChain(config, global);
  return factoryOf(type, 'nf.type')(config, global);
}

function createChain(config: Record<string, unknown>, global: GlobalState): NetworkFunction<unknown> {
  const { nfs } = config;
  if (!Array.isArray(nfs) || nfs.length === 0 || Object.keys(config).some((k) => k !== 'nfs'))
    throw configError('nfs', 'a chain takes { nfs: [{ type, config? }, ...] }, at least one NF');
  const parts = nfs.map((entry: unknown, i) => {
    if (!isRecord(entry) || typeof entry.type !== 'string')
      throw configError(`nfs[${i}].type`, `must be one of ${nfTypes.join(', ')}, or the path of a module`);
    const stray = Object.keys(entry).find((k) => k !== 'type' && k !== 'config');
    if (stray !== undefined)
      throw configError(`nfs[${i}].${stray}`, 'unknown field (an NF takes type and config)');
    const inner = entry.config ?? {};
    if (!isRecord(inner)) throw configError(`nfs[${i}].config`, 'must be a mapping');
    return factoryOf(entry.type, `nf.config.nfs[${i}].type`)(inner, global);
  });
  return new Chain(parts);
}

export { Chain, ChainState } from './chain.js';
export { createFirewall, Firewall, FirewallState, ConnState } from './firewall.js';
export { createIds, Ids, IdsState, defaultSignatures } from './ids.js';
export { createLb, LoadBalancer, LbState } from './lb.js';
export { createNat, Nat, NatState } from './nat.js';
