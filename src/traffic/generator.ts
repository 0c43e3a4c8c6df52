/**
 * The traffic generator: sends a packet source (a synthetic trace or a pcap replay) to an ingress as
 * Geneve datagrams with an empty nfstate stamp, either at a fixed rate or, with rate 0, as fast as the
 * deployment drains: a bounded window of packets in flight, opened by the sink's acknowledgements, so no
 * socket buffer on the way overflows.
 *
 *   const gen = new Generator({ rate: 0, window: 1024, vni: 1, drainTimeoutMs: 1000 }, logger);
 *   const ackPort = await gen.bind(host);   // give this to the sink
 *   await gen.connect(host, ingressPort);
 *   const result = await gen.run(trace);    // { sent, acked, durationMs, ratePps }
 *
 * Acknowledgement datagram (sink → generator), 12 bytes:
 *
 *   +------+------+------+------+-----------------------------------+
 *   | 'N'  | 'F'  | 'S'  | 'A'  | u64 packets delivered, cumulative |
 *   +------+------+------+------+-----------------------------------+
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { wallClock } from '../clock.js';
import { ErrorCode, NfsError } from '../errors.js';
import { ipv4Payload, readPcap } from './pcap.js';
import type { Clock, Logger } from '../types.js';
import { openBatchSocket, type BatchSocket } from '../wire/batch-socket.js';
import { writeStampHeader } from '../wire/geneve.js';
import { ETHERTYPE_IPV4, writeVxlanFrame } from '../wire/vxlan.js';

export const ACK_LENGTH = 12;
const ACK_MAGIC = 0x4e465341;

export function writeAck(buf: Uint8Array, delivered: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset, ACK_LENGTH);
  dv.setUint32(0, ACK_MAGIC);
  dv.setUint32(4, Math.floor(delivered / 0x100000000));
  dv.setUint32(8, delivered >>> 0);
}

/** The count in an acknowledgement, or -1 if the datagram is not one. */
export function readAck(buf: Uint8Array): number {
  if (buf.length !== ACK_LENGTH) return -1;
  const dv = new DataView(buf.buffer, buf.byteOffset, ACK_LENGTH);
  if (dv.getUint32(0) !== ACK_MAGIC) return -1;
  return dv.getUint32(4) * 0x100000000 + dv.getUint32(8);
}

/** Anything that can write its i-th IPv4 packet into a buffer. */
export interface PacketSource {
  readonly total: number;
  write(i: number, buf: Uint8Array, offset: number): number;
}

/**
 * Replays the IPv4 packets of a pcap file (Ethernet, raw IP, Linux cooked v1 or v2), skipping other frames; a
 * file with none is an error.
 */
export class PcapSource implements PacketSource {
  private readonly packets: Uint8Array[] = [];
  constructor(path: string) {
    const file = readPcap(path);
    for (const rec of file.records) {
      const ip = ipv4Payload(file.linkType, rec.data);
      if (ip !== undefined) this.packets.push(ip);
    }
    // A replay of nothing would look like a run that passed.
    if (this.packets.length === 0)
      throw new NfsError(
        ErrorCode.PCAP,
        `${path}: no IPv4 packet to replay (link type ${file.linkType}; nfstate reads Ethernet, raw IP and ` +
          `Linux cooked v1 and v2 captures)`,
      );
  }
  get total(): number {
    return this.packets.length;
  }
  write(i: number, buf: Uint8Array, offset: number): number {
    const p = this.packets[i]!;
    buf.set(p, offset);
    return p.length;
  }
}

export interface GeneratorOptions {
  /** Packets per second; 0 = closed loop with a bounded window. */
  rate: number;
  window: number;
  vni: number;
  /** How long to wait for the last acknowledgements. */
  drainTimeoutMs: number;
  /**
   * How each packet is carried: in Geneve with an empty stamp, to an ingress (the default), or in VXLAN as
   * an IPv4 Ethernet frame, as a host's kernel vxlan device sends it, to a switch in front (switch/ovs.ts).
   */
  framing?: 'geneve' | 'vxlan';
}

export interface GeneratorResult {
  sent: number;
  acked: number;
  /** From the first packet sent to the last acknowledgement (or the last send without acks). */
  durationMs: number;
  ratePps: number;
  /** Times the window stalled with no acknowledgement and was reopened. */
  stalls: number;
}

/** Packets in flight in a closed loop (rate 0) unless told otherwise. */
export const DEFAULT_WINDOW = 512;
/** The Ethernet addresses of the generator's VXLAN frames: a host's, and the switch it sends to. */
const HOST_MAC = 0x02_6e_66_00_00_10;
const SWITCH_MAC = 0x02_6e_66_00_00_11;
const SLOT = 2048;
const SLOTS = 8192;
const STALL_MS = 250;

