/**
 * A TCP proxy that can delay what it carries: put in front of a server (an etcd member), its clients see
 * every round trip grow by twice the delay while `delayMs` is set, and nothing else changes (order and
 * bytes are kept). The kernel here has no netem, so delay is injected in userspace.
 *
 *   const p = new DelayProxy('127.0.0.1', 2379);
 *   const port = await p.listen();          // clients connect here
 *   p.delayMs = 50;                          // from now on, each chunk waits 50 ms each way
 *   await p.close();
 */
import { once } from 'node:events';
import net from 'node:net';

export class DelayProxy {
  /** Added to each chunk, each way; 0 forwards at once. */
  delayMs = 0;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly host: string,
    private readonly port: number,
  ) {
    // Without Nagle's algorithm on either side: the proxy adds only the delay it is told to.
    this.server = net.createServer({ noDelay: true }, (client) => {
      const upstream = net.connect({ port: this.port, host: this.host, noDelay: true });
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        // A reset on one side ends both: the client sees what it would have seen without the proxy.
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      this.pipe(client, upstream);
      this.pipe(upstream, client);
    });
  }

  async listen(): Promise<number> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return (this.server.address() as net.AddressInfo).port;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    this.server.close();
    await once(this.server, 'close');
  }

  /**
   * Forwards `from` to `to` in order, each chunk `delayMs` late. A chunk never overtakes an earlier one,
   * even when the delay shrinks while some wait.
   */
  private pipe(from: net.Socket, to: net.Socket): void {
    const queue: { due: number; chunk: Buffer }[] = [];
    let timer: NodeJS.Timeout | undefined;
    let ended = false;
    const flush = (): void => {
      timer = undefined;
      const now = Date.now();
      while (queue.length > 0 && queue[0]!.due <= now) if (!to.destroyed) to.write(queue.shift()!.chunk);
      if (queue.length > 0) timer = setTimeout(flush, queue[0]!.due - now);
      else if (ended) to.end();
    };
    from.on('data', (chunk: Buffer) => {
      if (queue.length === 0 && this.delayMs <= 0) {
        to.write(chunk);
        return;
      }
      queue.push({ due: Math.max(Date.now() + this.delayMs, queue.at(-1)?.due ?? 0), chunk });
      timer ??= setTimeout(flush, Math.max(0, queue[0]!.due - Date.now()));
    });
    from.on('end', () => {
      ended = true;
      if (queue.length === 0) to.end();
    });
  }
}
