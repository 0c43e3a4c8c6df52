/**
 * The ingress process: stamper and switch in one place, in front of the NF instances.
 *
 * Two ways in:
 * - the data port takes Geneve datagrams carrying an inner IPv4 packet (the generator, a pcap replay,
 *   or the previous hop of a chain). A datagram that already has an nfstate option is stamped in place;
 *   one without gets the nfstate header in front.
 * - the service port is the plain-UDP front door: each ordinary datagram (iperf, netcat, hping3)
 *   becomes an inner IPv4/UDP packet from the sender's address and port to the service address.
 *
 *   const ingress = new Ingress({ host, port: 0, servicePort: 0, instances, vni: 1, flowIdleMs }, logger);
 *   await ingress.start();
 *
 * Each instance gets its own connected socket, which spares a per-packet address lookup. Packets whose
 * bytes we build (front door, unstamped input, secondary copies) are written into a ring of slots that
 * is far larger than what the kernel can have queued, so a slot is never rewritten while in flight.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import { wallClock } from '../clock.js';
import { ErrorCode, NfsError } from '../errors.js';
import { buildIcmp, buildTcp, buildUdp } from '../packet/build.js';
import { packetFlowHash, parseIpv4 } from '../packet/flow-key.js';
import { Packet } from '../packet/packet.js';
import { Stamper } from '../stamper/stamper.js';
import type { PcapWriter } from '../traffic/pcap.js';
import type { Clock, FlowKey, Logger, MetricSample, MetricSource } from '../types.js';
import { DropReason, dropReasonName, IpProto } from '../types.js';
import { STAMP_HEADER_LENGTH, StampFlag, StampView, writeStampHeader } from '../wire/geneve.js';
import { Switch } from './switch.js';
import type { RuleSpec } from './switch.js';

export interface Endpoint {
  id: string;
  host: string;
  port: number;
}

export interface IngressOptions {
  host: string;
  port: number;
  /** Plain-UDP front door; -1 to disable. */
  servicePort: number;
  instances: readonly Endpoint[];
  vni: number;
  flowIdleMs: number;
  /** Records every stamped inner packet with its stamp time, in stamp order (the oracle's input). */
  stampLog?: PcapWriter;
}

const SLOT = 2048;
const SLOTS = 4096;

