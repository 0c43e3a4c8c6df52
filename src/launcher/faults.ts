/**
 * Faults a launcher injects into a running local deployment, and how it tells that the deployment got
 * over them: an NF instance killed (SIGKILL), paused (SIGSTOP, woken once failed over) or declared failed
 * while it runs (POST /fail, a false alarm), and a controller that answers again after its leader died.
 * The demo's `--kill`/`--pause`/`--fail` and `nfstate chaos` both use them.
 *
 *   const r = await failInstance(deployment, 'SIGKILL', rand, logger);
 *   r?.error;       // undefined: failed over, replaced, and (paused or declared) exited fenced
 */
import { round2, wallClock } from '../clock.js';
import type { FailoverRecord, FailoverStep } from '../controller/records.js';
import type { Logger } from '../types.js';
import type { LocalDeployment } from './local.js';
import { EXIT_FENCED } from './roles.js';

export type InstanceSignal = 'SIGKILL' | 'SIGSTOP' | 'fail';

/** One instance fault, as the controller's failover record tells it. */
export interface InstanceFault {
  id: string;
  signal: InstanceSignal;
  successor: string | null;
  replacement: string | null;
  /** From the fault to the declaration, and to the successor's takeover (-1: none). */
  detect_ms: number;
  recover_ms: number;
  /** Each step of the failover, as the controller timed it (see FailoverRecord.steps_ms). */
  steps_ms: Partial<Record<FailoverStep, number>>;
  flows: number;
  replayed: number;
  gaps: number;
  /** Paused or declared failed while it ran: it exited as fenced. */
  woke_fenced: boolean;
  error?: string;
}

/** How long a failover, and a fenced instance's exit, may take before the fault counts as not got over. */
export const FAILOVER_WAIT_MS = 15_000;
const CONTROLLER_TAKEOVER_WAIT_MS = 30_000;

/** xorshift32 in [0, 1): the same victims, moves and schedules for the same seed. */
export function seeded(seed: number): () => number {
  let x = (seed * 0x9e3779b1) >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Injects `signal` into a live instance that `random` picks among those with a live cluster mate (one
 * alone in its cluster has no replica anywhere, and its failure loses its flows' state by design), then
 * waits until the controller has failed it over and its replacement has joined. A paused instance is
 * woken once failed over; it, and one declared failed while it ran, must then exit on its own, fenced.
 * Undefined when no instance has a live mate.
 */
export async function failInstance(
  deployment: LocalDeployment,
  signal: InstanceSignal,
  random: () => number,
  logger: Logger,
): Promise<InstanceFault | undefined> {
  const { api } = deployment;
  const controller = deployment.controllerAdminPort;
  const instances = (
    (await api(controller, '/instances')) as unknown as {
      id: string;
      live: boolean;
      cluster: string | null;
    }[]
  ).filter((x) => x.live);
  const live = instances
    .filter((x) => instances.some((m) => m.id !== x.id && m.cluster !== null && m.cluster === x.cluster))
    .map((x) => x.id);
  if (live.length < 2) return undefined;
  const victim = live[Math.floor(random() * live.length)]!;
  const at = wallClock.now();
  if (signal === 'fail') await api(controller, '/fail', { id: victim });
  else deployment.signal(victim, signal);
  logger.info('instance signalled', { id: victim, signal });
  let record: FailoverRecord | undefined;
  const until = Date.now() + FAILOVER_WAIT_MS;
  while (Date.now() < until) {
    const all = (await api(controller, '/failovers')) as unknown as FailoverRecord[];
    record = all.find((r) => r.id === victim);
    if (record !== undefined && (record.replacement !== null || record.error !== undefined)) break;
    await sleep(20);
  }
  let fencedExit: boolean | undefined;
  if (signal !== 'SIGKILL') {
    if (signal === 'SIGSTOP') deployment.signal(victim, 'SIGCONT');
    const woken = Date.now() + FAILOVER_WAIT_MS;
    const p = deployment.instance(victim);
    while (p?.exited === false && Date.now() < woken) await sleep(20);
    fencedExit = p?.exitCode === EXIT_FENCED;
  }
  return {
    id: victim,
    signal,
    successor: record?.successor ?? null,
    replacement: record?.replacement ?? null,
    detect_ms: record === undefined ? -1 : round2(record.declared_at - at),
    recover_ms: record === undefined || record.took_over_at === 0 ? -1 : round2(record.took_over_at - at),
    steps_ms: record?.steps_ms ?? {},
    flows: record?.flows ?? 0,
    replayed: record?.replayed ?? 0,
    gaps: record?.gaps ?? 0,
    woke_fenced: fencedExit === true,
    ...(record === undefined
      ? { error: `not failed over within ${FAILOVER_WAIT_MS} ms` }
      : record.error !== undefined
        ? { error: record.error }
        : fencedExit === false
          ? { error: 'failed over, but did not exit fenced' }
          : record.reconfigure_error !== undefined
            ? { error: `failed over, but its cluster was not reconfigured: ${record.reconfigure_error}` }
            : {}),
  };
}

/** How long until a controller answers at the deployment's controller port (-1: none did in 30 s). */
export async function controllerAnswers(deployment: LocalDeployment): Promise<number> {
  const at = Date.now();
  while (Date.now() - at < CONTROLLER_TAKEOVER_WAIT_MS) {
    const up = await deployment.api(deployment.controllerAdminPort, '/instances', undefined, 500).then(
      () => true,
      () => false,
    );
    if (up) return Date.now() - at;
    await sleep(20);
  }
  return -1;
}
