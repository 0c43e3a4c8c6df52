/**
 * The reference oracle: runs a trace through the NF logic in this process, sequentially, each flow's
 * packets exactly once and in stamp order, and digests the final per-flow and global state. Every
 * distributed run is compared against it.
 *
 *   const ref = runOracle({ type: 'nat', config: {} }, readStampLog('stamps.pcap'), given);
 *   compareRuns(deployment, ref); // { matches, mismatches, ... }
 *
 * Where a flow's state depends on an allocation from state shared by many flows (a NAT port, an LB
 * backend), the oracle takes the deployment's allocation as given (GivenGlobalState); the comparison then
 * checks the allocations themselves: unique where they must be, inside their pool.
 */
import { createHash } from 'node:crypto';
import { ManualClock } from '../clock.js';
import { FlowProcessor } from '../nf/processor.js';
import { createNf } from '../nfs/index.js';
import { flowKeyOf, flowKeyString } from '../packet/flow-key.js';
import { Packet } from '../packet/packet.js';
import { Stamper } from '../stamper/stamper.js';
import type { FlowDigest, RunDigest } from '../state/digest.js';
import { mergeGlobal } from '../state/digest.js';
import { GivenGlobalState } from '../state/global-local.js';
import type { GlobalSnapshot } from '../types.js';
import { DropReason } from '../types.js';
import { FLOW_HEADER_LENGTH, StampView, writeStampHeader } from '../wire/geneve.js';
import { ipv4Payload, readPcap } from './pcap.js';

export interface TracePacket {
  /** An IPv4 packet. */
  data: Uint8Array;
  /** Its stamp (ingress) time in ms. */
  timeMs: number;
}

export interface OracleResult extends RunDigest {
  /**
   * Packets the NF forwarded, per flow as it leaves the NF (after any rewrite, e.g. NAT), which is how
   * the sink sees and counts it.
   */
  forwarded: Map<string, number>;
  packets: number;
}

/** The IPv4 packets of a pcap file with their capture times, in file order. */
export function* readTrace(path: string): Generator<TracePacket> {
  const file = readPcap(path);
  for (const rec of file.records) {
    const data = ipv4Payload(file.linkType, rec.data);
    if (data !== undefined) yield { data, timeMs: rec.timeMs };
  }
}

export function runOracle(
  nf: { type: string; config: Record<string, unknown> },
  trace: Iterable<TracePacket>,
  given: Map<string, Record<string, number>> = new Map(),
): OracleResult {
  const global = new GivenGlobalState(given);
  const fn = createNf(nf.type, nf.config, global);
  const clock = new ManualClock();
  const forwarded = new Map<string, number>();
  const out = new StampView();
  const outPkt = new Packet();
  const processor = new FlowProcessor(
    fn,
    global,
    // Batching does not change state; idle expiry follows the trace's own time.
    { batchSize: 30, batchTimeoutMs: 1e12, maxHeld: 1, gapTimeoutMs: 1e12, flowIdleMs: 1e12 },
    (b, offset, length) => {
      out.parse(b, offset, length);
      outPkt.parse(b, out.innerOffset, out.innerLength);
      const flow = flowKeyString(flowKeyOf(outPkt));
      forwarded.set(flow, (forwarded.get(flow) ?? 0) + 1);
    },
    clock,
  );
  const stamper = new Stamper({ flowIdleMs: 1e12 });
  const pkt = new Packet();
  const buf = new Uint8Array(FLOW_HEADER_LENGTH + 65536);
  let packets = 0;
  for (const p of trace) {
    if (pkt.parse(p.data, 0, p.data.length) !== DropReason.NONE) continue;
    // The stamp time goes through the same header encoding the deployment's stamps did.
    const timeMs = Math.round(p.timeMs * 1000) / 1000;
    // A reply to a translated address is part of its connection, as the switch found it (switch/replies.ts).
    const owner = fn.replyOwner?.(pkt) ?? undefined;
    const seq = stamper.next(owner ?? pkt, timeMs);
    const h = writeStampHeader(buf, 0, { vni: 0, flags: 0, epoch: 0, seq, timeMs }, owner);
    buf.set(p.data, h);
    clock.set(timeMs);
    processor.receive(buf, 0, h + p.data.length);
    packets++;
  }
  processor.flushBatches();
  return { ...processor.digest(), forwarded, packets };
}

