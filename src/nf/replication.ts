/**
 * Batch replication inside a cluster. When a flow's batch closes, its worker writes a record (the flow's
 * full state for its first batch, then the delta since the previous one); the instance sends all records
 * gathered since its last send to every cluster peer in one authenticated frame per peer, over TCP. Each
 * peer applies them to its replica of that flow and acknowledges. So every member holds every other
 * member's flows as of their last batch, and a move inside the cluster only has to ship what changed
 * since then.
 *
 *   const out = new Replicator({ self: 'nf-0', key, peers }, logger);  // sender: one connection per peer
 *   out.send(records);                                                 // records from the workers
 *   const store = new ReplicaStore({ members, key, nf }, logger);      // receiver: a TCP server
 *   await store.listen(host, 0);
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
import { once } from 'node:events';
import net from 'node:net';
import { ByteReader, ByteWriter } from '../state/bytes.js';
import { canonicalKey, flowKeyString } from '../packet/flow-key.js';
import { FlowTable } from '../packet/flow-table.js';
import type { FlowKey, Logger, MetricSample, MetricSource, NetworkFunction } from '../types.js';
import { encodeFrame, FrameDecoder } from '../wire/frame.js';
import { LATENCY_BUCKETS } from '../metric-catalog.js';
import { Histogram } from '../metrics.js';
import { stateDigest } from '../state/digest.js';
import type { FlowDigest } from '../state/digest.js';

export const ReplicationFrame = { HELLO: 1, REPLICATE: 2, ACK: 3, REPAIR: 4, SYNCED: 5 } as const;
export const RecordKind = { FULL: 0, DELTA: 1, END: 2, GLOBAL: 3 } as const;

/** Largest replication frame a receiver accepts: many flows' deltas, well under what a peer buffers. */
export const MAX_REPLICATION_FRAME = 16 * 1024 * 1024;
const RECORD_HEADER = 1 + 4 + 4 + 2 + 2 + 4 + 8 + 8 + 1 + 4;
const RECONNECT_MIN_MS = 50;
const RECONNECT_MAX_MS = 2000;

const FLOW_KEY_BYTES = 13;

function writeFlowKey(w: ByteWriter, key: FlowKey): void {
  w.u8(key.proto);
  w.u32(key.srcIp);
  w.u32(key.dstIp);
  w.u16(key.srcPort);
  w.u16(key.dstPort);
}

