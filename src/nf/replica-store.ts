/**
 * The receiving side of batch replication (replication.ts): the replicas of the cluster peers' flows, kept
 * encoded and checked frame by frame, and handed to a successor when their origin fails.
 */
import { once } from 'node:events';
import net from 'node:net';
import { ByteReader, ByteWriter } from '../state/bytes.js';
import { flowKeyString } from '../packet/flow-key.js';
import { FlowTable } from '../packet/flow-table.js';
import type { FlowKey, Logger, MetricSample, MetricSource, NetworkFunction } from '../types.js';
import { encodeFrame, FrameDecoder } from '../wire/frame.js';
import { stateDigest } from '../state/digest.js';
import type { FlowDigest } from '../state/digest.js';
import {
  FLOW_KEY_BYTES,
  MAX_REPLICATION_FRAME,
  RECORD_HEADER,
  RecordKind,
  ReplicationFrame,
  readFlowKey,
  writeFlowKey,
} from './replication.js';

/**
 * A replica is kept encoded: the last full state plus the deltas since, applied only when the state is
 * needed (a move, a failover, a check). Receiving a batch then costs a copy, not a decode, on a thread
 * that also receives packets. Every COMPACT_AFTER deltas all but the last are folded into a new full
 * encoding, which bounds both the memory and the work of the next materialisation.
 *
 * The state before the last delta stays recoverable, with where it ends (`prevNext`), because a failover
 * resumes from there, not from the last batch: in output-commit mode the failed instance releases a batch's
 * packets only once the peers have acknowledged it, so it may have died between this replica's
 * acknowledgement and the release. Replaying that batch too re-emits them; the egress drops what did leave.
 */
class Replica {
  deltas: Uint8Array[] = [];
  stale = false;
  /** Whether the last record was a delta (so the state before it is full + all deltas but the last). */
  lastIsDelta = false;
  /** The first sequence number the state before the last delta does not cover. */
  prevNext: number;
  constructor(
    public version: number,
    public full: Uint8Array,
    /** The first sequence number the state does not cover. */
    public next: number,
    public born: number,
  ) {
    this.prevNext = next;
  }
}

/** A failed origin's flow as its successor takes it over: its state, next sequence number and incarnation. */
export interface Adopted {
  key: FlowKey;
  state: Uint8Array;
  next: number;
  born: number;
}

const COMPACT_AFTER = 32;

interface Connection {
  socket: net.Socket;
  seq: number;
  /** The flows whose full state came on this connection before its SYNCED (undefined after it). */
  refreshed: FlowTable<true> | undefined;
}

export type ReplicationDrop = 'not_member' | 'no_hello' | 'malformed' | 'gap' | 'bad_frame';

/** Holds the replicas of the cluster peers' flows, fed by their Replicators. */
export class ReplicaStore implements MetricSource {
  // Acknowledgements are small and often come two in a row: with Nagle's algorithm the second would wait
  // for the TCP acknowledgement of the first, which the sender delays by up to 40 ms.
  private readonly server = net.createServer({ noDelay: true }, (socket) => {
    this.accept(socket);
  });
  /** Per origin instance: its flows' replicas. */
  private readonly replicas = new Map<string, FlowTable<Replica>>();
  readonly drops: Record<ReplicationDrop, number> = {
    not_member: 0,
    no_hello: 0,
    malformed: 0,
    gap: 0,
    bad_frame: 0,
  };
  records = 0;
  bytesReceived = 0;
  /** A flow's replica can resume from every packet before `next` on (Infinity: the flow ended there). */
  onCovered: (key: FlowKey, next: number) => void = () => undefined;
  /** Eventual global state arrived from `origin` (a cluster peer's deltas, or a gossip peer's), per frame. */
  onGlobal: (states: Uint8Array[], origin: string) => void = () => undefined;

  private members: readonly string[];
  /** Failed instances: nothing of theirs is accepted any more (see fence). */
  private readonly fenced = new Set<string>();
  /** Instances outside the cluster whose eventual global state is accepted (and nothing else of theirs). */
  private gossip: readonly string[] = [];

