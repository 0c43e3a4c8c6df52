/**
 * The edge's ingress side for what is not an IPv4 packet: ARP from the hosts' vxlan devices. The hosts
 * route through a gateway address on their own network (HostTable); the ingress answers their ARP
 * requests for it with the edge's MAC, so hosts need no static neighbours. Every ARP frame is also carried
 * across, unstamped, to the egress, which learns the hosts' MACs from them (and asks by ARP itself for a
 * host it has not heard from: the answer comes here, since a host's vxlan device sends everything to the
 * ingress, and is carried across like the rest).
 *
 *   // send(dest, …): dest is a host network's index (its VTEP), or EGRESS_DEST(hosts) for the egress
 *   const gw = new EdgeGateway(hosts, send, true);
 *   gw.onArp(vxlanView);   // DropReason.NONE, or why the frame was dropped
 *
 * Other EtherTypes (IPv6, VLAN tags, LLDP …) are not for nfstate: the ingress drops and counts them
 * (`not_ipv4`).
 */
import { ArpOp, ArpView, ARP_LENGTH, writeArp } from '../wire/arp.js';
import { MAX_DATAGRAM } from '../wire/batch-socket.js';
import { GENEVE_BASE_LENGTH, writeFrameHeader } from '../wire/geneve.js';
import { ETHERTYPE_ARP, VXLAN_FRAME_HEADER, writeVxlanFrame, type VxlanView } from '../wire/vxlan.js';
import { DropReason, type MetricSample, type MetricSource } from '../types.js';
import type { HostTable } from './hosts.js';

/**
 * Queues a datagram on an edge socket (wire/batch-socket.ts) for a numbered destination: a host network's
 * VTEP by its index (HostNet.index), or what the socket's owner numbers beyond them.
 */
export type SendTo = (dest: number, buf: Uint8Array, offset: number, length: number) => void;

/** The ingress's VXLAN socket sends to the egress at the number after the host networks'. */
export function egressDest(hosts: HostTable): number {
  return hosts.nets.length;
}

/** The longest frame carried: with its header, the longest datagram an nfstate socket takes whole. */
const MAX_FRAME = MAX_DATAGRAM - GENEVE_BASE_LENGTH;

export class EdgeGateway implements MetricSource {
  private readonly arp = new ArpView();
  private readonly out = new Uint8Array(VXLAN_FRAME_HEADER + ARP_LENGTH);
  private readonly carried = new Uint8Array(GENEVE_BASE_LENGTH + MAX_FRAME);
  answered = 0;
  carriedFrames = 0;

  constructor(
    private readonly hosts: HostTable,
    private readonly send: SendTo,
    /** Whether ARP frames are carried across to the egress (at `egressDest(hosts)`). */
    private readonly carry: boolean,
  ) {}

  /** An ARP frame from a host's VTEP (the view points at it). */
  onArp(v: VxlanView): DropReason {
    const arp = this.arp;
    const r = arp.parse(v.buf, v.payloadOffset, v.payloadLength);
    if (r !== DropReason.NONE) return r;
    // Only a host of that network asks for its gateway: the answer goes to the network's VTEP.
    const net = arp.op === ArpOp.REQUEST ? this.hosts.gatewayOf(v.vni, arp.targetIp) : undefined;
    if (net !== undefined) {
      const n = writeVxlanFrame(this.out, 0, {
        vni: v.vni,
        dst: arp.senderMac,
        src: this.hosts.mac,
        etherType: ETHERTYPE_ARP,
      });
      writeArp(this.out, n, {
        op: ArpOp.REPLY,
        senderMac: this.hosts.mac,
        senderIp: arp.targetIp,
        targetMac: arp.senderMac,
        targetIp: arp.senderIp,
      });
      this.send(net.index, this.out, 0, n + ARP_LENGTH);
      this.answered++;
    }
    if (!this.carry) return DropReason.NONE;
    // A frame too long to carry is one the egress never sees: a drop, counted by the ingress.
    if (v.frameLength > MAX_FRAME) return DropReason.BAD_LENGTH;
    const h = writeFrameHeader(this.carried, 0, v.vni);
    this.carried.set(v.buf.subarray(v.frameOffset, v.frameOffset + v.frameLength), h);
    this.send(egressDest(this.hosts), this.carried, 0, h + v.frameLength);
    this.carriedFrames++;
    return DropReason.NONE;
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_edge_arp_answered_total', {}, this.answered]);
    out.push(['nfstate_edge_arp_carried_total', {}, this.carriedFrames]);
  }
}
