/**
 * The ingress process: stamper and switch in one place, in front of the NF instances.
 *
 * Three ways in:
 * - the data port takes Geneve datagrams carrying an inner IPv4 packet (the generator, a pcap replay).
 *   A datagram that already has an nfstate option is stamped in place; one without gets the nfstate
 *   header in front.
 * - the service port is the plain-UDP front door: each ordinary datagram (iperf, netcat, hping3)
 *   becomes an inner IPv4/UDP packet from the sender's address and port to the service address.
 * - the VXLAN port (the topology's `edge`) takes the Ethernet frames of real hosts' kernel vxlan devices:
 *   an IPv4 packet is stamped, ARP goes to the edge gateway (edge/gateway.ts), anything else is dropped
 *   and counted (`not_ipv4`), as is a frame of a VNI no host network has (`unknown_vni`).
 *
 *   const ingress = new Ingress({ host, port: 0, servicePort: 0, instances, vni: 1, flowIdleMs }, logger);
 *   await ingress.start();
 *
 * A packet's flow is its own 5-tuple (both directions share it), except for a reply to an address an NF
 * translated (a NAT's public port): that belongs to the connection the NF translated (replies.ts), and
 * its header names that connection in a flow option (wire/geneve.ts), so it is stamped, routed and later
 * processed as part of it.
 *
 * The data port and the sends to the instances go through one BatchSocket (wire/batch-socket.ts):
 * recvmmsg and sendmmsg, up to 64 datagrams a system call, where the native addon is built, else node:dgram
 * with a connected socket per destination. An instance that names its workers' ports (Endpoint) gets each
 * packet at the worker that owns its flow, so its main thread never touches it; copies for its secondary
 * role go to its main port. The VXLAN door is a second one: the hosts' frames in, and out the
 * gateway's ARP answers (to each host network's VTEP) and the ARP it carries to the egress. Datagrams longer than MAX_DATAGRAM (2048 bytes) are dropped as
 * `bad_length`. Packets whose bytes we build (front door, VXLAN, unstamped input, secondary copies) are
 * written into a ring of slots that is far larger than what the kernel can have queued, so a slot is never
 * rewritten while node:dgram still sends it.
 * An inner packet that is built goes at INNER of its slot, and its header right in front, so that the
 * header's length (with a flow option or not) can be chosen once the packet is parsed.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import { wallClock } from '../clock.js';
import { EdgeGateway, egressDest } from '../edge/gateway.js';
import type { HostTable } from '../edge/hosts.js';
import { ErrorCode, NfsError } from '../errors.js';
import { buildEmpty, buildUdp } from '../packet/build.js';
import { flowHashOf, flowKeyOf, parseIpv4 } from '../packet/flow-key.js';
import { Packet } from '../packet/packet.js';
import { Stamper } from '../stamper/stamper.js';
import type { PcapWriter } from '../traffic/pcap.js';
import type { Clock, FlowKey, Logger, MetricSample, MetricSource } from '../types.js';
import { DropReason, dropReasonName } from '../types.js';
import {
  FLOW_HEADER_LENGTH,
  STAMP_HEADER_LENGTH,
  StampFlag,
  StampView,
  writeStampHeader,
  type FlowFields,
} from '../wire/geneve.js';
import { IO_FALLBACK_REASON, MAX_DATAGRAM, openBatchSocket, type BatchSocket } from '../wire/batch-socket.js';
import { SendRing } from '../wire/send-ring.js';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, VxlanView } from '../wire/vxlan.js';
import { readRoute } from './openflow.js';
import type { ReplyMap } from './replies.js';
import { Switch } from './switch.js';
import type { RuleSpec } from './switch.js';

export interface Endpoint {
  id: string;
  host: string;
  /** The instance's main port: copies for its secondary role, and packets for it without `workers`. */
  port: number;
  /**
   * Each worker thread's own port, in worker order: a flow's packets go straight to the worker that owns
   * it (flow hash modulo their number, as the instance itself shards), past the instance's main thread.
   */
  workers?: readonly number[];
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
  /**
   * The VXLAN door for real hosts: its port, the host networks behind it, and the egress, to which ARP is
   * carried across.
   */
  edge?: { port: number; hosts: HostTable; egress?: { host: string; port: number } };
  /** Replies to translated addresses, stamped as part of their connection (absent: none are translated). */
  replies?: ReplyMap;
  /**
   * An Open vSwitch bridge routes the traffic (ovs.ts): its frames come to a VXLAN door at this address,
   * each naming in its destination address the instance and rule epoch OVS chose (openflow.ts).
   */
  ovs?: { host: string; port: number };
}

