/**
 * The edge's ingress side for what is not an IPv4 packet: ARP from the hosts' vxlan devices. The hosts
 * route through a gateway address on their own network (HostTable); the ingress answers their ARP
 * requests for it with the edge's MAC, so hosts need no static neighbours. Every ARP frame is also carried
 * across, unstamped, to the egress, which learns the hosts' MACs from them (and asks by ARP itself for a
 * host it has not heard from: the answer comes here, since a host's vxlan device sends everything to the
 * ingress, and is carried across like the rest).
 *
 *   const gw = new EdgeGateway(hosts, send, { host: egressHost, port: egressPort });
 *   gw.onArp(vxlanView, fromAddress);   // DropReason.NONE, or why the frame was dropped
 *
 * Other EtherTypes (IPv6, VLAN tags, LLDP …) are not for nfstate: the ingress drops and counts them
 * (`not_ipv4`).
 */
import { ArpOp, ArpView, ARP_LENGTH, writeArp } from '../wire/arp.js';
import { GENEVE_BASE_LENGTH, writeFrameHeader } from '../wire/geneve.js';
import { ETHERTYPE_ARP, VXLAN_FRAME_HEADER, writeVxlanFrame, type VxlanView } from '../wire/vxlan.js';
import { DropReason, type MetricSample, type MetricSource } from '../types.js';
import type { HostTable } from './hosts.js';

/** Sends a datagram (the ingress's VXLAN socket). */
export type SendTo = (buf: Uint8Array, offset: number, length: number, port: number, host: string) => void;

const MAX_FRAME = 2048;

export class EdgeGateway implements MetricSource {
  private readonly arp = new ArpView();
  private readonly out = new Uint8Array(VXLAN_FRAME_HEADER + ARP_LENGTH);
  private readonly carried = new Uint8Array(GENEVE_BASE_LENGTH + MAX_FRAME);
  answered = 0;
  carriedFrames = 0;

  constructor(
    private readonly hosts: HostTable,
    private readonly send: SendTo,
    private readonly egress: { host: string; port: number } | undefined,
  ) {}

  /** An ARP frame from a host's VTEP at `from` (the view points at it). */
  onArp(v: VxlanView, from: string): DropReason {
    const arp = this.arp;
    const r = arp.parse(v.buf, v.payloadOffset, v.payloadLength);
    if (r !== DropReason.NONE) return r;
    if (arp.op === ArpOp.REQUEST && this.hosts.gatewayOf(v.vni, arp.targetIp)) {
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
      this.send(this.out, 0, n + ARP_LENGTH, this.hosts.vtepPort, from);
      this.answered++;
    }
    const egress = this.egress;
    // A frame too long to carry is one the egress never sees: a drop, counted by the ingress.
    if (egress !== undefined && v.frameLength > MAX_FRAME) return DropReason.BAD_LENGTH;
    if (egress !== undefined) {
      const h = writeFrameHeader(this.carried, 0, v.vni);
      this.carried.set(v.buf.subarray(v.frameOffset, v.frameOffset + v.frameLength), h);
      this.send(this.carried, 0, h + v.frameLength, egress.port, egress.host);
      this.carriedFrames++;
    }
    return DropReason.NONE;
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_edge_arp_answered_total', {}, this.answered]);
    out.push(['nfstate_edge_arp_carried_total', {}, this.carriedFrames]);
  }
}
