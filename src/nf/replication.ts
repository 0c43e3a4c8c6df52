/**
 * Batch replication inside a cluster. When a flow's batch closes, its worker writes a record (the flow's
 * full state for its first batch, then the delta since the previous one); the instance sends all records
 * gathered since its last send to every cluster peer in one authenticated frame per peer, over TCP. Each
 * peer applies them to its replica of that flow and acknowledges. So every member holds every other
 * member's flows as of their last batch, and a move inside the cluster only has to ship what changed
 * since then.
 *
 *   const out = new Replicator({ self: 'nf-0', key, peers }, logger);  // sender (replicator.ts)
 *   out.send(records);                                                 // records from the workers
 *   const store = new ReplicaStore({ members, key, nf }, logger);      // receiver (replica-store.ts)
 *   await store.listen(host, 0);
 *
 * This file holds what both sides share: the frames, the record layout and the writing of records.
 *
 * Frames (src/wire/frame.ts: length, type, sequence, body, HMAC tag with the cluster key):
 *
 *   HELLO      body = sender's instance id (UTF-8); must be the first frame on a connection
 *   REPLICATE  body = records, back to back
 *   ACK        body = u64 sequence number of the last REPLICATE applied (receiver → sender)
 *   REPAIR     body = a flow's 5-tuple, as in a record (receiver → sender): send this flow's full state
 *   SYNCED     body = empty (sender → receiver): the catch-up is complete (see below)
 *
 * Every connection to a peer, the first and each after a drop, begins with a catch-up: from each worker (a
 * source of records), the full state of every flow it owns, in one or a few REPLICATE frames, and only then
 * that worker's further records; SYNCED follows the last source's. So a newcomer holds current replicas at
 * once, without a REPAIR per flow; and after a drop, whatever the peer missed is made good. That includes what
 * no later record would repair: a flow's END, or all of a flow that moved away meanwhile. The receiver drops
 * each replica of the sender's that the catch-up did not refresh once SYNCED comes.
 *
 * Record layout (big endian):
 *
 *   +-------+--------+--------+---------+---------+---------+------+------+------+--------+-------------+
 *   | proto | src ip | dst ip | src port| dst port| version | next | born | kind | length | state bytes |
 *   |  u8   |  u32   |  u32   |   u16   |   u16   |   u32   | u53  | u53  |  u8  |  u32   |  length     |
 *   +-------+--------+--------+---------+---------+---------+------+------+------+--------+-------------+
 *   kind 0 = full state (version 1, or a repair), 1 = delta since version - 1, 2 = the flow ended (no bytes),
 *   3 = eventual global state (state-global-crdt.ts encoding; the 5-tuple and numbers are 0);
 *   next = the first sequence number the state does not cover (what the secondary's kept copies start at);
 *   born = the flow's incarnation at its owner (FlowEntry.born), which a successor keeps
 *
 * A receiver accepts frames only from the members it was given and only with the cluster key; anything
 * else is counted by reason and not applied. A delta that does not follow the replica's version (a gap,
 * after a reconnect, or a peer that joined late) is counted, the replica is set aside rather than patched
 * wrongly, and the receiver asks the sender for the flow's full state (REPAIR), which replaces it.
 */
import type { ByteReader, ByteWriter } from '../state/bytes.js';
import { canonicalKey } from '../packet/flow-key.js';
import type { FlowKey } from '../types.js';

export const ReplicationFrame = { HELLO: 1, REPLICATE: 2, ACK: 3, REPAIR: 4, SYNCED: 5 } as const;
export const RecordKind = { FULL: 0, DELTA: 1, END: 2, GLOBAL: 3 } as const;

/** Largest replication frame a receiver accepts: many flows' deltas, well under what a peer buffers. */
export const MAX_REPLICATION_FRAME = 16 * 1024 * 1024;
export const RECORD_HEADER = 1 + 4 + 4 + 2 + 2 + 4 + 8 + 8 + 1 + 4;

export const FLOW_KEY_BYTES = 13;

export function writeFlowKey(w: ByteWriter, key: FlowKey): void {
  w.u8(key.proto);
  w.u32(key.srcIp);
  w.u32(key.dstIp);
  w.u16(key.srcPort);
  w.u16(key.dstPort);
}

export function readFlowKey(r: ByteReader): FlowKey {
  const proto = r.u8();
  return canonicalKey(r.u32(), r.u32(), r.u16(), r.u16(), proto);
}

/** Appends one flow record (`flow`: its key, version, next sequence number and incarnation). */
export function writeRecord(
  w: ByteWriter,
  flow: { key: FlowKey; version: number; expected: number; born: number },
  kind: number,
  state: Uint8Array,
): void {
  writeFlowKey(w, flow.key);
  w.u32(flow.version);
  w.u53(flow.expected);
  w.u53(flow.born);
  w.u8(kind);
  w.bytes(state);
}

const NO_FLOW = {
  key: { srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 },
  version: 0,
  expected: 0,
  born: 0,
};

/** Appends a record of eventual global state (a CRDT delta or full state, CrdtGlobalState's encoding). */
export function writeGlobalRecord(w: ByteWriter, state: Uint8Array): void {
  writeRecord(w, NO_FLOW, RecordKind.GLOBAL, state);
}

export interface Peer {
  id: string;
  host: string;
  port: number;
}
