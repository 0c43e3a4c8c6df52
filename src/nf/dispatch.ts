/**
 * Which worker a stamped datagram belongs to, read at fixed offsets without parsing or allocating: the
 * main thread does this for every packet, so it must be as cheap as a receive. A datagram too short or
 * too odd to carry a flow hashes to 0; its worker's full parser then counts why it is dropped.
 */
import { flowHash } from '../packet/flow-key.js';

export function datagramFlowHash(d: Uint8Array): number {
  const n = d.length;
  if (n < 8) return 0;
  const inner = 8 + (d[0]! & 0x3f) * 4;
  if (inner + 20 > n) return 0;
  const ihl = (d[inner]! & 0x0f) * 4;
  const l4 = inner + ihl;
  const proto = d[inner + 9]!;
  const src =
    ((d[inner + 12]! << 24) | (d[inner + 13]! << 16) | (d[inner + 14]! << 8) | d[inner + 15]!) >>> 0;
  const dst =
    ((d[inner + 16]! << 24) | (d[inner + 17]! << 16) | (d[inner + 18]! << 8) | d[inner + 19]!) >>> 0;
  let sport = 0;
  let dport = 0;
  if ((proto === 6 || proto === 17) && l4 + 4 <= n) {
    sport = (d[l4]! << 8) | d[l4 + 1]!;
    dport = (d[l4 + 2]! << 8) | d[l4 + 3]!;
  } else if (proto === 1 && l4 + 6 <= n && (d[l4] === 8 || d[l4] === 0)) {
    sport = dport = (d[l4 + 4]! << 8) | d[l4 + 5]!;
  }
  return flowHash(src, dst, sport, dport, proto);
}
