/**
 * An NF instance as a process (`nfstate role nf`, forked by a launcher, or `nfstate nf`): the instance, its
 * global state, its liveness towards the controller, and its admin routes — the cluster's configuration,
 * the move steps and the takeover the controller drives.
 */
import { loadNfModules } from '../nfs/index.js';
import { ErrorCode, NfsError } from '../errors.js';
import { DEFAULT_FAILURE } from '../controller/detector.js';
import { createLogger } from '../log.js';
import type { AdminServer } from '../admin-server.js';
import { adminCall } from '../admin-call.js';
import { NfInstance } from '../nf/instance.js';
import { keepLiveness, reportToController } from '../nf/liveness.js';
import { parseGuarantee } from '../nf/guarantee.js';
import { flowKeyString, parseFlowKeyString } from '../packet/flow-key.js';
import type { Peer } from '../nf/replication.js';
import type { FlowKey, Logger } from '../types.js';
import { type NfSpec, openStore, flowList, canonical, serveAdmin, attach } from './roles.js';

/** A drain moves every flow, in batches per target: long for a loaded instance, never forever. */
const LEAVE_TIMEOUT_MS = 60_000;

export async function runNf(spec: NfSpec): Promise<void> {
  const logger = createLogger('nf', { fields: { instance: spec.id } });
  await loadNfModules(spec.nf);
  const nf = new NfInstance({
    ...spec,
    ...(spec.global === undefined ? {} : { strong: await openStore(spec.global, logger) }),
    logger,
  });
  nf.onFatal = () => {
    process.exitCode = 1;
    void nf.stop().finally(() => process.exit(1));
  };
  const { port, replication, workers } = await nf.start();
  if (spec.peers !== undefined) await nf.replicateTo(spec.peers);
  const { admin, sign } = await serveAdmin(spec, nf);
  admin.route('GET', '/digest', () => nf.digest());
  admin.route('POST', '/cluster', async (body) => {
    const { version, members, peers } = parseClusterConfig(body);
    await nf.setCluster(version, members, peers);
    return { ok: true };
  });
  admin.route('POST', '/gossip', async (body) => {
    const b = (body ?? {}) as Record<string, unknown>;
    const version = b.version;
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1)
      throw new NfsError(ErrorCode.CONFIG, 'gossip.version: must be an integer >= 1');
    await nf.setGossip(version, peerList(b.gossip, 'gossip.peers') ?? []);
    return { ok: true };
  });
  addMoveRoutes(admin, nf);
  const origin = (body: unknown): string => {
    const b = (body ?? {}) as Record<string, unknown>;
    if (typeof b.origin !== 'string' || b.origin === '')
      throw new NfsError(ErrorCode.CONFIG, 'takeover.origin: must be an instance id');
    return b.origin;
  };
  admin.route('POST', '/takeover/fence', (body) => {
    nf.fenceOrigin(origin(body));
    return { ok: true };
  });
  admin.route('POST', '/takeover', (body) => {
    const b = (body ?? {}) as Record<string, unknown>;
    const from = origin(b);
    // An instance that held no flows yet (a replacement killed at once) leaves nothing to take over.
    const none = b.flows === undefined || (Array.isArray(b.flows) && b.flows.length === 0);
    return nf.takeOver(from, none ? [] : flowList(b.flows, 'takeover.flows'));
  });
  admin.route('POST', '/flush', () => {
    nf.flushBatches();
    return { ok: true };
  });
  let stopReports: (() => void) | undefined;
  if (spec.controller !== undefined) {
    const c = spec.controller;
    const answer = await adminCall(
      c.host,
      c.admin,
      '/register',
      { id: spec.id, host: spec.host, port, workers, replication, admin: admin.port },
      sign,
    );
    if (typeof answer.emitter === 'number') nf.setEmitter(answer.emitter);
    const hb = answer.heartbeat_ms;
    if (typeof answer.token !== 'string')
      throw new NfsError(ErrorCode.PROCESS, 'register: the controller gave no token');
    const stopBeats = reportToController(
      spec.id,
      Buffer.from(answer.token, 'hex'),
      { host: c.host, report: answer.report as number },
      typeof hb === 'number' && hb > 0 ? hb : DEFAULT_FAILURE.heartbeatMs,
      () => nf.load(),
    );
    const stopLiveness =
      typeof answer.liveness === 'number'
        ? keepLiveness(spec.id, answer.token, { host: c.host, port: answer.liveness }, logger)
        : () => undefined;
    stopReports = () => {
      stopLiveness();
      stopBeats();
    };
  }
  attach(
    {
      collect: (out) => {
        nf.collect(out);
      },
      stop: async () => {
        const c = spec.controller;
        if (spec.leaveOnStop === true && c !== undefined && !(await leave(c, spec.id, sign, logger))) {
          // Still registered, with flows: no goodbye, so that the controller fails it over to its secondary.
          await nf.stop();
          process.exit(1);
        }
        stopReports?.();
        await nf.stop();
      },
      digest: () => nf.digest(),
      replicas: nf.replicas,
    },
    admin,
    { port, replication, admin: admin.port },
    workers,
  );
}

