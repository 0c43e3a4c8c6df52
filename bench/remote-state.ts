/**
 * nfstate next to the remote-state baseline (DESIGN.md §9): one nfstate NF instance and one instance that
 * reads and writes every packet's flow state in a real Redis (remote-state-nf.ts), measured in the same
 * run, with the same packets and the same driver (native/driver.c, as in the dataplane bench).
 *
 *   const r = await runRemoteStateBench({ nf: 'nat', quick: true, step: console.log });
 *   r.throughput_ratio   // remote-state's packets/s at saturation / nfstate's
 *   r.p50_ratio          // remote-state's median latency at the common rate / nfstate's
 *
 * Four points, each with a fresh instance and a fresh driver (and, for remote-state, an empty Redis):
 *
 *   1. nfstate        closed loop, window 512       → throughput_pps
 *   2. remote-state   closed loop, window 512       → throughput_pps
 *   3. nfstate        paced at R packets/s          → p50_us, p99_us
 *   4. remote-state   paced at R packets/s          → p50_us, p99_us
 *
 * R is half the lower of the two saturation rates, so that both sustain it with room to spare and the
 * latency measured is that of the path, not of a queue at its limit. The bench starts its own
 * redis-server on loopback, with no persistence, and stops it however the run ends.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'redis';
import { freePort } from '../src/launcher/free-port.js';
import type { Hop, Load, StartHop } from './dataplane.js';
import {
  announced,
  buildC,
  CDriver,
  Children,
  HOST,
  locate,
  message,
  nfSpec,
  PacketRing,
  shutDown,
  startNf,
  startRole,
} from './dataplane.js';
import type { RemoteStateSpec } from './remote-state-nf.js';

export interface RemoteStateOptions {
  nf: 'nat' | 'firewall' | 'lb' | 'ids';
  quick: boolean;
  /** progress lines */
  step?: (what: string) => void;
}

export interface RemoteStatePoint {
  system: 'nfstate' | 'remote-state';
  throughput_pps: number;
  p50_us: number;
  p99_us: number;
  /** Packets that never came back, in the saturation and the paced run together. */
  lost: number;
}

export interface RemoteStateResult {
  nf: string;
  redis_version: string;
  points: RemoteStatePoint[];
  /** remote-state / nfstate, throughput at saturation. */
  throughput_ratio: number;
  /** remote-state / nfstate, median latency at `latency_rate_pps`. */
  p50_ratio: number;
  /** The rate both were paced at for the latency points. */
  latency_rate_pps: number;
}

const QUICK_SECONDS = 2;
const QUICK_WARMUP_SECONDS = 0.5;
const FULL_SECONDS = 8;
const FULL_WARMUP_SECONDS = 1;
/** The latency points' rate, as a share of the lower saturation rate. */
const LATENCY_LOAD = 0.5;
/** A paced run that delivers less than this share of its rate did not sustain it. */
const SUSTAINED = 0.95;

