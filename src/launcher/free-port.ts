/**
 * A TCP port nothing listens on now, for a process started next that must have a known port (an etcd
 * member, the controllers that share one address). It is drawn below the kernel's ephemeral range: a port
 * from that range, free now, can be taken before the process binds it by any outgoing connection or any
 * `listen(0)` on the machine, while below it only another deliberate bind competes. Another process may
 * still take it in between, which the one that binds it then reports.
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';

/** Below this, ports are left to well-known and registered services. */
const LOWEST = 10_000;
const TRIES = 32;

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const below = ephemeralStart();
  for (let i = 0; i < TRIES && below > LOWEST; i++) {
    const port = LOWEST + Math.floor(Math.random() * (below - LOWEST));
    if ((await listenOn(host, port)) !== null) return port;
  }
  const port = await listenOn(host, 0);
  if (port === null) throw new Error(`no free TCP port on ${host}`);
  return port;
}

/** Where the ephemeral range starts; Linux's default where it cannot be read. */
function ephemeralStart(): number {
  try {
    const lo = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(lo) && lo > 0 ? lo : 32_768;
  } catch {
    return 32_768;
  }
}

/** Binds `port` and lets it go: the port bound, or null where it is taken. */
async function listenOn(host: string, port: number): Promise<number | null> {
  const s = net.createServer();
  s.listen(port, host);
  try {
    // Rejects on the server's 'error' (EADDRINUSE).
    await once(s, 'listening');
  } catch {
    return null;
  }
  const bound = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return bound;
}
