import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ErrorCode, NfsError } from '../../src/errors.js';
import { editDistance, parseHostPort } from '../../src/launcher/config-fields.js';
import { DEFAULT_TOPOLOGY, loadTopology, nfLabel, parseTopology } from '../../src/launcher/config.js';

const dir = mkdtempSync(join(tmpdir(), 'nfstate-config-'));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

function configError(fn: () => unknown, message: string | RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof NfsError, String(err));
    assert.equal(err.code, ErrorCode.CONFIG);
    if (typeof message === 'string') assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

void test('defaults fill everything but nf.type', { timeout: 60_000 }, () => {
  const t = parseTopology({ nf: { type: 'nat' } });
  assert.deepEqual(t, { nf: { type: 'nat', config: {} }, ...DEFAULT_TOPOLOGY });
  assert.deepEqual(DEFAULT_TOPOLOGY, {
    clusters: 3,
    perCluster: 4,
    spareInstances: 4,
    threads: 2,
    batch: { size: 30, timeoutMs: 50 },
    reorder: { maxHeld: 1024, gapTimeoutMs: 250 },
    flowIdleMs: 60000,
    host: '127.0.0.1',
    ingress: { port: 0, servicePort: 0, adminPort: 0 },
    egress: { deliver: null },
    sink: { port: 0, pcap: null },
    vni: 1,
    replication: 'cluster',
    release: 'immediate',
    lb: {
      enabled: true,
      high: 0.85,
      low: 0.6,
      sustainMs: 300,
      settleMs: 500,
      cooldownMs: 5000,
      capacityPps: 0,
      queueLimit: 4096,
      maxMovesPerRound: 32,
    },
    move: { timeoutMs: 2000 },
    failure: { heartbeatMs: 20, missCount: 3, probeMs: 50 },
    global: { store: 'local', endpoints: [] },
    edge: null,
  });
  assert.ok(Object.isFrozen(DEFAULT_TOPOLOGY.batch));
  assert.notEqual(t.batch, DEFAULT_TOPOLOGY.batch, 'the result must not share the frozen defaults');
});

void test('move.timeoutMs: a move deadline in milliseconds, 1..60000', { timeout: 60_000 }, () => {
  assert.equal(parseTopology({ nf: { type: 'nat' }, move: { timeoutMs: 500 } }).move.timeoutMs, 500);
  configError(
    () => parseTopology({ nf: { type: 'nat' }, move: { timeoutMs: 0 } }),
    'move.timeoutMs: must be an integer 1..60000 (got 0)',
  );
  configError(() => parseTopology({ nf: { type: 'nat' }, move: { timeout: 5 } }), /did you mean 'timeoutMs'/);
});

void test(
  'failure: heartbeat interval, miss count and probe time of the failure detection unit',
  { timeout: 60_000 },
  () => {
    const t = parseTopology({ nf: { type: 'nat' }, failure: { heartbeatMs: 10, missCount: 5, probeMs: 0 } });
    assert.deepEqual(t.failure, { heartbeatMs: 10, missCount: 5, probeMs: 0 });
    assert.deepEqual(parseTopology({ nf: { type: 'nat' }, failure: null }).failure, {
      heartbeatMs: 20,
      missCount: 3,
      probeMs: 50,
    });
    configError(
      () => parseTopology({ nf: { type: 'nat' }, failure: { probeMs: -1 } }),
      'failure.probeMs: must be an integer 0..60000 (got -1)',
    );
    configError(
      () => parseTopology({ nf: { type: 'nat' }, failure: { heartbeatMs: 0 } }),
      'failure.heartbeatMs: must be an integer 1..60000 (got 0)',
    );
    configError(
      () => parseTopology({ nf: { type: 'nat' }, failure: { missCount: 1 } }),
      'failure.missCount: must be an integer 2..1000 (got 1)',
    );
    configError(
      () => parseTopology({ nf: { type: 'nat' }, failure: { missCount: 2.5 } }),
      'failure.missCount: must be an integer 2..1000 (got 2.5)',
    );
    configError(
      () => parseTopology({ nf: { type: 'nat' }, failure: { missCnt: 3 } }),
      /did you mean 'missCount'/,
    );
  },
);

void test('given values are kept; empty sections mean defaults', { timeout: 60_000 }, () => {
  const t = parseTopology({
    nf: { type: 'firewall', config: { strict: true } },
    clusters: 2,
    perCluster: 3,
    threads: 64,
    batch: { size: 1, timeoutMs: 0.5 },
    reorder: null,
    flowIdleMs: 1000,
    host: '10.0.0.1',
    ingress: { port: 65535, servicePort: 9001, adminPort: 0 },
    egress: { deliver: 'localhost:7000' },
    sink: { port: 9100, pcap: 'out/run.pcap' },
    vni: 16777215,
  });
  assert.equal(t.nf.type, 'firewall');
  assert.deepEqual(t.nf.config, { strict: true });
  assert.deepEqual(t.batch, { size: 1, timeoutMs: 0.5 });
  assert.deepEqual(t.reorder, DEFAULT_TOPOLOGY.reorder);
  assert.equal(t.egress.deliver, 'localhost:7000');
  assert.equal(t.sink.pcap, 'out/run.pcap');
  assert.equal(t.vni, 16777215);
});