/** The allocations a deployment made, keyed by flow, for the oracle to take as given. */
export function givenAllocations(flows: readonly FlowDigest[]): Map<string, Record<string, number>> {
  const given = new Map<string, Record<string, number>>();
  for (const f of flows) if (Object.keys(f.allocations).length > 0) given.set(f.flow, f.allocations);
  return given;
}

export interface Comparison {
  matches: boolean;
  flows: number;
  mismatched: string[];
  missing: string[];
  extra: string[];
  /** Flows two instances hold at once. */
  twice: string[];
  /** Allocations held by two flows at once. */
  duplicateAllocations: string[];
  globalMatches: boolean;
  /** A chain: per NF, the flows whose part of the state differs from the oracle's (0 for every NF: all match). */
  byNf?: Record<string, number>;
}

/** Compares a deployment's digests with the oracle's. */
export function compareRuns(run: RunDigest, ref: RunDigest): Comparison {
  const mine = new Map(run.flows.map((f) => [f.flow, f]));
  const theirs = new Map(ref.flows.map((f) => [f.flow, f]));
  const mismatched: string[] = [];
  const missing: string[] = [];
  let byNf: Record<string, number> | undefined;
  for (const [flow, r] of theirs) {
    const m = mine.get(flow);
    if (m === undefined) {
      missing.push(flow);
      continue;
    }
    if (m.digest !== r.digest || m.packets !== r.packets) mismatched.push(flow);
    if (r.parts === undefined) continue;
    byNf ??= {};
    for (const name of new Set([...Object.keys(r.parts), ...Object.keys(m.parts ?? {})]))
      byNf[name] = (byNf[name] ?? 0) + (m.parts?.[name] === r.parts[name] ? 0 : 1);
  }
  const extra = [...mine.keys()].filter((f) => !theirs.has(f));
  const seen = new Set<string>();
  const twice = run.flows.filter((f) => seen.has(f.flow) || !seen.add(f.flow)).map((f) => f.flow);
  const duplicateAllocations: string[] = [];
  for (const [pool, allocs] of Object.entries(run.global.pools)) {
    const seen = new Map<number, string>();
    for (const a of allocs) {
      const other = seen.get(a.value);
      if (other !== undefined) duplicateAllocations.push(`${pool}=${a.value}: ${other} and ${a.owner}`);
      seen.set(a.value, a.owner);
    }
  }
  const globalMatches = sameGlobal(mergeGlobal([run.global]), mergeGlobal([ref.global]));
  return {
    matches:
      mismatched.length === 0 &&
      missing.length === 0 &&
      extra.length === 0 &&
      twice.length === 0 &&
      duplicateAllocations.length === 0,
    flows: theirs.size,
    mismatched,
    missing,
    extra,
    twice,
    duplicateAllocations,
    globalMatches,
    ...(byNf === undefined ? {} : { byNf }),
  };
}

/** One hash over every flow's digest and the global state: equal runs print equal hashes. */
export function runDigestHash(run: RunDigest): string {
  const flows = [...run.flows].sort((a, b) => (a.flow < b.flow ? -1 : a.flow > b.flow ? 1 : 0));
  return createHash('sha256')
    .update(canonicalJson([flows, mergeGlobal([run.global])]))
    .digest('hex')
    .slice(0, 32);
}

/** Order-independent global values (counters, sets) must be equal; pools are checked per allocation. */
function sameGlobal(a: GlobalSnapshot, b: GlobalSnapshot): boolean {
  return canonicalJson([a.counters, a.sets]) === canonicalJson([b.counters, b.sets]);
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}
