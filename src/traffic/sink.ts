/**
 * The sink: the end of a deployment's path. It checks every flow by stamp — delivered, reordered,
 * duplicated (replays included) —, drops the output of instances the controller fenced, records latency from the ingress stamp in an HDR histogram,
 * acknowledges to the generator so a closed-loop run never overflows a buffer, and can write what it
 * receives to pcap, deliver the inner UDP payloads on to a real UDP destination, or deliver every packet
 * to the real host that holds its destination, in VXLAN (edge/egress.ts): the egress role.
 *
 *   const sink = new Sink({ host, port: 0, ackTo: { host, port: ackPort } }, logger);
 *   await sink.start();
 *   sink.report(); // totals, per-flow counts, latency percentiles
 */
import { wallClock } from '../clock.js';
import { ErrorCode, NfsError } from '../errors.js';
import { flowKeyOf, flowKeyString } from '../packet/flow-key.js';
import { FlowTable } from '../packet/flow-table.js';
import { Packet } from '../packet/packet.js';
import type { Clock, FlowKey, Logger, MetricSample, MetricSource } from '../types.js';
import { DropReason, dropReasonName, IpProto } from '../types.js';
import { isCarriedFrame, StampFlag, StampView } from '../wire/geneve.js';
import { VxlanEgress } from '../edge/egress.js';
import { MAX_DATAGRAM, openBatchSocket, type BatchSocket } from '../wire/batch-socket.js';
import { SendRing } from '../wire/send-ring.js';
import type { HostTable } from '../edge/hosts.js';
import { ACK_LENGTH, writeAck } from './generator.js';
import { LATENCY_BUCKETS } from '../metric-catalog.js';
import { Histogram } from '../metrics.js';
import { LatencyHistogram } from './latency.js';
import type { LatencySummary } from './latency.js';
import type { PcapWriter } from './pcap.js';

export interface SinkOptions {
  host: string;
  port: number;
  /** Where to send acknowledgements (the generator), if anywhere. */
  ackTo?: { host: string; port: number };
  /** Forward each delivered UDP packet's payload to this destination. */
  deliver?: { host: string; port: number };
  /** Deliver each packet to the real host that holds its destination, in VXLAN (the edge's egress). */
  edge?: HostTable;
  pcap?: PcapWriter;
}

/** Where the sink's socket sends, by number: the host networks' VTEPs from TO_HOSTS on, by index. */
const TO_GENERATOR = 0;
const TO_DELIVER = 1;
const TO_HOSTS = 2;

class SinkFlow {
  delivered = 0;
  maxSeq = 0;
  reordered = 0;
  duplicated = 0;
  seen = new Uint8Array(16);
  constructor(readonly key: FlowKey) {}

  /** Marks seq as seen; false if it had been seen before. */
  mark(seq: number): boolean {
    const byte = seq >>> 3;
    if (byte >= this.seen.length) {
      let size = this.seen.length * 2;
      while (size <= byte) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.seen);
      this.seen = next;
    }
    const bit = 1 << (seq & 7);
    if ((this.seen[byte]! & bit) !== 0) return false;
    this.seen[byte] = this.seen[byte]! | bit;
    return true;
  }
}

export interface FlowReport {
  flow: string;
  delivered: number;
  maxSeq: number;
  reordered: number;
  duplicated: number;
}

export interface SinkReport {
  received: number;
  delivered: number;
  reordered: number;
  /** Stamps seen twice, not counting replays. */
  duplicated: number;
  /** Replayed output (REPLAY flag) whose stamp was already delivered: dropped, as the flag asks. */
  replays: number;
  /** Output of fenced instances (failed over, then awake again), dropped. */
  fenced: number;
  flows: FlowReport[];
  latency: LatencySummary;
  /** The histogram itself (HDR base64) so reports from many sinks can be merged. */
  histogram: string;
  drops: Record<string, number>;
  firstAt: number;
  lastAt: number;
}

