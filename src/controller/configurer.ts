/**
 * What the controller tells the roles whenever the deployment's membership changes: each cluster's members
 * and peers (POST /cluster, two rounds), every instance's gossip peers beyond its cluster (POST /gossip),
 * the ingress's secondaries (POST /secondaries, then a flush at each primary whose secondary changed) and
 * its live set (POST /live). Each kind runs one at a time, in order, reading the deployment as it is when
 * it goes; `reconfigure` tries one that a change must not drop again, in the background, until it lands.
 *
 *   const configurer = new Configurer(deps, calls, logger);
 *   await configurer.configure('c1');                      // its members, then everyone's gossip peers
 *   await configurer.reconfigure('secondaries', { id }, () => configurer.pushSecondaries()).first;
 */
import type { MetricSample, MetricSource, Logger } from '../types.js';
import type { ClusterMap } from './clusters.js';
import type { AdminAddress, Registered } from './records.js';
import type { RoleCalls } from './role-calls.js';

/** When a primary whose secondary changed closes its batches again (see pushSecondaries). */
const SECOND_FLUSH_MS = 100;
/** What a reconfiguration a change of membership must not drop tells (reconfigure). */
const RECONFIGURE_STEPS = ['configure', 'secondaries', 'live'] as const;
export type ReconfigureStep = (typeof RECONFIGURE_STEPS)[number];
/** Its tries, and the pause after the first failed one, doubling after each. */
const RECONFIGURE_TRIES = 4;
const RECONFIGURE_BACKOFF_MS = 100;

/** The controller's registry, as the configurer reads it. */
export interface ConfigurerDeps {
  readonly instances: ReadonlyMap<string, Registered>;
  readonly map: ClusterMap;
  /** Registered while an ingress runs, and not yet known to it. */
  readonly joining: ReadonlySet<string>;
  readonly draining: ReadonlySet<string>;
  isFailed(id: string): boolean;
  ingress(): AdminAddress | undefined;
  nextConfigVersion(): number;
  /** The controller stopped: nothing is tried again. */
  stopped(): boolean;
}

