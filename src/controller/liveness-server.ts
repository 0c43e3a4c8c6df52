/**
 * The controller's liveness connections (DESIGN.md §6): each instance opens one TCP connection, names itself
 * (`ID TOKEN\n`) and keeps it open; `bye\n` before it closes means an orderly stop. Closing without one means
 * the process died, which the kernel shows at once, so the detector takes it as a failure without waiting for
 * heartbeats. A failed instance that connects again (woken after a pause, or reaching a controller that took
 * over since) is told `fenced`, and exits.
 *
 *   const liveness = new LivenessServer({ tokenOf, isFailed, lost });
 *   await liveness.listen(host, 0);
 *   liveness.fence('nf-2');     // a failed instance that still listens learns it is fenced
 */
import { once } from 'node:events';
import net from 'node:net';

/** A connection that names itself in more than this is cut. */
const MAX_LIVENESS_BYTES = 512;

export interface LivenessDeps {
  /** The token an instance registered with; undefined for an unknown one. */
  tokenOf(id: string): string | undefined;
  /** Whether an instance was declared failed: it is told so, and let go. */
  isFailed(id: string): boolean;
  /** A named instance's connection closed without `bye`. */
  lost(id: string): void;
}

export class LivenessServer {
  /** Connections that named no known instance with its token, or said too much: cut. */
  bad = 0;
  private readonly server = net.createServer((socket) => {
    this.accept(socket);
  });
  private readonly sockets = new Set<net.Socket>();
  private readonly byId = new Map<string, net.Socket>();
  private stopped = false;

  constructor(private readonly deps: LivenessDeps) {}

  async listen(host: string, port: number): Promise<void> {
    this.server.listen(port, host);
    await once(this.server, 'listening');
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** Tells `id`, if it still listens, that it is fenced. */
  fence(id: string): void {
    this.byId.get(id)?.end('fenced\n');
  }

  /** `id` left the deployment: its connection no longer speaks for it. */
  forget(id: string): void {
    this.byId.delete(id);
  }

  close(): void {
    this.stopped = true;
    this.server.close();
    for (const s of this.sockets) s.destroy();
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    let id: string | undefined;
    let text = '';
    let bye = false;
    // Nothing to do on an error: 'close' follows, and decides.
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      if (text.length > MAX_LIVENESS_BYTES) {
        this.bad++;
        socket.destroy();
        return;
      }
      const lines = text.split('\n');
      text = lines.pop()!;
      for (const line of lines) {
        if (id !== undefined) {
          bye ||= line === 'bye';
          continue;
        }
        const [name, token] = line.split(' ');
        if (name !== undefined && this.deps.isFailed(name)) {
          socket.end('fenced\n');
          return;
        }
        if (name === undefined || this.deps.tokenOf(name) !== token) {
          this.bad++;
          socket.destroy();
          return;
        }
        id = name;
        this.byId.set(name, socket);
      }
    });
    socket.on('close', () => {
      this.sockets.delete(socket);
      if (id !== undefined && this.byId.get(id) === socket) this.byId.delete(id);
      if (id !== undefined && !bye && !this.stopped) this.deps.lost(id);
    });
  }
}