const SLOT = MAX_DATAGRAM;
const SLOTS = 4096;
/** Where a built inner packet starts in its slot: room in front for the longest header. */
const INNER = FLOW_HEADER_LENGTH;

export class Ingress implements MetricSource {
  readonly stamper: Stamper;
  readonly switch: Switch;
  /** Where each instance is, by switch index: the configured ones, then those added at runtime. */
  readonly endpoints: Endpoint[];
  private readonly service = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 * 1024 * 1024 });
  /** The data port, and the sends to the instances. */
  private io: BatchSocket | undefined;
  /** By switch index: the `io` destinations of the instance's main port and of each of its workers. */
  private readonly lanes: { main: number; workers: number[] }[] = [];
  private nextDest = 0;
  /** The VXLAN door (with an edge): sends to each host network's VTEP by index, then to the egress. */
  private door: BatchSocket | undefined;
  private readonly view = new StampView();
  private readonly pkt = new Packet();
  private readonly frame = new VxlanView();
  private readonly gateway: EdgeGateway | undefined;
  /** The route OVS gave the frame being stamped (openflow.ts), filled in place; primary -1: none. */
  private readonly via = { primary: -1, epoch: 0 };
  /** The connection a datagram's flow option names, filled in place. */
  private readonly named: FlowFields = { srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 };
  private readonly slots = new SendRing(SLOT, SLOTS);
  private readonly ring = this.slots.buf;
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
  /** Frames OVS routed, sent where it said, and those sent by a newer rule this ingress had. */
  ovsFollowed = 0;
  ovsOverridden = 0;
  readonly drops = new Float64Array(dropReasonName.length);

  constructor(
    private readonly options: IngressOptions,
    private readonly logger: Logger,
    private readonly clock: Clock = wallClock,
  ) {
    this.stamper = new Stamper({ flowIdleMs: options.flowIdleMs });
    this.switch = new Switch(options.instances.map((i) => i.id));
    this.endpoints = [...options.instances];
    const edge = options.edge;
    if (edge !== undefined)
      this.gateway = new EdgeGateway(
        edge.hosts,
        (dest, buf, offset, length) => {
          this.door!.queue(dest, buf, offset, length);
        },
        edge.egress !== undefined,
      );
    if (options.replies !== undefined)
      // A parked reply tries again; `until` ends its wait, 0 when it is over.
      options.replies.onRetry = (data, vni, until) => {
        this.fromOutside(data, vni, until);
      };
  }

  get port(): number {
    return this.io!.port;
  }

  /** Whether the data path runs on recvmmsg/sendmmsg (the native addon) rather than node:dgram. */
  get nativeIo(): boolean {
    return this.io?.native === true;
  }

  get servicePort(): number {
    return this.options.servicePort < 0 ? -1 : this.service.address().port;
  }

  /** The VXLAN door's port; -1 without an edge. */
  get vxlanPort(): number {
    return this.door?.port ?? -1;
  }

  async start(): Promise<{ port: number; servicePort: number; vxlanPort: number }> {
    if (this.started) return { port: this.port, servicePort: this.servicePort, vxlanPort: this.vxlanPort };
    this.started = true;
    const { options } = this;
    const io = await openBatchSocket(options.host, options.port, (msg) => {
      this.onData(msg);
    });
    this.io = io;
    for (let i = 0; i < options.instances.length; i++) await this.connect(i, options.instances[i]!);
    if (options.servicePort >= 0) {
      this.serviceIp = parseIpv4(options.host);
      this.service.on('message', (msg, rinfo) => {
        this.onService(msg, rinfo.address, rinfo.port);
      });
      this.service.bind(options.servicePort, options.host);
      await once(this.service, 'listening');
    }
    const edge = options.edge;
    if (edge !== undefined || options.ovs !== undefined) {
      const at = options.ovs ?? { host: options.host, port: edge!.port };
      const door = await openBatchSocket(at.host, at.port, (msg) => {
        this.onVxlan(msg);
      });
      this.door = door;
      if (edge !== undefined) {
        for (const net of edge.hosts.nets) await door.dest(net.index, net.vtep, edge.hosts.vtepPort);
        if (edge.egress !== undefined)
          await door.dest(egressDest(edge.hosts), edge.egress.host, edge.egress.port);
      }
    }
    this.ticker = setInterval(() => {
      this.stamper.tick(this.clock.now());
    }, 250);
    const ports = { port: this.port, servicePort: this.servicePort, vxlanPort: this.vxlanPort };
    this.logger.info('ingress listening', {
      ...ports,
      io: io.native ? 'recvmmsg/sendmmsg' : `node:dgram (${IO_FALLBACK_REASON})`,
    });
    return ports;
  }

  /**
   * An instance joined the deployment: packets can go to it from now on (by rule, or by default once
   * `setLive` lists it). Returns its switch index. A known id that comes back at another address (its
   * process restarted) keeps its index and gets a new socket.
   */
  async addInstance(inst: Endpoint): Promise<number> {
    if (!this.started) throw new NfsError(ErrorCode.STATE, 'ingress: instances join a running ingress only');
    const same = (e: Endpoint): boolean =>
      e.id === inst.id &&
      e.host === inst.host &&
      e.port === inst.port &&
      (e.workers ?? []).join() === (inst.workers ?? []).join();
    if (this.endpoints.some(same)) return this.endpoints.findIndex(same);
    if (this.stopped) throw new NfsError(ErrorCode.STATE, 'ingress: stopped while an instance joined');
    const at = this.endpoints.findIndex((e) => e.id === inst.id);
    if (at >= 0) {
      this.endpoints[at] = { ...inst };
      await this.connect(at, inst);
      return at;
    }
    // Its index is taken before the wait, so that a concurrent call for another instance gets the next.
    const index = this.endpoints.push({ ...inst }) - 1;
    await this.connect(index, inst);
    return this.switch.addInstance(inst.id);
  }

  /** Opens the sends to instance `index`'s ports; the old ones of a restarted instance stay unused. */
  private async connect(index: number, inst: Endpoint): Promise<void> {
    const io = this.io!;
    const main = this.nextDest++;
    const workers = (inst.workers ?? []).map(() => this.nextDest++);
    await io.dest(main, inst.host, inst.port);
    for (let w = 0; w < workers.length; w++) await io.dest(workers[w]!, inst.host, inst.workers![w]!);
    this.lanes[index] = { main, workers };
  }

  /** Where a packet of the flow with hash `hash` goes at instance `index`: the worker that owns it. */
  private lane(index: number, hash: number): number {
    const { main, workers } = this.lanes[index]!;
    return workers.length === 0 ? main : workers[hash % workers.length]!;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.started) {
      clearInterval(this.ticker);
      this.io?.close();
      if (this.options.servicePort >= 0) this.service.close();
      this.door?.close();
    }
    this.options.replies?.stop();
    this.options.stampLog?.close();
    await Promise.resolve();
  }

  /** A Geneve datagram from the data port. */
  onData(msg: Uint8Array): void {
    this.received++;
    if (msg.length > MAX_DATAGRAM) return this.drop(DropReason.BAD_LENGTH);
    const view = this.view;
    const r = view.parse(msg, 0, msg.length);
    if (r !== DropReason.NONE) return this.drop(r);
    const inner = msg.subarray(view.innerOffset, view.innerOffset + view.innerLength);
    // Someone else's Geneve: our header goes in front of the same inner packet.
    if (!view.hasStamp) return this.fromOutside(inner, view.vni);
    const pkt = this.pkt;
    const pr = pkt.parse(msg, view.innerOffset, view.innerLength);
    if (pr !== DropReason.NONE) return this.drop(pr);
    if (view.hasFlow) return this.send(msg, 0, msg.length, view.flowInto(this.named, pkt.proto));
    // A reply to a translated address needs a flow option, which this header has no room for.
    if (this.options.replies?.ownerOf(pkt) !== undefined) return this.fromOutside(inner, view.vni);
    this.send(msg, 0, msg.length, pkt);
  }

  /** An ordinary UDP datagram at the front door. */
  onService(payload: Uint8Array, address: string, port: number): void {
    this.received++;
    if (payload.length + INNER + 28 > SLOT) return this.drop(DropReason.BAD_LENGTH);
    if (address !== this.lastPeer) {
      this.lastPeer = address;
      this.lastPeerIp = parseIpv4(address);
    }
    const at = this.slots.next();
    const n = buildUdp(this.ring, at + INNER, {
      srcIp: this.lastPeerIp,
      dstIp: this.serviceIp,
      srcPort: port,
      dstPort: this.servicePort,
      payload,
    });
    this.stampSlot(at, n, this.options.vni);
  }

  /** A VXLAN datagram from a host's VTEP, or from the OVS bridge that routed it. */
  onVxlan(msg: Uint8Array): void {
    this.received++;
    const v = this.frame;
    const r = v.parse(msg, 0, msg.length);
    if (r !== DropReason.NONE) return this.drop(r);
    if (this.options.ovs !== undefined && readRoute(v.dstMac, this.via)) {
      this.routed(v);
      // Whatever became of the frame, its route must not reach the next packet.
      this.via.primary = -1;
      return;
    }
    const edge = this.options.edge;
    if (edge === undefined || !edge.hosts.hasVni(v.vni)) return this.drop(DropReason.UNKNOWN_VNI);
    const type = v.etherType;
    if (type === ETHERTYPE_IPV4)
      return this.fromOutside(msg.subarray(v.payloadOffset, v.payloadOffset + v.payloadLength), v.vni);
    if (type !== ETHERTYPE_ARP) return this.drop(DropReason.NOT_IPV4);
    const ar = this.gateway!.onArp(v);
    if (ar !== DropReason.NONE) this.drop(ar);
  }

  /** A frame OVS routed: stamped and sent where `via` says, unless this ingress knows a newer rule. */
  private routed(v: VxlanView): void {
    if (v.vni !== this.options.vni) return this.drop(DropReason.UNKNOWN_VNI);
    if (v.etherType !== ETHERTYPE_IPV4) return this.drop(DropReason.NOT_IPV4);
    // An instance joins the switch last (addInstance): until then no rule may name it.
    if (this.via.primary >= this.switch.size) return this.drop(DropReason.NO_ROUTE);
    this.fromOutside(v.buf.subarray(v.payloadOffset, v.payloadOffset + v.payloadLength), v.vni);
  }

  /**
   * Takes the route OVS gave a packet of flow `key` into this switch's table. A flow met for the first
   * time gets it as its rule, so that OVS's default placement holds for the flow from then on, as this
   * switch pins running flows when the live set changes. A newer epoch than the rule's is a rule OVS got
   * before this ingress did: the flow is re-pointed here too, with its end-of-move marker. An older one
   * is a packet OVS classified before the change: the newer rule wins.
   */
  private follow(key: FlowKey): void {
    const via = this.via;
    const rule = this.switch.ruleOf(key);
    if (rule === undefined) this.switch.installRule(flowKeyOf(key), via);
    else if (via.epoch > rule.epoch) this.repoint(flowKeyOf(key), via);
    else if (via.epoch < rule.epoch || via.primary !== rule.primary) {
      this.ovsOverridden++;
      return;
    }
    this.ovsFollowed++;
  }

  /** An inner IPv4 packet (and what may follow it, such as Ethernet padding) into a slot of its own. */
  private fromOutside(inner: Uint8Array, vni: number, until?: number): void {
    if (inner.length + INNER > SLOT) return this.drop(DropReason.BAD_LENGTH);
    const at = this.slots.next();
    this.ring.set(inner, at + INNER);
    this.stampSlot(at, inner.length, vni, until);
  }

  /**
   * Parses the inner packet at INNER of the slot at `at` (`length` bytes there), finds its flow, writes the
   * header in front (with a flow option for a reply to a translated address) and sends it on. A reply
   * whose port nobody holds yet is parked instead (see ReplyMap), until `until` when this is a retry.
   */
  private stampSlot(at: number, length: number, vni: number, until?: number): void {
    const pkt = this.pkt;
    const pr = pkt.parse(this.ring, at + INNER, length);
    if (pr !== DropReason.NONE) return this.drop(pr);
    const replies = this.options.replies;
    const owner = replies?.ownerOf(pkt);
    if (owner === null && replies!.park(pkt, vni, this.clock.now(), until)) return;
    const flow = owner ?? undefined;
    const start = at + INNER - (flow === undefined ? STAMP_HEADER_LENGTH : FLOW_HEADER_LENGTH);
    const h = writeStampHeader(this.ring, start, { vni, flags: 0, epoch: 0, seq: 0, timeMs: 0 }, flow);
    const n = h + pkt.length;
    if (this.view.parse(this.ring, start, n) !== DropReason.NONE) return this.drop(DropReason.BAD_HEADER);
    this.send(this.ring, start, n, flow ?? pkt);
  }

  /**
   * Stamps the datagram the views point at (this.view the whole of it, this.pkt its inner packet) as a
   * packet of flow `id` — the packet itself or the connection it answers — and sends it to the flow's owner
   * (and a copy to its secondary).
   */
  private send(buf: Uint8Array, offset: number, length: number, id: FlowKey): void {
    const view = this.view;
    const pkt = this.pkt;
    const now = this.clock.now();
    // Whole microseconds, so that a microsecond pcap of the stamp log reproduces every stamp exactly.
    const timeMs = Math.round(now * 1000) / 1000;
    if (this.via.primary >= 0 && id === pkt) this.follow(id);
    const hash = flowHashOf(id);
    const route = this.switch.route(id, hash, pkt.length);
    if (route.primary < 0) {
      this.noRoute++;
      return this.drop(DropReason.POLICY);
    }
    // The secondary's copy is made in a slot of the ring: a datagram larger than a slot cannot be copied.
    if (route.secondary >= 0 && length > SLOT) return this.drop(DropReason.BAD_LENGTH);
    const seq = this.stamper.next(id, now);
    view.setSeq(seq);
    view.setTimeMs(timeMs);
    view.setEpoch(route.epoch);
    view.setFlags(0);
    this.options.stampLog?.write(buf, timeMs, view.innerOffset, pkt.length);
    this.io!.queue(this.lane(route.primary, hash), buf, offset, length);
    this.forwarded++;
    if (route.secondary >= 0) {
      const at = this.slots.next();
      this.ring.set(buf.subarray(offset, offset + length), at);
      this.ring[at + view.stampOffset - offset + 1] = StampFlag.COPY;
      this.io!.queue(this.lanes[route.secondary]!.main, this.ring, at, length);
      this.copies++;
    }
  }

  /**
   * Moves a flow: installs its new rule and, if its owner changed, sends the old owner an end-of-move
   * marker carrying the last sequence number the old owner was sent. Packets to one port leave in
   * order, so every packet stamped before the rule changed reaches the old owner before the marker does.
   */
  repoint(key: FlowKey, spec: RuleSpec): boolean {
    const before = this.switch.owner(key);
    if (!this.switch.installRule(key, spec)) return false;
    if (before < 0 || before === spec.primary) return true;
    const at = this.slots.next();
    writeStampHeader(this.ring, at, {
      vni: this.options.vni,
      flags: StampFlag.END_OF_MOVE,
      epoch: spec.epoch,
      seq: Math.max(1, this.stamper.lastSeq(key)),
      timeMs: Math.round(this.clock.now() * 1000) / 1000,
    });
    const n = buildEmpty(this.ring, at + STAMP_HEADER_LENGTH, key);
    // To the flow's worker, behind the flow's last packets on the same path.
    this.io!.queue(this.lane(before, flowHashOf(key)), this.ring, at, STAMP_HEADER_LENGTH + n);
    this.markers++;
    return true;
  }

  /**
   * Changes which instances own new flows. A flow that is already running keeps its owner — its state is
   * there — by a rule pinning it, for every flow whose default owner the change would alter; only a move
   * takes a flow elsewhere.
   */
  setLive(live: readonly number[]): number {
    return this.switch.setLive(live, (visit) => this.stamper.forEachFlow(visit));
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

  private drop(reason: DropReason): void {
    this.drops[reason]!++;
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_ingress_received_total', {}, this.received]);
    out.push(['nfstate_ingress_forwarded_total', {}, this.forwarded]);
    out.push(['nfstate_ingress_secondary_copies_total', {}, this.copies]);
    out.push(['nfstate_ingress_move_markers_total', {}, this.markers]);
    out.push(['nfstate_ingress_no_route_total', {}, this.noRoute]);
    if (this.options.ovs !== undefined) {
      out.push(['nfstate_ingress_ovs_frames_total', { route: 'followed' }, this.ovsFollowed]);
      out.push(['nfstate_ingress_ovs_frames_total', { route: 'overridden' }, this.ovsOverridden]);
    }
    const { io, door } = this;
    out.push(['nfstate_ingress_send_errors_total', {}, (io?.sendErrors ?? 0) + (door?.sendErrors ?? 0)]);
    const oversize = (io?.oversize ?? 0) + (door?.oversize ?? 0);
    for (let r = 1; r < dropReasonName.length; r++) {
      const n = this.drops[r]! + (r === DropReason.BAD_LENGTH ? oversize : 0);
      out.push(['nfstate_ingress_dropped_total', { reason: dropReasonName[r]! }, n]);
    }
    this.stamper.collect(out);
    this.switch.collect(out);
    this.gateway?.collect(out);
    this.options.replies?.collect(out);
  }
}
