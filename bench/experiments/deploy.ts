/**
 * One point of an experiment as a whole deployment: `nfstate demo` run in this process with the point's
 * topology and traffic, so that every figure comes with the demo's own checks (nothing lost or reordered,
 * state equal to the oracle's). The figures are what the thesis plots: throughput in bytes/s of inner
 * packets, latency in ms per packet.
 */
import type { DemoOptions, DemoRun, DemoSummary } from '../../src/launcher/demo-report.js';
import { DEMO_NF_CONFIG, runDemo } from '../../src/launcher/demo.js';
import { parseTopology } from '../../src/launcher/config.js';
import { silentLogger } from '../../src/log.js';
import { DEFAULT_TRACE } from '../../src/traffic/trace.js';
import { DEFAULT_WINDOW } from '../../src/traffic/generator.js';
import { OVS_WINDOW } from '../../src/switch/ovs.js';
import type { NfType } from '../dataplane.js';
import type { Mode } from './harness.js';

export interface DeployPoint {
  nf: NfType;
  clusters: number;
  perCluster: number;
  threads?: number;
  batch?: number;
  /** A batch also closes this long after its first packet (the deployment's default when absent). */
  batchTimeoutMs?: number;
  replication?: 'cluster' | 'all' | 'off';
  /** The load-balancing unit (off unless asked: it would move flows on its own in every experiment). */
  lb?: boolean;
  skew?: number;
  flows: number;
  /** Packets in all, spread evenly over the flows. */
  packets: number;
  /** Packets per second; 0 = as fast as the deployment drains. */
  rate: number;
  heartbeatMs?: number;
  /** What routes the traffic (the built-in switch unless asked). */
  switch?: 'builtin' | 'ovs';
  /** Packets in flight when saturated (the generator's default, or the bridge's with OVS). */
  window?: number;
  moves?: number;
  kill?: number;
  pause?: number;
  during?: (run: DemoRun) => Promise<void>;
}

/**
 * Payload bytes: the thesis's throughput, 4420 bytes/s at 100 packets/s, is 44 bytes per packet, which an
 * IPv4/UDP packet with 16 bytes of payload has (20 + 8 + 16).
 */
export const PAYLOAD = 16;
const INNER_HEADERS = 28;
export const PACKET_BYTES = INNER_HEADERS + PAYLOAD;

/**
 * The deployment's shape: the experiment's own, or 2 clusters of 2 in a quick run, which starts a fraction
 * of the processes and still has moves inside and across clusters.
 */
export function shape(
  mode: Mode,
  clusters: number,
  perCluster: number,
): { clusters: number; perCluster: number } {
  return mode === 'quick' ? { clusters: 2, perCluster: 2 } : { clusters, perCluster };
}

/**
 * A batch timer so long that batches close when full, as the thesis's did (they had no timer). At its
 * rates a flow takes seconds to fill a batch, and the deployment's default timer (50 ms) would close
 * nearly every batch after one packet, whatever the batch size.
 */
export const FULL_BATCHES_MS = 60_000;

export async function deploy(p: DeployPoint): Promise<DemoSummary> {
  const topology = parseTopology({
    nf: { type: p.nf, config: DEMO_NF_CONFIG[p.nf] ?? {} },
    clusters: p.clusters,
    perCluster: p.perCluster,
    threads: p.threads ?? 2,
    batch: {
      size: p.batch ?? 30,
      ...(p.batchTimeoutMs === undefined ? {} : { timeoutMs: p.batchTimeoutMs }),
    },
    replication: p.replication ?? 'cluster',
    spareInstances: 1 + (p.kill ?? 0) + (p.pause ?? 0),
    lb: { enabled: p.lb ?? false },
    ...(p.heartbeatMs === undefined ? {} : { failure: { heartbeatMs: p.heartbeatMs } }),
  });
  const options: DemoOptions = {
    trace: {
      ...DEFAULT_TRACE,
      flows: p.flows,
      packets: Math.max(1, Math.round(p.packets / p.flows)),
      payload: PAYLOAD,
      skew: p.skew ?? 0,
    },
    rate: p.rate,
    ...(p.switch === undefined ? {} : { switch: p.switch }),
    window: p.window ?? (p.switch === 'ovs' ? OVS_WINDOW : DEFAULT_WINDOW),
    keep: false,
    moves: p.moves ?? 0,
    guarantee: 'order-preserving',
    moveBatch: 1,
    drain: 0,
    add: 0,
    kill: p.kill ?? 0,
    pause: p.pause ?? 0,
    fail: 0,
    ownEtcd: false,
    etcdKill: 0,
    killController: false,
    ...(p.during === undefined ? {} : { during: p.during }),
  };
  return runDemo(topology, options, silentLogger);
}

/** The figures every deployment point reports, with the run's own checks. */
export function figures(s: DemoSummary): Record<string, number> {
  return {
    throughput_pps: s.throughput_pps,
    throughput_Bps: s.throughput_pps * PACKET_BYTES,
    latency_ms_mean: s.latency_us.mean / 1000,
    latency_ms_p50: s.latency_us.p50 / 1000,
    latency_ms_p99: s.latency_us.p99 / 1000,
    replication_Bps: s.replication.bytes_sent / (s.duration_ms / 1000),
    sent: s.sent,
    lost: s.lost,
    reordered: s.reordered,
    duplicated: s.duplicated,
    state_ok: s.state_matches_oracle && s.replication.replicas_match ? 1 : 0,
  };
}
