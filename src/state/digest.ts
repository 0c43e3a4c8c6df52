/**
 * What a run leaves behind, in a form two runs can compare: per flow, a digest of the NF's full state
 * encoding plus the allocations the flow holds; and the global state merged across every worker and
 * instance. The oracle produces the same shape from a sequential run.
 */
import { createHash } from 'node:crypto';
import type { GlobalSnapshot, NetworkFunction } from '../types.js';
import { ByteWriter } from './bytes.js';
import { CrdtGlobalState } from './global-crdt.js';

export interface FlowDigest {
  /** flowKeyString of the canonical key. */
  flow: string;
  /** Packets processed (the highest sequence number applied). */
  packets: number;
  /** Packets the NF forwarded (the rest it dropped by its own policy). */
  forwarded: number;
  digest: string;
  allocations: Record<string, number>;
  /** A chain's flow: the digest of each NF's part, by NF name (`digest` covers them all). */
  parts?: Record<string, string>;
}

export interface RunDigest {
  flows: FlowDigest[];
  global: GlobalSnapshot;
  /**
   * Eventual global state as CRDT replicas (base64 CrdtGlobalState encodings), one per worker; its
   * counters and sets are then left out of `global`, and compared as the join of every replica.
   */
  eventual?: string[];
}

const scratch = new ByteWriter(4096);

export function stateDigest(nf: NetworkFunction<unknown>, state: unknown): string {
  scratch.reset();
  nf.codec.encodeFull(state, scratch);
  return createHash('sha256').update(scratch.view()).digest('hex').slice(0, 32);
}

/** A flow's digest as FlowDigest carries it: the whole state's, and a chain's per NF. */
export function flowDigestOf(
  nf: NetworkFunction<unknown>,
  state: unknown,
): Pick<FlowDigest, 'digest' | 'parts'> {
  const parts = nf.parts?.(state);
  return {
    digest: stateDigest(nf, state),
    ...(parts === undefined
      ? {}
      : { parts: Object.fromEntries(parts.map((p) => [p.nf.name, stateDigest(p.nf, p.state)])) }),
  };
}

/**
 * Merges global snapshots from many workers: counters add, sets unite, pool allocations concatenate
 * (the caller checks them for uniqueness). Valid because every eventual value is commutative.
 */
export function mergeGlobal(parts: readonly GlobalSnapshot[]): GlobalSnapshot {
  const out: GlobalSnapshot = { pools: {}, counters: {}, sets: {} };
  for (const part of parts) {
    for (const [name, allocs] of Object.entries(part.pools)) (out.pools[name] ??= []).push(...allocs);
    for (const [name, values] of Object.entries(part.counters)) {
      const into = (out.counters[name] ??= {});
      for (const [key, v] of Object.entries(values)) into[key] = (into[key] ?? 0) + v;
    }
    for (const [name, values] of Object.entries(part.sets)) {
      const into = (out.sets[name] ??= {});
      for (const [key, members] of Object.entries(values)) {
        into[key] = [...new Set([...(into[key] ?? []), ...members])].sort((a, b) => a - b);
      }
    }
  }
  for (const allocs of Object.values(out.pools)) allocs.sort((a, b) => a.value - b.value);
  // A counter that went up and back down is the same as one never touched.
  for (const [name, values] of Object.entries(out.counters)) {
    out.counters[name] = Object.fromEntries(Object.entries(values).filter(([, v]) => v !== 0));
  }
  return out;
}

/**
 * The global state of a whole deployment from its instances' digests: pools and process-local values
 * merged (mergeGlobal), and eventual counters and sets as the join of every replica (digests that carry
 * `eventual`), which counts each update once however many replicas hold it.
 */
export function deploymentGlobal(digests: readonly RunDigest[]): GlobalSnapshot {
  const merged = mergeGlobal(digests.map((d) => d.global));
  const eventual = digests
    .flatMap((d) => d.eventual ?? [])
    .map((b) => new Uint8Array(Buffer.from(b, 'base64')));
  if (eventual.length === 0) return merged;
  const joined = CrdtGlobalState.joinSnapshots(eventual);
  return mergeGlobal([merged, { pools: {}, ...joined }]);
}

/**
 * Whether every worker of every instance holds the whole deployment's eventual global state (the join of all
 * of them): what the NFs read is the same everywhere once gossip has settled.
 */
export function eventualConverged(digests: readonly RunDigest[]): boolean {
  const all = digests.flatMap((d) => d.eventual ?? []).map((b) => new Uint8Array(Buffer.from(b, 'base64')));
  const whole = JSON.stringify(CrdtGlobalState.joinSnapshots(all));
  return all.every((e) => JSON.stringify(CrdtGlobalState.joinSnapshots([e])) === whole);
}
