/**
 * A TCP port nothing listens on now, for a process started next that must have a known port (an etcd
 * member, the controllers that share one address). Another process may take it in between, which the one
 * that binds it then reports.
 */
import { once } from 'node:events';
import net from 'node:net';

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = net.createServer();
  s.listen(0, host);
  await once(s, 'listening');
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}
