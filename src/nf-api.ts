/**
 * `nfstate/nf`: what an NF module imports — the contracts an NF is written against and the few helpers
 * it needs, and nothing that starts a deployment, so that each worker thread that imports the module stays
 * light. A module's default export is an `NfFactory` (docs/nfs.md, "Your own NF"):
 *
 *   import { Verdict } from 'nfstate/nf';
 *   export default function create(config, global) {
 *     return { name: 'pass', initFlow: () => ({}), process: () => Verdict.FORWARD, … };
 *   }
 */
export type {
  FlowContext,
  FlowKey,
  GlobalState,
  NetworkFunction,
  NfEvent,
  NfFactory,
  PacketView,
  SharedCounters,
  SharedPool,
  SharedSets,
  StateCodec,
} from './types.js';
export { DropReason, IpProto, Verdict } from './types.js';
export { ErrorCode, NfsError } from './errors.js';
export { ByteReader, ByteWriter } from './state/bytes.js';
export { flowKeyString, parseIpv4 } from './packet/flow-key.js';
export { ConfigReader } from './nfs/config.js';
