/**
 * The fault schedule of a chaos run: which faults, in which order, when. It depends only on the seed, the
 * duration and the kinds allowed, so a run that went wrong is replayed with the same schedule.
 *
 *   planFaults({ durationMs: 60_000, seed: 7, kinds: DEFAULT_KINDS });
 *   // [{ at_ms: 6_120, kind: 'etcd-delay' }, { at_ms: 12_400, kind: 'kill' }, …]
 *
 * Faults come one after another: the runner waits until the deployment got over one (a failover done,
 * its replacement joined, a partition healed) before it injects the next, so each is judged on its own.
 */
import { seeded } from '../launcher/faults.js';

/**
 * What a chaos run can do to a deployment:
 * - `kill`, `pause`, `fail`: an NF instance SIGKILLed, SIGSTOPped until failed over, or declared failed
 *   while it runs (a false alarm);
 * - `controller-kill`, `controller-pause`: a controller process (the leader or a standby) SIGKILLed, or
 *   SIGSTOPped for a while (a leader loses its lease, and must step down when woken);
 * - `etcd-kill`, `etcd-pause`: one etcd member SIGKILLed (then restarted) or paused for a while;
 * - `ingress-pause`, `sink-pause`: the ingress or the sink SIGSTOPped for a moment shorter than what their
 *   sockets' buffers hold;
 * - `replication-loss`: a share of the replication traffic dropped for a while (nftables);
 * - `partition`: one instance cut off from its cluster mates' replication traffic for a while (nftables);
 * - `etcd-delay`: every etcd round trip delayed for a while (a userspace proxy: this kernel has no netem);
 * - `ingress-kill`: the ingress SIGKILLed. It is one process, started once: the deployment does not get
 *   over it (docs/architecture.md §11), so it is never planned unless asked for. (The sink is one process
 *   too, but the run's checks read its report, so its death is not a fault a run can judge.)
 */
export const FAULT_KINDS = [
  'kill',
  'pause',
  'fail',
  'controller-kill',
  'controller-pause',
  'etcd-kill',
  'etcd-pause',
  'ingress-pause',
  'sink-pause',
  'replication-loss',
  'partition',
  'etcd-delay',
  'ingress-kill',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** Faults that need nftables (root): left out where it is missing, and the run says so. */
export const NFTABLES_KINDS: readonly FaultKind[] = ['replication-loss', 'partition'];

/** Every kind a deployment must get over. */
export const DEFAULT_KINDS: readonly FaultKind[] = FAULT_KINDS.filter((k) => k !== 'ingress-kill');

export interface PlannedFault {
  /** Since the traffic started. */
  at_ms: number;
  kind: FaultKind;
}

/** One fault per this much of the run, at least one: a minute sees every kind a deployment must get over. */
const MS_PER_FAULT = 5000;
/** Faults fall between these shares of the run: the traffic is flowing before, and drains after. */
const FIRST = 0.1;
const LAST = 0.8;

export function planFaults(o: {
  durationMs: number;
  seed: number;
  kinds: readonly FaultKind[];
  count?: number;
}): PlannedFault[] {
  if (o.kinds.length === 0) return [];
  const random = seeded(o.seed);
  const count = o.count ?? Math.max(1, Math.floor(o.durationMs / MS_PER_FAULT));
  // Every kind once before any twice, each round in a shuffled order (Fisher–Yates).
  const kinds: FaultKind[] = [];
  while (kinds.length < count) {
    const round = [...o.kinds];
    for (let i = round.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [round[i], round[j]] = [round[j]!, round[i]!];
    }
    kinds.push(...round);
  }
  const slot = ((LAST - FIRST) * o.durationMs) / count;
  return kinds.slice(0, count).map((kind, i) => ({
    at_ms: Math.round(FIRST * o.durationMs + slot * (i + random() * 0.5)),
    kind,
  }));
}
