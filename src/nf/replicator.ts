/**
 * The sending side of batch replication (replication.ts): one connection per cluster peer, each send's
 * commit once every connected peer has acknowledged it, and the catch-up that begins every connection.
 */
import net from 'node:net';
import { ByteReader } from '../state/bytes.js';
import type { FlowKey, Logger, MetricSample, MetricSource } from '../types.js';
import { encodeFrame, FrameDecoder } from '../wire/frame.js';
import { LATENCY_BUCKETS } from '../metric-catalog.js';
import { Histogram } from '../metrics.js';
import { FLOW_KEY_BYTES, ReplicationFrame, readFlowKey, type Peer } from './replication.js';

const RECONNECT_MIN_MS = 50;
const RECONNECT_MAX_MS = 2000;

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
  /** Calls of `settled` waiting for the peers' acknowledgements, each up to its send, oldest first. */
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
      // Targets rise in the order the calls came (each is the send count at its call).
      while (this.settling.length > 0 && this.settling[0]!.target <= k) settle(this.settling.shift()!, true);
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
