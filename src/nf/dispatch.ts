/**
 * What an NF instance's main thread reads from a stamped datagram, at fixed offsets, without parsing or
 * allocating: it does this for every packet, so it must be as cheap as a receive. The flow picks the worker;
 * a copy for the secondary (the switch's COPY flag) is kept rather than processed. A datagram too short or
 * too odd to carry a flow hashes to 0; its worker's full parser then counts why it is dropped.
 */
import { flowHash } from '../packet/flow-key.js';
import {
  FLOW_HEADER_LENGTH,
  FLOW_OPTION_TYPE,
  StampFlag,
  StampView,
  STAMP_OPTION_CLASS,
  STAMP_OPTION_TYPE,
} from '../wire/geneve.js';
import { DropReason } from '../types.js';

/** A datagram's flow, filled in place by `readTuple`. */
export interface Tuple {
  srcIp: number;
  dstIp: number;
  srcPort: number;
  dstPort: number;
  proto: number;
}

/**
 * Fills `t` with the datagram's flow: the connection its flow option names (the switch writes that right
 * after the stamp, at byte 36), else its inner 5-tuple; false when it is too short to carry one.
 */
export function readTuple(d: Uint8Array, t: Tuple): boolean {
  const n = d.length;
  if (n < 8) return false;
  const inner = 8 + (d[0]! & 0x3f) * 4;
  if (inner + 20 > n) return false;
  const ihl = (d[inner]! & 0x0f) * 4;
  const l4 = inner + ihl;
  const proto = d[inner + 9]!;
  t.proto = proto;
  if (
    inner >= FLOW_HEADER_LENGTH &&
    ((d[36]! << 8) | d[37]!) === STAMP_OPTION_CLASS &&
    d[38] === FLOW_OPTION_TYPE
  ) {
    t.srcIp = ((d[40]! << 24) | (d[41]! << 16) | (d[42]! << 8) | d[43]!) >>> 0;
    t.dstIp = ((d[44]! << 24) | (d[45]! << 16) | (d[46]! << 8) | d[47]!) >>> 0;
    t.srcPort = (d[48]! << 8) | d[49]!;
    t.dstPort = (d[50]! << 8) | d[51]!;
    return true;
  }
  t.srcIp = ((d[inner + 12]! << 24) | (d[inner + 13]! << 16) | (d[inner + 14]! << 8) | d[inner + 15]!) >>> 0;
  t.dstIp = ((d[inner + 16]! << 24) | (d[inner + 17]! << 16) | (d[inner + 18]! << 8) | d[inner + 19]!) >>> 0;
  t.srcPort = 0;
  t.dstPort = 0;
  if ((proto === 6 || proto === 17) && l4 + 4 <= n) {
    t.srcPort = (d[l4]! << 8) | d[l4 + 1]!;
    t.dstPort = (d[l4 + 2]! << 8) | d[l4 + 3]!;
  } else if (proto === 1 && l4 + 6 <= n && (d[l4] === 8 || d[l4] === 0)) {
    t.srcPort = t.dstPort = (d[l4 + 4]! << 8) | d[l4 + 5]!;
  }
  return true;
}

const scratch: Tuple = { srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 };

export function datagramFlowHash(d: Uint8Array): number {
  if (!readTuple(d, scratch)) return 0;
  return flowHash(scratch.srcIp, scratch.dstIp, scratch.srcPort, scratch.dstPort, scratch.proto);
}

const view = new StampView();

/**
 * Absolute offset of the nfstate option body, or -1. The switch writes it as the first option, so that is
 * checked first; a header another Geneve speaker extended is walked in full.
 */
export function stampAt(d: Uint8Array): number {
  if (
    d.length >= 36 &&
    ((d[8]! << 8) | d[9]!) === STAMP_OPTION_CLASS &&
    d[10] === STAMP_OPTION_TYPE &&
    (d[0]! & 0x3f) >= 7
  )
    return 12;
  return view.parse(d, 0, d.length) === DropReason.NONE ? view.stampOffset : -1;
}

/** Whether the datagram is a copy for the secondary. */
export function isCopy(d: Uint8Array, at: number): boolean {
  return at >= 0 && (d[at + 1]! & StampFlag.COPY) !== 0;
}

/** The stamp's sequence number (the option body is at `at`). */
export function stampSeq(d: Uint8Array, at: number): number {
  const hi = ((d[at + 8]! << 24) | (d[at + 9]! << 16) | (d[at + 10]! << 8) | d[at + 11]!) >>> 0;
  const lo = ((d[at + 12]! << 24) | (d[at + 13]! << 16) | (d[at + 14]! << 8) | d[at + 15]!) >>> 0;
  return hi * 0x1_0000_0000 + lo;
}
