/**
 * Stamped datagrams for tests: flow f's packet with sequence number seq, as the ingress would send it.
 */
import { buildUdp } from '../../src/packet/build.js';
import { STAMP_HEADER_LENGTH, writeStampHeader } from '../../src/wire/geneve.js';

export interface StampedSpec {
  flow: number;
  seq: number;
  timeMs?: number;
  payload?: Uint8Array;
  flags?: number;
}

export function stamped(s: StampedSpec): Uint8Array {
  const buf = new Uint8Array(STAMP_HEADER_LENGTH + 28 + (s.payload?.length ?? 8));
  writeStampHeader(buf, 0, {
    vni: 1,
    flags: s.flags ?? 0,
    epoch: 1,
    seq: s.seq,
    timeMs: s.timeMs ?? 1_700_000_000_000 + s.seq,
  });
  const payload = s.payload ?? new Uint8Array([s.flow, s.seq & 0xff, 1, 2, 3, 4, 5, 6]);
  const n = buildUdp(buf, STAMP_HEADER_LENGTH, {
    srcIp: (0x0a000000 + s.flow + 1) >>> 0,
    dstIp: 0xc633640a,
    srcPort: 10000 + s.flow,
    dstPort: 80,
    payload,
  });
  return buf.subarray(0, STAMP_HEADER_LENGTH + n);
}
