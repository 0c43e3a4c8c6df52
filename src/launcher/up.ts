/**
 * `nfstate up -c topology.yaml`: runs a topology on this machine until `until` settles (the command
 * ties it to SIGINT and SIGTERM), then stops it in order. Prints where to send traffic (the Geneve data
 * port and the plain-UDP front door), every role's admin port, and the file with the operator key (only its
 * user may read it), which `nfstate scale add --key-file` and any other operator call sign with.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../types.js';
import type { Topology } from './config.js';
import { LocalDeployment } from './local.js';

export async function runUp(
  topology: Topology,
  logger: Logger,
  print: (line: string) => void,
  until: Promise<void>,
): Promise<void> {
  const logDir = mkdtempSync(join(tmpdir(), 'nfstate-up-'));
  const deployment = new LocalDeployment(topology, { logDir, logger });
  const ends = await deployment.start();
  const operatorKey = join(logDir, 'operator.key');
  writeFileSync(operatorKey, deployment.operatorKey.toString('hex') + '\n', { mode: 0o600 });
  print(JSON.stringify({ ...ends, logs: logDir, operator_key: operatorKey }));
  logger.info('deployment up', { instances: ends.instances.length, logs: logDir });
  await until;
  await deployment.stop();
  logger.info('deployment stopped');
}
