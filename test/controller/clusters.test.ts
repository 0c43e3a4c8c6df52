import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { NfsError } from '../../src/errors.js';
import { ClusterMap } from '../../src/controller/clusters.js';

describe('ClusterMap', { timeout: 60_000 }, () => {
  it('fills clusters of k in join order on one host', () => {
    const map = new ClusterMap(4);
    const placed = Array.from({ length: 12 }, (_, i) => map.join({ id: `nf-${i}`, host: 'h' }));
    assert.deepEqual(placed, ['c0', 'c0', 'c0', 'c0', 'c1', 'c1', 'c1', 'c1', 'c2', 'c2', 'c2', 'c2']);
    assert.equal(map.secondaryOf('nf-0'), 'nf-1');
    assert.equal(map.secondaryOf('nf-3'), 'nf-0', 'the ring wraps');
  });

  it('puts an instance with the instances of its host when their cluster has room', () => {
    const local = new ClusterMap(3);
    local.join({ id: 'a1', host: 'a' });
    local.join({ id: 'b1', host: 'b' });
    local.join({ id: 'a2', host: 'a' });
    assert.equal(local.clusterOf('a2')?.id, local.clusterOf('a1')?.id);
    const spread = new ClusterMap(2);
    for (const [id, host] of [
      ['a1', 'a'],
      ['a2', 'a'],
      ['b1', 'b'],
      ['b2', 'b'],
    ] as const)
      spread.join({ id, host });
    assert.deepEqual(
      spread.clusters().map((c) => c.members.map((m) => m.host)),
      [
        ['a', 'a'],
        ['b', 'b'],
      ],
    );
  });

  it('moves nobody when one leaves or joins, and never exceeds k', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 3 })), {
          maxLength: 80,
        }),
        (k, ops) => {
          const map = new ClusterMap(k);
          for (const [join, n, host] of ops) {
            const before = new Map(
              map.clusters().flatMap((c) => c.members.map((m) => [m.id, c.id] as const)),
            );
            if (join) map.join({ id: `nf-${n}`, host: `h${host}` });
            else map.leave(`nf-${n}`);
            for (const c of map.clusters()) {
              assert.ok(c.members.length >= 1 && c.members.length <= k);
              for (const m of c.members) if (before.has(m.id)) assert.equal(before.get(m.id), c.id);
            }
          }
        },
      ),
      { numRuns: 200, interruptAfterTimeLimit: 2000 },
    );
  });

  it('rejects a bad size', () => {
    assert.throws(() => new ClusterMap(0), NfsError);
  });
});
