/**
 * The remote-state baseline as a process, started the way a launcher starts `role nf`: forked with its
 * spec as JSON, it says `ready` with its data port over IPC and stops in order on `stop`, on SIGINT or
 * SIGTERM, or when the process that forked it goes away.
 *
 *   fork('dist/bench/remote-state-role.js', [JSON.stringify(spec)], { stdio: [..., 'ipc'] })
 *   child → parent   { type: 'ready', ports: { port } }
 *   parent → child   { type: 'stop' }   → { type: 'stopped' }, then exit
 */
import type { RoleCommand, RoleReply } from '../src/launcher/roles.js';
import { createLogger } from '../src/log.js';
import type { RemoteStateSpec } from './remote-state-nf.js';
import { RemoteStateNf } from './remote-state-nf.js';

const spec = JSON.parse(process.argv[2] ?? '') as RemoteStateSpec;
const logger = createLogger('remote-state', { fields: { instance: spec.id } });
const nf = new RemoteStateNf(spec, logger);

const send = (msg: RoleReply): void => {
  if (process.connected) process.send?.(msg);
};
let stopping: Promise<void> | undefined;
const stop = (): Promise<void> =>
  (stopping ??= (async () => {
    await nf.stop();
    const c = nf.counters;
    logger.info('remote-state stopped', {
      received: c.received,
      processed: c.processed,
      forwarded: c.forwarded,
      failed: c.failed,
      dropped: c.drops.reduce((a, b) => a + b, 0),
    });
    send({ type: 'stopped' });
    if (process.connected) process.disconnect();
  })());
process.on('SIGINT', () => void stop());
process.on('SIGTERM', () => void stop());
process.on('disconnect', () => void stop());
process.on('message', (cmd: RoleCommand) => {
  if (cmd.type === 'stop') void stop();
});

const { port } = await nf.start();
if (process.connected) send({ type: 'ready', ports: { port } });
else process.stdout.write(JSON.stringify({ port }) + '\n');
