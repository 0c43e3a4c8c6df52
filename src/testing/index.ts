/**
 * `nfstate/testing`: what an NF author tests an NF with — the compliance suite every built-in NF passes,
 * and a small runtime that runs packets through an NF the way a worker does.
 *
 *   import { checkCompliance, Driver, udp } from 'nfstate/testing';
 *   checkCompliance({ label: 'my-nf', create: (g) => create({}, g), ips: ['10.0.0.1', '192.0.2.1'], ports: [53] });
 *   const d = new Driver(create({}, global), global);
 *   d.send(udp('10.0.0.1', 1234, '192.0.2.1', 53, 'hello')).verdict;   // Verdict.FORWARD
 */
export { checkCodecAndDeterminism, checkCompliance, checkRobustness } from './compliance.js';
export type { ComplianceOptions, ComplianceSubject } from './compliance.js';
export {
  decodeFull,
  Driver,
  encodeFull,
  expectConfigError,
  icmpEcho,
  ip,
  parsed,
  tcp,
  TestContext,
  udp,
} from './driver.js';
export type { Flow, SendResult } from './driver.js';
export { LocalGlobalState } from '../state/global-local.js';
