/**
 * A UDP socket for a hot path: it receives on one port and sends to numbered destinations, in batches
 * where it can. With the native addon (native/udp.c, built by `npm run build` where a C compiler is) a
 * batch of up to 64 datagrams costs one recvmmsg or sendmmsg; without it, node:dgram makes one system
 * call per datagram, with the same behaviour otherwise. `NFSTATE_IO=node` chooses node:dgram anyway.
 *
 *   const s = await openBatchSocket('127.0.0.1', 0, (d) => onDatagram(d));
 *   await s.dest(0, '127.0.0.1', 9000);
 *   s.queue(0, buf, offset, length);   // copied (native) or sent at once (node:dgram)
 *   s.flush();                          // also runs at the end of each received batch, and at the next turn
 *
 * A received datagram is a view into a buffer that the next batch overwrites: use it, or copy it, before
 * returning. Datagrams to one destination leave in the order they were queued.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

interface NativeUdp {
  open(host: string, port: number, bufBytes: number): [unknown, number];
  watch(handle: unknown, onReadable: () => void): void;
  recv(handle: unknown, slab: Uint8Array, slotBytes: number, lens: Uint32Array): number;
  dest(handle: unknown, index: number, host: string, port: number): void;
  send(
    handle: unknown,
    slab: Uint8Array,
    offsets: Uint32Array,
    lens: Uint32Array,
    dests: Uint16Array,
    count: number,
  ): number;
  close(handle: unknown): void;
}

/** The addon, or why it is not used. */
function loadNative(): NativeUdp | string {
  if (process.env.NFSTATE_IO === 'node') return 'NFSTATE_IO=node';
  const path = fileURLToPath(new URL('../../../native/build/nfstate_udp.node', import.meta.url));
  try {
    return createRequire(import.meta.url)(path) as NativeUdp;
  } catch (err) {
    return `no native addon at ${path} (${(err as Error).message.split('\n')[0]})`;
  }
}

const native = loadNative();

/** Why datagrams go through node:dgram, or undefined when they do not. */
export const IO_FALLBACK_REASON: string | undefined = typeof native === 'string' ? native : undefined;

/** The largest datagram received whole; a longer one is dropped and counted (`oversize`). */
export const MAX_DATAGRAM = 2048;
const BATCH = 64;
const TX_SLOTS = 1024;
const SOCKET_BUFFER = 8 * 1024 * 1024;
/** Batches read per readiness event, so that a flood leaves the event loop room for the rest. */
const BATCHES_PER_EVENT = 16;
const EMPTY = new Uint8Array(0);

export interface BatchSocket {
  readonly port: number;
  /** Whether recvmmsg/sendmmsg move its datagrams (the native addon) rather than node:dgram. */
  readonly native: boolean;
  /** Datagrams longer than MAX_DATAGRAM received and dropped, and datagrams the kernel did not take. */
  readonly oversize: number;
  readonly sendErrors: number;
  /** Where `queue(index, …)` sends. */
  dest(index: number, host: string, port: number): Promise<void>;
  queue(index: number, buf: Uint8Array, offset: number, length: number): void;
  flush(): void;
  close(): void;
}

/**
 * Binds `host:port` (0: any) and hands each datagram received there to `onDatagram`; `io: 'node'` takes
 * node:dgram even where the addon is built.
 */
export async function openBatchSocket(
  host: string,
  port: number,
  onDatagram: (d: Uint8Array) => void,
  io: 'auto' | 'node' = 'auto',
): Promise<BatchSocket> {
  return typeof native === 'string' || io === 'node'
    ? NodeSocket.open(host, port, onDatagram)
    : new NativeSocket(native, host, port, onDatagram);
}

/** Whether the addon is loaded here: openBatchSocket gives native sockets unless asked not to. */
export const NATIVE_IO = typeof native !== 'string';

class NativeSocket implements BatchSocket {
  readonly port: number;
  readonly native = true;
  oversize = 0;
  sendErrors = 0;
  private readonly handle: unknown;
  private readonly rx = new Uint8Array(BATCH * MAX_DATAGRAM);
  private readonly rxLens = new Uint32Array(BATCH);
  /** The send queue's bytes (2 MB), made at the first send: a socket that only receives needs none. */
  private tx = EMPTY;
  private readonly txOffsets = new Uint32Array(TX_SLOTS);
  private readonly txLens = new Uint32Array(TX_SLOTS);
  private readonly txDests = new Uint16Array(TX_SLOTS);
  private queued = 0;
  private flushSoon: NodeJS.Immediate | undefined;
  private readSoon: NodeJS.Immediate | undefined;
  private closed = false;

