/**
 * Global state whose eventual parts are CRDTs (crdt/index.ts, DESIGN.md §7): every instance updates
 * its own replica of the shared counters and sets at packet rate, and the replicas converge by
 * exchanging deltas, whatever their order or duplication. Pools and `decide` need one owner per value;
 * they stay with the strongly consistent state given to the constructor.
 *
 *   const global = new CrdtGlobalState(new LocalGlobalState(), { replica: 3 });
 *   const bytes = global.counters('ids.bytes');          // resolved once, as NFs do
 *   global.bind(writerOf(flowKey, incarnation), seq);    // before the NF call for packet `seq`
 *   bytes.add(srcIp, length);                            // counted once, even when the packet is replayed
 *   global.unbind();
 *   peer.merge(global.takeDelta());                      // in the replication frame
 *
 * Counting exactly once. A PN-counter entry belongs to a writer (a flow incarnation) and skips an
 * update whose id is not above the last one it counted, so a replayed packet counts once. The NF API's
 * `add(key, delta)` names neither writer nor id, so the runtime binds them around each NF call:
 *   - a packet: bind(writer, seq) once before `initFlow` and `process` of that packet (both run
 *     under the packet's seq, so one bind covers both), unbind() after;
 *   - a release (`releaseFlow`, outside any packet: lb's −1 per backend): bind(writer, last seq + 1),
 *     the `expected` seq the processor's context already carries at expiry. No packet of this
 *     incarnation ever takes that seq, since the flow ends there; and a successor that replays the
 *     flow and then releases it binds the same pair, so the −1 counts once, wherever it ran first.
 * An add's id is seq × 256 + i, where i numbers the packet's adds to that map (0, 1, …): a packet may add
 * to one key twice (the NF API allows it) and both count, since ids still grow from one add to the
 * next, while a replay numbers the same adds the same way (processing is deterministic) and is skipped.
 * Hence at most 256 adds to one map per packet, and seq below 2^45. An add outside a bind throws
 * NFS_ERR_USAGE: charging it to whichever packet ran last would miscount under replay.
 *
 * Sets are OR-sets: membership is idempotent, so their adds need no binding.
 *
 * Encoding (`takeDelta`, `encodeFull`, `merge`), big endian:
 *
 *   +---------+-------+----------------------------------------------+
 *   | version | count | count × map: counters, then sets, by name    |
 *   |   u8    |  u32  |                                              |
 *   +---------+-------+----------------------------------------------+
 *   map:
 *   +----------+-------+--------+-----------------------------------------------+
 *   | name len | name  | length | the map's CRDT encoding (crdt/codec.ts):      |
 *   |   u16    | UTF-8 |  u32   | u8 kind | u8 version | body                   |
 *   +----------+-------+--------+-----------------------------------------------+
 *
 * The CRDT's kind says which family a map is in: 1 (PN-counter map) `counters(name)`, 3 (OR-set map)
 * `sets(name)`, so a counters map and a sets map may share a name. A delta holds only the maps this
 * replica changed since the last one; no change at all is zero bytes, which `merge` accepts as nothing.
 * `merge` decodes everything before it joins anything, so bad bytes (NFS_ERR_STATE) change nothing.
 *
 * Comparing a deployment with the oracle: `joinSnapshots` joins every replica's full encoding. Summing
 * the replicas' values instead would count an entry once per replica that holds it, and replicas hold
 * each other's entries (that is what the deltas are for), and a failed-over flow's entries are in both
 * the failed replica's last state and its successor's. The join takes each (key, writer) entry once, at
 * its latest point.
 */
import { ErrorCode, NfsError } from '../errors.js';
import type {
  FlowKey,
  GlobalSnapshot,
  GlobalState,
  SharedCounters,
  SharedPool,
  SharedSets,
} from '../types.js';
import { ByteReader, ByteWriter } from './bytes.js';
import { CrdtKind, OrSetMap, PnCounterMap } from './crdt/index.js';
import { checkReplica, isCount, malformed, readCount, usage } from './crdt/codec.js';

export const GLOBAL_CRDT_FORMAT_VERSION = 1;