/** Asks the controller to drain this instance and forget it; whether it did, every flow moved. */
async function leave(
  c: { host: string; admin: number },
  id: string,
  sign: { key?: Buffer },
  logger: Logger,
): Promise<boolean> {
  try {
    const r = await adminCall(c.host, c.admin, '/leave', { id }, { ...sign, timeoutMs: LEAVE_TIMEOUT_MS });
    if (r.aborted === 0) {
      logger.info('left the deployment', { moved: r.moved });
      return true;
    }
    logger.error('leave: some flows stayed', { moved: r.moved, aborted: r.aborted });
  } catch (err) {
    logger.error('leave: the controller did not drain this instance', { error: String(err) });
  }
  return false;
}

/**
 * The steps of a move of one or more flows on an NF instance, driven by the controller. Each step names its
 * flows in a list and answers per flow, in the same order:
 *   POST /move/expect  { flows, guarantee }           destination: hold the flows' packets
 *   POST /move/freeze  { flows, to: {host, port}, copy_to?: {host, port}, intra, guarantee, settle_ms,
 *                        deadline_ms }              (copy_to: the destination's secondary, see handOver)
 *                                                     source: park each flow and close its batch (resuming it
 *                                                     if no commit comes within `deadline_ms`); answers
 *                                                     { flows: [{ version, expected, last_delta_bytes, full_bytes,
 *                                                     state? } | null] } — the full state when `intra` is false,
 *                                                     null for a flow that is not here to move
 *   POST /move/state   { flows }                      source: the frozen flows' full states
 *   POST /move/install { from, flows: [{ flow, expected, version, state? }], wait_ms, settle_ms }
 *                                                     destination: take each state (from its own replica of
 *                                                     `from` when none is given) and resume, waiting up to
 *                                                     `wait_ms` for the source's packets; { ok: [bool] },
 *                                                     false for a flow not expected here (any more)
 *   POST /move/commit  { flows }                      source: the re-point comes; { ok: [bool] }, false for a
 *                                                     flow it took back because its parked packets hit the bound
 *   POST /move/finish  { flows, wait_ms }             source: wait for the end-of-move markers, hand over;
 *                                                     { parked: [n] }
 *   POST /move/abort   { flows, side }                undo: the source resumes, the destination forgets
 */
