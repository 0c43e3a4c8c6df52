/**
 * The edge's egress side: delivers each processed IPv4 packet to the real host that holds its destination,
 * as an Ethernet frame in VXLAN to that host's VTEP (HostTable: the longest prefix), from the gateway's MAC
 * to the host's. The host's MAC comes from ARP: every ARP frame the hosts send reaches the ingress, which
 * carries it across to here (edge/gateway.ts), and for a host not heard from yet the egress asks itself —
 * "who has 198.51.100.10? tell 198.51.100.1" — holding that host's packets meanwhile (at most
 * MAX_QUEUED each, for at most ARP_TRIES × ARP_RETRY_MS; then they are dropped and counted as no_route).
 *
 *   const egress = new VxlanEgress(hosts, (net, buf, off, len) => socket.queue(net, buf, off, len));
 *   egress.deliver(buf, innerOffset, length, dstIp);   // a processed packet
 *   egress.onCarried(datagram);                        // an ARP frame carried across by the ingress
 *
 * The hosts' vxlan devices must not learn MAC addresses from what arrives (`nolearning`): their frames go
 * to the ingress, their one remote, while the egress sends from an address of its own.
 */
import type { HostNet, HostTable } from './hosts.js';
import type { SendTo } from './gateway.js';
import { ArpOp, ArpView, ARP_LENGTH, writeArp } from '../wire/arp.js';
import { GENEVE_BASE_LENGTH } from '../wire/geneve.js';
import { SendRing } from '../wire/send-ring.js';
import {
  BROADCAST_MAC,
  ETHERNET_HEADER,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  VXLAN_FRAME_HEADER,
  writeVxlanFrame,
} from '../wire/vxlan.js';
import { read16 } from '../packet/layout.js';
import { DropReason, dropReasonName, type MetricSample, type MetricSource } from '../types.js';

const SLOT = 2048;
const SLOTS = 1024;
/** Packets held for one host while its MAC is asked for. */
const MAX_QUEUED = 256;
const ARP_RETRY_MS = 200;
const ARP_TRIES = 5;

interface Pending {
  readonly net: HostNet;
  readonly packets: Uint8Array[];
  tries: number;
  timer: NodeJS.Timeout | undefined;
}

export class VxlanEgress implements MetricSource {
  private readonly neighbours = new Map<number, number>();
  private readonly pending = new Map<number, Pending>();
  private readonly ring = new SendRing(SLOT, SLOTS);
  private readonly arp = new ArpView();
  delivered = 0;
  arpRequests = 0;
  learned = 0;
  readonly drops = new Float64Array(dropReasonName.length);

  constructor(
    private readonly hosts: HostTable,
    private readonly send: SendTo,
  ) {}

  /** An IPv4 packet at buf[offset, offset+length) for `dstIp`, to its host. */
  deliver(buf: Uint8Array, offset: number, length: number, dstIp: number): void {
    if (length + VXLAN_FRAME_HEADER > SLOT) return this.drop(DropReason.BAD_LENGTH);
    const net = this.hosts.lookup(dstIp);
    if (net === undefined) return this.drop(DropReason.NO_ROUTE);
    const mac = this.neighbours.get(dstIp);
    if (mac === undefined) return this.hold(buf.slice(offset, offset + length), dstIp, net);
    this.frame(buf, offset, length, net, mac);
  }

  /** A datagram from the ingress carrying an Ethernet frame (wire/geneve.ts `isCarriedFrame`). */
  onCarried(msg: Uint8Array): void {
    const at = GENEVE_BASE_LENGTH;
    if (msg.length < at + ETHERNET_HEADER) return this.drop(DropReason.TRUNCATED);
    if (read16(msg, at + 12) !== ETHERTYPE_ARP) return this.drop(DropReason.NOT_IPV4);
    const arp = this.arp;
    const r = arp.parse(msg, at + ETHERNET_HEADER, msg.length - at - ETHERNET_HEADER);
    if (r !== DropReason.NONE) return this.drop(r);
    const ip = arp.senderIp;
    // An ARP probe (sender 0.0.0.0) says nothing about who has which address.
    if (ip === 0) return;
    const mac = arp.senderMac;
    if (this.neighbours.get(ip) !== mac) {
      this.neighbours.set(ip, mac);
      this.learned++;
    }
    const p = this.pending.get(ip);
    if (p === undefined) return;
    clearTimeout(p.timer);
    this.pending.delete(ip);
    for (const pkt of p.packets) this.frame(pkt, 0, pkt.length, p.net, mac);
  }

  /** The MAC learned for `ip`, if any (tests, and the lab's report). */
  macOf(ip: number): number | undefined {
    return this.neighbours.get(ip);
  }

  stop(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
  }

  private frame(buf: Uint8Array, offset: number, length: number, net: HostNet, mac: number): void {
    const at = this.ring.next();
    const h = writeVxlanFrame(this.ring.buf, at, {
      vni: net.vni,
      dst: mac,
      src: this.hosts.mac,
      etherType: ETHERTYPE_IPV4,
    });
    this.ring.buf.set(buf.subarray(offset, offset + length), at + h);
    this.send(net.index, this.ring.buf, at, h + length);
    this.delivered++;
  }

  /** Holds a packet for a host whose MAC is not known yet, and asks for it (once per retry interval). */
  private hold(packet: Uint8Array, ip: number, net: HostNet): void {
    let p = this.pending.get(ip);
    if (p === undefined) {
      p = { net, packets: [], tries: 0, timer: undefined };
      this.pending.set(ip, p);
      this.ask(ip, p);
    }
    if (p.packets.length >= MAX_QUEUED) return this.drop(DropReason.BUFFER_FULL);
    p.packets.push(packet);
  }

  private ask(ip: number, p: Pending): void {
    if (p.tries >= ARP_TRIES) {
      this.pending.delete(ip);
      this.drops[DropReason.NO_ROUTE]! += p.packets.length;
      return;
    }
    p.tries++;
    const at = this.ring.next();
    const n = writeVxlanFrame(this.ring.buf, at, {
      vni: p.net.vni,
      dst: BROADCAST_MAC,
      src: this.hosts.mac,
      etherType: ETHERTYPE_ARP,
    });
    writeArp(this.ring.buf, at + n, {
      op: ArpOp.REQUEST,
      senderMac: this.hosts.mac,
      senderIp: p.net.gateway,
      targetMac: 0,
      targetIp: ip,
    });
    this.send(p.net.index, this.ring.buf, at, n + ARP_LENGTH);
    this.arpRequests++;
    p.timer = setTimeout(() => {
      this.ask(ip, p);
    }, ARP_RETRY_MS);
    p.timer.unref();
  }

  private drop(reason: DropReason): void {
    this.drops[reason]!++;
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_edge_delivered_total', {}, this.delivered]);
    out.push(['nfstate_edge_arp_requests_total', {}, this.arpRequests]);
    out.push(['nfstate_edge_neighbours_learned_total', {}, this.learned]);
    out.push(['nfstate_edge_neighbours', {}, this.neighbours.size]);
    for (let r = 1; r < dropReasonName.length; r++)
      out.push(['nfstate_edge_dropped_total', { reason: dropReasonName[r]! }, this.drops[r]!]);
  }
}
