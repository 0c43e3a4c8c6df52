import assert from 'node:assert/strict';
import { it } from 'node:test';
import { loadOptional } from '../../bench/optional.js';
import { ErrorCode, NfsError } from '../../src/errors.js';

it('a missing optional package is a clear CONFIG error; any other failure to load passes as it is', async () => {
  const name = 'nfstate-no-such-package';
  await assert.rejects(
    loadOptional(name, 'this check', () => import(name)),
    (err: unknown) =>
      err instanceof NfsError &&
      err.code === ErrorCode.CONFIG &&
      err.message === `this check: the optional package ${name} is not installed (npm install ${name})`,
  );
  const broken = new TypeError('the package itself failed');
  await assert.rejects(
    loadOptional('vega', 'plots', () => Promise.reject(broken)),
    (err: unknown) => err === broken,
  );
  const vega = await loadOptional('vega', 'plots', () => import('vega'));
  assert.equal(typeof vega.View, 'function');
});
