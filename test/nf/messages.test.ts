import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_THREADS, workerPorts } from '../../src/nf/messages.js';

describe('workerPorts (an instance registering its workers)', { timeout: 10_000 }, () => {
  it('takes a list of ports, and none for absent', () => {
    assert.deepEqual(workerPorts([7001, 65535, 1], 'f'), [7001, 65535, 1]);
    assert.deepEqual(workerPorts(undefined, 'f'), []);
    assert.deepEqual(workerPorts(null, 'f'), []);
  });

  it('refuses what is no list of ports, naming the field', () => {
    const tooMany = Array.from({ length: MAX_THREADS + 1 }, (_, i) => 7000 + i);
    for (const bad of [[0], [65536], [1.5], ['7001'], 7001, {}, tooMany])
      assert.throws(
        () => workerPorts(bad, 'instance.workers'),
        (err: Error & { code?: string }) =>
          err.code === 'NFS_ERR_CONFIG' && err.message.startsWith('instance.workers:'),
        JSON.stringify(bad),
      );
  });
});