export class Generator {
  /** To the ingress, a burst per system call where the native addon is built (wire/batch-socket.ts). */
  private socket: BatchSocket | undefined;
  /** Separate from the sending socket: a connected socket only hears from the peer it is connected to. */
  private readonly acks = dgram.createSocket('udp4');
  private readonly ring = new Uint8Array(SLOT * SLOTS);
  private acked = 0;
  /** Packets sent so far in the current run. */
  sent = 0;
  private lastAckAt = 0;
  private wake: (() => void) | undefined;
  /** Writes a packet's outer headers at ring[at] and returns their length; the fields are fixed per run. */
  private readonly header: (ring: Uint8Array, at: number) => number;

  constructor(
    private readonly options: GeneratorOptions,
    private readonly logger: Logger,
    private readonly clock: Clock = wallClock,
  ) {
    const vni = options.vni;
    const frame = { vni, dst: SWITCH_MAC, src: HOST_MAC, etherType: ETHERTYPE_IPV4 };
    const stamp = { vni, flags: 0, epoch: 0, seq: 0, timeMs: 0 };
    this.header =
      options.framing === 'vxlan'
        ? (ring, at) => writeVxlanFrame(ring, at, frame)
        : (ring, at) => writeStampHeader(ring, at, stamp);
  }

  /**
   * Binds the socket that takes acknowledgements, at `port` (0: any); returns its port (give it to the
   * sink, `--ack-to`).
   */
  async bind(host: string, port = 0): Promise<number> {
    this.acks.on('message', (msg) => {
      const n = readAck(msg);
      if (n > this.acked) {
        this.acked = n;
        this.lastAckAt = this.clock.now();
        this.wake?.();
      }
    });
    this.acks.on('error', (err) => {
      this.logger.warn('generator ack socket error', { error: err.message });
    });
    this.acks.bind(port, host);
    await once(this.acks, 'listening');
    return this.acks.address().port;
  }

  async connect(host: string, port: number): Promise<void> {
    this.socket ??= await openBatchSocket('0.0.0.0', 0, () => undefined);
    await this.socket.dest(0, host, port);
  }

  close(): void {
    const errors = this.socket?.sendErrors ?? 0;
    if (errors > 0) this.logger.warn('generator send errors', { count: errors });
    this.socket?.close();
    this.acks.close();
  }

  async run(source: PacketSource, signal?: AbortSignal): Promise<GeneratorResult> {
    const { rate, window } = this.options;
    const start = this.clock.now();
    let sent = 0;
    let lost = 0;
    let stalls = 0;
    while (sent < source.total && signal?.aborted !== true) {
      let budget: number;
      if (rate > 0) {
        budget = Math.min(Math.floor(((this.clock.now() - start) * rate) / 1000) - sent, 256);
      } else {
        budget = Math.min(window - (sent - this.acked - lost), 256);
      }
      if (budget <= 0) {
        if (rate > 0) {
          await sleep(1);
          continue;
        }
        const before = this.acked;
        await this.waitAck(STALL_MS);
        if (this.acked === before) {
          // Nothing came back for a while: what is in flight is lost (or dropped by policy); go on.
          stalls++;
          lost = sent - this.acked;
        }
        continue;
      }
      budget = Math.min(budget, source.total - sent);
      for (let k = 0; k < budget; k++) this.sendOne(source, sent++);
      this.socket!.flush();
      this.sent = sent;
      // Let acknowledgements and timers in between bursts.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    const sentAt = this.clock.now();
    // Wait for the tail: every packet acknowledged, or no progress for drainTimeoutMs.
    while (this.acked < sent && signal?.aborted !== true) {
      const before = this.acked;
      await this.waitAck(this.options.drainTimeoutMs);
      if (this.acked === before) break;
    }
    const end = this.acked > 0 ? Math.max(this.lastAckAt, sentAt) : sentAt;
    const durationMs = Math.max(end - start, 0.001);
    if (stalls > 0) this.logger.warn('generator window stalled', { stalls });
    return {
      sent,
      acked: this.acked,
      durationMs,
      ratePps: (this.acked > 0 ? this.acked : sent) / (durationMs / 1000),
      stalls,
    };
  }

  private sendOne(source: PacketSource, i: number): void {
    const at = (i % SLOTS) * SLOT;
    const ring = this.ring;
    const h = this.header(ring, at);
    const n = source.write(i, ring, at + h);
    this.socket!.queue(0, ring, at, h + n);
  }

  private waitAck(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      const wake = (): void => {
        clearTimeout(timer);
        done();
      };
      function done(): void {
        resolve();
      }
      this.wake = wake;
    }).finally(() => {
      this.wake = undefined;
    });
  }
}
