/**
 * The built-in network functions by type name, for config-driven deployment: a chain is a list of
 * `{ type, ...config }` sections, and each instance builds its NF here.
 *
 *   const nf = createNf('nat', { publicIp: '203.0.113.1' }, global);
 */
import type { GlobalState, NetworkFunction, NfFactory } from '../types.js';
import { ErrorCode, NfsError } from '../errors.js';
import { createFirewall } from './firewall.js';
import { createIds } from './ids.js';
import { createLb } from './lb.js';
import { createNat } from './nat.js';

export const nfTypes = ['nat', 'firewall', 'lb', 'ids'] as const;
export type NfType = (typeof nfTypes)[number];

const factories: Readonly<Record<NfType, NfFactory>> = {
  nat: createNat,
  firewall: createFirewall,
  lb: createLb,
  ids: createIds,
};

export function isNfType(type: string): type is NfType {
  return (nfTypes as readonly string[]).includes(type);
}

/** Builds a built-in NF; throws NfsError CONFIG for an unknown type or a bad config. */
export function createNf(
  type: string,
  config: Record<string, unknown>,
  global: GlobalState,
): NetworkFunction<unknown> {
  if (!isNfType(type)) {
    throw new NfsError(ErrorCode.CONFIG, `nf.type: unknown NF '${type}' (expected ${nfTypes.join(', ')})`);
  }
  return factories[type](config, global);
}

export { createFirewall, Firewall, FirewallState, ConnState } from './firewall.js';
export { createIds, Ids, IdsState, defaultSignatures } from './ids.js';
export { createLb, LoadBalancer, LbState } from './lb.js';
export { createNat, Nat, NatState } from './nat.js';
