/**
 * nfstate's public API: the contracts an NF is written against, the built-in NFs, and the components a
 * deployment is made of. Everything not exported here is internal and may change.
 *
 *   import { createNf, LocalGlobalState, runOracle } from 'nfstate';
 *   const nat = createNf('nat', { publicIp: '203.0.113.1' }, new LocalGlobalState());
 */
// The NF contracts, as an NF module imports them (nfstate/nf), and what a deployment adds to them.
export * from './nf-api.js';
export type { GlobalSnapshot, Clock, Logger, MetricSample, MetricSource } from './types.js';
export { createLogger, silentLogger } from './log.js';
export type { LoggerOptions } from './log.js';
export { GivenGlobalState, LocalGlobalState } from './state/global-local.js';
export { createNf, loadNfModules, nfTypes } from './nfs/index.js';
export { Packet } from './packet/packet.js';
export { buildIcmp, buildTcp, buildUdp, TcpFlag } from './packet/build.js';
export { canonicalKey, flowHash, flowKeyOf, parseFlowKeyString } from './packet/flow-key.js';
export { StampFlag, StampView, writeStampHeader } from './wire/geneve.js';
export { FlowProcessor } from './nf/processor.js';
export type { ProcessorOptions } from './nf/processor.js';
export { GUARANTEES } from './nf/guarantee.js';
export type { Guarantee } from './nf/guarantee.js';
export type { MoveRecord } from './controller/records.js';
export { NfInstance } from './nf/instance.js';
export type { NfInstanceOptions, TakeoverReport } from './nf/instance.js';
export { Ingress } from './switch/ingress.js';
export type { IngressOptions } from './switch/ingress.js';
export { Controller } from './controller/controller.js';
export { Sink } from './traffic/sink.js';
export type { SinkOptions } from './traffic/sink.js';
export { Generator, PcapSource } from './traffic/generator.js';
export type { GeneratorOptions, PacketSource } from './traffic/generator.js';
export { SyntheticTrace } from './traffic/trace.js';
export { LinkType, PcapWriter, readPcap } from './traffic/pcap.js';
export { compareRuns, readTrace, runOracle } from './traffic/oracle.js';
export { LocalDeployment } from './launcher/local.js';
export type { DeploymentOptions } from './launcher/local.js';
export { DEFAULT_TOPOLOGY, loadTopology, parseTopology } from './launcher/config.js';
export type { Topology } from './launcher/config.js';