function addMoveRoutes(admin: AdminServer, nf: NfInstance): void {
  const frozen = new Map<string, Uint8Array>();
  const read = (body: unknown): { b: Record<string, unknown>; keys: FlowKey[] } => {
    const b = (body ?? {}) as Record<string, unknown>;
    return { b, keys: flowList(b.flows, 'move.flows') };
  };
  admin.route('POST', '/move/expect', async (body) => {
    const { b, keys } = read(body);
    const guarantee = parseGuarantee(b.guarantee, 'move.guarantee');
    await nf.moveStep(
      'expect',
      keys.map((key) => ({ key })),
      { guarantee },
    );
    return { ok: true };
  });
  admin.route('POST', '/move/freeze', async (body) => {
    const { b, keys } = read(body);
    const to = b.to as { host?: unknown; port?: unknown } | undefined;
    if (typeof to?.host !== 'string' || typeof to.port !== 'number') {
      throw new NfsError(ErrorCode.CONFIG, 'move.to: must be { host, port }');
    }
    const copyTo = b.copy_to as { host?: unknown; port?: unknown } | undefined;
    if (copyTo !== undefined && (typeof copyTo.host !== 'string' || typeof copyTo.port !== 'number'))
      throw new NfsError(ErrorCode.CONFIG, 'move.copy_to: must be { host, port }');
    const results = await nf.moveStep(
      'freeze',
      keys.map((key) => ({ key })),
      {
        to: { host: to.host, port: to.port },
        ...(copyTo === undefined
          ? {}
          : { copyTo: { host: copyTo.host as string, port: copyTo.port as number } }),
        guarantee: parseGuarantee(b.guarantee, 'move.guarantee'),
        // Only a destination in the cluster installs from its replicas, which must be current first.
        settleMs: b.intra === true ? millis(b.settle_ms, 'move.settle_ms', 2000) : 0,
        deadlineMs: millis(b.deadline_ms, 'move.deadline_ms', 60_000),
      },
    );
    return {
      flows: results.map((r, i) => {
        if (r.frozen === undefined) return null;
        frozen.set(flowKeyString(keys[i]!), r.frozen.state);
        const { version, expected, lastDelta, state } = r.frozen;
        return {
          version,
          expected,
          last_delta_bytes: lastDelta,
          full_bytes: state.length,
          ...(b.intra === true ? {} : { state: Buffer.from(state).toString('base64') }),
        };
      }),
    };
  });
  admin.route('POST', '/move/state', (body) => {
    const { keys } = read(body);
    return {
      states: keys.map((key) => {
        const state = frozen.get(flowKeyString(key));
        return state === undefined ? null : Buffer.from(state).toString('base64');
      }),
    };
  });
  admin.route('POST', '/move/install', async (body) => {
    const b = (body ?? {}) as Record<string, unknown>;
    if (!Array.isArray(b.flows) || b.flows.length === 0)
      throw new NfsError(ErrorCode.CONFIG, 'move.flows: must be a non-empty list');
    const from = b.from;
    const wanted = b.flows.map((f: unknown, i) => {
      const o = (f ?? {}) as Record<string, unknown>;
      if (typeof o.flow !== 'string')
        throw new NfsError(ErrorCode.CONFIG, `move.flows[${i}].flow: must be a flow key string`);
      if (typeof o.expected !== 'number' || !Number.isSafeInteger(o.expected) || o.expected < 1)
        throw new NfsError(ErrorCode.CONFIG, `move.flows[${i}].expected: must be an integer >= 1`);
      const key = canonical(parseFlowKeyString(o.flow));
      let state: Uint8Array | undefined;
      if (typeof o.state === 'string') state = Buffer.from(o.state, 'base64');
      else if (typeof from === 'string' && typeof o.version === 'number')
        state = nf.replicas?.stateOf(from, key, o.version);
      return { key, expected: o.expected, state };
    });
    // A flow whose replica here is not at the source's version cannot be installed from it.
    const ready = wanted.flatMap(({ key, expected, state }) =>
      state === undefined ? [] : [{ key, expected, state }],
    );
    const installed =
      ready.length === 0
        ? []
        : await nf.moveStep('install', ready, {
            waitMs: millis(b.wait_ms, 'move.wait_ms', 5000),
            settleMs: millis(b.settle_ms, 'move.settle_ms', 0),
          });
    // Not installed either: a flow no longer expected here (its move was called off meanwhile).
    let next = 0;
    return { ok: wanted.map((w) => w.state !== undefined && installed[next++]!.ok) };
  });
  admin.route('POST', '/move/commit', async (body) => {
    const { keys } = read(body);
    const results = await nf.moveStep(
      'commit',
      keys.map((key) => ({ key })),
    );
    return { ok: results.map((r) => r.ok) };
  });
  admin.route('POST', '/move/finish', async (body) => {
    const { b, keys } = read(body);
    const parked = await nf.finishMoves(keys, millis(b.wait_ms, 'move.wait_ms', 5000));
    for (const key of keys) frozen.delete(flowKeyString(key));
    return { parked };
  });
  admin.route('POST', '/move/abort', async (body) => {
    const { b, keys } = read(body);
    for (const key of keys) frozen.delete(flowKeyString(key));
    await nf.moveStep(
      b.side === 'destination' ? 'forget' : 'abort',
      keys.map((key) => ({ key })),
    );
    return { ok: true };
  });
}

/** A duration in milliseconds, 1..60000; `def` when absent. */
function millis(v: unknown, field: string, def: number): number {
  if (v === undefined) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > 60_000)
    throw new NfsError(ErrorCode.CONFIG, `${field}: must be a number of milliseconds in 1..60000`);
  return v;
}

/** POST /cluster { version, members, peers? }: without `peers`, only whom to accept frames from changes. */
function parseClusterConfig(body: unknown): { version: number; members: string[]; peers?: Peer[] } {
  const b = (body ?? {}) as Record<string, unknown>;
  const version = b.version;
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
    throw new NfsError(ErrorCode.CONFIG, 'cluster.version: must be an integer >= 1');
  }
  const members = b.members;
  if (!Array.isArray(members) || !members.every((m) => typeof m === 'string')) {
    throw new NfsError(ErrorCode.CONFIG, 'cluster.members: must be a list of instance ids');
  }
  const peers = peerList(b.peers, 'cluster.peers');
  return { version, members, ...(peers === undefined ? {} : { peers }) };
}

function peerList(v: unknown, field: string): Peer[] | undefined {
  if (v === undefined) return undefined;
  if (
    !Array.isArray(v) ||
    !v.every((p: unknown) => {
      const o = (p ?? {}) as Record<string, unknown>;
      return typeof o.id === 'string' && typeof o.host === 'string' && typeof o.port === 'number';
    })
  ) {
    throw new NfsError(ErrorCode.CONFIG, `${field}: must be a list of { id, host, port }`);
  }
  return v as Peer[];
}
