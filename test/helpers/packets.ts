/**
 * Stamped datagrams for tests: flow f's packet with sequence number seq, as the ingress would send it;
 * and a stand-in instance that records the stamped datagrams it receives.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { buildUdp } from '../../src/packet/build.js';
import { Packet } from '../../src/packet/packet.js';
import { DropReason } from '../../src/types.js';
import { STAMP_HEADER_LENGTH, StampView, writeStampHeader } from '../../src/wire/geneve.js';

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

/** What a stand-in instance saw of one stamped datagram. */
export interface Seen {
  seq: number;
  flags: number;
  epoch: number;
  srcPort: number;
  srcIp: number;
  dstPort: number;
}

export interface StampListener {
  socket: dgram.Socket;
  port: number;
  seen: Seen[];
}

/** A UDP socket on loopback standing in for an NF instance: it records each stamped datagram it gets. */
export async function stampListener(): Promise<StampListener> {
  const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  const seen: Seen[] = [];
  const view = new StampView();
  const pkt = new Packet();
  socket.on('message', (msg) => {
    assert.equal(view.parse(msg, 0, msg.length), DropReason.NONE);
    assert.equal(pkt.parse(msg, view.innerOffset, view.innerLength), DropReason.NONE);
    seen.push({
      seq: view.seq,
      flags: view.flags,
      epoch: view.epoch,
      srcPort: pkt.srcPort,
      srcIp: pkt.srcIp,
      dstPort: pkt.dstPort,
    });
  });
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  return { socket, port: socket.address().port, seen };
}

/** A UDP socket on loopback that keeps, as text, each datagram it gets: an egress's destination. */
export async function textCollector(): Promise<{ socket: dgram.Socket; port: number; got: string[] }> {
  const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  const got: string[] = [];
  socket.on('message', (m) => got.push(m.toString()));
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  return { socket, port: socket.address().port, got };
}