export class Sink implements MetricSource {
  /**
   * Output in, and everything the sink sends out (acknowledgements, deliveries, the egress's frames), up to
   * 64 datagrams a system call where the native addon is built (wire/batch-socket.ts).
   */
  private socket: BatchSocket | undefined;
  /** Payloads delivered onward are copied here: a received datagram's buffer is reused. */
  private readonly deliveries = new SendRing(MAX_DATAGRAM, 4096);
  private readonly flows = new FlowTable<SinkFlow>();
  private readonly view = new StampView();
  private readonly pkt = new Packet();
  private readonly latency = new LatencyHistogram();
  private readonly latencySeconds = new Histogram('nfstate_sink_latency_seconds', LATENCY_BUCKETS);
  private readonly ack = new Uint8Array(ACK_LENGTH);
  private readonly egress: VxlanEgress | undefined;
  private ackTimer: NodeJS.Timeout | undefined;
  private ackedAt = 0;
  private started = false;
  private stopped = false;
  received = 0;
  delivered = 0;
  reordered = 0;
  duplicated = 0;
  replays = 0;
  /** Output of fenced instances, dropped. */
  fencedDrops = 0;
  /**
   * By fencing token: the stamp time from which an instance's output is no longer accepted (see `fence`);
   * Infinity for one that is not fenced.
   */
  private readonly fencedSince = new Float64Array(65536).fill(Infinity);
  firstAt = 0;
  lastAt = 0;
  readonly drops = new Float64Array(dropReasonName.length);

  constructor(
    private readonly options: SinkOptions,
    private readonly logger: Logger,
    private readonly clock: Clock = wallClock,
  ) {
    if (options.edge !== undefined)
      this.egress = new VxlanEgress(options.edge, (net, buf, offset, length) => {
        this.socket!.queue(TO_HOSTS + net, buf, offset, length);
      });
  }

  get port(): number {
    return this.socket!.port;
  }

