/**
 * `nfstate up -c topology.yaml`: runs a topology on this machine until `until` settles (the command
 * ties it to SIGINT and SIGTERM), then stops it in order. Prints where to send traffic (the Geneve data port and the plain-UDP front door) and every
 * role's admin port.
 */
import { mkdtempSync } from 'node:fs';
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
  print(JSON.stringify({ ...ends, logs: logDir }));
  logger.info('deployment up', { instances: ends.instances.length, logs: logDir });
  await until;
  await deployment.stop();
  logger.info('deployment stopped');
}