/** Ids per packet and map: the add numbering's room inside one seq. */
const ADDS_PER_PACKET = 256;
/** The largest seq whose ids stay safe integers: seq × 256 + 255 ≤ 2^53 − 1. */
const MAX_SEQ = Math.floor(Number.MAX_SAFE_INTEGER / ADDS_PER_PACKET);
const MAX_NAME_BYTES = 0xffff;
/** The least a map takes in an encoding: name length, state length and the CRDT header. */
const MIN_MAP_BYTES = 2 + 4 + 2;

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** The flow packet (or release) the NF is running, as the runtime bound it. */
class Binding {
  /** -1: nothing is bound. */
  writer = -1;
  seq = 0;
  /** Bumped by every bind, so that each map restarts its numbering of the packet's adds. */
  call = 0;
}

class CrdtCounters implements SharedCounters {
  readonly map = new PnCounterMap();
  /** The bind whose adds `next` numbers. */
  private call = -1;
  private next = 0;

  constructor(
    readonly name: string,
    readonly nameBytes: Uint8Array,
    private readonly bound: Binding,
  ) {}

  add(key: number, delta: number): number {
    const b = this.bound;
    if (b.writer < 0) return unbound(this.name);
    if (this.call !== b.call) {
      this.call = b.call;
      this.next = 0;
    }
    if (this.next === ADDS_PER_PACKET) return tooManyAdds(this.name);
    return this.map.add(key, delta, b.writer, b.seq * ADDS_PER_PACKET + this.next++);
  }

  get(key: number): number {
    return this.map.get(key);
  }
}

class CrdtSets implements SharedSets {
  readonly map: OrSetMap;
  /** Whether an add ran since the last delta (OrSetMap has no cheaper way to tell). */
  changed = false;

  constructor(
    readonly name: string,
    readonly nameBytes: Uint8Array,
    replica: number,
  ) {
    this.map = new OrSetMap({ replica });
  }

  add(key: number, member: number): number {
    const size = this.map.add(key, member);
    this.changed = true;
    return size;
  }

  size(key: number): number {
    return this.map.size(key);
  }
}

// Kept out of `add`, so that its checks stay small enough to be inlined where it is called.
function unbound(name: string): never {
  throw usage(
    `global crdt: counters '${name}': add outside a bound packet (the runtime calls bind(writer, seq) before each NF call)`,
  );
}

function badBind(writer: number, seq: number): never {
  throw usage(
    `global crdt: bad bind(writer ${writer}, seq ${seq}): writer is a safe integer ≥ 0, seq 1 … ${MAX_SEQ}`,
  );
}

function tooManyAdds(name: string): never {
  throw usage(`global crdt: counters '${name}': more than ${ADDS_PER_PACKET} adds in one packet`);
}

/** One map as decoded, before anything is joined. */
type Part =
  | { readonly kind: typeof CrdtKind.PN_COUNTER; readonly name: string; readonly map: PnCounterMap }
  | { readonly kind: typeof CrdtKind.OR_SET; readonly name: string; readonly map: OrSetMap };

/** A map's name and state, as an encoding writes it. */
interface Entry {
  readonly nameBytes: Uint8Array;
  readonly state: { encode(w: ByteWriter): void };
}

/** The named CRDT maps of one replica: handles, binding, encoding and snapshot. */
class CrdtMaps {
  private readonly bound = new Binding();
  private readonly counterMaps = new Map<string, CrdtCounters>();
  private readonly setMaps = new Map<string, CrdtSets>();
  private readonly out = new ByteWriter();
  /** One map's CRDT encoding, written before its length prefix. */
  private readonly body = new ByteWriter();

  constructor(readonly replica: number) {
    checkReplica(replica);
  }

  counters(name: string): CrdtCounters {
    let c = this.counterMaps.get(name);
    if (c === undefined) {
      c = new CrdtCounters(name, nameBytes(name), this.bound);
      this.counterMaps.set(name, c);
    }
    return c;
  }

  sets(name: string): CrdtSets {
    let s = this.setMaps.get(name);
    if (s === undefined) {
      s = new CrdtSets(name, nameBytes(name), this.replica);
      this.setMaps.set(name, s);
    }
    return s;
  }

