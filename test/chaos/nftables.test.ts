import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';
import { Nftables, nftablesMissing } from '../../src/chaos/nftables.js';

describe('Nftables', { timeout: 60_000 }, () => {
  it('drops every segment to a port until healed; then TCP delivers what waited', async (t) => {
    const missing = await nftablesMissing();
    if (missing !== undefined) {
      t.skip(missing);
      return;
    }
    const received: Buffer[] = [];
    const server = net.createServer((s) => s.on('data', (c: Buffer) => received.push(c)));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    const nft = await Nftables.open('nfstate_test_nft');
    try {
      await nft.drop([port], 100);
      client.write('while cut off');
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(Buffer.concat(received).length, 0, 'nothing gets through the partition');
      await nft.heal();
      while (Buffer.concat(received).length < 'while cut off'.length)
        await new Promise((r) => setTimeout(r, 50));
      assert.equal(Buffer.concat(received).toString(), 'while cut off');
    } finally {
      await nft.close();
      client.destroy();
      server.close();
    }
  });

  it('refuses a table name nft would misread, and bad ports', async () => {
    await assert.rejects(Nftables.open('x; flush ruleset'), RangeError);
  });
});