function readFlowKey(r: ByteReader): FlowKey {
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

/** A call of `Replicator.settled` waiting until the peers have acknowledged send `target`. */
interface Settling {
  readonly target: number;
  readonly timer: NodeJS.Timeout;
  readonly resolve: (settled: boolean) => void;
}

function settle(w: Settling, settled: boolean): void {
  clearTimeout(w.timer);
  w.resolve(settled);
}

/**
 * Sends this instance's records to each peer, one connection per peer. Each `send` returns a number k;
 * once every connected peer has acknowledged send k, `onCommit(k)` fires (in order, never skipping
 * back), which is what after-replication release waits for. A peer that is not connected does not hold
 * commits back: its replica is out of date and a new secondary or a snapshot repairs it.
 */
export class Replicator implements MetricSource {
  private links: Link[];
  private sends = 0;
  private committedSend = 0;
  /** Calls of `settled` waiting for the peers' acknowledgements, each up to its send. */
  private settling: Settling[] = [];
  bytesSent = 0;
  messages = 0;
  dropped = 0;
  /** Bytes of the catch-ups sent to peers that joined (part of bytesSent), and the peers caught up. */
  catchUpBytes = 0;
  catchUps = 0;
  onCommit: (k: number) => void = () => undefined;
  /** A peer lacks a flow's history: the owner should send that flow's full state in its next records. */
  onRepair: (key: FlowKey) => void = () => undefined;
  /**
   * A connection to a peer came up (again), caught up where the peers hold flows: what was sent while it was
   * down never arrived, and eventual global state has to be sent again.
   */
  onConnected: () => void = () => undefined;
  /**
   * With `catchUps`: a connection to `peer` came up. Each source is to send the full states of its flows,
   * `catchUp(peer, round, …)`; until its last part, none of its records go to that peer.
   */
  onCatchUp: (peer: string, round: number) => void = () => undefined;
  repairs = 0;
  /** Numbers each catch-up, so that the rest of one cut short by a drop is not taken for the next. */
  private rounds = 0;

  constructor(
    private readonly options: {
      self: string;
      key: Uint8Array;
      peers: readonly Peer[];
      /** How many sources (workers) feed `send`; a peer waits for each one's catch-up. */
      sources?: number;
      /**
       * The peers hold this instance's flows: every connection begins with a catch-up (onCatchUp). Without
       * it (eventual global state alone) the next records are all a peer needs.
       */
      catchUps?: boolean;
    },
    private readonly logger: Logger,
  ) {
    this.links = options.peers.map((p) => this.link(p));
  }

  async start(): Promise<void> {
    await Promise.all(this.links.map((l) => l.connect()));
  }

  /**
   * Replicates to `peers` from now on. Links to peers that stay are kept, so their replicas see no gap;
   * links to peers that left close. Resolves with the new peers' ids after each one's first connection
   * attempt.
   */
  async setPeers(peers: readonly Peer[]): Promise<string[]> {
    const same = (a: Peer, b: Peer): boolean => a.id === b.id && a.host === b.host && a.port === b.port;
    const kept = this.links.filter((l) => peers.some((p) => same(p, l.peer)));
    for (const l of this.links) if (!kept.includes(l)) l.close();
    const added = peers.filter((p) => !kept.some((l) => same(l.peer, p))).map((p) => this.link(p));
    this.links = [...kept, ...added];
    // A peer that left may have been the one holding commits back.
    this.checkCommit();
    await Promise.all(added.map((l) => l.connect()));
    return added.map((l) => l.peer.id);
  }

  /**
   * A source's part of catch-up `round` for `peer`: full states of its flows (`records`, possibly empty), in
   * one or more parts. After the `last` part the source's records flow to it as to everyone; after every
   * source's, SYNCED. A part of an earlier round, cut short by a drop, is ignored.
   */
  catchUp(peer: string, round: number, source: number, records: Uint8Array, last: boolean): void {
    const link = this.links.find((l) => l.peer.id === peer);
    if (link?.round !== round || !link.behind.has(source)) return;
    if (records.length > 0) {
      const n = link.send(records, this.sends);
      if (n < 0) this.dropped++;
      else {
        this.bytesSent += n;
        this.catchUpBytes += n;
        this.messages++;
      }
    }
    if (!last) return;
    link.behind.delete(source);
    if (link.behind.size > 0) return;
    link.synced();
    this.catchUps++;
    this.onConnected();
  }

  /** The last send every connected peer has acknowledged (one with no peer connected commits at once). */
  get committed(): number {
    return this.committedSend;
  }

  /** Ships a block of records from `source` to every peer; returns its number for `onCommit`. */
  send(records: Uint8Array, source = 0): number {
    const k = ++this.sends;
    for (const link of this.links) {
      // Its catch-up from this source, still to come, carries these flows' states as of later.
      if (link.behind.has(source)) {
        link.skip(k);
        continue;
      }
      const n = link.send(records, k);
      if (n < 0) this.dropped++;
      else {
        this.bytesSent += n;
        this.messages++;
      }
    }
    this.checkCommit();
    return k;
  }

  /**
   * Resolves when every peer has acknowledged everything sent before this call (or after `ms`); later
   * sends, which keep coming under traffic, are not waited for.
   */
  settled(ms: number): Promise<boolean> {
    const target = this.sends;
    if (this.committedSend >= target) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.settling = this.settling.filter((w) => w.timer !== timer);
        resolve(false);
      }, ms);
      this.settling.push({ target, timer, resolve });
    });
  }

  stop(): void {
    for (const l of this.links) l.close();
    for (const w of this.settling.splice(0)) settle(w, false);
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_replication_sent_bytes_total', {}, this.bytesSent]);
    out.push(['nfstate_replication_messages_total', {}, this.messages]);
    out.push(['nfstate_replication_dropped_messages_total', {}, this.dropped]);
    out.push(['nfstate_replication_committed', {}, this.committedSend]);
    out.push(['nfstate_replication_repairs_requested_total', {}, this.repairs]);
    out.push(['nfstate_replication_catch_up_bytes_total', {}, this.catchUpBytes]);
    out.push(['nfstate_replication_catch_ups_total', {}, this.catchUps]);
    for (const l of this.links) l.ackSeconds.collect(out, { peer: l.peer.id });
  }

  private link(p: Peer): Link {
    const link: Link = new Link(
      p,
      this.options.self,
      this.options.key,
      this.logger,
      () => {
        this.checkCommit();
      },
      (key) => {
        this.repairs++;
        this.onRepair(key);
      },
      () => {
        if (this.options.catchUps !== true) {
          this.onConnected();
          return;
        }
        link.round = ++this.rounds;
        for (let s = 0; s < (this.options.sources ?? 1); s++) link.behind.add(s);
        this.onCatchUp(p.id, link.round);
      },
    );
    return link;
  }

  private checkCommit(): void {
    let k = this.sends;
    for (const l of this.links) if (l.connected) k = Math.min(k, l.ackedSend);
    if (k > this.committedSend) {
      this.committedSend = k;
      this.onCommit(k);
      if (this.settling.length > 0) {
        const settled = this.settling.filter((w) => w.target <= k);
        this.settling = this.settling.filter((w) => w.target > k);
        for (const w of settled) settle(w, true);
      }
    }
  }
}

