import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { describe, it } from 'node:test';
import { adminCall } from '../src/admin-call.js';

/** A server answering `{ n }`, the requests it has seen, closing each connection after `closeAfterMs` idle. */
async function server(
  closeAfterMs: number,
): Promise<{ port: number; close: () => void; connections: () => number }> {
  let n = 0;
  let connections = 0;
  const s = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ n: ++n }));
    });
  });
  s.on('connection', () => connections++);
  s.keepAliveTimeout = closeAfterMs;
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  return {
    port: (s.address() as net.AddressInfo).port,
    close: () => s.close(),
    connections: () => connections,
  };
}

describe('adminCall', { timeout: 60_000 }, () => {
  it('reuses one connection for calls in a row', async () => {
    const s = await server(5000);
    for (let i = 1; i <= 5; i++)
      assert.deepEqual(await adminCall('127.0.0.1', s.port, '/x', { i }), { n: i });
    assert.equal(s.connections(), 1);
    s.close();
  });

  it('goes again on a new connection when the server closed the kept-alive one', async () => {
    const s = await server(20);
    assert.deepEqual(await adminCall('127.0.0.1', s.port, '/x', {}), { n: 1 });
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await adminCall('127.0.0.1', s.port, '/x', {}), { n: 2 });
    assert.equal(s.connections(), 2);
    s.close();
  });

  it('says a refused connection is one, in its cause', async () => {
    const free = net.createServer().listen(0, '127.0.0.1');
    await once(free, 'listening');
    const port = (free.address() as net.AddressInfo).port;
    free.close();
    await once(free, 'close');
    await assert.rejects(adminCall('127.0.0.1', port, '/x', {}), (err: Error) => {
      assert.equal((err.cause as NodeJS.ErrnoException).code, 'ECONNREFUSED');
      return true;
    });
  });

  it('gives up at its deadline with a TimeoutError, when the server never answers', async () => {
    const silent = net.createServer(() => undefined).listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const port = (silent.address() as net.AddressInfo).port;
    await assert.rejects(adminCall('127.0.0.1', port, '/x', {}, { timeoutMs: 100 }), {
      name: 'TimeoutError',
    });
    silent.close();
  });
});