void test('each bad field names its path and what was given', { timeout: 60_000 }, () => {
  const nf = { type: 'nat' };
  const cases: [unknown, string][] = [
    [{ nf, clusters: 'three' }, 'clusters: must be an integer >= 1 (got "three")'],
    [{ nf, clusters: 0 }, 'clusters: must be an integer >= 1 (got 0)'],
    [{ nf, perCluster: 1.5 }, 'perCluster: must be an integer >= 1 (got 1.5)'],
    [{ nf, spareInstances: -1 }, 'spareInstances: must be an integer >= 0 (got -1)'],
    [{ nf, threads: 65 }, 'threads: must be an integer 1..64 (got 65)'],
    [{ nf, batch: { size: 0 } }, 'batch.size: must be an integer 1..100000 (got 0)'],
    [{ nf, batch: { timeoutMs: 0 } }, 'batch.timeoutMs: must be a number > 0 (got 0)'],
    [{ nf, replication: 'some' }, 'replication: must be one of cluster, all, off (got "some")'],
    [{ nf, global: { store: 'zk' } }, 'global.store: must be one of local, etcd, none (got "zk")'],
    [{ nf, global: { store: 'etcd' } }, "global.endpoints: etcd needs its members' client URLs"],
    [
      { nf, global: { store: 'etcd', endpoints: ['127.0.0.1:2379'] } },
      'global.endpoints[0]: must be a URL like http://127.0.0.1:2379 (got "127.0.0.1:2379")',
    ],
    [{ nf, release: 'later' }, 'release: must be one of immediate, after-replication (got "later")'],
    [{ nf, lb: { enabled: 'yes' } }, 'lb.enabled: must be true or false (got "yes")'],
    [{ nf, lb: { low: 0.9, high: 0.8 } }, 'lb.low: must be below lb.high (0.8) (got 0.9)'],
    [{ nf, lb: { cooldownMs: -5 } }, 'lb.cooldownMs: must be an integer >= 0 (got -5)'],
    [{ nf, lb: { enable: false } }, "lb: unknown field 'enable' (did you mean 'enabled'?)"],
    [{ nf, batch: { timeoutMs: Infinity } }, 'batch.timeoutMs: must be a number > 0 (got Infinity)'],
    [{ nf, batch: [1] }, 'batch: must be a mapping (got a list)'],
    [{ nf, reorder: { maxHeld: -1 } }, 'reorder.maxHeld: must be an integer >= 1 (got -1)'],
    [{ nf, reorder: { gapTimeoutMs: '5' } }, 'reorder.gapTimeoutMs: must be a number > 0 (got "5")'],
    [{ nf, flowIdleMs: null }, 'flowIdleMs: must be a number > 0 (got null)'],
    [{ nf, host: 'localhost' }, 'host: must be an IPv4 address like 127.0.0.1 (got "localhost")'],
    [{ nf, host: '256.0.0.1' }, 'host: must be an IPv4 address like 127.0.0.1 (got "256.0.0.1")'],
    [{ nf, ingress: { port: 65536 } }, 'ingress.port: must be an integer 0..65535 (got 65536)'],
    [{ nf, ingress: { servicePort: true } }, 'ingress.servicePort: must be an integer 0..65535 (got true)'],
    [{ nf, ingress: { adminPort: -1 } }, 'ingress.adminPort: must be an integer 0..65535 (got -1)'],
    [
      { nf, egress: { deliver: 'nowhere' } },
      'egress.deliver: must be null or "host:port" with port 1..65535 (got "nowhere")',
    ],
    [
      { nf, egress: { deliver: '1.2.3.4:0' } },
      'egress.deliver: must be null or "host:port" with port 1..65535 (got "1.2.3.4:0")',
    ],
    [{ nf, sink: { port: 'x' } }, 'sink.port: must be an integer 0..65535 (got "x")'],
    [{ nf, sink: { pcap: 5 } }, 'sink.pcap: must be null or a file path (got 5)'],
    [{ nf, vni: 16777216 }, 'vni: must be an integer 0..16777215 (got 16777216)'],
    [{ nf: { type: 'foo' } }, "nf.type: unknown NF 'foo' (expected nat, firewall, lb, ids)"],
    [{ nf: { type: 7 } }, 'nf.type: must be one of nat, firewall, lb, ids (got 7)'],
    [{}, 'nf.type: required (one of nat, firewall, lb, ids)'],
    [{ nf: 'nat' }, 'nf: must be a mapping (got "nat")'],
    [{ nf: { type: 'nat', config: [] } }, 'nf.config: must be a mapping (got a list)'],
    [[], 'topology: must be a mapping (got a list)'],
    [null, 'topology: is empty (expected a mapping with at least nf.type)'],
  ];
  for (const [input, message] of cases) configError(() => parseTopology(input), message);
  configError(() => parseTopology(7, 'chain[0]'), 'chain[0]: must be a mapping (got 7)');
});

