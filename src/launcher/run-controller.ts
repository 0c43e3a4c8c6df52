/**
 * The controller as a process (`nfstate role controller`, or `nfstate controller`): alone, or as one of
 * several that elect a leader through etcd, the others standing by to carry on from the journal; with a
 * launcher, it asks it for new instances (the provisioner).
 */
import { ErrorCode, NfsError } from '../errors.js';
import { wallClock } from '../clock.js';
import { Controller } from '../controller/controller.js';
import type { Provisioner } from '../controller/records.js';
import { createLogger } from '../log.js';
import type { Logger } from '../types.js';
import type { LeaderElection } from '../controller/election.js';
import type { EtcdJournal, Restored } from '../controller/journal.js';
import { SequencerServer } from '../global/sequencer-server.js';
import {
  type ControllerSpec,
  type RoleCommand,
  type ProvisionRequest,
  adminServer,
  attach,
} from './roles.js';

export async function runController(spec: ControllerSpec): Promise<void> {
  const logger = createLogger(
    'controller',
    spec.ha === undefined ? {} : { fields: { controller: spec.ha.id } },
  );
  const ha = spec.ha === undefined ? undefined : await lead(spec.ha, logger);
  const { admin, sign } = adminServer(spec);
  const controller = new Controller(
    {
      clusterSize: spec.clusterSize,
      host: spec.host,
      lb: spec.lb,
      ...(sign.key === undefined ? {} : { adminKey: sign.key }),
      ...(process.connected ? { provisioner: launcherProvisioner() } : {}),
      ...(spec.moveTimeoutMs === undefined ? {} : { moveTimeoutMs: spec.moveTimeoutMs }),
      ...(spec.replicas === undefined ? {} : { replicas: spec.replicas }),
      ...(spec.failure === undefined ? {} : { failure: spec.failure }),
      ...(spec.egress === undefined ? {} : { egress: spec.egress }),
      ...(spec.ha === undefined
        ? {}
        : { reportPort: spec.ha.reportPort, livenessPort: spec.ha.livenessPort }),
      ...(ha === undefined
        ? {}
        : { journal: ha.journal, ...(ha.restore === undefined ? {} : { restore: ha.restore }) }),
    },
    logger,
    wallClock,
  );
  if (ha !== undefined) admin.registry.add(ha.election);
  const report = await controller.start(admin);
  const sequencer =
    spec.sequencer === undefined
      ? undefined
      : new SequencerServer({ key: Buffer.from(spec.sequencer.key, 'hex'), logger });
  await sequencer?.listen(spec.host, 0);
  await admin.start();
  attach(
    {
      collect: () => undefined,
      stop: async () => {
        controller.stop();
        await sequencer?.stop();
        await ha?.election.stop();
        ha?.journal.close();
      },
    },
    admin,
    { admin: admin.port, report, ...(sequencer === undefined ? {} : { sequencer: sequencer.port }) },
  );
}

/**
 * Waits to lead the deployment's controllers (election.ts), then loads what the previous leader saved
 * (journal.ts). Until it leads, a `stop` from the launcher ends it. Once it leads and loses the lease, it
 * exits at once: another controller may lead from then on, and two must never act together.
 */
async function lead(
  ha: NonNullable<ControllerSpec['ha']>,
  logger: Logger,
): Promise<{ election: LeaderElection; journal: EtcdJournal; restore: Restored | undefined }> {
  // Loaded only here: the etcd client (gRPC) adds to every process's start otherwise.
  const [{ LeaderElection }, { EtcdJournal }] = await Promise.all([
    import('../controller/election.js'),
    import('../controller/journal.js'),
  ]);
  const election = new LeaderElection({
    hosts: ha.endpoints,
    prefix: ha.prefix,
    id: ha.id,
    ttlSeconds: CONTROLLER_TTL_S,
    logger,
  });
  await election.start();
  const standing = (msg: RoleCommand): void => {
    if (msg.type === 'stop') void election.stop().finally(() => process.exit(0));
  };
  process.on('message', standing);
  logger.info('controller stands by for leadership', { id: ha.id });
  await election.campaign();
  process.off('message', standing);
  election.onDemoted = (why) => {
    logger.error('controller lost its leadership; exiting so that it never acts beside the new leader', {
      why,
    });
    process.exit(EXIT_DEMOTED);
  };
  const journal = new EtcdJournal({ hosts: ha.endpoints, prefix: ha.prefix });
  const restore = await journal.load();
  logger.info('controller leads', { id: ha.id, term: election.term, carries_on: restore !== undefined });
  return { election, journal, restore };
}

/**
 * How long a dead leading controller's lease lives, which is how long the deployment goes without one
 * (the dataplane forwards meanwhile). Shorter makes takeover quicker, and an etcd stall more likely to
 * demote a healthy leader (election.ts): with 2 s, a leader on a loaded 2-core machine, its etcd members on
 * the same cores, was demoted now and then within a second of leading.
 */
const CONTROLLER_TTL_S = 4;

/** The launcher that forked this process starts instances for the controller (LocalDeployment.add). */
function launcherProvisioner(): Provisioner {
  let ids = 0;
  const waiting = new Map<number, (reply: Extract<RoleCommand, { type: 'provisioned' }>) => void>();
  process.on('message', (msg: RoleCommand) => {
    if (msg.type === 'provisioned') waiting.get(msg.id)?.(msg);
  });
  return {
    add: (count, host) =>
      new Promise((resolve, reject) => {
        const id = ++ids;
        waiting.set(id, (reply) => {
          waiting.delete(id);
          if (reply.instances !== undefined) resolve(reply.instances);
          else
            reject(
              new NfsError(
                reply.code ?? ErrorCode.PROCESS,
                `instances: ${reply.error ?? 'the launcher failed'}`,
              ),
            );
        });
        const req: ProvisionRequest = {
          type: 'provision',
          id,
          count,
          ...(host === undefined ? {} : { host }),
        };
        process.send?.(req);
      }),
  };
}

/** The exit status of a controller that lost its leadership (another may lead now). */
export const EXIT_DEMOTED = 4;
