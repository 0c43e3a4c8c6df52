/**
 * `nfstate bench memory`: bytes of memory per flow for each NF, as a worker holds them: its flow-table
 * slot, the runtime's per-flow entry, the NF's state and the flow's share of global state. It pushes N
 * flows (default 100k) of P packets each through one FlowProcessor and divides the heap growth by N.
 * The baseline in the same run is the runtime alone (a stateless pass-through NF), so the NF's own
 * cost per flow is the difference.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ManualClock } from '../src/clock.js';
import { FlowProcessor } from '../src/nf/processor.js';
import { createNf } from '../src/nfs/index.js';
import { buildUdp } from '../src/packet/build.js';
import { LocalGlobalState } from '../src/state/global-local.js';
import type { NetworkFunction } from '../src/types.js';
import { Verdict } from '../src/types.js';
import { STAMP_HEADER_LENGTH, writeStampHeader } from '../src/wire/geneve.js';

export interface MemoryResult {
  flows: number;
  packets_per_flow: number;
  runtime_bytes_per_flow: number;
  results: { nf: string; bytes_per_flow: number; state_bytes_per_flow: number }[];
}

/** The runtime's own per-flow cost: an NF that keeps nothing. */
const passThrough: NetworkFunction<null> = {
  name: 'pass',
  initFlow: () => null,
  process: () => Verdict.FORWARD,
  releaseFlow: () => undefined,
  allocations: () => ({}),
  codec: {
    encodeFull: () => undefined,
    decodeFull: () => null,
    mark: () => 0,
    encodeDelta: () => undefined,
    applyDelta: () => undefined,
  },
};

function collectGarbage(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/** Heap that `flows` flows of `packets` packets each keep alive in one FlowProcessor, per flow. */
export function bytesPerFlow(
  nf: NetworkFunction<unknown>,
  global: LocalGlobalState,
  flows: number,
  packets: number,
): number {
  const gc = collectGarbage();
  const clock = new ManualClock();
  const p = new FlowProcessor(
    nf,
    global,
    { batchSize: 30, batchTimeoutMs: 1e9, maxHeld: 64, gapTimeoutMs: 1e9, flowIdleMs: 1e12 },
    () => undefined,
    clock,
  );
  const buf = new Uint8Array(256);
  const payload = new Uint8Array(64).fill(0x41);
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let seq = 1; seq <= packets; seq++) {
    for (let f = 0; f < flows; f++) {
      writeStampHeader(buf, 0, { vni: 1, flags: 0, epoch: 1, seq, timeMs: clock.now() });
      const n = buildUdp(buf, STAMP_HEADER_LENGTH, {
        srcIp: (0x0a000000 + f + 1) >>> 0,
        dstIp: 0xc633640a,
        srcPort: 1024 + (f % 50000),
        dstPort: 80,
        payload,
      });
      p.receive(buf, 0, STAMP_HEADER_LENGTH + n);
    }
  }
  p.flushBatches();
  gc();
  const after = process.memoryUsage().heapUsed;
  if (p.flows.size !== flows) throw new Error(`expected ${flows} flows, have ${p.flows.size}`);
  return (after - before) / flows;
}

export function runMemoryBench(o: {
  flows: number;
  packets: number;
  json: boolean;
  out: (line: string) => void;
}): MemoryResult {
  const runtime = bytesPerFlow(passThrough, new LocalGlobalState(), o.flows, o.packets);
  const results: MemoryResult['results'] = [];
  for (const type of ['nat', 'firewall', 'lb', 'ids']) {
    const global = new LocalGlobalState();
    const config =
      type === 'lb'
        ? { vip: '198.51.100.10', backends: ['10.1.0.1:80', '10.1.0.2:80', '10.1.0.3:80', '10.1.0.4:80'] }
        : {};
    const bytes = bytesPerFlow(createNf(type, config, global), global, o.flows, o.packets);
    results.push({
      nf: type,
      bytes_per_flow: Math.round(bytes),
      state_bytes_per_flow: Math.round(bytes - runtime),
    });
  }
  const result = {
    flows: o.flows,
    packets_per_flow: o.packets,
    runtime_bytes_per_flow: Math.round(runtime),
    results,
  };
  if (o.json) {
    o.out(JSON.stringify(result));
  } else {
    o.out(
      `memory per flow at ${o.flows} flows, ${o.packets} packets each (runtime alone: ${result.runtime_bytes_per_flow} B)`,
    );
    for (const r of results)
      o.out(
        `  ${r.nf.padEnd(9)} ${String(r.bytes_per_flow).padStart(6)} B/flow  (NF state and global: ${r.state_bytes_per_flow} B)`,
      );
  }
  return result;
}