void test(
  'unknown fields are rejected at every level, with a suggestion when close',
  { timeout: 60_000 },
  () => {
    const nf = { type: 'nat' };
    configError(
      () => parseTopology({ nf, clustrs: 3 }),
      "unknown field 'clustrs' (did you mean 'clusters'?)",
    );
    configError(
      () => parseTopology({ nf, percluster: 3 }),
      "unknown field 'percluster' (did you mean 'perCluster'?)",
    );
    configError(
      () => parseTopology({ nf, batch: { sise: 3 } }),
      "batch: unknown field 'sise' (did you mean 'size'?)",
    );
    configError(
      () => parseTopology({ nf: { type: 'nat', tpye: 'x' } }),
      "nf: unknown field 'tpye' (did you mean 'type'?)",
    );
    configError(
      () => parseTopology({ nf, egress: { zzzzzzzz: 1 } }),
      "egress: unknown field 'zzzzzzzz' (expected one of deliver)",
    );
    // An unknown field is reported before a bad value in the same mapping: the typo is the likelier cause.
    configError(() => parseTopology({ nf, threads: 0, thread: 2 }), /unknown field 'thread'/);
  },
);

void test('editDistance and parseHostPort', { timeout: 60_000 }, () => {
  assert.equal(editDistance('clustrs', 'clusters'), 1);
  assert.equal(editDistance('', 'abc'), 3);
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.deepEqual(parseHostPort('127.0.0.1:9000', 'x'), { host: '127.0.0.1', port: 9000 });
  assert.deepEqual(parseHostPort('sink.local:1', 'x'), { host: 'sink.local', port: 1 });
  for (const bad of [':9000', '1.2.3.4:', '1.2.3.4:99999', 'a b:80', '1.2.3.4:+80']) {
    assert.throws(() => parseHostPort(bad, 'egress.deliver'), /^NfsError: egress.deliver: /);
  }
});

void test('loadTopology reads YAML and applies defaults', { timeout: 60_000 }, () => {
  const p = file(
    'ok.yaml',
    [
      'nf:',
      '  type: lb',
      '  config:',
      '    backends: [a, b]',
      'clusters: 2',
      'batch: { size: 10 }',
      'egress:',
      '',
    ].join('\n'),
  );
  const t = loadTopology(p);
  assert.equal(t.nf.type, 'lb');
  assert.deepEqual(t.nf.config, { backends: ['a', 'b'] });
  assert.equal(t.clusters, 2);
  assert.deepEqual(t.batch, { size: 10, timeoutMs: 50 });
  assert.equal(t.egress.deliver, null);
});

void test('loadTopology: a syntax error names the line', { timeout: 60_000 }, () => {
  const p = file('syntax.yaml', 'nf:\n  type: nat\nclusters: [1\nthreads: 2\n');
  configError(
    () => loadTopology(p),
    new RegExp(`^${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:4:1: YAML syntax error: `),
  );
  const dup = file('dup.yaml', 'nf:\n  type: nat\nclusters: 1\nclusters: 2\n');
  configError(() => loadTopology(dup), /dup\.yaml:4:1: YAML syntax error: Map keys must be unique$/);
});

void test('loadTopology: field errors carry the file and the line of the field', { timeout: 60_000 }, () => {
  const p = file('bad.yaml', 'nf:\n  type: nat\n\nbatch:\n  timeoutMs: 5\n  size: 0\n');
  configError(() => loadTopology(p), `${p}:6: batch.size: must be an integer 1..100000 (got 0)`);
  const typo = file('typo.yaml', 'nf: { type: nat }\nclustrs: 3\n');
  configError(() => loadTopology(typo), `${typo}:2: unknown field 'clustrs' (did you mean 'clusters'?)`);
  const missing = file('missing.yaml', 'clusters: 3\n');
  configError(() => loadTopology(missing), `${missing}: nf.type: required (one of nat, firewall, lb, ids)`);
  const empty = file('empty.yaml', '# nothing yet\n');
  configError(() => loadTopology(empty), /empty\.yaml: topology: is empty/);
});

