/**
 * The host networks at the edge: which inner prefix lives behind which VTEP (a Linux host's vxlan device)
 * on which VNI, and the gateway address the hosts route through. The topology's `edge` section:
 *
 *   edge:
 *     hosts:
 *       - { prefix: 10.1.0.0/24, vtep: 198.18.0.2, vni: 1, gateway: 10.1.0.1 }
 *       - { prefix: 198.51.100.0/24, vtep: 198.18.0.3, vni: 1 }   # gateway: the prefix's first address
 *
 *   const hosts = new HostTable(edge);
 *   hosts.lookup(parseIpv4('10.1.0.2'))?.vtep;   // '198.18.0.2', longest prefix first
 *   hosts.gatewayOf(1, parseIpv4('10.1.0.1'))?.index;   // 0: the ingress answers ARP for it, to that VTEP
 */
import { inCidr, parseCidr, parseIpv4, type Cidr } from '../packet/flow-key.js';
import { parseMac, VXLAN_PORT } from '../wire/vxlan.js';

/** The edge as a topology and the role specs carry it (JSON: addresses as text). */
export interface EdgeConfig {
  /** Where the ingress takes VXLAN from the hosts. */
  readonly vxlanPort: number;
  /** The hosts' VXLAN port, where the egress sends. */
  readonly vtepPort: number;
  /** The gateway's MAC address, which the hosts learn by ARP. */
  readonly mac: string;
  readonly hosts: readonly HostConfig[];
}

export interface HostConfig {
  readonly prefix: string;
  readonly vtep: string;
  readonly vni: number;
  /** Absent: the prefix's first address. */
  readonly gateway?: string;
}

export const DEFAULT_EDGE_MAC = '02:6e:66:00:00:01';
export const DEFAULT_EDGE: Omit<EdgeConfig, 'hosts'> = {
  vxlanPort: VXLAN_PORT,
  vtepPort: VXLAN_PORT,
  mac: DEFAULT_EDGE_MAC,
};

export interface HostNet {
  /** Its place in `nets`: the number the edge's sockets send to its VTEP by. */
  readonly index: number;
  readonly prefix: Cidr;
  readonly vtep: string;
  readonly vni: number;
  readonly gateway: number;
}

export class HostTable {
  readonly mac: number;
  readonly vtepPort: number;
  /** Longest prefix first. */
  readonly nets: readonly HostNet[];
  private readonly vnis: ReadonlySet<number>;

  constructor(edge: EdgeConfig) {
    this.mac = parseMac(edge.mac);
    this.vtepPort = edge.vtepPort;
    this.nets = edge.hosts
      .map((h) => {
        const prefix = parseCidr(h.prefix);
        const gateway = h.gateway === undefined ? (prefix.network + 1) >>> 0 : parseIpv4(h.gateway);
        return { prefix, vtep: h.vtep, vni: h.vni, gateway };
      })
      .sort((a, b) => b.prefix.bits - a.prefix.bits)
      .map((n, index) => ({ index, ...n }));
    this.vnis = new Set(this.nets.map((n) => n.vni));
  }

  /** The host network that holds `ip`, or undefined. */
  lookup(ip: number): HostNet | undefined {
    for (const n of this.nets) if (inCidr(ip, n.prefix)) return n;
    return undefined;
  }

  hasVni(vni: number): boolean {
    return this.vnis.has(vni);
  }

  /** The host network on `vni` whose gateway is `ip`: the edge answers ARP for it, to that network's VTEP. */
  gatewayOf(vni: number, ip: number): HostNet | undefined {
    for (const n of this.nets) if (n.vni === vni && n.gateway === ip) return n;
    return undefined;
  }
}
