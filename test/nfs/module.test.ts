/**
 * NF modules (`nf.module`): a topology names one by its path, each process and worker imports it once, and
 * what is wrong with it — no file, no factory, an NF without a codec — is a clear CONFIG error before any
 * packet, never a crash in a worker.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ErrorCode, NfsError } from '../../src/errors.js';
import { loadTopology, nfLabel, parseTopology } from '../../src/launcher/config.js';
import { createNf, loadNfModules } from '../../src/nfs/index.js';
import { Driver, udp } from '../../src/testing/driver.js';
import { LocalGlobalState } from '../../src/state/global-local.js';
import { Verdict } from '../../src/types.js';
import { repoPath } from '../helpers/paths.js';

const METER = repoPath('examples', 'flow-meter', 'flow-meter.js');

function configError(pattern: RegExp): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof NfsError && e.code === ErrorCode.CONFIG, String(e));
    assert.match(e.message, pattern);
    return true;
  };
}

function file(name: string, text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'nfstate-module-')), name);
  writeFileSync(path, text);
  return path;
}

describe('NF modules', { timeout: 60_000 }, () => {
  it('a loaded module builds like a built-in, alone and in a chain', async () => {
    const nf = { type: METER, config: { rate: 1, burst: 1 } };
    assert.throws(() => createNf(METER, {}, new LocalGlobalState()), configError(/is not loaded/));
    await loadNfModules(nf);
    const global = new LocalGlobalState();
    const d = new Driver(createNf(nf.type, nf.config, global), global);
    const p = udp('10.0.0.1', 1, '192.0.2.1', 2);
    assert.deepEqual([d.send(p, 0).verdict, d.send(p, 0).verdict], [Verdict.FORWARD, Verdict.DROP]);
    const chain = createNf('chain', { nfs: [{ type: 'firewall' }, { type: METER, config: {} }] }, global);
    assert.equal(chain.name, 'firewall>flow-meter');
    // The module's own config checks apply.
    assert.throws(() => createNf(METER, { rate: -1 }, global), configError(/nf\.config\.rate/));
  });

  it('a module that cannot be imported, exports no factory, or makes an incomplete NF is a CONFIG error', async () => {
    const broken = file('broken.mjs', 'export default function (');
    await assert.rejects(loadNfModules({ type: broken, config: {} }), configError(/cannot import/));
    const none = file('none.mjs', 'export const create = () => ({});');
    await assert.rejects(
      loadNfModules({ type: none, config: {} }),
      configError(/must export default a function/),
    );
    const partial = file(
      'partial.mjs',
      "export default () => ({ name: 'p', initFlow() {}, process() { return 0; }, releaseFlow() {}, allocations: () => ({}), codec: { encodeFull() {} } });",
    );
    await loadNfModules({ type: partial, config: {} });
    assert.throws(
      () => createNf(partial, {}, new LocalGlobalState()),
      configError(/lacks codec\.decodeFull, codec\.mark, codec\.encodeDelta, codec\.applyDelta/),
    );
  });

  it('a topology names a module relative to its file; parsing the result again keeps it', () => {
    const dir = repoPath('examples', 'flow-meter');
    const t = loadTopology(join(dir, 'topology.yaml'));
    assert.equal(t.nf.type, METER);
    assert.equal(nfLabel(t.nf), 'flow-meter');
    assert.deepEqual(parseTopology(structuredClone(t)).nf, t.nf);
    const chain = parseTopology({ chain: ['firewall', './flow-meter.js'] }, 'topology', dir);
    assert.equal(nfLabel(chain.nf), 'firewall>flow-meter');
    assert.throws(
      () => parseTopology({ nf: { module: './nope.js' } }, 'topology', dir),
      configError(/^nf\.module: no such file .*nope\.js$/),
    );
    assert.throws(
      () => parseTopology({ nf: { type: 'nat', module: './flow-meter.js' } }, 'topology', dir),
      configError(/^nf\.module: give type or module, not both$/),
    );
    assert.throws(
      () => parseTopology({ chain: ['nat', { module: 'flow-meter.txt' }] }, 'topology', dir),
      configError(/^chain\[1\]\.module: must be the path of a JavaScript module/),
    );
  });
});
