/**
 * The built-in network functions by type name, for config-driven deployment; each instance builds its NF
 * here. A service chain is the type `chain`, whose config lists the NFs in order:
 *
 *   const nf = createNf('nat', { publicIp: '203.0.113.1' }, global);
 *   const chain = createNf('chain', { nfs: [{ type: 'firewall' }, { type: 'nat', config: {} }] }, global);
 */
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

/** Builds a built-in NF or a chain of them; throws NfsError CONFIG for an unknown type or a bad config. */
export function createNf(
  type: string,
  config: Record<string, unknown>,
  global: GlobalState,
): NetworkFunction<unknown> {
  if (type === CHAIN_TYPE) return createChain(config, global);
  if (!isNfType(type)) {
    throw new NfsError(ErrorCode.CONFIG, `nf.type: unknown NF '${type}' (expected ${nfTypes.join(', ')})`);
  }
  return factories[type](config, global);
}

function createChain(config: Record<string, unknown>, global: GlobalState): NetworkFunction<unknown> {
  const { nfs } = config;
  if (!Array.isArray(nfs) || nfs.length === 0 || Object.keys(config).some((k) => k !== 'nfs'))
    throw configError('nfs', 'a chain takes { nfs: [{ type, config? }, ...] }, at least one NF');
  const parts = nfs.map((entry: unknown, i) => {
    if (!isRecord(entry) || typeof entry.type !== 'string' || !isNfType(entry.type))
      throw configError(`nfs[${i}].type`, `must be one of ${nfTypes.join(', ')}`);
    const stray = Object.keys(entry).find((k) => k !== 'type' && k !== 'config');
    if (stray !== undefined)
      throw configError(`nfs[${i}].${stray}`, 'unknown field (an NF takes type and config)');
    const inner = entry.config ?? {};
    if (!isRecord(inner)) throw configError(`nfs[${i}].config`, 'must be a mapping');
    return factories[entry.type](inner, global);
  });
  return new Chain(parts);
}

export { Chain, ChainState } from './chain.js';
export { createFirewall, Firewall, FirewallState, ConnState } from './firewall.js';
export { createIds, Ids, IdsState, defaultSignatures } from './ids.js';
export { createLb, LoadBalancer, LbState } from './lb.js';
export { createNat, Nat, NatState } from './nat.js';
