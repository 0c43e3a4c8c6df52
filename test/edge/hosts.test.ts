import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HostTable } from '../../src/edge/hosts.js';
import { parseIpv4 } from '../../src/packet/flow-key.js';

const edge = {
  vxlanPort: 4789,
  vtepPort: 4789,
  mac: '02:6e:66:00:00:01',
  hosts: [
    { prefix: '10.0.0.0/8', vtep: '198.18.0.9', vni: 9 },
    { prefix: '10.1.0.0/24', vtep: '198.18.0.2', vni: 1, gateway: '10.1.0.254' },
    { prefix: '198.51.100.0/24', vtep: '198.18.0.3', vni: 2 },
  ],
};

describe('HostTable', { timeout: 60_000 }, () => {
  const t = new HostTable(edge);

  it('finds the longest prefix that holds an address', () => {
    assert.equal(t.lookup(parseIpv4('10.1.0.2'))?.vtep, '198.18.0.2');
    assert.equal(t.lookup(parseIpv4('10.2.0.2'))?.vtep, '198.18.0.9');
    assert.equal(t.lookup(parseIpv4('198.51.100.10'))?.vni, 2);
    assert.equal(t.lookup(parseIpv4('192.0.2.1')), undefined);
    assert.deepEqual(
      t.nets.map((n) => [n.index, n.vtep]),
      [
        [0, '198.18.0.2'],
        [1, '198.18.0.3'],
        [2, '198.18.0.9'],
      ],
      'numbered longest prefix first, as the edge sockets send',
    );
  });

  it('knows its VNIs, and the gateway of each network: given, or the first address', () => {
    assert.deepEqual(
      [1, 2, 3, 9].map((v) => t.hasVni(v)),
      [true, true, false, true],
    );
    assert.equal(t.gatewayOf(1, parseIpv4('10.1.0.254'))?.vtep, '198.18.0.2');
    assert.equal(t.gatewayOf(1, parseIpv4('10.1.0.1')), undefined, 'a given gateway replaces the default');
    assert.equal(t.gatewayOf(2, parseIpv4('198.51.100.1'))?.vtep, '198.18.0.3');
    assert.equal(t.gatewayOf(1, parseIpv4('198.51.100.1')), undefined, 'on its own VNI only');
    assert.equal(t.mac, 0x026e66000001);
  });
});
