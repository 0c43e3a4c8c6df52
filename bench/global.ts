/**
 * `nfstate bench global`: updates per second through the strong global store, batched, with several
 * writers and one watcher that must see every update. The baseline in the same run is the `local`
 * sequencer over TCP; `etcd` is a real 3-member cluster on loopback that the bench starts and stops.
 */
import { randomBytes } from 'node:crypto';
import { startEtcd } from '../src/global/etcd-local.js';
import { EtcdGlobalStore } from '../src/global/etcd.js';
import { SequencerClient } from '../src/global/sequencer-client.js';
import { SequencerServer } from '../src/global/sequencer-server.js';
import type { GlobalStore, GlobalUpdate } from '../src/global/store.js';
import { silentLogger } from '../src/log.js';

export interface GlobalBenchOptions {
  writers: number;
  batch: number;
  seconds: number;
  json: boolean;
  out: (line: string) => void;
}

export interface GlobalBenchPoint {
  store: 'local' | 'etcd';
  writers: number;
  batch: number;
  updates_per_s: number;
  batches_per_s: number;
  /** From the first submit until the watcher had every committed update. */
  watcher_lag_ms: number;
}

async function measure(
  store: GlobalBenchPoint['store'],
  open: () => Promise<GlobalStore>,
  o: GlobalBenchOptions,
): Promise<GlobalBenchPoint> {
  const writers = await Promise.all(Array.from({ length: o.writers }, open));
  const watcher = await open();
  let seen = 0;
  const handle = watcher.watch(0, () => {
    seen++;
  });
  const data = new Uint8Array(16);
  let committed = 0;
  let batches = 0;
  const t0 = performance.now();
  const end = t0 + o.seconds * 1000;
  await Promise.all(
    writers.map(async (w, i) => {
      for (let b = 0; performance.now() < end; b++) {
        const updates: GlobalUpdate[] = Array.from({ length: o.batch }, (_, j) => ({
          id: `${store}-${i}-${b}-${j}`,
          data,
        }));
        const r = await w.submit(updates);
        committed += r.applied;
        batches++;
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  while (seen < committed) await new Promise((r) => setTimeout(r, 5));
  const lag = performance.now() - t0 - elapsed * 1000;
  await handle.stop();
  for (const s of [...writers, watcher]) await s.stop();
  return {
    store,
    writers: o.writers,
    batch: o.batch,
    updates_per_s: Math.round(committed / elapsed),
    batches_per_s: Math.round(batches / elapsed),
    watcher_lag_ms: Math.round(lag),
  };
}

export async function runGlobalBench(o: GlobalBenchOptions): Promise<GlobalBenchPoint[]> {
  const key = randomBytes(32);
  const server = new SequencerServer({ key, logger: silentLogger });
  await server.listen('127.0.0.1', 0);
  const local = await measure(
    'local',
    async () => {
      const c = new SequencerClient({ host: '127.0.0.1', port: server.port, key, logger: silentLogger });
      await c.start();
      return c;
    },
    o,
  ).finally(() => server.stop());
  const cluster = await startEtcd(3);
  const etcd = await measure(
    'etcd',
    async () => {
      const c = new EtcdGlobalStore({ hosts: cluster.clientUrls, prefix: 'bench/', logger: silentLogger });
      await c.start();
      return c;
    },
    o,
  ).finally(() => cluster.stop());
  const points = [local, etcd];
  if (o.json) o.out(JSON.stringify({ points, etcd_vs_local: etcd.updates_per_s / local.updates_per_s }));
  else {
    o.out(`store   writers  batch  updates/s  batches/s  watcher lag ms  vs local`);
    for (const p of points) {
      o.out(
        `${p.store.padEnd(8)}${String(p.writers).padStart(7)}${String(p.batch).padStart(7)}` +
          `${String(p.updates_per_s).padStart(11)}${String(p.batches_per_s).padStart(11)}` +
          `${String(p.watcher_lag_ms).padStart(16)}${(p.updates_per_s / local.updates_per_s).toFixed(2).padStart(10)}`,
      );
    }
  }
  return points;
}
