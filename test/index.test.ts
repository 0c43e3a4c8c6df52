import assert from 'node:assert/strict';
import { it } from 'node:test';
import * as nfstate from '../src/index.js';

it('the public entry exposes the NF contracts and the deployment components', { timeout: 60_000 }, () => {
  for (const name of [
    'createNf',
    'loadNfModules',
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

it('exports what a library user needs to build a deployment: a logger, the default topology, the option types', () => {
  assert.equal(typeof nfstate.createLogger, 'function');
  const logger: nfstate.Logger = nfstate.silentLogger;
  logger.info('quiet', {});
  assert.equal(nfstate.DEFAULT_TOPOLOGY.reorder.maxHeld, 1024);
  // Compiles only while the option types are exported.
  const options: Partial<nfstate.NfInstanceOptions & nfstate.ProcessorOptions> & {
    ingress?: Partial<nfstate.IngressOptions>;
    sink?: Partial<nfstate.SinkOptions>;
    generator?: Partial<nfstate.GeneratorOptions>;
    deployment?: Partial<nfstate.DeploymentOptions>;
    log?: nfstate.LoggerOptions;
  } = { threads: 1 };
  assert.equal(options.threads, 1);
});
