/**
 * What a controller must hand its standby (DESIGN.md §6): the registry of instances, their clusters, the
 * ingress, the instances declared failed, and the counters that must only grow (fencing tokens, rule
 * epochs). The leading controller saves it to etcd at every change of membership, and a standby that wins
 * the election (election.ts) loads it and carries on. The dataplane needs no controller to forward, so
 * nothing is lost meanwhile; moves and failovers wait for the new leader.
 *
 *   const journal = new EtcdJournal({ hosts, prefix: 'nfstate/abc/', logger });
 *   const before = await journal.load();          // undefined: the first controller
 *   await journal.save(controller.snapshot());
 *
 * One key, `<prefix>controller/state`, holds the whole snapshot as JSON: a few hundred bytes per instance,
 * written at each registration, departure and failover, never per packet. Each move in progress has a key
 * of its own, `<prefix>controller/moves/<id>`, written before its first step and deleted once it is over:
 * a standby settles the moves its predecessor left half-way (Controller.settleOpenMoves).
 */
import type { Etcd3 } from 'etcd3';
import { ErrorCode, NfsError } from '../errors.js';
import { etcdClient } from '../global/etcd-client.js';
import { DEFAULT_DEADLINE_MS, withDeadline } from '../global/store.js';
import type { Cluster } from './clusters.js';
import type { InstanceInfo } from './records.js';

export interface SavedInstance extends InstanceInfo {
  token: string;
  emitter: number;
  /** Whether it was live for new flows. */
  live: boolean;
}

export interface ControllerSnapshot {
  version: 1;
  instances: SavedInstance[];
  clusters: Cluster[];
  ingress: { host: string; admin: number } | null;
  failed: string[];
  emitters: number;
  /** Rule epochs up to here may have been used: a successor starts above. */
  epochCeiling: number;
  /** Cluster and gossip configuration versions likewise. */
  configCeiling: number;
}

/** A move the controller has started and not yet seen through: its flows, from `src` to `dst`. */
export interface OpenMove {
  id: string;
  src: string;
  dst: string;
  flows: string[];
}

/** What a standby carries on from: the last snapshot, and the moves left open. */
export interface Restored extends ControllerSnapshot {
  moves: OpenMove[];
}

export class EtcdJournal {
  private readonly client: Etcd3;
  private readonly closing = { closing: false };
  private readonly key: string;
  private readonly movesPrefix: string;

  constructor(options: { hosts: string[]; prefix: string }) {
    this.client = etcdClient(options.hosts, this.closing);
    this.key = `${options.prefix}controller/state`;
    this.movesPrefix = `${options.prefix}controller/moves/`;
  }

  async load(): Promise<Restored | undefined> {
    const [raw, moves] = await withDeadline(
      'controller journal: load',
      { deadlineMs: DEFAULT_DEADLINE_MS },
      () =>
        Promise.all([
          this.client.get(this.key).string(),
          this.client.getAll().prefix(this.movesPrefix).strings(),
        ]),
    );
    if (raw === null) return undefined;
    const s = JSON.parse(raw) as { version?: unknown };
    if (s.version !== 1)
      throw new NfsError(ErrorCode.STATE, `controller journal: unknown version ${String(s.version)}`);
    return {
      ...(s as ControllerSnapshot),
      moves: Object.values(moves).map((m) => JSON.parse(m) as OpenMove),
    };
  }

  /** Records a move before its first step: once this resolves, a standby would settle it. */
  async beginMove(m: OpenMove): Promise<void> {
    await withDeadline(
      'controller journal: move (leader lost or no quorum?)',
      { deadlineMs: DEFAULT_DEADLINE_MS },
      () =>
        this.client
          .put(this.movesPrefix + m.id)
          .value(JSON.stringify(m))
          .exec(),
    );
  }

  /** The move is over (moved, or aborted on both sides). */
  async endMove(id: string): Promise<void> {
    await withDeadline('controller journal: move end', { deadlineMs: DEFAULT_DEADLINE_MS }, () =>
      this.client
        .delete()
        .key(this.movesPrefix + id)
        .exec(),
    );
  }

  async save(s: ControllerSnapshot): Promise<void> {
    await withDeadline(
      'controller journal: save (leader lost or no quorum?)',
      { deadlineMs: DEFAULT_DEADLINE_MS },
      () => this.client.put(this.key).value(JSON.stringify(s)).exec(),
    );
  }

  close(): void {
    this.closing.closing = true;
    this.client.close();
  }
}
