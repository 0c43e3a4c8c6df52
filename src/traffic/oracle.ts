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
 * checks the allocations themselves: each pool value held by one live flow, the one the deployment's
 * table (its log) names; and each value one the oracle's NF takes (inside its pool, a configured backend)
 * or, for a decision the oracle can make itself (the NAT's inbound lookup), the one it makes.
 */
import { createHash } from 'node:crypto';
import { ManualClock } from '../clock.js';
import { FlowProcessor } from '../nf/processor.js';
import { createNf } from '../nfs/index.js';
import { NAT_INBOUND_DECISION } from '../nfs/nat.js';
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

/**
 * The allocations a deployment made, keyed by flow, for the oracle to take as given. The NAT's inbound
 * lookup is left out: it reads only who holds the addressed port, which the oracle knows in stamp order as
 * the switch did (every claim comes before the replies to it), so the oracle looks it up itself and the
 * comparison holds the deployment's answer against its own.
 */
export function givenAllocations(flows: readonly FlowDigest[]): Map<string, Record<string, number>> {
  const given = new Map<string, Record<string, number>>();
  for (const f of flows) {
    const taken = Object.entries(f.allocations).filter(([name]) => name !== NAT_INBOUND_DECISION);
    if (taken.length > 0) given.set(f.flow, Object.fromEntries(taken));
  }
  return given;
}

export interface CompareOptions {
  /**
   * Whether the run's pools are a log's table (`global.store` local or etcd; true when left out), which
   * names the holder of every value a live flow holds. Without a log (`none`) each worker lists only what it
   * handed out itself, and a flow restored after a failover is in no list: a value no list holds is then no
   * error, and the pools are left out of `globalMatches`.
   */
  log?: boolean;
}

export interface Comparison {
  matches: boolean;
  flows: number;
  mismatched: string[];
  missing: string[];
  extra: string[];
  /** Flows two instances hold at once. */
  twice: string[];
  /** Pool values two live flows hold at once, by their own state or as the deployment's table lists them. */
  duplicateAllocations: string[];
  /**
   * Allocations that fail a check: a flow's pool value that the table gives to another flow or (with a log)
   * to none, a table entry whose flow does not hold it, and a value the oracle, given it, would not take
   * (outside the pool, a backend the config lacks) or decides otherwise (the NAT's inbound lookup).
   */
  badAllocations: string[];
  globalMatches: boolean;
  /** What `globalMatches` compared: `pool <name>` (with a log), `counters <name>`, `sets <name>`. */
  globalCompared: string[];
  /** A chain: per NF, the flows whose part of the state differs from the oracle's (0 for every NF: all match). */
  byNf?: Record<string, number>;
}

/** Compares a deployment's digests with the oracle's. */
export function compareRuns(run: RunDigest, ref: RunDigest, { log = true }: CompareOptions = {}): Comparison {
  const mine = new Map(run.flows.map((f) => [f.flow, f]));
  const theirs = new Map(ref.flows.map((f) => [f.flow, f]));
  const mismatched: string[] = [];
  const missing: string[] = [];
  const badAllocations: string[] = [];
  let byNf: Record<string, number> | undefined;
  for (const [flow, r] of theirs) {
    const m = mine.get(flow);
    if (m === undefined) {
      missing.push(flow);
      continue;
    }
    if (m.digest !== r.digest || m.packets !== r.packets) mismatched.push(flow);
    // The oracle took every given value its NF accepts: any other differs here.
    for (const name of new Set([...Object.keys(m.allocations), ...Object.keys(r.allocations)])) {
      const v = m.allocations[name];
      const o = r.allocations[name];
      if (v !== o) badAllocations.push(`${flow}: ${name} ${v ?? 'none'} here, ${o ?? 'none'} in the oracle`);
    }
    if (r.parts === undefined) continue;
    byNf ??= {};
    for (const name of new Set([...Object.keys(r.parts), ...Object.keys(m.parts ?? {})]))
      byNf[name] = (byNf[name] ?? 0) + (m.parts?.[name] === r.parts[name] ? 0 : 1);
  }
  const extra = [...mine.keys()].filter((f) => !theirs.has(f));
  const seen = new Set<string>();
  const twice = run.flows.filter((f) => seen.has(f.flow) || !seen.add(f.flow)).map((f) => f.flow);
  const duplicateAllocations: string[] = [];
  for (const pool of new Set([...Object.keys(ref.global.pools), ...Object.keys(run.global.pools)])) {
    checkHolders(pool, run, log, duplicateAllocations, badAllocations);
  }
  const a = comparedGlobal(mergeGlobal([run.global]), log);
  const b = comparedGlobal(mergeGlobal([ref.global]), log);
  const globalCompared = (['pools', 'counters', 'sets'] as const).flatMap((kind) =>
    [...new Set([...Object.keys(a[kind]), ...Object.keys(b[kind])])]
      .sort()
      .map((name) => `${kind === 'pools' ? 'pool' : kind} ${name}`),
  );
  return {
    matches:
      mismatched.length === 0 &&
      missing.length === 0 &&
      extra.length === 0 &&
      twice.length === 0 &&
      duplicateAllocations.length === 0 &&
      badAllocations.length === 0,
    flows: theirs.size,
    mismatched,
    missing,
    extra,
    twice,
    duplicateAllocations,
    badAllocations,
    globalMatches: canonicalJson(a) === canonicalJson(b),
    globalCompared,
    ...(byNf === undefined ? {} : { byNf }),
  };
}

/**
 * One pool's values, as the flows' own states hold them and as the deployment's table lists them: each held
 * by one flow, and the table naming that flow. Every flow in the digests is live (an expired one is gone),
 * so two of them on one value hold it at once, whatever the table says.
 */
function checkHolders(pool: string, run: RunDigest, log: boolean, duplicates: string[], bad: string[]): void {
  const byState = new Map<number, Set<string>>();
  for (const f of run.flows) {
    const v = f.allocations[pool];
    if (v === undefined) continue;
    const flows = byState.get(v);
    if (flows === undefined) byState.set(v, new Set([f.flow]));
    else flows.add(f.flow);
  }
  const byTable = new Map<number, string[]>();
  for (const { value, owner } of run.global.pools[pool] ?? []) {
    const owners = byTable.get(value);
    if (owners === undefined) byTable.set(value, [owner]);
    else owners.push(owner);
  }
  for (const v of new Set([...byState.keys(), ...byTable.keys()])) {
    const holders = [...(byState.get(v) ?? [])];
    const listed = byTable.get(v) ?? [];
    if (holders.length > 1) duplicates.push(`${pool}=${v}: ${holders.join(' and ')}`);
    if (listed.length > 1) duplicates.push(`${pool}=${v}: ${listed.join(' and ')} in the table`);
    for (const flow of holders) {
      if (listed.length === 0 ? log : !listed.includes(flow)) {
        const names = listed.length === 0 ? 'no holder' : listed.join(' and ');
        bad.push(`${pool}=${v}: ${flow} holds it, the table names ${names}`);
      }
    }
    for (const owner of listed) {
      if (!holders.includes(owner))
        bad.push(`${pool}=${v}: the table names ${owner}, whose state does not hold it`);
    }
  }
}

/** One hash over every flow's digest and the global state: equal runs print equal hashes. */
export function runDigestHash(run: RunDigest): string {
  const flows = [...run.flows].sort((a, b) => (a.flow < b.flow ? -1 : a.flow > b.flow ? 1 : 0));
  return createHash('sha256')
    .update(canonicalJson([flows, mergeGlobal([run.global])]))
    .digest('hex')
    .slice(0, 32);
}

/**
 * What must be equal in a run's and the oracle's global state: order-independent values (counters, sets),
 * and with a log every pool's holders (each value's owner; pools with none left out).
 */
function comparedGlobal(g: GlobalSnapshot, log: boolean): GlobalSnapshot {
  const pools = log
    ? Object.fromEntries(Object.entries(g.pools).filter(([, allocs]) => allocs.length > 0))
    : {};
  return { pools, counters: g.counters, sets: g.sets };
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}
