/**
 * A hash table from connection 5-tuple to V, for per-flow state on the packet path. Both directions of
 * a connection find the same entry. Keys live in typed arrays and lookups compare numbers, so `get` and
 * `getPacket` allocate nothing; `set` allocates only when the table grows.
 *
 *   const flows = new FlowTable<ConnState>();
 *   flows.set(flowKeyOf(pkt), conn);
 *   flows.getFlow(replyPkt); // the same conn, found from the other direction (a packet is a FlowKey)
 *
 * Layout: open addressing with linear probing over parallel arrays, capacity a power of two, at most
 * 70% full. Slot i holds the canonical key (srcIps[i], dstIps[i], ports[i] = srcPort << 16 | dstPort,
 * protos[i]), its hash, and values[i]; used[i] says whether the slot is taken. Deletion shifts the rest
 * of the probe run back (no tombstones), so every key stays reachable from its home slot hash & mask
 * without crossing an empty slot, and lookups never slow down after churn.
 */
import type { FlowKey } from '../types.js';
import { canonicalKey, flowHash } from './flow-key.js';

/** Called with a flow's 5-tuple (see FlowTable.forEachKey). */
export type FlowVisitor = (
  srcIp: number,
  dstIp: number,
  srcPort: number,
  dstPort: number,
  proto: number,
) => void;

const MAX_LOAD = 0.7;
const MIN_CAPACITY = 8;

export class FlowTable<V> {
  // The slot arrays are (re)made by allocate(), from the constructor and on growth.
  private capacity!: number;
  private mask!: number;
  private count = 0;
  private limit!: number;
  private used!: Uint8Array;
  private hashes!: Uint32Array;
  private srcIps!: Uint32Array;
  private dstIps!: Uint32Array;
  private ports!: Uint32Array;
  private protos!: Uint8Array;
  private values!: (V | undefined)[];
  /** The canonical form of the key `find` last looked up. */
  private kSrcIp = 0;
  private kDstIp = 0;
  private kPorts = 0;
  private kProto = 0;
  private kHash = 0;

  /** `initialCapacity` is rounded up to a power of two (at least 8). */
  constructor(initialCapacity = 64) {
    let cap = MIN_CAPACITY;
    while (cap < initialCapacity) cap *= 2;
    this.allocate(cap);
  }

  /** Fresh, empty slot arrays of `cap` slots. */
  private allocate(cap: number): void {
    this.capacity = cap;
    this.mask = cap - 1;
    this.limit = Math.floor(cap * MAX_LOAD);
    this.used = new Uint8Array(cap);
    this.hashes = new Uint32Array(cap);
    this.srcIps = new Uint32Array(cap);
    this.dstIps = new Uint32Array(cap);
    this.ports = new Uint32Array(cap);
    this.protos = new Uint8Array(cap);
    this.values = new Array<V | undefined>(cap).fill(undefined);
  }

  get size(): number {
    return this.count;
  }

  /** The entry for this 5-tuple in either direction. */
  get(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): V | undefined {
    const i = this.find(srcIp, dstIp, srcPort, dstPort, proto);
    return i < 0 ? undefined : this.values[i];
  }

  /** The entry of a flow named by its 5-tuple in either direction: a key, or a parsed packet. */
  getFlow(flow: FlowKey): V | undefined {
    return this.get(flow.srcIp, flow.dstIp, flow.srcPort, flow.dstPort, flow.proto);
  }

  has(key: FlowKey): boolean {
    return this.find(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto) >= 0;
  }

