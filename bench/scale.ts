/**
 * The scale benchmark: how one NF instance's throughput and memory per flow change with the number of
 * concurrent flows, from a thousand to a million.
 *
 *   const r = await runScaleBench({ nf: 'firewall', flows: [...SCALE_FLOWS.quick], quick: true });
 *   r.points[1].ratio            // at 10k flows: the instance's pps / the Node relay's pps, same packets
 *   r.points[1].bytes_per_flow   // heap each of those flows keeps alive in a worker
 *
 * Each point N is measured as bench dataplane measures its points (bench/dataplane.ts): native/driver.c
 * drives a closed loop with the same window, warm-up and measured interval, through a bare Node relay
 * and then through one NF instance with one worker thread, started as `role nf` exactly as bench
 * dataplane starts it. Only the packets differ: N flows instead of 1024.
 *
 *   point N:  memory per flow (in this process) ─► packets file for N ─► node relay ─► NF instance
 *
 * Packets per flow. The packets file holds R rounds of one packet per flow, flows round-robin, and the
 * driver sends it over and over, re-stamping sequence numbers on each pass. R = 65536 / N (at least 1)
 * keeps the file the size bench dataplane's is (1024 flows × 64) up to 65536 flows, and one packet
 * per flow beyond: 130 MB at a million flows, the least that still names every flow. Packets per flow
 * in the measured interval then come from the passes, not from the file: each flow gets
 * pps × seconds / N of them (a few hundred at 1k flows, under one at 1M).
 *
 * Steady state. An instance is in steady state at N flows once all N exist: every packet then finds
 * its flow in an N-entry table, and none pays for creating one. At 1M flows one pass over the flows
 * outlasts any fixed warm-up, so the NF's warm-up also lasts until N packets are back: every flow has
 * been through the instance once, and the table has made its last growth. The relay keeps no state per
 * flow and warms up for the fixed time only. After the point the bench reads the instance's counters:
 * it must hold exactly N flows, have created N (none expired and came back) and dropped nothing, or
 * the point fails, since its figure would not be that of N concurrent flows.
 *
 * Memory per flow is bench memory's measure (bench/memory.ts) at the same N, with the instance's NF
 * config: N flows pushed through a FlowProcessor in this process, heap growth between two forced
 * collections, divided by N. That counts exactly what the flows keep alive: table slots, the runtime's
 * entry, NF state and the flow's share of global state. The instance's RSS would add garbage not yet
 * collected, V8's headroom and buffers that do not grow with flows, all of which V8 returns lazily:
 * per flow, that swamps the figure at 1k flows and blurs it at 1M. The instance keeps nothing per flow
 * outside its worker's processor when it has no cluster, so the processor is all of it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, NfsError } from '../src/errors.js';
import { metricSum } from '../src/metrics.js';
import { parseNatConfig } from '../src/nfs/nat.js';
import { createNf } from '../src/nfs/index.js';
import { LocalGlobalState } from '../src/state/global-local.js';
import type { NfType } from './dataplane.js';
import {
  buildC,
  CDriver,
  Children,
  FLOWS,
  FULL_SECONDS,
  FULL_WARMUP_SECONDS,
  locate,
  message,
  nfSpec,
  PacketRing,
  QUICK_SECONDS,
  QUICK_WARMUP_SECONDS,
  RING_PACKETS_PER_FLOW,
  startNf,
  startNodeRelay,
} from './dataplane.js';
import { bytesPerFlow } from './memory.js';

export interface ScaleOptions {
  nf: NfType;
  /** Concurrent flows at each point, in the order measured. */
  flows: readonly number[];
  /** bench dataplane's quick timing: 0.5 s warm-up (or one pass over the flows), 2 s measured. */
  quick: boolean;
  /** Told what the run starts on next: a full run takes minutes. */
  step?: (what: string) => void;
}

export interface ScalePoint {
  flows: number;
  throughput_pps: number;
  /** The bare Node relay, with this point's packets, just before the instance. */
  relay_pps: number;
  /** throughput_pps / relay_pps. */
  ratio: number;
  bytes_per_flow: number;
  /** Packets sent to the instance (warm-up included) that never came back. */
  lost: number;
}

export const SCALE_FLOWS = {
  full: [1e3, 1e4, 1e5, 1e6],
  quick: [1e3, 1e4],
} as const satisfies Record<string, readonly number[]>;

/** One NF instance with one worker: per-flow cost is what grows with N, not the parallelism. */
const THREADS = 1;
/** The packets file's size, in packets, while flows are fewer: bench dataplane's. */
const FILE_PACKETS = FLOWS * RING_PACKETS_PER_FLOW;
/** Packets per flow for the memory measure: bench memory's default. */
const MEMORY_PACKETS = 3;