  constructor(
    private readonly options: {
      members: readonly string[];
      key: Uint8Array;
      nf: NetworkFunction<unknown>;
      /**
       * The primaries release output only once a batch is acknowledged (after-replication): a failover
       * resumes from the state before each flow's last batch (see Replica), else from the last.
       */
      resumeBeforeLastBatch?: boolean;
    },
    private readonly logger: Logger,
  ) {
    this.members = options.members;
  }

  /**
   * The instances whose frames are accepted from now on (a cluster changed): the cluster's `members`, and
   * for their eventual global state only, the rest of the deployment (`gossip`). A connection from an
   * instance that is neither any more closes, and its replicas go: it left, or it failed and was taken over.
   */
  setMembers(members: readonly string[], gossip: readonly string[] = this.gossip): void {
    this.members = [...members];
    this.setGossip(gossip);
    for (const origin of [...this.replicas.keys()])
      if (!members.includes(origin)) this.replicas.delete(origin);
  }

  /** The instances outside the cluster whose eventual global state is accepted from now on. */
  setGossip(gossip: readonly string[]): void {
    this.gossip = gossip.filter((g) => !this.members.includes(g));
    for (const [socket, origin] of this.sockets)
      if (origin !== undefined && !this.members.includes(origin) && !this.gossip.includes(origin))
        socket.destroy();
  }

  /**
   * Failover, first step: `origin` failed, and this instance is to take over its flows. Nothing more from it
   * is accepted here, and its connections close, so that one that was only paused, or is still running,
   * cannot change what is taken over: its replicas stay as they are, and so do the copies of the packets
   * they do not cover yet (no record trims them any more).
   */
  fence(origin: string): void {
    this.fenced.add(origin);
    for (const [socket, o] of this.sockets) if (o === origin) socket.destroy();
  }

  /**
   * Failover: `origin` failed and this instance takes over its flows. Hands over the state of each flow it
   * holds a usable replica of (a stale one is counted: its flow continues from its kept copies alone), and
   * fences the origin here if that was not done yet (see fence).
   */
  adopt(origin: string): { flows: Adopted[]; stale: number } {
    this.fence(origin);
    const table = this.replicas.get(origin);
    this.setMembers(
      this.members.filter((m) => m !== origin),
      this.gossip.filter((g) => g !== origin),
    );
    const flows: Adopted[] = [];
    let stale = 0;
    const back = this.options.resumeBeforeLastBatch === true;
    for (const [key, r] of table?.entries() ?? []) {
      const before = back && r.lastIsDelta;
      const state = r.stale ? undefined : this.encoded(r, r.deltas.length - (before ? 1 : 0));
      if (state === undefined) stale++;
      else flows.push({ key, state, next: before ? r.prevNext : r.next, born: r.born });
    }
    return { flows, stale };
  }

  get port(): number {
    const a = this.server.address();
    return a !== null && typeof a === 'object' ? a.port : 0;
  }

