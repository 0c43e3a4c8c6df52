/**
 * The switch's table as Open vSwitch flows: what the ingress writes to an OVS bridge (ovs.ts) so that OVS
 * classifies each packet of the hosts' traffic and names, in the frame it passes on, the instance the
 * packet goes to and the epoch of the rule that chose it.
 *
 * The route rides in the Ethernet destination address of the frame that OVS sends to the ingress's VXLAN
 * door, so that it costs OVS one `set_field` and the ingress six bytes that it reads anyway:
 *
 *   06 : primary : epoch (u32, big endian)      e.g. 06:03:00:00:00:2a  instance 3, epoch 42
 *
 * 0x06 is a locally administered unicast address that no host has (the edge gateway's and hosts' start
 * with 02), so the ingress can tell a routed frame from any other. Epoch 0 marks OVS's default placement:
 * the ingress keeps the first owner it meets for a flow, as the built-in switch pins running flows.
 *
 * The table:
 * - table 0, priority 100: one exact rule per direction of each placed flow (the flow key is
 *   direction-independent), its cookie the epoch, sets the route and sends the frame on;
 * - table 0, priority 0: IPv4 without a rule is spread by `multipath` (symmetric L4 hash, highest random
 *   weight: a change of the live set moves only the flows of the instances that came or went) over table 1;
 * - table 1: one flow per live instance, setting its default route;
 * - anything else (not IPv4) is dropped by the bridge's secure fail mode.
 */
import { ErrorCode, NfsError } from '../errors.js';
import { ipToString } from '../packet/flow-key.js';
import type { FlowKey } from '../types.js';
import { IpProto } from '../types.js';
import { macToString } from '../wire/vxlan.js';

/** The first byte of a routed frame's destination address. */
export const ROUTE_MAC_TAG = 0x06;
/** Instances are named by one byte in the route. */
export const MAX_OVS_INSTANCES = 255;
/** The OpenFlow port the routed frames leave by: the tunnel to the ingress's VXLAN door (ovs.ts). */
export const TO_INGRESS = 2;
const EXACT = 100;
const TWO_32 = 0x1_0000_0000;

/** The destination address that names `primary` and `epoch`. */
export function routeMac(primary: number, epoch: number): number {
  if (!Number.isInteger(primary) || primary < 0 || primary >= MAX_OVS_INSTANCES)
    throw new NfsError(
      ErrorCode.CONFIG,
      `ovs: instance index ${primary} does not fit a route (at most ${MAX_OVS_INSTANCES - 1})`,
    );
  if (!Number.isInteger(epoch) || epoch < 0 || epoch >= TWO_32)
    throw new NfsError(ErrorCode.CONFIG, `ovs: epoch ${epoch} does not fit a route (u32)`);
  return (ROUTE_MAC_TAG * 0x100 + primary) * TWO_32 + epoch;
}

/** Reads a frame's route from its destination address (`mac`) into `out`; false for any other address. */
export function readRoute(mac: number, out: { primary: number; epoch: number }): boolean {
  const high = Math.floor(mac / TWO_32);
  if (high >>> 8 !== ROUTE_MAC_TAG) return false;
  out.primary = high & 0xff;
  out.epoch = mac - high * TWO_32;
  return true;
}

function routeActions(primary: number, epoch: number, vni: number): string {
  return `set_field:${macToString(routeMac(primary, epoch))}->eth_dst,set_field:${vni}->tun_id,output:${TO_INGRESS}`;
}

function match(srcIp: number, dstIp: number, srcPort: number, dstPort: number, proto: number): string {
  const ends = `nw_src=${ipToString(srcIp)},nw_dst=${ipToString(dstIp)}`;
  if (proto === IpProto.TCP) return `tcp,${ends},tp_src=${srcPort},tp_dst=${dstPort}`;
  if (proto === IpProto.UDP) return `udp,${ends},tp_src=${srcPort},tp_dst=${dstPort}`;
  if (proto === IpProto.ICMP) return `icmp,${ends}`;
  return `ip,${ends},nw_proto=${proto}`;
}

/** The flows (`ovs-ofctl add-flows` lines) of one exact rule: the flow's two directions. */
export function ruleFlows(key: FlowKey, primary: number, epoch: number, vni: number): string[] {
  const actions = routeActions(primary, epoch, vni);
  const head = `table=0,priority=${EXACT},cookie=${epoch}`;
  const there = match(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
  const back = match(key.dstIp, key.srcIp, key.dstPort, key.srcPort, key.proto);
  return there === back
    ? [`${head},${there},actions=${actions}`]
    : [`${head},${there},actions=${actions}`, `${head},${back},actions=${actions}`];
}

/**
 * The flows that place IPv4 packets without a rule over `live` (instance indexes), replacing those of the
 * previous live set in the same bundle.
 */
export function liveFlows(live: readonly number[], vni: number): string[] {
  const out = ['delete table=1', 'delete_strict table=0,priority=0,ip'];
  if (live.length === 0) return out;
  out.push(
    `add table=0,priority=0,ip,actions=multipath(symmetric_l4,0,hrw,${live.length},0,NXM_NX_REG0[]),resubmit(,1)`,
  );
  live.forEach((instance, k) => out.push(`add table=1,reg0=${k},actions=${routeActions(instance, 0, vni)}`));
  return out;
}