export async function runScaleBench(
  o: ScaleOptions,
): Promise<{ nf: string; driver: string; points: ScalePoint[] }> {
  const step = o.step ?? (() => undefined);
  const seconds = o.quick ? QUICK_SECONDS : FULL_SECONDS;
  const warmupSeconds = o.quick ? QUICK_WARMUP_SECONDS : FULL_WARMUP_SECONDS;
  const spec = nfSpec(o.nf, THREADS, 0);
  // The first flows must see their second packet before they idle out, so one pass has half that.
  const passLimitMs = spec.processor.flowIdleMs / 2;
  capacityCheck(o.nf, spec.nf.config, o.flows);
  const cli = locate('../src/cli/main.js');
  const relayScript = locate('./node-relay.js');
  if (cli === undefined || relayScript === undefined)
    throw new Error('scale bench: src/cli/main.js or node-relay.js not found next to this module');

  const children = new Children();
  const dir = mkdtempSync(join(tmpdir(), 'nfstate-scale-'));
  try {
    // A Node driver caps every point near the Node relay's rate, so its ratios would say nothing.
    const binary = await buildC(children, 'driver', dir, ['-pthread']).catch((err: unknown) => {
      throw new Error(`scale bench needs the C driver: ${message(err)}`);
    });
    const points: ScalePoint[] = [];
    for (const n of o.flows) {
      step(`${n} flows: memory per flow`);
      const global = new LocalGlobalState();
      const bytes = bytesPerFlow(createNf(o.nf, spec.nf.config, global), global, n, MEMORY_PACKETS);

      step(`${n} flows: packets`);
      const file = join(dir, `packets-${n}.bin`);
      writeFileSync(file, new PacketRing(n, Math.max(1, Math.floor(FILE_PACKETS / n))).records());

      step(`${n} flows: node relay`);
      const relay = await new CDriver(children, binary, file, seconds, warmupSeconds, 0, n).run((egress) =>
        startNodeRelay(children, relayScript, egress),
      );

      step(`${n} flows: ${o.nf}`);
      let held: string | Error = new Error('the instance was never asked');
      const load = await new CDriver(children, binary, file, seconds, warmupSeconds, 0, n, {
        packets: n,
        limitMs: passLimitMs,
      }).run(async (egress) => {
        const hop = await startNf(children, cli, dir, { ...nfSpec(o.nf, THREADS, egress), id: `scale-${n}` });
        return {
          port: hop.port,
          stop: async () => {
            held =
              hop.admin === undefined
                ? new Error('it announced no admin port')
                : await fetch(`http://${spec.host}:${hop.admin}/metrics`).then(
                    (r) => r.text(),
                    (err: unknown) => new Error(message(err)),
                  );
            await hop.stop();
          },
        };
      });
      checkHeld(o.nf, n, held);
      rmSync(file);
      points.push({
        flows: n,
        throughput_pps: Math.round(load.pps),
        relay_pps: Math.round(relay.pps),
        ratio: relay.pps > 0 ? Math.round((load.pps / relay.pps) * 1000) / 1000 : 0,
        bytes_per_flow: Math.round(bytes),
        lost: load.lost,
      });
    }
    return { nf: o.nf, driver: 'c', points };
  } finally {
    children.killAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * NAT gives each flow a port of its one public address, and all the trace's flows go to one service:
 * past the pool's size, flows are rejected and their packets dropped, so there is no throughput at N
 * flows to measure. Refused before the run rather than found after minutes of it.
 */
function capacityCheck(nf: NfType, config: Record<string, unknown>, flows: readonly number[]): void {
  if (nf !== 'nat') return;
  const c = parseNatConfig(config);
  const ports = c.portLast - c.portFirst + 1;
  const over = flows.filter((n) => n > ports);
  if (over.length > 0)
    throw new NfsError(
      ErrorCode.USAGE,
      `scale bench: nat holds at most ${ports} concurrent flows (one public address, ports ` +
        `${c.portFirst}-${c.portLast}); it cannot be measured at ${over.join(', ')} flows: use firewall, lb or ids`,
    );
}

/** Fails the point unless the instance ended holding exactly the N flows it was sent. */
function checkHeld(nf: NfType, n: number, scrape: string | Error): void {
  if (scrape instanceof Error)
    throw new Error(`scale bench: ${nf} at ${n} flows: no metrics: ${scrape.message}`);
  const flows = metricSum(scrape, 'nfstate_nf_flows');
  const created = metricSum(scrape, 'nfstate_nf_flows_created_total');
  const dropped =
    metricSum(scrape, 'nfstate_nf_dropped_total') + metricSum(scrape, 'nfstate_nf_nf_dropped_total');
  if (flows !== n || created !== n || dropped !== 0)
    throw new Error(
      `scale bench: ${nf} at ${n} flows: the instance held ${flows} flows, created ${created} and ` +
        `dropped ${dropped} packets: not a steady state of ${n} flows`,
    );
}