  /** Inserts, or replaces the value of the entry either direction of `key` already has. */
  set(key: FlowKey, value: V): void {
    let i = this.find(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (i >= 0) {
      this.values[i] = value;
      return;
    }
    if (this.count + 1 > this.limit) this.grow();
    i = this.kHash & this.mask;
    while (this.used[i] === 1) i = (i + 1) & this.mask;
    this.used[i] = 1;
    this.hashes[i] = this.kHash;
    this.srcIps[i] = this.kSrcIp;
    this.dstIps[i] = this.kDstIp;
    this.ports[i] = this.kPorts;
    this.protos[i] = this.kProto;
    this.values[i] = value;
    this.count++;
  }

  delete(key: FlowKey): boolean {
    let hole = this.find(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (hole < 0) return false;
    const mask = this.mask;
    // Backward shift: walk the run after the hole and move back each entry whose home slot does not
    // lie cyclically in (hole, j], since the hole would otherwise cut it off from its home.
    let j = hole;
    for (;;) {
      j = (j + 1) & mask;
      if (this.used[j] === 0) break;
      const home = this.hashes[j]! & mask;
      const canStay = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (canStay) continue;
      this.used[hole] = 1;
      this.hashes[hole] = this.hashes[j]!;
      this.srcIps[hole] = this.srcIps[j]!;
      this.dstIps[hole] = this.dstIps[j]!;
      this.ports[hole] = this.ports[j]!;
      this.protos[hole] = this.protos[j]!;
      this.values[hole] = this.values[j];
      hole = j;
    }
    this.used[hole] = 0;
    this.values[hole] = undefined;
    this.count--;
    return true;
  }

  /** Removes every entry; the capacity stays. */
  clear(): void {
    this.used.fill(0);
    this.values.fill(undefined);
    this.count = 0;
  }

  /** Every entry's canonical 5-tuple, in slot order, without making a FlowKey for each. */
  forEachKey(visit: FlowVisitor): void {
    for (let i = 0; i < this.capacity; i++) {
      if (this.used[i] !== 1) continue;
      const ports = this.ports[i]!;
      visit(this.srcIps[i]!, this.dstIps[i]!, ports >>> 16, ports & 0xffff, this.protos[i]!);
    }
  }

  /** Every entry with its canonical key, in slot order. */
  *entries(): IterableIterator<[FlowKey, V]> {
    for (let i = 0; i < this.capacity; i++) {
      if (this.used[i] !== 1) continue;
      const ports = this.ports[i]!;
      const key = canonicalKey(
        this.srcIps[i]!,
        this.dstIps[i]!,
        ports >>> 16,
        ports & 0xffff,
        this.protos[i]!,
      );
      yield [key, this.values[i] as V];
    }
  }

  /**
   * The slot holding this 5-tuple (in either direction), or -1. Leaves the canonical key and its hash
   * in the k* fields, so `set` can place a missing key without canonicalizing again and neither
   * allocates a FlowKey.
   */
  private find(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): number {
    let aIp = srcIp >>> 0;
    let bIp = dstIp >>> 0;
    let aPort = srcPort & 0xffff;
    let bPort = dstPort & 0xffff;
    if (aIp > bIp || (aIp === bIp && aPort > bPort)) {
      aIp = bIp;
      bIp = srcIp >>> 0;
      aPort = bPort;
      bPort = srcPort & 0xffff;
    }
    const ports = ((aPort << 16) | bPort) >>> 0;
    const p = proto & 0xff;
    const hash = flowHash(aIp, bIp, aPort, bPort, p);
    this.kSrcIp = aIp;
    this.kDstIp = bIp;
    this.kPorts = ports;
    this.kProto = p;
    this.kHash = hash;
    const mask = this.mask;
    let i = hash & mask;
    while (this.used[i] === 1) {
      if (
        this.hashes[i] === hash &&
        this.srcIps[i] === aIp &&
        this.dstIps[i] === bIp &&
        this.ports[i] === ports &&
        this.protos[i] === p
      ) {
        return i;
      }
      i = (i + 1) & mask;
    }
    return -1;
  }

  private grow(): void {
    const old = {
      capacity: this.capacity,
      used: this.used,
      hashes: this.hashes,
      srcIps: this.srcIps,
      dstIps: this.dstIps,
      ports: this.ports,
      protos: this.protos,
      values: this.values,
    };
    this.allocate(old.capacity * 2);
    for (let j = 0; j < old.capacity; j++) {
      if (old.used[j] !== 1) continue;
      const hash = old.hashes[j]!;
      let i = hash & this.mask;
      while (this.used[i] === 1) i = (i + 1) & this.mask;
      this.used[i] = 1;
      this.hashes[i] = hash;
      this.srcIps[i] = old.srcIps[j]!;
      this.dstIps[i] = old.dstIps[j]!;
      this.ports[i] = old.ports[j]!;
      this.protos[i] = old.protos[j]!;
      this.values[i] = old.values[j];
    }
  }
}
