/**
 * `nfstate up -c topology.yaml`: runs a topology on this machine until `until` settles (the command
 * ties it to SIGINT and SIGTERM), then stops it in order. Prints where to send traffic (the Geneve data
 * port and the plain-UDP front door), every role's admin port, and the file with the operator key (only its
 * user may read it), which `nfstate scale add --key-file` and any other operator call sign with. With
 * `--switch ovs`, an Open vSwitch bridge routes the traffic (switch/ovs.ts), and `switch.vxlan` says where
 * hosts send it.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../types.js';
import type { Topology } from './config.js';
import { LocalDeployment } from './local.js';
import { OvsBridge } from '../switch/ovs.js';
import { VXLAN_PORT } from '../wire/vxlan.js';

export async function runUp(
  topology: Topology,
  logger: Logger,
  print: (line: string) => void,
  until: Promise<void>,
  via: 'builtin' | 'ovs' = 'builtin',
): Promise<void> {
  const logDir = mkdtempSync(join(tmpdir(), 'nfstate-up-'));
  const ovs = via === 'ovs' ? await OvsBridge.start(logger) : undefined;
  try {
    const deployment = new LocalDeployment(topology, {
      logDir,
      logger,
      ...(ovs === undefined ? {} : { ovs: ovs.forIngress }),
    });
    const ends = await deployment.start();
    const operatorKey = join(logDir, 'operator.key');
    writeFileSync(operatorKey, deployment.operatorKey.toString('hex') + '\n', { mode: 0o600 });
    const routing =
      ovs === undefined
        ? { kind: via }
        : { kind: via, netns: ovs.netns, vxlan: { host: ovs.switchAddress, port: VXLAN_PORT } };
    print(JSON.stringify({ ...ends, switch: routing, logs: logDir, operator_key: operatorKey }));
    logger.info('deployment up', { instances: ends.instances.length, logs: logDir });
    await until;
    await deployment.stop();
  } finally {
    await ovs?.stop();
  }
  logger.info('deployment stopped');
}