  bind(writer: number, seq: number): void {
    if (!isCount(writer) || !Number.isInteger(seq) || seq < 1 || seq > MAX_SEQ) badBind(writer, seq);
    const b = this.bound;
    b.writer = writer;
    b.seq = seq;
    b.call++;
  }

  unbind(): void {
    this.bound.writer = -1;
  }

  takeDelta(): Uint8Array {
    const entries: Entry[] = [];
    for (const c of sorted(this.counterMaps)) {
      const d = c.map.takeDelta();
      if (d.entryCount > 0) entries.push({ nameBytes: c.nameBytes, state: d });
    }
    for (const s of sorted(this.setMaps)) {
      if (!s.changed) continue;
      s.changed = false;
      entries.push({ nameBytes: s.nameBytes, state: s.map.takeDelta() });
    }
    return entries.length === 0 ? new Uint8Array(0) : this.encode(entries);
  }

  encodeFull(): Uint8Array {
    const entries: Entry[] = [];
    for (const c of sorted(this.counterMaps)) entries.push({ nameBytes: c.nameBytes, state: c.map });
    for (const s of sorted(this.setMaps)) entries.push({ nameBytes: s.nameBytes, state: s.map });
    return this.encode(entries);
  }

  merge(bytes: Uint8Array): void {
    for (const p of decodeParts(bytes, this.replica)) {
      if (p.kind === CrdtKind.PN_COUNTER) this.counters(p.name).map.merge(p.map);
      else this.sets(p.name).map.merge(p.map);
    }
  }

  /** Names sorted; per name, keys ascending and zero values left out (PnCounterMap.snapshot). */
  counterSnapshot(): GlobalSnapshot['counters'] {
    const out: GlobalSnapshot['counters'] = {};
    for (const c of sorted(this.counterMaps)) out[c.name] = c.map.snapshot();
    return out;
  }

  /** Names sorted; per name, keys ascending with their members ascending, empty sets left out. */
  setSnapshot(): GlobalSnapshot['sets'] {
    const out: GlobalSnapshot['sets'] = {};
    for (const s of sorted(this.setMaps)) out[s.name] = s.map.snapshot();
    return out;
  }

  private encode(entries: readonly Entry[]): Uint8Array {
    const w = this.out;
    const body = this.body;
    w.reset();
    w.u8(GLOBAL_CRDT_FORMAT_VERSION);
    w.u32(entries.length);
    for (const e of entries) {
      w.u16(e.nameBytes.length);
      w.raw(e.nameBytes);
      body.reset();
      e.state.encode(body);
      w.u32(body.length);
      w.raw(body.view());
    }
    // A copy: the writer is reused by the next call.
    return w.view().slice();
  }
}

function nameBytes(name: string): Uint8Array {
  const b = utf8.encode(name);
  if (b.length > MAX_NAME_BYTES) {
    throw usage(`global crdt: map name of ${b.length} UTF-8 bytes (at most ${MAX_NAME_BYTES})`);
  }
  return b;
}

