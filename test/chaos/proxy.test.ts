import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';
import { DelayProxy } from '../../src/chaos/proxy.js';

describe('DelayProxy', { timeout: 60_000 }, () => {
  it('carries bytes both ways in order, also when the delay shrinks while chunks wait', async () => {
    const server = net.createServer((s) => s.pipe(s));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const proxy = new DelayProxy('127.0.0.1', (server.address() as net.AddressInfo).port);
    const port = await proxy.listen();
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    const got: Buffer[] = [];
    client.on('data', (c: Buffer) => got.push(c));
    const sent: string[] = [];
    for (let i = 0; i < 200; i++) {
      // Long delays first, then none: a chunk sent later must still come after the ones that wait.
      proxy.delayMs = i < 100 ? 200 - i : 0;
      const line = `chunk ${i};`;
      sent.push(line);
      client.write(line);
      if (i % 20 === 0) await new Promise((r) => setImmediate(r));
    }
    const want = sent.join('');
    while (Buffer.concat(got).length < want.length) await once(client, 'data');
    assert.equal(Buffer.concat(got).toString(), want);
    client.end();
    await once(client, 'close');
    await proxy.close();
    server.close();
  });
});