export class Ingress implements MetricSource {
  readonly stamper: Stamper;
  readonly switch: Switch;
  /** Where each instance is, by switch index: the configured ones, then those added at runtime. */
  readonly endpoints: Endpoint[];
  private readonly data = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 * 1024 * 1024 });
  private readonly service = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 * 1024 * 1024 });
  private readonly out: dgram.Socket[] = [];
  private readonly view = new StampView();
  private readonly pkt = new Packet();
  private readonly ring = new Uint8Array(SLOT * SLOTS);
  private slot = 0;
  private serviceIp = 0;
  private lastPeer = '';
  private lastPeerIp = 0;
  private ticker: NodeJS.Timeout | undefined;
  private started = false;
  private stopped = false;
  received = 0;
  forwarded = 0;
  copies = 0;
  markers = 0;
  noRoute = 0;
  sendErrors = 0;
  readonly drops = new Float64Array(16);

  constructor(
    private readonly options: IngressOptions,
    private readonly logger: Logger,
    private readonly clock: Clock = wallClock,
  ) {
    this.stamper = new Stamper({ flowIdleMs: options.flowIdleMs });
    this.switch = new Switch(options.instances.map((i) => i.id));
    this.endpoints = [...options.instances];
  }

  get port(): number {
    return this.data.address().port;
  }

  get servicePort(): number {
    return this.options.servicePort < 0 ? -1 : this.service.address().port;
  }

  async start(): Promise<{ port: number; servicePort: number }> {
    if (this.started) return { port: this.port, servicePort: this.servicePort };
    this.started = true;
    const { options } = this;
    for (const inst of options.instances) this.out.push(await this.connect(inst));
    this.data.on('message', (msg) => {
      this.onData(msg);
    });
    this.data.bind(options.port, options.host);
    await once(this.data, 'listening');
    if (options.servicePort >= 0) {
      this.serviceIp = parseIpv4(options.host);
      this.service.on('message', (msg, rinfo) => {
        this.onService(msg, rinfo.address, rinfo.port);
      });
      this.service.bind(options.servicePort, options.host);
      await once(this.service, 'listening');
    }
    this.ticker = setInterval(() => {
      this.stamper.tick(this.clock.now());
    }, 250);
    this.logger.info('ingress listening', { port: this.port, servicePort: this.servicePort });
    return { port: this.port, servicePort: this.servicePort };
  }

  /**
   * An instance joined the deployment: packets can go to it from now on (by rule, or by default once
   * `setLive` lists it). Returns its switch index. A known id that comes back at another address (its
   * process restarted) keeps its index and gets a new socket.
   */
  async addInstance(inst: Endpoint): Promise<number> {
    if (!this.started) throw new NfsError(ErrorCode.STATE, 'ingress: instances join a running ingress only');
    const same = (e: Endpoint): boolean => e.id === inst.id && e.host === inst.host && e.port === inst.port;
    if (this.endpoints.some(same)) return this.endpoints.findIndex(same);
    const socket = await this.connect(inst);
    // Decided after the connect: the ingress may have stopped, or a concurrent call for the same instance
    // got here first.
    if (this.stopped) {
      socket.close();
      throw new NfsError(ErrorCode.STATE, 'ingress: stopped while an instance joined');
    }
    const at = this.endpoints.findIndex((e) => e.id === inst.id);
    if (at >= 0 && same(this.endpoints[at]!)) {
      socket.close();
      return at;
    }
    if (at >= 0) {
      this.out[at]!.close();
      this.out[at] = socket;
      this.endpoints[at] = { ...inst };
      return at;
    }
    this.endpoints.push({ ...inst });
    this.out.push(socket);
    return this.switch.addInstance(inst.id);
  }

  private async connect(inst: Endpoint): Promise<dgram.Socket> {
    const s = dgram.createSocket({ type: 'udp4', sendBufferSize: 4 * 1024 * 1024 });
    // A vanished instance shows up as ECONNREFUSED on its socket; count it, never crash.
    s.on('error', () => {
      this.sendErrors++;
    });
    s.connect(inst.port, inst.host);
    await once(s, 'connect');
    return s;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.started) {
      clearInterval(this.ticker);
      this.data.close();
      if (this.options.servicePort >= 0) this.service.close();
      for (const s of this.out) s.close();
    }
    this.options.stampLog?.close();
    await Promise.resolve();
  }

  /** A Geneve datagram from the data port. */
  onData(msg: Uint8Array): void {
    this.received++;
    const view = this.view;
    const r = view.parse(msg, 0, msg.length);
    if (r !== DropReason.NONE) return this.drop(r);
    if (view.hasStamp) return this.forward(msg, 0, msg.length);
    // Someone else's Geneve: put our header in front of the same inner packet.
    const at = this.nextSlot();
    if (view.innerLength + STAMP_HEADER_LENGTH > SLOT) return this.drop(DropReason.BAD_LENGTH);
    writeStampHeader(this.ring, at, { vni: view.vni, flags: 0, epoch: 0, seq: 0, timeMs: 0 });
    this.ring.set(
      msg.subarray(view.innerOffset, view.innerOffset + view.innerLength),
      at + STAMP_HEADER_LENGTH,
    );
    const n = STAMP_HEADER_LENGTH + view.innerLength;
    if (view.parse(this.ring, at, n) !== DropReason.NONE) return this.drop(DropReason.BAD_HEADER);
    this.forward(this.ring, at, n);
  }

  /** An ordinary UDP datagram at the front door. */
  onService(payload: Uint8Array, address: string, port: number): void {
    this.received++;
    if (payload.length + STAMP_HEADER_LENGTH + 28 > SLOT) return this.drop(DropReason.BAD_LENGTH);
    if (address !== this.lastPeer) {
      this.lastPeer = address;
      this.lastPeerIp = parseIpv4(address);
    }
    const at = this.nextSlot();
    writeStampHeader(this.ring, at, { vni: this.options.vni, flags: 0, epoch: 0, seq: 0, timeMs: 0 });
    const n =
      STAMP_HEADER_LENGTH +
      buildUdp(this.ring, at + STAMP_HEADER_LENGTH, {
        srcIp: this.lastPeerIp,
        dstIp: this.serviceIp,
        srcPort: port,
        dstPort: this.servicePort,
        payload,
      });
    this.view.parse(this.ring, at, n);
    this.forward(this.ring, at, n);
  }

  /** Stamps the datagram the view points at and sends it to the flow's owner (and secondary). */
  private forward(buf: Uint8Array, offset: number, length: number): void {
    const view = this.view;
    const pkt = this.pkt;
    const pr = pkt.parse(buf, view.innerOffset, view.innerLength);
    if (pr !== DropReason.NONE) return this.drop(pr);
    const now = this.clock.now();
    // Whole microseconds, so that a microsecond pcap of the stamp log reproduces every stamp exactly.
    const timeMs = Math.round(now * 1000) / 1000;
    const hash = packetFlowHash(pkt);
    const route = this.switch.route(pkt, hash);
    if (route.primary < 0) {
      this.noRoute++;
      return this.drop(DropReason.POLICY);
    }
    const seq = this.stamper.next(pkt, now);
    view.setSeq(seq);
    view.setTimeMs(timeMs);
    view.setEpoch(route.epoch);
    view.setFlags(0);
    this.options.stampLog?.write(buf, timeMs, view.innerOffset, pkt.length);
    this.out[route.primary]!.send(buf, offset, length);
    this.forwarded++;
    if (route.secondary >= 0) {
      const at = this.nextSlot();
      this.ring.set(buf.subarray(offset, offset + length), at);
      this.ring[at + view.stampOffset - offset + 1] = StampFlag.COPY;
      this.out[route.secondary]!.send(this.ring, at, length);
      this.copies++;
    }
  }

  /**
   * Moves a flow: installs its new rule and, if its owner changed, sends the old owner an end-of-move
   * marker carrying the last sequence number the old owner was sent. Packets to one instance leave in
   * order, so every packet stamped before the rule changed reaches the old owner before the marker does.
   */
  repoint(key: FlowKey, spec: RuleSpec): boolean {
    const before = this.switch.owner(key);
    if (!this.switch.installRule(key, spec)) return false;
    if (before < 0 || before === spec.primary) return true;
    const at = this.nextSlot();
    writeStampHeader(this.ring, at, {
      vni: this.options.vni,
      flags: StampFlag.END_OF_MOVE,
      epoch: spec.epoch,
      seq: Math.max(1, this.stamper.lastSeq(key)),
      timeMs: Math.round(this.clock.now() * 1000) / 1000,
    });
    const inner = at + STAMP_HEADER_LENGTH;
    const empty = this.ring.subarray(0, 0);
    const ends = { srcIp: key.srcIp, dstIp: key.dstIp };
    const n =
      key.proto === IpProto.TCP
        ? buildTcp(this.ring, inner, {
            ...ends,
            srcPort: key.srcPort,
            dstPort: key.dstPort,
            seq: 0,
            ack: 0,
            flags: 0,
            payload: empty,
          })
        : key.proto === IpProto.ICMP
          ? buildIcmp(this.ring, inner, {
              ...ends,
              type: 8,
              code: 0,
              id: key.srcPort,
              seq: 0,
              payload: empty,
            })
          : buildUdp(this.ring, inner, {
              ...ends,
              srcPort: key.srcPort,
              dstPort: key.dstPort,
              payload: empty,
            });
    this.out[before]!.send(this.ring, at, STAMP_HEADER_LENGTH + n);
    this.markers++;
    return true;
  }

  /**
   * Changes which instances own new flows. A flow that is already running keeps its owner — its state is
   * there — by a rule pinning it, for every flow whose default owner the change would alter; only a move
   * takes a flow elsewhere.
   */
  setLive(live: readonly number[]): number {
    const before = new Map<FlowKey, number>();
    for (const [key] of this.stamper.counts()) before.set(key, this.switch.owner(key));
    this.switch.setLive(live);
    let pinned = 0;
    for (const [key, owner] of before) {
      if (owner >= 0 && this.switch.owner(key) !== owner) {
        // Epoch 0: a pin is the weakest rule, so the controller's next rule for the flow always wins.
        this.switch.installRule(key, { primary: owner, epoch: 0 });
        pinned++;
      }
    }
    return pinned;
  }

  /** The stamp clock now: every packet stamped from here on carries this time or a later one. */
  stampTime(): number {
    return this.clock.now();
  }

  /**
   * The flows running now (those the stamper knows), or only those `instance` owns: each with its owner's
   * switch index and its packets so far — the switch's per-flow counters, which the load-balancing unit
   * turns into flow rates.
   */
  flows(instance?: number): { key: FlowKey; owner: number; packets: number }[] {
    const out: { key: FlowKey; owner: number; packets: number }[] = [];
    for (const [key, packets] of this.stamper.counts()) {
      const owner = this.switch.owner(key);
      if (instance === undefined || owner === instance) out.push({ key, owner, packets });
    }
    return out;
  }

  private nextSlot(): number {
    const at = this.slot * SLOT;
    this.slot = (this.slot + 1) % SLOTS;
    return at;
  }

  private drop(reason: DropReason): void {
    this.drops[reason]!++;
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_ingress_received_total', {}, this.received]);
    out.push(['nfstate_ingress_forwarded_total', {}, this.forwarded]);
    out.push(['nfstate_ingress_secondary_copies_total', {}, this.copies]);
    out.push(['nfstate_ingress_move_markers_total', {}, this.markers]);
    out.push(['nfstate_ingress_no_route_total', {}, this.noRoute]);
    out.push(['nfstate_ingress_send_errors_total', {}, this.sendErrors]);
    for (let r = 1; r < dropReasonName.length; r++) {
      out.push(['nfstate_ingress_dropped_total', { reason: dropReasonName[r]! }, this.drops[r]!]);
    }
    this.stamper.collect(out);
    this.switch.collect(out);
  }
}