/**
 * One sender-side connection to a peer. It reconnects with backoff whenever the connection drops; what was
 * sent meanwhile is lost to that peer, which the catch-up that begins the next connection makes good.
 */
class Link {
  private socket: net.Socket | undefined;
  private seq = 0;
  /**
   * Each unacknowledged send, oldest first: [send, frame seq, sent at (ms; -1 for a skip), …]. A skip
   * holds its place in the order but was never sent, so it times nothing.
   */
  private inFlight: number[] = [];
  /** From a send to this peer's acknowledgement of it. */
  readonly ackSeconds = new Histogram('nfstate_replication_ack_seconds', LATENCY_BUCKETS);
  private lastSend = 0;
  ackedSend = 0;
  /** Sources whose catch-up of `round` this peer has not had yet. */
  readonly behind = new Set<number>();
  round = 0;
  private closed = false;
  private backoffMs = RECONNECT_MIN_MS;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly peer: Peer,
    private readonly self: string,
    private readonly key: Uint8Array,
    private readonly logger: Logger,
    private readonly onAck: () => void,
    private readonly onRepair: (key: FlowKey) => void,
    private readonly onConnected: () => void,
  ) {}

  get connected(): boolean {
    return this.socket !== undefined && !this.closed;
  }

  /** Resolves after the first attempt, connected or not; later attempts run in the background. */
  connect(): Promise<void> {
    return new Promise((resolve) => {
      const socket = net.createConnection({ host: this.peer.host, port: this.peer.port });
      socket.setNoDelay(true);
      // Acknowledgements and repair requests only: small frames. A new connection, a new sequence.
      const decoder = new FrameDecoder({ key: this.key, maxFrame: 1024 });
      socket.on('data', (chunk) => {
        decoder.push(chunk, (type, _seq, body) => {
          this.onFrame(type, body);
        });
      });
      socket.on('connect', () => {
        this.socket = socket;
        this.seq = 0;
        this.inFlight = [];
        this.ackedSend = this.lastSend;
        this.backoffMs = RECONNECT_MIN_MS;
        socket.write(
          encodeFrame(ReplicationFrame.HELLO, ++this.seq, new TextEncoder().encode(this.self), this.key),
        );
        this.onConnected();
        resolve();
      });
      socket.on('error', (err) => {
        this.logger.warn('replication link error', { peer: this.peer.id, error: err.message });
      });
      socket.on('close', () => {
        if (this.socket === socket) this.socket = undefined;
        this.onAck();
        resolve();
        if (!this.closed) {
          this.timer = setTimeout(() => void this.connect(), this.backoffMs);
          this.backoffMs = Math.min(this.backoffMs * 2, RECONNECT_MAX_MS);
        }
      });
    });
  }

  /** Bytes written, or -1 when the peer is not connected. */
  send(records: Uint8Array, k: number): number {
    this.lastSend = k;
    if (this.socket === undefined || this.closed) return -1;
    const frame = encodeFrame(ReplicationFrame.REPLICATE, ++this.seq, records, this.key);
    this.inFlight.push(k, this.seq, performance.now());
    this.socket.write(frame);
    return frame.length;
  }

  /** The catch-up is complete: the peer drops the replicas it did not refresh. */
  synced(): void {
    if (!this.connected) return;
    this.socket!.write(encodeFrame(ReplicationFrame.SYNCED, ++this.seq, new Uint8Array(0), this.key));
  }

  /** Send k carries nothing this peer needs: it must not hold commits back. */
  skip(k: number): void {
    this.lastSend = k;
    if (this.inFlight.length === 0) this.ackedSend = k;
    else this.inFlight.push(k, this.seq, -1);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.socket?.destroy();
  }

  private onFrame(type: number, body: Uint8Array): void {
    if (type === ReplicationFrame.REPAIR && body.length === FLOW_KEY_BYTES) {
      this.onRepair(readFlowKey(new ByteReader(body)));
      return;
    }
    if (type !== ReplicationFrame.ACK || body.length !== 8) return;
    const acked = new ByteReader(body).u53();
    const q = this.inFlight;
    let n = 0;
    const now = performance.now();
    while (n < q.length && q[n + 1]! <= acked) {
      this.ackedSend = q[n]!;
      const sentAt = q[n + 2]!;
      if (sentAt >= 0) this.ackSeconds.observe((now - sentAt) / 1000);
      n += 3;
    }
    if (n > 0) {
      q.splice(0, n);
      this.onAck();
    }
  }
}

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