  constructor(
    private readonly udp: NativeUdp,
    host: string,
    port: number,
    private readonly onDatagram: (d: Uint8Array) => void,
  ) {
    const [handle, bound] = udp.open(host, port, SOCKET_BUFFER);
    this.handle = handle;
    this.port = bound;
    for (let i = 0; i < TX_SLOTS; i++) this.txOffsets[i] = i * MAX_DATAGRAM;
    udp.watch(handle, this.onReadable);
  }

  private readonly onReadable = (): void => {
    const { udp, rx, rxLens } = this;
    let n = 0;
    for (let b = 0; b < BATCHES_PER_EVENT && !this.closed; b++) {
      n = udp.recv(this.handle, rx, MAX_DATAGRAM, rxLens);
      for (let i = 0; i < n; i++) {
        const len = rxLens[i]!;
        if (len > MAX_DATAGRAM) this.oversize++;
        else this.onDatagram(rx.subarray(i * MAX_DATAGRAM, i * MAX_DATAGRAM + len));
      }
      if (n < BATCH) break;
    }
    this.flush();
    // Datagrams of a run received whole may wait in the addon, where the socket's readiness does not show.
    if (n === BATCH && !this.closed) this.readSoon ??= setImmediate(this.readStaged);
  };

  private readonly readStaged = (): void => {
    this.readSoon = undefined;
    this.onReadable();
  };

  dest(index: number, host: string, port: number): Promise<void> {
    this.udp.dest(this.handle, index, host, port);
    return Promise.resolve();
  }

  queue(index: number, buf: Uint8Array, offset: number, length: number): void {
    if (length > MAX_DATAGRAM) {
      this.sendErrors++;
      return;
    }
    if (this.queued === TX_SLOTS) this.flush();
    if (this.tx === EMPTY) this.tx = new Uint8Array(TX_SLOTS * MAX_DATAGRAM);
    const k = this.queued++;
    this.tx.set(buf.subarray(offset, offset + length), this.txOffsets[k]);
    this.txLens[k] = length;
    this.txDests[k] = index;
    this.flushSoon ??= setImmediate(this.flush);
  }

  readonly flush = (): void => {
    if (this.flushSoon !== undefined) {
      clearImmediate(this.flushSoon);
      this.flushSoon = undefined;
    }
    const n = this.queued;
    if (n === 0 || this.closed) return;
    this.queued = 0;
    const sent = this.udp.send(this.handle, this.tx, this.txOffsets, this.txLens, this.txDests, n);
    this.sendErrors += n - sent;
  };

  close(): void {
    this.flush();
    clearImmediate(this.readSoon);
    this.closed = true;
    this.udp.close(this.handle);
  }
}

class NodeSocket implements BatchSocket {
  readonly native = false;
  oversize = 0;
  sendErrors = 0;
  private readonly out: dgram.Socket[] = [];

  private constructor(private readonly socket: dgram.Socket) {}

  static async open(host: string, port: number, onDatagram: (d: Uint8Array) => void): Promise<NodeSocket> {
    const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: SOCKET_BUFFER });
    const s = new NodeSocket(socket);
    socket.on('message', (msg) => {
      if (msg.length > MAX_DATAGRAM) s.oversize++;
      else onDatagram(msg);
    });
    socket.bind(port, host);
    await once(socket, 'listening');
    return s;
  }

  get port(): number {
    return this.socket.address().port;
  }

  /** One connected socket per destination: it spares a per-datagram address lookup. */
  async dest(index: number, host: string, port: number): Promise<void> {
    const s = dgram.createSocket({ type: 'udp4', sendBufferSize: 4 * 1024 * 1024 });
    // A vanished destination shows up as ECONNREFUSED on its socket; count it, never crash.
    s.on('error', () => {
      this.sendErrors++;
    });
    s.connect(port, host);
    await once(s, 'connect');
    this.out[index]?.close();
    this.out[index] = s;
  }

  /** Sent at once: the caller keeps `buf` unchanged until the send completes, as node:dgram needs. */
  queue(index: number, buf: Uint8Array, offset: number, length: number): void {
    this.out[index]!.send(buf, offset, length);
  }

  flush(): void {}

  close(): void {
    this.socket.close();
    for (const s of this.out) s.close();
  }
}
