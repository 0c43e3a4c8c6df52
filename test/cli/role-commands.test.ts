/**
 * The standalone roles' wiring flags: what is missing or wrong is a usage error (exit 2) naming the flag,
 * before anything starts. That they wire a working deployment is test/launcher/multihost.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nfstate } from '../helpers/cli.js';

describe('nfstate controller, ingress, nf, sink: wiring flags', { timeout: 120_000 }, () => {
  const usage = async (args: string[], pattern: RegExp): Promise<void> => {
    const r = await nfstate(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
  };

  it('a controller among several needs its id and the shared ports; those need --etcd', async () => {
    await usage(['controller', '--etcd', 'http://127.0.0.1:2379', '--id', 'a'], /--etcd needs --report-port/);
    await usage(['controller', '--id', 'a'], /--id needs --etcd/);
    await usage(['controller', '--liveness-port', '9411'], /--liveness-port needs --etcd/);
    await usage(['controller', '--etcd', 'etcd:2379', '--id', 'a'], /--etcd needs client URLs/);
  });

  it('an ingress needs its instances or a controller to learn them from', async () => {
    await usage(['ingress'], /give --instances, --controller, or both/);
  });

  it('a host name that does not resolve is refused at start, naming the flag', async () => {
    await usage(
      ['controller', '--egress', 'no-such-host.invalid:9403'],
      /--egress: cannot resolve no-such-host\.invalid/,
    );
    await usage(['sink', '--deliver', 'no-such-host.invalid:53'], /--deliver: cannot resolve/);
    await usage(['ingress', '--controller', 'nowhere:x'], /--controller: must be "host:port"/);
  });
});