  async listen(host: string, port: number): Promise<number> {
    this.server.listen(port, host);
    await once(this.server, 'listening');
    return this.port;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets.keys()) socket.destroy();
    this.server.close();
    await Promise.resolve();
  }

  /** Digests of every replica held, per origin instance, for comparison with the origin's own flows. */
  digests(): Record<string, FlowDigest[]> {
    const out: Record<string, FlowDigest[]> = {};
    for (const [origin, table] of this.replicas) {
      out[origin] = [...table.entries()]
        .filter(([, r]) => !r.stale)
        .map(([key, r]) => {
          const state = this.materialise(r);
          return {
            flow: flowKeyString(key),
            packets: r.version,
            forwarded: 0,
            digest: stateDigest(this.options.nf, state),
            allocations: this.options.nf.allocations(state),
          };
        });
    }
    return out;
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_replication_received_bytes_total', {}, this.bytesReceived]);
    out.push(['nfstate_replication_records_total', {}, this.records]);
    out.push(['nfstate_replication_repairs_asked_total', {}, this.repairsRequested]);
    let replicas = 0;
    for (const t of this.replicas.values()) replicas += t.size;
    out.push(['nfstate_replication_replicas', {}, replicas]);
    out.push(['nfstate_replication_unrefreshed_dropped_total', {}, this.unrefreshed]);
    for (const [reason, n] of Object.entries(this.drops)) {
      out.push(['nfstate_replication_rejected_total', { reason }, n]);
    }
  }

  /** Open connections, each with the member it said it is (once its HELLO was accepted). */
  private readonly sockets = new Map<net.Socket, string | undefined>();

  private accept(socket: net.Socket): void {
    this.sockets.set(socket, undefined);
    socket.on('close', () => this.sockets.delete(socket));
    const decoder = new FrameDecoder({ key: this.options.key, maxFrame: MAX_REPLICATION_FRAME });
    let origin: string | undefined;
    const ack = new ByteWriter(8);
    // The frames this side sends (ACK, REPAIR) share one rising sequence, as the sender's decoder demands.
    const conn: Connection = { socket, seq: 0, refreshed: new FlowTable<true>() };
    socket.on('error', () => undefined);
    socket.on('data', (chunk) => {
      this.bytesReceived += chunk.length;
      decoder.push(chunk, (type, seq, body) => {
        if (origin === undefined) {
          const id = type === ReplicationFrame.HELLO ? new TextDecoder().decode(body) : undefined;
          if (id === undefined) this.reject(socket, 'no_hello');
          else if (this.fenced.has(id) || (!this.members.includes(id) && !this.gossip.includes(id)))
            this.reject(socket, 'not_member', id);
          else {
            origin = id;
            this.sockets.set(socket, id);
          }
          return;
        }
        if (type === ReplicationFrame.SYNCED) {
          this.synced(origin, conn);
          return;
        }
        if (type !== ReplicationFrame.REPLICATE) return;
        this.apply(origin, body, conn);
        ack.reset();
        ack.u53(seq);
        socket.write(encodeFrame(ReplicationFrame.ACK, ++conn.seq, ack.view(), this.options.key));
      });
      // A wrong key, a forged or replayed frame: the stream cannot be trusted any more.
      const bad =
        decoder.drops.bad_auth + decoder.drops.replayed + decoder.drops.malformed + decoder.drops.oversized;
      if (bad > 0 && !socket.destroyed) this.reject(socket, 'bad_frame');
    });
  }

  /**
   * The catch-up on `conn` is complete: a replica of `origin`'s it did not refresh is of a flow that origin
   * no longer owns (its END, or the flow's move away, was sent while the connection was down).
   */
  private synced(origin: string, conn: Connection): void {
    const refreshed = conn.refreshed;
    conn.refreshed = undefined;
    const table = this.replicas.get(origin);
    if (refreshed === undefined || table === undefined) return;
    for (const [key] of [...table.entries()]) {
      if (refreshed.has(key)) continue;
      table.delete(key);
      this.unrefreshed++;
      this.onCovered(key, Infinity);
    }
  }

  /** Replicas dropped because a catch-up did not refresh them (see synced). */
  unrefreshed = 0;

  private readonly repairBody = new ByteWriter(FLOW_KEY_BYTES);
  repairsRequested = 0;

  private requestRepair(conn: Connection, key: FlowKey): void {
    this.repairsRequested++;
    this.repairBody.reset();
    writeFlowKey(this.repairBody, key);
    conn.socket.write(
      encodeFrame(ReplicationFrame.REPAIR, ++conn.seq, this.repairBody.view(), this.options.key),
    );
  }

  /**
   * The full encoding of `origin`'s replica of a flow, if it is at exactly `version` (a move inside the
   * cluster needs nothing else from the source); undefined otherwise.
   */
  stateOf(origin: string, key: FlowKey, version: number): Uint8Array | undefined {
    const r = this.replicas.get(origin)?.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (r === undefined || r.stale || r.version !== version) return undefined;
    return this.encoded(r, r.deltas.length);
  }

  /** The replica's state, decoded from its full encoding and its first `deltas` deltas. */
  private materialise(r: Replica, deltas = r.deltas.length): unknown {
    const codec = this.options.nf.codec;
    const state = codec.decodeFull(new ByteReader(r.full));
    for (let i = 0; i < deltas; i++) codec.applyDelta(state, new ByteReader(r.deltas[i]!));
    return state;
  }

  /**
   * The full encoding of the state after the first `deltas` deltas; undefined (and the replica set aside)
   * if they do not apply.
   */
  private encoded(r: Replica, deltas: number): Uint8Array | undefined {
    if (deltas === 0) return r.full;
    // Never 0: a writer with no room never grows (0 doubled is 0), and a flow's full state may be empty.
    const w = new ByteWriter(Math.max(64, r.full.length * 2));
    try {
      this.options.nf.codec.encodeFull(this.materialise(r, deltas), w);
      return w.view().slice();
    } catch {
      // A delta that does not apply is a corrupt replica: keep it out of use until a full state repairs it.
      this.drops.malformed++;
      r.stale = true;
      return undefined;
    }
  }

  /** Folds every delta but the last into the full encoding (see Replica). */
  private compact(r: Replica): void {
    const keep = r.lastIsDelta ? 1 : 0;
    const full = this.encoded(r, r.deltas.length - keep);
    if (full === undefined) return;
    r.full = full;
    r.deltas = r.deltas.slice(r.deltas.length - keep);
  }

  private reject(socket: net.Socket, reason: ReplicationDrop, who?: string): void {
    this.drops[reason]++;
    this.logger.warn('replication connection rejected', {
      reason,
      ...(who === undefined ? {} : { from: who }),
    });
    socket.destroy();
  }

  private apply(origin: string, body: Uint8Array, conn: Connection): void {
    let table = this.replicas.get(origin);
    if (table === undefined) {
      table = new FlowTable<Replica>();
      this.replicas.set(origin, table);
    }
    const r = new ByteReader(body);
    const global: Uint8Array[] = [];
    try {
      while (r.remaining > 0) {
        if (r.remaining < RECORD_HEADER) throw new RangeError('truncated record');
        const key = readFlowKey(r);
        const version = r.u32();
        const next = r.u53();
        const born = r.u53();
        const kind = r.u8();
        // A kind this reader does not know is a record it cannot parse, not a delta.
        if (kind > RecordKind.GLOBAL) throw new RangeError(`unknown record kind ${kind}`);
        const state = r.bytes();
        this.records++;
        if (kind === RecordKind.GLOBAL) {
          global.push(state);
          continue;
        }
        // Eventual global state is all a gossip peer (outside the cluster) sends that counts.
        if (!this.members.includes(origin)) {
          this.drops.not_member++;
          continue;
        }
        const replica = table.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
        if (kind === RecordKind.END) {
          table.delete(key);
          this.onCovered(key, Infinity);
        } else if (kind === RecordKind.FULL) {
          conn.refreshed?.set(key, true);
          if (replica === undefined) table.set(key, new Replica(version, state, next, born));
          else
            Object.assign(replica, {
              version,
              full: state,
              next,
              born,
              prevNext: next,
              lastIsDelta: false,
              deltas: [],
              stale: false,
            });
          this.onCovered(key, next);
        } else if (replica !== undefined && !replica.stale && replica.version === version - 1) {
          replica.deltas.push(state);
          replica.version = version;
          replica.prevNext = replica.next;
          replica.next = next;
          replica.lastIsDelta = true;
          if (replica.deltas.length >= COMPACT_AFTER) this.compact(replica);
          this.onCovered(key, this.options.resumeBeforeLastBatch === true ? replica.prevNext : next);
        } else {
          this.drops.gap++;
          if (replica !== undefined) replica.stale = true;
          this.requestRepair(conn, key);
        }
      }
    } catch {
      // Records before the bad one were whole and stay applied; the rest of the frame is not trusted.
      this.drops.malformed++;
    }
    if (global.length > 0) this.onGlobal(global, origin);
  }
}
