/**
 * Eventual global state as state-based CRDTs (DESIGN.md §7): state shared by many flows whose updates
 * commute, merged by a join (commutative, associative, idempotent), so that replicas that have seen the
 * same updates hold the same state whatever the order, duplication or batching of what they received.
 *
 *   PnCounterMap     u32 key → PN-counter                per-source bytes, per-backend connections
 *   MaxRegisterMap   u32 key → max-register              last-seen times, high-water marks
 *   OrSetMap         u32 key → add-wins set of u32       ports a source reached (add and remove)
 *   CountMinSketch   item → count, never underestimated  heavy hitters in bounded memory
 *   HyperLogLog      number of distinct items            distinct sources or flows in 4 KiB
 *
 * All five have the same shape (`Crdt`). Updates allocate nothing once their tables have grown.
 * `takeDelta()` hands over this replica's own changes since the last call as a small state of the same
 * type: that is all that needs to travel. `merge` joins any state or delta, so a delta applied twice,
 * late or out of order changes nothing more. `encode` writes either (codec.ts); `decode` builds a new
 * state and throws NFS_ERR_STATE on bad bytes, so a bad frame never touches the state it was meant for.
 *
 *   const bytes = new PnCounterMap();
 *   bytes.add(srcIp, length, writerOf(flowKey, flowStartMicros), seq);
 *   const w = new ByteWriter();
 *   bytes.takeDelta().encode(w);                        // into the replication frame
 *   peer.merge(PnCounterMap.decode(new ByteReader(w.view())));
 *
 * Exactly once under replay. After a failover the successor replays the failed instance's packets since
 * each flow's last replicated batch (DESIGN.md §6), and some of their updates may already have reached
 * some peers. Max-registers, OR-set membership and HyperLogLog registers are idempotent: applying an
 * update twice is applying it once, wherever it happens. Counting is not, so a PN-counter's entries
 * belong to writers, not replicas: the writer is the flow (`writerOf`: a 53-bit hash of its key and
 * incarnation), and each add carries the flow's packet sequence number. A writer's entry for a key,
 * (last seq, Σ increments, Σ decrements), is a function of the flow's packets up to that seq alone,
 * whichever instance computes it. So:
 *   - an add whose seq is not above the entry's is already counted and is skipped: a replay at the same
 *     instance, or at a successor that already holds the entry from the failed one;
 *   - two replicas that advanced one writer's entry to different points merge by max, which is the later
 *     point; a successor that replays from the batch recreates exactly the entries the failed instance
 *     sent, and max absorbs them, whichever of its deltas reached which peer.
 * No dedup window, and nothing allocated per update: the skip test reads the entry the add updates
 * anyway. What this asks of its users:
 *   - whoever continues a flow must hold the flow's entries at least as new as the flow state it
 *     continues from: send the deltas in the same replication frame as the flow records they go with
 *     (or earlier), and ship a moved flow's entries with it, or give it a fresh incarnation;
 *   - one add per key per packet (a writer's ids must grow from one add to a key to the next);
 *   - deltas carry a replica's own changes only, so what a failed replica sent to some peers and not to
 *     others is never sent again: after a failover, or a lost delta, the survivors exchange full states
 *     once (merging those is idempotent like any delta);
 *   - memory: one entry per (key, writer) for the life of the map, about 60 bytes; where keys and flows
 *     are unbounded, scope a map to a time window.
 * The count-min sketch cannot afford an entry per writer, so it keeps one sketch per replica (counters
 * only grow, merged by max): a delta received twice counts once, but a replay at a successor counts the
 * replayed increments again, in the successor's part. That errs on the sketch's own side (an estimate
 * is never too low), by at most what the replayed packets added. Where that matters, count with the
 * PN-counter.
 *
 * Replica ids (OrSetMap, CountMinSketch) are 0 … 1023, one per instance or worker. A process that
 * starts empty must take an id that no earlier process used: its dots and counters would otherwise
 * collide with those already in the peers' states.
 */
import type { ByteWriter } from '../bytes.js';

export { CountMinSketch, type CountMinOptions } from './count-min.js';
export { CrdtKind, CRDT_FORMAT_VERSION, MAX_REPLICAS } from './codec.js';
export { HyperLogLog } from './hyperloglog.js';
export { MaxRegisterMap } from './max-register.js';
export { OrSetMap } from './or-set.js';
export { PnCounterMap, writerOf } from './pn-counter.js';

/** What every CRDT here offers; `T` is the type itself (a delta is a state). */
export interface Crdt<T> {
  merge(other: T): void;
  takeDelta(): T;
  encode(w: ByteWriter): void;
  snapshot(): unknown;
}
