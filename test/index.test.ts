import assert from 'node:assert/strict';
import { it } from 'node:test';
import * as nfstate from '../src/index.js';

it('the public entry exposes the NF contracts and the deployment components', { timeout: 60_000 }, () => {
  for (const name of [
    'createNf',
    'LocalGlobalState',
    'FlowProcessor',
    'NfInstance',
    'Ingress',
    'Controller',
    'runOracle',
  ]) {
    assert.equal(typeof (nfstate as Record<string, unknown>)[name], 'function', name);
  }
  const nf = nfstate.createNf('firewall', {}, new nfstate.LocalGlobalState());
  assert.equal(nf.name, 'firewall');
});