/** The maps in name order (code units, not locale), so that equal states encode equally. */
function sorted<T>(maps: ReadonlyMap<string, T>): T[] {
  return [...maps.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map((name) => maps.get(name)!);
}

/**
 * Every map of an encoding, decoded and checked; zero bytes are no maps. Throws one NFS_ERR_STATE,
 * naming the map, for anything wrong.
 */
function decodeParts(bytes: Uint8Array, replica: number): Part[] {
  if (bytes.length === 0) return [];
  const r = new ByteReader(bytes);
  let name = '';
  try {
    const version = r.u8();
    if (version !== GLOBAL_CRDT_FORMAT_VERSION) {
      throw malformed(`format version ${version} is not supported (${GLOBAL_CRDT_FORMAT_VERSION} is)`);
    }
    const n = readCount(r, MIN_MAP_BYTES, 'maps');
    const parts: Part[] = [];
    for (let i = 0; i < n; i++) {
      name = `#${i}`;
      const nameLength = r.u16();
      if (nameLength > r.remaining) throw malformed(`name of ${nameLength} bytes, ${r.remaining} left`);
      name = decodeName(bytes.subarray(r.offset, r.offset + nameLength));
      r.offset += nameLength;
      const length = r.u32();
      if (length > r.remaining) throw malformed(`state of ${length} bytes, ${r.remaining} left`);
      const at = r.offset;
      r.offset += length;
      const state = new ByteReader(bytes, at, length);
      const kind = length === 0 ? undefined : bytes[at];
      if (kind === CrdtKind.PN_COUNTER) {
        parts.push({ kind, name, map: PnCounterMap.decode(state) });
      } else if (kind === CrdtKind.OR_SET) {
        parts.push({ kind, name, map: OrSetMap.decode(state, { replica }) });
      } else {
        throw malformed(`CRDT kind ${kind ?? 'missing'} is neither counters (1) nor sets (3)`);
      }
      if (state.remaining !== 0) throw malformed(`${state.remaining} bytes after the state`);
    }
    if (r.remaining !== 0) throw malformed(`${r.remaining} bytes after the last map`);
    return parts;
  } catch (e) {
    if (!(e instanceof NfsError)) throw e;
    const where = name === '' ? '' : `map '${name}': `;
    throw new NfsError(ErrorCode.STATE, `global crdt: ${where}${e.message}`, { cause: e });
  }
}

function decodeName(b: Uint8Array): string {
  try {
    return strictUtf8.decode(b);
  } catch {
    throw malformed('map name is not UTF-8');
  }
}

/**
 * GlobalState with CRDT counters and sets (see the header); pools and decisions are `inner`'s.
 * `replica` (0 … 1023) tags this replica's set adds: one per instance or worker, never reused by a
 * process that starts empty (crdt/index.ts).
 */
export class CrdtGlobalState implements GlobalState {
  private readonly maps: CrdtMaps;

  constructor(
    private readonly inner: GlobalState,
    options: { replica: number },
  ) {
    this.maps = new CrdtMaps(options.replica);
  }

  pool(name: string, first: number, last: number): SharedPool {
    return this.inner.pool(name, first, last);
  }

  decide(name: string, key: FlowKey, choose: () => number): number {
    return this.inner.decide(name, key, choose);
  }

  counters(name: string): SharedCounters {
    return this.maps.counters(name);
  }

  sets(name: string): SharedSets {
    return this.maps.sets(name);
  }

  /**
   * The flow packet the next NF call runs for: `writer` from `writerOf(flowKey, incarnation)`, `seq` the
   * packet's flow sequence number (1 … 2^45 − 1), or the flow's last seq + 1 for its release.
   */
  bind(writer: number, seq: number): void {
    this.maps.bind(writer, seq);
    this.inner.bind(writer, seq);
  }

  /** Ends the binding, so that a stray add throws instead of being charged to the packet that ran last. */
  unbind(): void {
    this.maps.unbind();
    this.inner.unbind();
  }

  /** This replica's changes since the last call (zero bytes: none), for every peer. */
  takeDelta(): Uint8Array {
    return this.maps.takeDelta();
  }

  /** Every map, in the delta format: for a peer that joins, or the exchange after a failover. */
  encodeFull(): Uint8Array {
    return this.maps.encodeFull();
  }

  /** Joins a delta or full encoding; throws NFS_ERR_STATE on bad bytes, having changed nothing. */
  merge(bytes: Uint8Array): void {
    this.maps.merge(bytes);
  }

  snapshot(): GlobalSnapshot {
    return {
      pools: this.inner.snapshot().pools,
      counters: this.maps.counterSnapshot(),
      sets: this.maps.setSnapshot(),
    };
  }

  /**
   * The deployment's counters and sets: the join of every replica's `encodeFull()` (not the sum; see the
   * header). Throws NFS_ERR_STATE on bad bytes.
   */
  static joinSnapshots(encodings: readonly Uint8Array[]): Pick<GlobalSnapshot, 'counters' | 'sets'> {
    // The joined maps take no updates, so any replica id will do.
    const joined = new CrdtMaps(0);
    for (const e of encodings) joined.merge(e);
    return { counters: joined.counterSnapshot(), sets: joined.setSnapshot() };
  }
}
