/**
 * Fuzzing the topology reader (src/launcher/config.ts): generated topologies must read back from YAML as
 * they validate in memory; damaged YAML, random bytes, arbitrary values and pathologically nested
 * documents must give a Topology or NFS_ERR_CONFIG, never another exception, and never end the process.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { NfsError } from '../../src/errors.js';
import { loadTopology, parseTopology, type Topology } from '../../src/launcher/config.js';
import { mutate, report, Rng } from './corpus.js';

const dir = mkdtempSync(join(tmpdir(), 'nfstate-fuzz-topology-'));
const FILES = 2000;

function file(text: string | Uint8Array, name = 'topology.yaml'): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Runs a read; undefined when it refused the input, which must be NFS_ERR_CONFIG. */
function attempt(read: () => Topology): Topology | undefined {
  try {
    return read();
  } catch (err) {
    assert.ok(err instanceof NfsError && err.code === 'NFS_ERR_CONFIG', String(err));
    return undefined;
  }
}

const octet = fc.integer({ min: 0, max: 255 });
const port = fc.integer({ min: 1, max: 65535 });
const topologyArb = fc.record(
  {
    nf: fc.record({ type: fc.constantFrom('nat', 'firewall', 'lb', 'ids') }),
    clusters: fc.integer({ min: 1, max: 16 }),
    perCluster: fc.integer({ min: 1, max: 16 }),
    spareInstances: fc.integer({ min: 0, max: 16 }),
    threads: fc.integer({ min: 1, max: 64 }),
    batch: fc.record(
      { size: fc.integer({ min: 1, max: 100_000 }), timeoutMs: fc.integer({ min: 1, max: 5000 }) },
      { requiredKeys: [] },
    ),
    reorder: fc.record(
      {
        maxHeld: fc.integer({ min: 1, max: 1 << 20 }),
        gapTimeoutMs: fc.double({ min: 0.5, max: 1e4, noNaN: true }),
      },
      { requiredKeys: [] },
    ),
    host: fc.ipV4(),
    ingress: fc.record(
      { port: fc.integer({ min: 0, max: 65535 }), servicePort: fc.integer({ min: 0, max: 65535 }) },
      { requiredKeys: [] },
    ),
    egress: fc.record({
      deliver: fc.oneof(
        fc.constant(null),
        fc.tuple(fc.ipV4(), port).map(([h, p]) => `${h}:${p}`),
      ),
    }),
    sink: fc.record(
      {
        port: fc.integer({ min: 0, max: 65535 }),
        pcap: fc.oneof(fc.constant(null), fc.constant('out.pcap')),
      },
      { requiredKeys: [] },
    ),
    vni: fc.integer({ min: 0, max: 0xffffff }),
    replication: fc.constantFrom('cluster', 'all', 'off'),
    release: fc.constantFrom('immediate', 'after-replication'),
    lb: fc.record(
      { enabled: fc.boolean(), maxMovesPerRound: fc.integer({ min: 1, max: 100 }) },
      { requiredKeys: [] },
    ),
    failure: fc.record(
      { heartbeatMs: fc.integer({ min: 1, max: 60_000 }), missCount: fc.integer({ min: 2, max: 1000 }) },
      { requiredKeys: [] },
    ),
    global: fc.record({ store: fc.constantFrom('local', 'none') }),
    edge: fc.record({
      mac: fc.constantFrom('02:6e:66:00:00:01', '0A:0B:0C:0D:0E:0F'),
      hosts: fc.array(
        fc.record({
          prefix: fc.tuple(octet, octet).map(([a, b]) => `10.${a}.${b}.0/24`),
          vtep: fc.ipV4(),
          vni: fc.integer({ min: 0, max: 0xffffff }),
        }),
        { minLength: 1, maxLength: 3 },
      ),
    }),
  },
  { requiredKeys: ['nf'] },
);

describe('fuzz: topology files', { timeout: 60_000 }, () => {
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads every generated topology back from its YAML as it validates in memory', () => {
    fc.assert(
      fc.property(topologyArb, (obj) => {
        const plain = JSON.parse(JSON.stringify(obj)) as Record<string, unknown>;
        const t = parseTopology(plain);
        assert.deepEqual(loadTopology(file(stringify(plain))), t);
        assert.equal(t.clusters, (plain.clusters as number | undefined) ?? 3);
        assert.equal(t.vni, (plain.vni as number | undefined) ?? 1);
        assert.equal(t.edge?.hosts.length, (plain.edge as { hosts: unknown[] } | undefined)?.hosts.length);
      }),
      { seed: 0x5eed_0901, numRuns: 300, interruptAfterTimeLimit: 10_000 },
    );
  });

  it('gives a Topology or NFS_ERR_CONFIG for any value', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.anything(),
          fc.jsonValue(),
          topologyArb.map((t) => ({ ...t, extra: 1 })),
        ),
        (v) => {
          attempt(() => parseTopology(v));
        },
      ),
      { seed: 0x5eed_0902, numRuns: 2000, interruptAfterTimeLimit: 10_000 },
    );
  });

  it('refuses documents nested thousands of levels deep, again and again, with NFS_ERR_CONFIG', () => {
    const deep = [
      '['.repeat(20_000),
      '['.repeat(20_000) + ']'.repeat(20_000),
      'nf: ' + '{a: '.repeat(20_000) + '1' + '}'.repeat(20_000),
      Array.from({ length: 3000 }, (_, i) => ' '.repeat(i) + '- ').join('\n') + 'x',
      '- '.repeat(20_000) + 'x',
      'nf:\n  type: nat\n  config: ' + '['.repeat(100) + ']'.repeat(100),
    ];
    for (let round = 0; round < 3; round++) {
      for (const text of deep) {
        assert.throws(
          () => loadTopology(file(text)),
          (err: unknown) => err instanceof NfsError && /nested more than 64 levels deep/.test(err.message),
        );
      }
    }
    // Nesting a topology may have is fine.
    const ok = loadTopology(
      file('nf:\n  type: nat\n  config: ' + '{a: '.repeat(40) + '1' + '}'.repeat(40) + '\n'),
    );
    assert.equal(ok.nf.type, 'nat');
  });

  it(`reads or refuses ${FILES} damaged and random topology files`, (t) => {
    const rng = new Rng(0x5eed_0903);
    const seeds = fc
      .sample(topologyArb, { seed: 0x5eed_0904, numRuns: 40 })
      .map((obj) => new TextEncoder().encode(stringify(obj)));
    seeds.push(new TextEncoder().encode('chain: [firewall, {type: nat, config: {}}]\nclusters: 2\n'));
    seeds.push(
      new TextEncoder().encode(
        '{"nf": {"type": "lb"}, "edge": null, "global": {"store": "etcd", "endpoints": ["http://127.0.0.1:2379"]}}',
      ),
    );
    const counts = { files: FILES, read: 0, refused: 0 };
    for (let i = 0; i < FILES; i++) {
      const bytes = i % 10 === 9 ? rng.bytes(rng.int(200)) : mutate(rng.pick(seeds), rng);
      if (attempt(() => loadTopology(file(bytes))) === undefined) counts.refused++;
      else counts.read++;
    }
    assert.ok(counts.read > 0 && counts.refused > 0);
    report(t, 'topology', { properties: 2300, ...counts });
  });
});