  async start(): Promise<{ port: number }> {
    if (this.started) return { port: this.port };
    this.started = true;
    const socket = await openBatchSocket(this.options.host, this.options.port, (msg) => {
      this.onDatagram(msg);
    });
    this.socket = socket;
    const { ackTo, deliver, edge } = this.options;
    if (ackTo !== undefined) await socket.dest(TO_GENERATOR, ackTo.host, ackTo.port);
    if (deliver !== undefined) await socket.dest(TO_DELIVER, deliver.host, deliver.port);
    for (const net of edge?.nets ?? []) await socket.dest(TO_HOSTS + net.index, net.vtep, edge!.vtepPort);
    // Acknowledge at least every millisecond, plus every 64 packets from the receive path.
    this.ackTimer = setInterval(() => {
      this.sendAck();
    }, 1);
    this.logger.info('sink listening', { port: this.port });
    return { port: this.port };
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.started) {
      clearInterval(this.ackTimer);
      this.egress?.stop();
      this.socket?.close();
    }
    this.options.pcap?.close();
    await Promise.resolve();
  }

  onDatagram(msg: Uint8Array): void {
    this.received++;
    // ARP from the hosts, carried across by the ingress: where the egress learns their MACs.
    if (isCarriedFrame(msg)) {
      if (this.egress === undefined) return this.drop(DropReason.UNSUPPORTED);
      return this.egress.onCarried(msg);
    }
    const view = this.view;
    const r = view.parse(msg, 0, msg.length);
    if (r !== DropReason.NONE) return this.drop(r);
    if (!view.hasStamp || view.seq === 0) return this.drop(DropReason.BAD_HEADER);
    const fencedSince = this.fencedSince[view.emitter]!;
    if (view.timeMs >= fencedSince) {
      this.fencedDrops++;
      return;
    }
    const pr = this.pkt.parse(msg, view.innerOffset, view.innerLength);
    if (pr !== DropReason.NONE) return this.drop(pr);
    const now = this.clock.now();
    let flow = this.flows.getFlow(this.pkt);
    if (flow === undefined) {
      const key = flowKeyOf(this.pkt);
      flow = new SinkFlow(key);
      this.flows.set(key, flow);
    }
    const seq = view.seq;
    if (!flow.mark(seq)) {
      // A failover's successor re-emits what its failed predecessor may have delivered: expected, and no
      // duplicate at the far end. Any other stamp seen twice is one.
      if ((view.flags & StampFlag.REPLAY) !== 0) this.replays++;
      // A fenced instance still running emits what its successor replayed first: the same output, dropped.
      else if (fencedSince !== Infinity) this.fencedDrops++;
      else {
        flow.duplicated++;
        this.duplicated++;
      }
      return;
    }
    if (seq < flow.maxSeq) {
      flow.reordered++;
      this.reordered++;
    } else {
      flow.maxSeq = seq;
    }
    flow.delivered++;
    this.delivered++;
    if (this.firstAt === 0) this.firstAt = now;
    this.lastAt = now;
    this.latency.record((now - view.timeMs) * 1000);
    this.latencySeconds.observe((now - view.timeMs) / 1000);
    const pkt = this.pkt;
    this.options.pcap?.write(msg, now, view.innerOffset, pkt.length);
    const deliver = this.options.deliver;
    if (deliver !== undefined && pkt.proto === IpProto.UDP) {
      const at = this.deliveries.next();
      this.deliveries.buf.set(msg.subarray(pkt.payloadOffset, pkt.payloadOffset + pkt.payloadLength), at);
      this.socket!.queue(TO_DELIVER, this.deliveries.buf, at, pkt.payloadLength);
    }
    this.egress?.deliver(msg, view.innerOffset, pkt.length, pkt.dstIp);
    if ((this.delivered & 63) === 0) this.sendAck();
  }

  /**
   * The controller failed over the instance with this fencing token: its output for packets stamped at
   * `sinceMs` or later is dropped from now on, so that one that was only paused, or is still running, cannot
   * deliver anything its successor replays. Its output for earlier packets still passes: the successor's
   * state covers them, so it replays none of them, and that output is the only one (see Controller.failover).
   * 0 drops all of its output.
   */
  fence(token: number, sinceMs = 0): void {
    if (!Number.isInteger(token) || token < 1 || token > 65535)
      throw new NfsError(ErrorCode.CONFIG, 'fence.emitter: must be a fencing token 1..65535');
    if (typeof sinceMs !== 'number' || !(sinceMs >= 0))
      throw new NfsError(ErrorCode.CONFIG, 'fence.since_ms: must be a stamp time in ms, >= 0');
    this.fencedSince[token] = Math.min(this.fencedSince[token]!, sinceMs);
  }

  report(): SinkReport {
    const flows: FlowReport[] = [];
    for (const [key, f] of this.flows.entries()) {
      flows.push({
        flow: flowKeyString(key),
        delivered: f.delivered,
        maxSeq: f.maxSeq,
        reordered: f.reordered,
        duplicated: f.duplicated,
      });
    }
    const drops: Record<string, number> = {};
    for (let r = 1; r < dropReasonName.length; r++)
      if (this.drops[r]! > 0) drops[dropReasonName[r]!] = this.drops[r]!;
    return {
      received: this.received,
      delivered: this.delivered,
      reordered: this.reordered,
      duplicated: this.duplicated,
      replays: this.replays,
      fenced: this.fencedDrops,
      flows,
      latency: this.latency.toJSON(),
      histogram: this.latency.encode(),
      drops,
      firstAt: this.firstAt,
      lastAt: this.lastAt,
    };
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_sink_received_total', {}, this.received]);
    out.push(['nfstate_sink_delivered_total', {}, this.delivered]);
    out.push(['nfstate_sink_reordered_total', {}, this.reordered]);
    out.push(['nfstate_sink_duplicated_total', {}, this.duplicated]);
    out.push(['nfstate_sink_replays_dropped_total', {}, this.replays]);
    out.push(['nfstate_sink_fenced_total', {}, this.fencedDrops]);
    out.push(['nfstate_sink_flows', {}, this.flows.size]);
    this.latencySeconds.collect(out);
    out.push(['nfstate_sink_send_errors_total', {}, this.socket?.sendErrors ?? 0]);
    const oversize = this.socket?.oversize ?? 0;
    for (let r = 1; r < dropReasonName.length; r++) {
      const n = this.drops[r]! + (r === DropReason.BAD_LENGTH ? oversize : 0);
      out.push(['nfstate_sink_dropped_total', { reason: dropReasonName[r]! }, n]);
    }
    this.egress?.collect(out);
  }

  private sendAck(): void {
    const to = this.options.ackTo;
    if (to === undefined || this.delivered === this.ackedAt) return;
    this.ackedAt = this.delivered;
    writeAck(this.ack, this.delivered);
    this.socket!.queue(TO_GENERATOR, this.ack, 0, ACK_LENGTH);
  }

  private drop(reason: DropReason): void {
    this.drops[reason]!++;
  }
}