export class Configurer implements MetricSource {
  /** Failed tries of the reconfigurations a change of membership must not drop (reconfigure), by step… */
  readonly failures: Record<ReconfigureStep, number> = { configure: 0, secondaries: 0, live: 0 };
  /** …and those given up on after every try. */
  readonly abandoned: Record<ReconfigureStep, number> = { configure: 0, secondaries: 0, live: 0 };
  /** The secondaries the ingress was last told, by primary. */
  private told = new Map<string, string | null>();
  private liveUpdates: Promise<unknown> = Promise.resolve();
  private configuring: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly deps: ConfigurerDeps,
    private readonly calls: RoleCalls,
    private readonly logger: Logger,
  ) {}

  collect(out: MetricSample[]): void {
    for (const step of RECONFIGURE_STEPS) {
      out.push(['nfstate_controller_reconfigure_failures_total', { step }, this.failures[step]]);
      out.push(['nfstate_controller_reconfigure_abandoned_total', { step }, this.abandoned[step]]);
    }
  }

  /** The secondary the ingress was last told for `primary`: null for none, undefined when not told. */
  secondaryOf(primary: string): string | null | undefined {
    return this.told.get(primary);
  }

  /**
   * The ingress learns every secondary at once (it starts, or a new controller carries on): this is what
   * it is told, and what later pushes send changes against.
   */
  tellAll(): Record<string, string | null> {
    this.told = this.secondaryMap();
    return Object.fromEntries(this.told);
  }

  /** Every registered instance the ingress knows, with its secondary (null: it has none). */
  private secondaryMap(): Map<string, string | null> {
    const out = new Map<string, string | null>();
    for (const id of this.deps.instances.keys()) {
      if (this.deps.joining.has(id) || this.deps.isFailed(id)) continue;
      const s = this.deps.map.secondaryOf(id);
      // One still joining is unknown to the ingress: it becomes the secondary when its own push comes.
      out.set(id, s === undefined || this.deps.isFailed(s) || this.deps.joining.has(s) ? null : s);
    }
    return out;
  }

  /**
   * Tells the ingress the secondaries after a cluster changed. A primary whose secondary changed closes its
   * open batches at once: the new secondary holds its flows as of those records, and its copies start with
   * the switch's next packets, so nothing falls between (until then the old secondary still has them).
   */
  async pushSecondaries(): Promise<void> {
    const ingress = this.deps.ingress();
    if (ingress === undefined) return;
    const next = this.secondaryMap();
    const changed = [...next].filter(([id, s]) => this.told.get(id) !== s);
    if (changed.length === 0) return;
    const before = this.told;
    this.told = next;
    try {
      await this.calls.post(ingress, '/secondaries', {
        secondaries: Object.fromEntries(changed),
      });
    } catch (err) {
      // The ingress may still have the old ones: those not pushed since go back to them, so that the next
      // push (a retry) sends them again rather than find nothing changed.
      for (const [id, s] of changed) {
        if (this.told.get(id) !== s) continue;
        const old = before.get(id);
        if (old === undefined) this.told.delete(id);
        else this.told.set(id, old);
      }
      throw err;
    }
    await Promise.all(
      changed.map(async ([id, s]) => {
        const inst = this.deps.instances.get(id);
        if (s === null || inst === undefined) return;
        const flush = (): Promise<void> =>
          this.calls.post(inst, '/flush', {}).then(
            () => undefined,
            (err: unknown) => {
              this.logger.warn('could not flush after a secondary changed', { id, error: String(err) });
            },
          );
        await flush();
        // Packets stamped before the switch changed may still wait in the primary's queue: a second flush,
        // once they are processed, covers them too, since the new secondary never got their copies.
        setTimeout(() => void flush(), SECOND_FLUSH_MS).unref();
      }),
    );
  }

  /**
   * Tells every member of a cluster its members and peers; the members then replicate to each other. Two
   * rounds with one member list: first every member accepts frames from all the others, then each connects
   * to its peers, so that no first connection between a newcomer and a member is refused and no catch-up
   * is lost. One configuration at a time: a member that joined meanwhile is not named as a peer before it
   * has had its own first round.
   */
  configure(clusterId: string): Promise<void> {
    const run = this.configuring.then(async () => {
      const cluster = this.deps.map.clusters().find((c) => c.id === clusterId);
      if (cluster !== undefined) {
        const members = cluster.members.map((m) => this.deps.instances.get(m.id)!);
        await this.push(clusterId, members, false);
        await this.push(clusterId, members, true);
      }
      await this.pushGossip();
    });
    // Only the queue goes on past a failure: the caller gets it from `run`.
    this.configuring = run.catch(() => undefined);
    return run;
  }

  private async push(clusterId: string, members: readonly Registered[], connect: boolean): Promise<void> {
    // A member keeps the newest version it gets, and versions rise in the order configurations run.
    const version = this.deps.nextConfigVersion();
    await Promise.all(
      members.map(async (m) => {
        const peers = members
          .filter((p) => p.id !== m.id)
          .map((p) => ({ id: p.id, host: p.host, port: p.replication }));
        await this.calls.post(m, '/cluster', {
          version,
          cluster: clusterId,
          members: members.map((p) => p.id),
          ...(connect ? { peers } : {}),
        });
        if (connect) m.configured = true;
      }),
    );
  }

  /**
   * Tells every instance in a cluster the instances outside it, with which it exchanges eventual global
   * state (POST /gossip): an instance joined or left the deployment. One version for all, rising.
   */
  private async pushGossip(): Promise<void> {
    const version = this.deps.nextConfigVersion();
    const placed = [...this.deps.instances.values()].filter(
      (p) => this.deps.map.clusterOf(p.id) !== undefined,
    );
    await Promise.all(
      placed.map(async (m) => {
        const mine = this.deps.map.clusterOf(m.id)?.id;
        const gossip = placed
          .filter((p) => this.deps.map.clusterOf(p.id)?.id !== mine)
          .map((p) => ({ id: p.id, host: p.host, port: p.replication }));
        await this.calls.post(m, '/gossip', { version, gossip }).catch((err: unknown) => {
          this.logger.warn('could not tell an instance its gossip peers', { id: m.id, error: String(err) });
        });
      }),
    );
  }

  /** The instances that may own new flows: registered, known to the ingress, not draining, not failed. */
  liveIds(): string[] {
    return [...this.deps.instances.keys()].filter((id) => this.isLive(id));
  }

  isLive(id: string): boolean {
    return !this.deps.draining.has(id) && !this.deps.joining.has(id) && !this.deps.isFailed(id);
  }

  /**
   * Tells the ingress which instances own new flows. One update at a time, each with the list as it is
   * when it goes, so a join and a drain at once cannot leave the older list in place.
   */
  async pushLive(ingress: AdminAddress): Promise<void> {
    const update = this.liveUpdates.then(() =>
      this.calls.post(ingress, '/live', { instances: this.liveIds() }),
    );
    // Only the queue goes on past a failure: the caller gets it from `update`.
    this.liveUpdates = update.catch(() => undefined);
    await update;
  }

  /**
   * A reconfiguration that a change of membership must not drop, though the change goes on without it:
   * the cluster's configuration (members would keep a peer that left), the ingress's secondaries (flows
   * would have no replica) or its live set (new flows would go to an instance that is gone). Tried at once,
   * and while it fails, again in the background: RECONFIGURE_TRIES tries in all, RECONFIGURE_BACKOFF_MS
   * apart and doubling, so that what comes next does not wait behind a member that hangs. Each step reads
   * the deployment as it is when it runs, so a later try never undoes a newer change. Every failed try is
   * logged and counted (nfstate_controller_reconfigure_failures_total{step}), and so is giving up
   * (nfstate_controller_reconfigure_abandoned_total{step}).
   *
   * `first` settles once the first try has; `done` with undefined once a try succeeded, or with the last
   * error once none did (or the controller stopped).
   */
  reconfigure(
    step: ReconfigureStep,
    fields: Record<string, unknown>,
    run: () => Promise<void>,
  ): { first: Promise<void>; done: Promise<string | undefined> } {
    let tried = (): void => undefined;
    const first = new Promise<void>((resolve) => (tried = resolve));
    const done = (async (): Promise<string | undefined> => {
      for (let attempt = 1; ; attempt++) {
        try {
          await run();
          if (attempt > 1)
            this.logger.info('reconfigured after a retry', { step, ...fields, tries: attempt });
          return undefined;
        } catch (err) {
          this.failures[step]++;
          const error = `${step}: ${String(err)}`;
          if (this.deps.stopped()) return error;
          if (attempt >= RECONFIGURE_TRIES) {
            this.abandoned[step]++;
            this.logger.error('reconfiguration given up: it waits for the next change of membership', {
              step,
              ...fields,
              tries: attempt,
              error: String(err),
            });
            return error;
          }
          this.logger.warn('reconfiguration failed: trying again', {
            step,
            ...fields,
            try: attempt,
            error: String(err),
          });
        } finally {
          if (attempt === 1) tried();
        }
        await new Promise((r) => setTimeout(r, RECONFIGURE_BACKOFF_MS * 2 ** (attempt - 1)).unref());
        // Read again (the narrowing above is stale): it may have stopped meanwhile.
        if (this.deps.stopped()) return `${step}: not retried, the controller stopped`;
      }
    })();
    return { first, done };
  }
}
