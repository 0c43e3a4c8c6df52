/**
 * `nfstate bench replication`: how long a batch's records take to be acknowledged by a cluster peer, from
 * the send until its commit (what after-replication release and a move's settle wait for). Workers ship
 * their records in bursts (several batches close in one turn, a freeze closes a flow's batch beside the
 * batches of traffic), so each round sends a burst of blocks back to back and waits for the last one's
 * commit. The baseline in the same run is a burst of one. A peer whose acknowledgements went through
 * Nagle's algorithm measured a burst of two at about 40 ms, against 0.2 ms for one.
 */
import { randomBytes } from 'node:crypto';
import { round2 } from '../src/clock.js';
import { percentile } from '../src/launcher/demo-report.js';
import { silentLogger } from '../src/log.js';
import { ReplicaStore } from '../src/nf/replica-store.js';
import { Replicator } from '../src/nf/replicator.js';
import { createNf } from '../src/nfs/index.js';
import { LocalGlobalState } from '../src/state/global-local.js';

export interface ReplicationBenchOptions {
  rounds: number;
  json: boolean;
  out: (line: string) => void;
}

export interface ReplicationBenchPoint {
  /** Blocks sent back to back per round. */
  burst: number;
  rounds: number;
  commit_p50_ms: number;
  commit_p90_ms: number;
  commit_max_ms: number;
  /** This burst's p50 over a burst of one's, from the same run. */
  vs_single: number;
}

const BURSTS = [1, 2, 8];
/** Between rounds: the connection goes quiet, as between a flow's batches at a light load. */
const GAP_MS = 2;

export async function runReplicationBench(o: ReplicationBenchOptions): Promise<ReplicationBenchPoint[]> {
  const key = randomBytes(32);
  const peer = new ReplicaStore(
    { members: ['nf-a'], key, nf: createNf('firewall', {}, new LocalGlobalState()) },
    silentLogger,
  );
  await peer.listen('127.0.0.1', 0);
  const sender = new Replicator(
    { self: 'nf-a', key, peers: [{ id: 'peer', host: '127.0.0.1', port: peer.port }] },
    silentLogger,
  );
  let waiting: { send: number; done: () => void } | undefined;
  sender.onCommit = (k) => {
    if (waiting !== undefined && k >= waiting.send) {
      waiting.done();
      waiting = undefined;
    }
  };
  const points: ReplicationBenchPoint[] = [];
  try {
    await sender.start();
    const block = new Uint8Array(0);
    for (const burst of BURSTS) {
      const ms: number[] = [];
      for (let i = 0; i < o.rounds; i++) {
        const t0 = performance.now();
        let send = 0;
        for (let b = 0; b < burst; b++) send = sender.send(block);
        await new Promise<void>((done) => (waiting = { send, done }));
        ms.push(performance.now() - t0);
        await new Promise((r) => setTimeout(r, GAP_MS));
      }
      ms.sort((a, b) => a - b);
      points.push({
        burst,
        rounds: o.rounds,
        commit_p50_ms: percentile(ms, 0.5),
        commit_p90_ms: percentile(ms, 0.9),
        commit_max_ms: round2(ms[ms.length - 1]!),
        vs_single: 0,
      });
    }
  } finally {
    sender.stop();
    await peer.stop();
  }
  for (const p of points) p.vs_single = round2(p.commit_p50_ms / points[0]!.commit_p50_ms);
  if (o.json) o.out(JSON.stringify({ points }));
  else {
    o.out('burst  rounds  commit p50 ms  p90 ms  max ms  vs one');
    for (const p of points)
      o.out(
        `${String(p.burst).padStart(5)}${String(p.rounds).padStart(8)}${p.commit_p50_ms.toFixed(2).padStart(15)}` +
          `${p.commit_p90_ms.toFixed(2).padStart(8)}${p.commit_max_ms.toFixed(2).padStart(8)}${p.vs_single.toFixed(2).padStart(8)}`,
      );
  }
  return points;
}