void test('loadTopology: an unreadable file is a CONFIG error', { timeout: 60_000 }, () => {
  configError(
    () => loadTopology(join(dir, 'absent.yaml')),
    /absent\.yaml: cannot read topology file \(ENOENT\)$/,
  );
});

test(
  'chain: a list of types or { type, config }, in order, each once; nf and chain exclude each other',
  { timeout: 60_000 },
  () => {
    const t = parseTopology({
      chain: ['firewall', { type: 'nat', config: { publicIp: '203.0.113.7' } }],
    });
    assert.deepEqual(t.nf, {
      type: 'chain',
      config: {
        nfs: [
          { type: 'firewall', config: {} },
          { type: 'nat', config: { publicIp: '203.0.113.7' } },
        ],
      },
    });
    assert.equal(nfLabel(t.nf), 'firewall>nat');
    assert.equal(nfLabel(parseTopology({ nf: { type: 'ids' } }).nf), 'ids');
    configError(
      () => parseTopology({ chain: [] }),
      'chain: must be a non-empty list of NF types (got a list)',
    );
    configError(() => parseTopology({ chain: ['nat', 'router'] }), /^chain\[1\]: unknown NF 'router'/);
    configError(
      () => parseTopology({ chain: ['nat', 'nat'] }),
      'chain: nat appears twice (each NF may appear once)',
    );
    configError(
      () => parseTopology({ nf: { type: 'nat' }, chain: ['nat'] }),
      'chain: give either nf (one NF) or chain (a list of them), not both',
    );
    configError(() => parseTopology({ chain: [{ type: 'nat', cfg: {} }] }), /^chain\.0: unknown field 'cfg'/);
    configError(() => parseTopology({ nf: { type: 'chain' } }), /^nf\.type: unknown NF 'chain'/);
    const yaml = file('chain.yaml', 'chain:\n  - firewall\n  - type: nat\n    config: { portFirst: 0 }\n');
    assert.equal(
      loadTopology(yaml).nf.type,
      'chain',
      'the NF config itself is checked where the NF is built',
    );
  },
);

test(
  'edge: the host networks behind real hosts’ VTEPs, with defaults, each field checked',
  { timeout: 60_000 },
  () => {
    assert.equal(parseTopology({ nf: { type: 'nat' } }).edge, null);
    const t = parseTopology({
      nf: { type: 'nat' },
      edge: {
        hosts: [
          { prefix: '10.1.0.0/24', vtep: '198.18.0.2' },
          { prefix: '198.51.100.0/24', vtep: '198.18.0.3', vni: 7, gateway: '198.51.100.254' },
        ],
      },
    });
    assert.deepEqual(t.edge, {
      vxlanPort: 4789,
      vtepPort: 4789,
      mac: '02:6e:66:00:00:01',
      hosts: [
        { prefix: '10.1.0.0/24', vtep: '198.18.0.2', vni: 1 },
        { prefix: '198.51.100.0/24', vtep: '198.18.0.3', vni: 7, gateway: '198.51.100.254' },
      ],
    });
    const bad = (edge: unknown, message: string | RegExp): void => {
      configError(() => parseTopology({ nf: { type: 'nat' }, edge }), message);
    };
    bad({ hosts: [] }, 'edge.hosts: must be a non-empty list of host networks (got a list)');
    bad({ hosts: [{ prefix: '10.1.0.0/33', vtep: '1.2.3.4' }] }, /^edge\.hosts\[0\]\.prefix: must be a CIDR/);
    bad({ hosts: [{ prefix: '10.1.0.0/24' }] }, "edge.hosts[0].vtep: required (the host's VTEP address)");
    bad(
      { hosts: [{ prefix: '10.1.0.0/24', vtep: 'host-a' }] },
      /^edge\.hosts\.0\.vtep: must be an IPv4 address/,
    );
    bad(
      { hosts: [{ prefix: '10.1.0.0/24', vtep: '1.2.3.4', vni: 1 << 24 }] },
      /^edge\.hosts\.0\.vni: must be an integer 0\.\.16777215/,
    );
    bad(
      { mac: '02:6e:66', hosts: [{ prefix: '10.1.0.0/24', vtep: '1.2.3.4' }] },
      /^edge\.mac: must be a MAC address/,
    );
    bad(
      { vxlanPort: 70000, hosts: [{ prefix: '10.1.0.0/24', vtep: '1.2.3.4' }] },
      /^edge\.vxlanPort: must be an integer 0\.\.65535/,
    );
    bad(
      { hosts: [{ prefix: '10.1.0.0/24', vtep: '1.2.3.4', vtp: 1 }] },
      /^edge\.hosts\.0: unknown field 'vtp'/,
    );
  },
);