/** A redis-server of this run's own, on loopback, with nothing written to disk. */
export interface RedisServer {
  port: number;
  version: string;
  /** Empties it: each remote-state point starts with no flow in the store. */
  flush(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts one, its working directory `dir`; rejects naming the package to install where there is none. */
export async function startRedis(children: Children, dir: string): Promise<RedisServer> {
  const probe = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  if (probe.error !== undefined) {
    throw new Error(
      `redis-server not found (${probe.error.message}): the remote-state bench runs a real Redis; ` +
        'install it with `apt-get install redis-server`',
    );
  }
  const version = /v=(\S+)/.exec(probe.stdout)?.[1] ?? 'unknown';
  const port = await freePort(HOST);
  const args = ['--port', port, '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', dir];
  const child: ChildProcess = children.track(
    spawn('redis-server', args.map(String), { stdio: ['ignore', 'pipe', 'ignore'] }),
  );
  // Unlike the driver, redis-server does not die with its parent: a bench that exits without unwinding
  // (process.exit from a signal handler) must still not leave it behind.
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  const client = createClient({ socket: { host: HOST, port, reconnectStrategy: false } });
  client.on('error', () => undefined);
  const stop = async (): Promise<void> => {
    if (client.isOpen) client.destroy();
    await shutDown(child, () => Promise.resolve(child.kill('SIGTERM')));
    process.off('exit', killOnExit);
  };
  try {
    await announced(child, child.stdout!, /Ready to accept connections/, 'redis-server');
    // Its log is not read after this; flowing with no listener, it is dropped rather than filling the pipe.
    child.stdout!.resume();
    await client.connect();
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    port,
    version,
    flush: async () => {
      await client.flushAll();
    },
    stop,
  };
}

interface Measured {
  throughput: Load;
  paced: Load;
}

/**
 * Runs the comparison for one NF. Every child (redis-server, drivers, instances) is stopped and the
 * temporary directory removed, however the run ends.
 */
export async function runRemoteStateBench(o: RemoteStateOptions): Promise<RemoteStateResult> {
  const step = o.step ?? (() => undefined);
  const seconds = o.quick ? QUICK_SECONDS : FULL_SECONDS;
  const warmupSeconds = o.quick ? QUICK_WARMUP_SECONDS : FULL_WARMUP_SECONDS;
  const cli = locate('../src/cli/main.js');
  const role = locate('./remote-state-role.js');
  if (cli === undefined || role === undefined)
    throw new Error('remote-state bench: run it from the build (dist/), where the nfstate CLI is compiled');

  const children = new Children();
  const dir = mkdtempSync(join(tmpdir(), 'nfstate-remote-state-'));
  let redis: RedisServer | undefined;
  try {
    const [driverBuild, redisStart] = await Promise.allSettled([
      buildC(children, 'driver', dir, ['-pthread']),
      startRedis(children, dir),
    ]);
    if (redisStart.status === 'fulfilled') redis = redisStart.value;
    else throw redisStart.reason;
    if (driverBuild.status === 'rejected')
      throw new Error(`remote-state bench: needs native/driver.c built: ${message(driverBuild.reason)}`);
    const binary = driverBuild.value;
    const store = redis;
    step(`redis-server ${store.version} on ${HOST}:${store.port}, no persistence`);

    const ring = new PacketRing();
    const packets = join(dir, 'packets.bin');
    writeFileSync(packets, ring.records());

    const nfstate: StartHop = (egress) => startNf(children, cli, dir, nfSpec(o.nf, 1, egress));
    const remote: StartHop = async (egress): Promise<Hop> => {
      await store.flush();
      const base = nfSpec(o.nf, 1, egress);
      const spec: RemoteStateSpec = {
        id: `remote-state-${o.nf}`,
        host: HOST,
        port: 0,
        nf: base.nf,
        redis: { host: HOST, port: store.port },
        egress: base.egress,
        flowIdleMs: base.processor.flowIdleMs,
      };
      return startRole(children, dir, spec.id, role, [JSON.stringify(spec)]);
    };
    const run = async (system: string, start: StartHop, rate = 0): Promise<Load> => {
      const load = await new CDriver(children, binary, packets, seconds, warmupSeconds, rate).run(start);
      const what = rate > 0 ? `paced at ${rate} pps` : 'saturated';
      const latency = load.p50_us === undefined ? '' : `, p50 ${load.p50_us} µs, p99 ${load.p99_us} µs`;
      step(`${system} ${o.nf} ${what}: ${Math.round(load.pps)} pps${latency}, lost ${load.lost}`);
      if (rate > 0 && load.pps < rate * SUSTAINED)
        step(`  ${system} did not sustain ${rate} pps: its latency includes queueing`);
      return load;
    };

    const nfstateThroughput = await run('nfstate', nfstate);
    const remoteThroughput = await run('remote-state', remote);
    const lower = Math.min(nfstateThroughput.pps, remoteThroughput.pps);
    if (!(lower > 0)) throw new Error('remote-state bench: a system moved no packets at saturation');
    // Rounded down to a round figure, at least 100 pps.
    const rate = Math.max(100, Math.floor((lower * LATENCY_LOAD) / 100) * 100);
    const measured: Record<RemoteStatePoint['system'], Measured> = {
      nfstate: { throughput: nfstateThroughput, paced: await run('nfstate', nfstate, rate) },
      'remote-state': { throughput: remoteThroughput, paced: await run('remote-state', remote, rate) },
    };

    const points = (['nfstate', 'remote-state'] as const).map((system): RemoteStatePoint => {
      const { throughput, paced } = measured[system];
      if (paced.p50_us === undefined || paced.p99_us === undefined)
        throw new Error(`remote-state bench: the driver reported no latency for ${system}`);
      return {
        system,
        throughput_pps: Math.round(throughput.pps),
        p50_us: paced.p50_us,
        p99_us: paced.p99_us,
        lost: throughput.lost + paced.lost,
      };
    });
    const [base, remoteState] = points as [RemoteStatePoint, RemoteStatePoint];
    return {
      nf: o.nf,
      redis_version: store.version,
      points,
      throughput_ratio: ratio(remoteState.throughput_pps, base.throughput_pps),
      p50_ratio: ratio(remoteState.p50_us, base.p50_us),
      latency_rate_pps: rate,
    };
  } finally {
    await redis?.stop();
    children.killAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** a / b to three decimals; 0 when b is 0 (a latency under 1 µs reads as 0). */
function ratio(a: number, b: number): number {
  return b > 0 ? Math.round((a / b) * 1000) / 1000 : 0;
}
