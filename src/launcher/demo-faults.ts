/**
 * The faults the demo injects while traffic runs: instances killed, paused or failed by an operator, an etcd
 * member killed, the leading controller killed.
 */
import type { Generator } from '../traffic/generator.js';
import type { Logger } from '../types.js';
import type { LocalDeployment } from './local.js';
import type { EtcdCluster } from '../global/etcd-local.js';
import { controllerAnswers, failInstance, seeded, sleep, type InstanceFault } from './faults.js';
import { type FailoverSummary, percentile } from './demo-report.js';

/**
 * Kills (SIGKILL), pauses (SIGSTOP), then declares failed (POST /fail) random live instances at random
 * moments while the generator is between 20 % and 80 % done, one at a time (faults.ts).
 */
export async function faultsDuring(
  gen: Generator,
  total: number,
  options: { kill: number; pause: number; fail: number; seed: number },
  deployment: LocalDeployment,
  logger: Logger,
): Promise<Omit<FailoverSummary, 'fenced_output' | 'replays_dropped' | 'false_alarms'>> {
  const rand = seeded(options.seed + 7);
  const n = options.kill + options.pause + options.fail;
  const points = Array.from({ length: n }, () => Math.floor(total * (0.2 + 0.6 * rand()))).sort(
    (a, b) => a - b,
  );
  const each: InstanceFault[] = [];
  for (let i = 0; i < n; i++) {
    while (gen.sent < points[i]!) await sleep(2);
    const signal = i < options.kill ? 'SIGKILL' : i < options.kill + options.pause ? 'SIGSTOP' : 'fail';
    const fault = await failInstance(deployment, signal, rand, logger);
    if (fault === undefined) break;
    each.push(fault);
  }
  const done = each.filter((e) => e.recover_ms >= 0);
  const detect = done.map((e) => e.detect_ms).sort((a, b) => a - b);
  const recover = done.map((e) => e.recover_ms).sort((a, b) => a - b);
  return {
    count: done.length,
    detect_ms_p50: percentile(detect, 0.5),
    detect_ms_max: detect.at(-1) ?? 0,
    recover_ms_p50: percentile(recover, 0.5),
    recover_ms_max: recover.at(-1) ?? 0,
    replayed: each.reduce((a, e) => a + e.replayed, 0),
    gaps: each.reduce((a, e) => a + e.gaps, 0),
    woke_fenced: each.filter((e) => e.signal === 'SIGSTOP' && e.woke_fenced).length,
    each,
  };
}

/**
 * Kills `n` members of the demo's own etcd (n < 2 keeps its quorum) one after another while the flows start
 * (the trace's first `starting` packets: each claims its NAT port then), each a random one, the leader as
 * likely as any. Returns how many it killed.
 */
export async function etcdKillDuring(
  gen: Generator,
  starting: number,
  n: number,
  etcd: EtcdCluster | undefined,
  seed: number,
  logger: Logger,
): Promise<number> {
  if (etcd === undefined || n === 0) return 0;
  const rand = seeded(seed + 13);
  const members = Array.from({ length: etcd.clientUrls.length }, (_, i) => i);
  let killed = 0;
  for (let i = 0; i < n && members.length > 0; i++) {
    while (gen.sent < (starting * (i + 1)) / (n + 1)) await sleep(1);
    const [member] = members.splice(Math.floor(rand() * members.length), 1);
    await etcd.kill(member!);
    logger.info('demo: etcd member killed', { member });
    killed++;
  }
  return killed;
}

/**
 * SIGKILLs the leading controller 40 % into the run and waits until a controller answers at its address
 * again (the standby, once it leads and has loaded the journal). Returns when it killed it (ms since the
 * epoch) and how long that took, in ms, or -1.
 */
export async function controllerKillDuring(
  gen: Generator,
  total: number,
  deployment: LocalDeployment,
  logger: Logger,
): Promise<{ killedAt: number; takeoverMs: number }> {
  while (gen.sent < total * 0.4) await sleep(2);
  const killedAt = Date.now();
  deployment.controller?.child.kill('SIGKILL');
  logger.info('demo: controller killed');
  return { killedAt, takeoverMs: await controllerAnswers(deployment) };
}
