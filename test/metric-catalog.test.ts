/**
 * The metric catalog against the code and the docs: every metric the code can serve is in the catalog
 * (not only those one deployment happens to serve, which test/launcher/prometheus.test.ts scrapes), no entry
 * is left that the code no longer serves, the names follow Prometheus's conventions, and docs/metrics.md
 * lists each one with its type.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { METRICS } from '../src/metric-catalog.js';
import { WORKER_COUNTERS } from '../src/nf/messages.js';
import { repoPath } from './helpers/paths.js';

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** The metric names the code pushes: quoted literals, and the NF workers' counters (nf/instance.ts). */
function servedByCode(): Set<string> {
  const names = new Set<string>();
  for (const file of sources(repoPath('src'))) {
    if (file.endsWith('metric-catalog.ts')) continue;
    const text = readFileSync(file, 'utf8');
    for (const [, name] of text.matchAll(/['`]((?:nfstate|process|nodejs)_[a-z0-9_]+)['`]/g))
      names.add(name!);
  }
  // The chaos command's nftables table, not a metric.
  names.delete('nfstate_chaos');
  for (const c of WORKER_COUNTERS)
    names.add(
      c === 'flows'
        ? 'nfstate_nf_flows'
        : `nfstate_nf_${c.replace(/[A-Z]/g, (x) => '_' + x.toLowerCase())}_total`,
    );
  return names;
}

void test(
  'every metric the code serves is in the catalog, and every entry is served',
  { timeout: 60_000 },
  () => {
    const served = servedByCode();
    const missing = [...served].filter((n) => METRICS[n] === undefined);
    assert.deepEqual(missing, [], 'served but not in the catalog');
    const dead = Object.keys(METRICS).filter((n) => !served.has(n));
    assert.deepEqual(dead, [], 'in the catalog but served by nothing');
  },
);

void test('names follow Prometheus conventions; every entry has a one-line HELP', { timeout: 60_000 }, () => {
  for (const [name, info] of Object.entries(METRICS)) {
    assert.match(name, /^[a-z][a-z0-9_]*$/, name);
    assert.equal(
      name.endsWith('_total'),
      info.type === 'counter',
      `${name}: _total if and only if a counter`,
    );
    if (info.type === 'histogram')
      assert.match(name, /_seconds$/, `${name}: a histogram of durations, in seconds`);
    assert.match(info.help, /^[A-Z].*\.$/, `${name}: HELP is a sentence`);
    assert.doesNotMatch(info.help, /\n/, name);
    for (const l of info.labels) assert.match(l, /^[a-z][a-z_]*$/, `${name}: label ${l}`);
    assert.ok(!info.labels.includes('le') && !info.labels.includes('instance'), `${name}: a reserved label`);
  }
});

void test('docs/metrics.md lists every metric with its type, and no other', { timeout: 60_000 }, () => {
  const doc = readFileSync(repoPath('docs', 'metrics.md'), 'utf8');
  const rows = new Map<string, string>();
  for (const [, name, type] of doc.matchAll(/^\| `([a-z0-9_]+)`\s*\| (counter|gauge|histogram)\s*\|/gm))
    rows.set(name!, type!);
  for (const [name, info] of Object.entries(METRICS)) assert.equal(rows.get(name), info.type, name);
  assert.deepEqual(
    [...rows.keys()].filter((n) => METRICS[n] === undefined),
    [],
    'listed in docs/metrics.md but not in the catalog',
  );
});
