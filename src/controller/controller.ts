/**
 * The controller: the registry of NF instances and their clusters. Instances register over HTTP when they
 * start and report their load over UDP every 100 ms; the controller places each new instance in a cluster
 * (locality first, see clusters.ts), picks its secondary, and tells every member of the changed cluster who
 * its peers now are (POST /cluster on each member's admin port), so they replicate to each other.
 *
 *   const c = new Controller({ clusterSize: 4, host: '127.0.0.1' }, logger);
 *   await c.start(admin);          // routes on an AdminServer; returns the UDP report port
 *
 * HTTP API: POST /register (answers with the instance's cluster, its secondary, the UDP port for load
 * reports and heartbeats, and the heartbeat interval), GET /instances, POST /instances { count?, host? }
 * (start instances through the provisioner), GET /clusters, GET /flows?owner= (every running flow and its
 * owner, from the ingress), POST /move { flow | flows, to, guarantee? } (moveFlows), POST /drain { id },
 * GET /moves, GET /failures (instances declared failed), GET /dashboard (a live page, dashboard.ts), plus
 * /metrics and /healthz.
 *
 * Elasticity: an instance that registers while the deployment runs joins a cluster (the members first
 * accept it, then connect to it and send it the full state of their flows), the ingress learns its
 * address, and it becomes live for new flows; running flows stay where they are.
 *
 * Load report (UDP, one JSON object):
 *   { "id": "nf-3", "received": n, "processed": n, "flows": n, "busy": 0..1, "queue": n }
 * Every report feeds the load-balancing unit (balancer.ts; GET /lb shows it, POST /lb { enabled } turns it
 * on or off).
 *
 * Failure detection: instances also send heartbeats to the same UDP port (detector.ts; the register answer
 * says how often), and the controller probes a silent one from it. One silent for too long that does not
 * answer its probe is declared failed and fenced: GET /failures lists it, and it owns no new flow and is no
 * load-balancing candidate any more.
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { ErrorCode, NfsError } from '../errors.js';
import type { AdminServer } from '../admin-server.js';
import { round2 } from '../clock.js';
import { CONTROL_BUCKETS } from '../metric-catalog.js';
import { Histogram } from '../metrics.js';
import { decodeLoadReport } from './load-report.js';
import { workerPorts } from '../nf/messages.js';
import type { Clock, Logger, MetricSample, MetricSource } from '../types.js';
import { ClusterMap } from './clusters.js';
import { Configurer } from './configurer.js';
import type { BalancerOptions } from './balancer.js';
import { Balancer, DEFAULT_BALANCER } from './balancer.js';
import type { FailureOptions } from './detector.js';
import { DEFAULT_FAILURE, FailureDetector, looksLikeHeartbeat } from './detector.js';
import { Dashboard, type InstanceView } from './dashboard.js';
import { failOver } from './failover.js';
import { LivenessServer } from './liveness-server.js';
import type { ControllerSnapshot, OpenMove, Restored } from './journal.js';
import { canonicalString, DEFAULT_MOVE_TIMEOUT_MS, Mover } from './mover.js';
import type {
  AdminAddress,
  FailoverRecord,
  FlowOwner,
  InstanceInfo,
  Provisioner,
  Registered,
} from './records.js';
import { ingressFlows, RoleCalls } from './role-calls.js';

export type { FailoverRecord, FlowOwner, InstanceInfo, MoveRecord, Provisioner } from './records.js';

/** One entry of Prometheus's HTTP service discovery: targets and the labels they share. */
export interface ScrapeTargets {
  targets: string[];
  labels: Record<string, string>;
}

/** Rule epochs a controller may use past its last journal save (epochs are u32 in the stamp). */
const EPOCH_BLOCK = 1 << 16;

export class Controller implements MetricSource {
  private readonly map: ClusterMap;
  private readonly instances = new Map<string, Registered>();
  private readonly socket = dgram.createSocket('udp4');
  private configVersion = 0;
  /** Configuration versions below this may be used before a journal save: a successor starts here. */
  private configCeiling = EPOCH_BLOCK;
  private ingress: AdminAddress | undefined;
  private epoch = 0;
  /** Epochs below this may be used before a journal save: a successor starts here (nextEpoch). */
  private epochCeiling = EPOCH_BLOCK;
  private saving: Promise<void> = Promise.resolve();
  private readonly draining = new Set<string>();
  /** Registered while an ingress runs, and not yet known to it: no flow may be sent its way. */
  private readonly joining = new Set<string>();
  private readonly calls: RoleCalls;
  readonly mover: Mover;
  reports = 0;
  badReports = 0;
  /** Each instance's liveness connection, through which a failed one that still listens learns it is fenced. */
  private readonly liveness = new LivenessServer({
    tokenOf: (id) => this.instances.get(id)?.token,
    isFailed: (id) => this.detector.isFailed(id),
    lost: (id) => this.detector.lost(id),
  });
  private emitters = 0;
  /** Failovers run one at a time, in the order the failures were declared. */
  private failing: Promise<unknown> = Promise.resolve();
  readonly failovers: FailoverRecord[] = [];
  private readonly detection = new Histogram('nfstate_fdu_detection_seconds', CONTROL_BUCKETS);
  private readonly recovery = new Histogram('nfstate_controller_failover_recovery_seconds', CONTROL_BUCKETS);
  /** What the roles are told when membership changes. */
  private readonly configurer: Configurer;
  private stopped = false;
  readonly balancer: Balancer;
  readonly detector: FailureDetector;
  private readonly dashboard: Dashboard;
  private balancing: NodeJS.Timeout | undefined;

  constructor(
    private readonly options: {
      clusterSize: number;
      host: string;
      reportPort?: number;
      lb?: BalancerOptions;
      provisioner?: Provisioner;
      /** A move's deadline up to the re-point (default 2000 ms): past it, the move aborts. */
      moveTimeoutMs?: number;
      /**
       * Whether instances keep their cluster peers' replicas (default true). Without them (replication off),
       * every move ships the full state through the controller, as OpenNF's does: the central-move baseline.
       */
      replicas?: boolean;
      failure?: FailureOptions;
      /** The egress's admin API, told to drop a failed instance's output (fence). */
      egress?: AdminAddress;
      /** Start a replacement through the provisioner when an instance fails (default true). */
      replaceFailed?: boolean;
      /** The liveness port (default: any). A standby that takes over binds the same (journal.ts). */
      livenessPort?: number;
      /**
       * Where the registry is saved at each change of membership, and each move while it is in progress, for
       * a standby (journal.ts).
       */
      journal?: {
        save(s: ControllerSnapshot): Promise<void>;
        beginMove(m: OpenMove): Promise<void>;
        endMove(id: string): Promise<void>;
      };
      /** What a previous controller saved: this one carries on from it, and settles the moves it left open. */
      restore?: Restored;
      /** Signs what it asks of the roles: the deployment's internal admin key (auth.ts). */
      adminKey?: Buffer;
    },
    private readonly logger: Logger,
    private readonly clock: Clock,
  ) {
    this.map = new ClusterMap(options.clusterSize);
    this.calls = new RoleCalls(options.adminKey, clock);
    this.configurer = new Configurer(
      {
        instances: this.instances,
        map: this.map,
        joining: this.joining,
        draining: this.draining,
        isFailed: (id) => this.detector.isFailed(id),
        ingress: () => this.ingress,
        nextConfigVersion: () => this.nextConfigVersion(),
        stopped: () => this.stopped,
      },
      this.calls,
      logger,
    );
    this.mover = new Mover(
      {
        replicas: options.replicas !== false,
        moveTimeoutMs: options.moveTimeoutMs ?? DEFAULT_MOVE_TIMEOUT_MS,
        ...(options.journal === undefined ? {} : { journal: options.journal }),
      },
      {
        instances: this.instances,
        ingress: () => this.ingress,
        sameCluster: (a, b) => this.map.clusterOf(a)?.id === this.map.clusterOf(b)?.id,
        secondaryOf: (id) => this.instances.get(this.map.secondaryOf(id) ?? ''),
        nextEpoch: () => this.nextEpoch(),
      },
      this.calls,
      logger,
      clock,
    );
    this.dashboard = new Dashboard(
      { instances: () => this.list(), loads: () => this.balancer.status().instances },
      logger,
      clock,
    );
    this.mover.onRecorded = (records) => this.dashboard.moved(records);
    this.detector = new FailureDetector({ ...(options.failure ?? DEFAULT_FAILURE) }, clock);
    this.detector.onFailed = (id, { detectMs, how }) => {
      this.balancer.forget(id);
      this.dashboard.instance('failed', id);
      this.logger.error('instance failed', {
        id,
        cluster: this.map.clusterOf(id)?.id,
        detect_ms: round2(detectMs),
        how,
      });
      const declared = this.clock.now();
      this.failing = this.failing
        .then(() => this.failover(id, declared, detectMs))
        .catch((err: unknown) => {
          this.logger.error('failover failed', { id, error: String(err) });
        });
    };
    this.balancer = new Balancer(
      { ...(options.lb ?? DEFAULT_BALANCER) },
      {
        instances: () => this.configurer.liveIds().map((id) => ({ id, cluster: this.map.clusterOf(id)?.id })),
        flowPackets: (id) => this.flowPackets(id),
        // One batched exchange per destination; a flow it cannot move comes back aborted.
        move: (flows, to) =>
          this.mover
            .moveFlows(flows, to, 'order-preserving')
            .catch(() => flows.map((flow) => ({ flow, aborted: true, duration_ms: 0 }))),
        // With a provisioner the deployment grows by one; the next rounds fill the newcomer.
        needInstance: (from) => {
          if (this.options.provisioner === undefined) return;
          this.addInstances({ host: this.instances.get(from)?.host }).catch((err: unknown) => {
            this.logger.warn('could not add an instance for the load-balancing unit', { error: String(err) });
          });
        },
      },
      logger,
      clock,
    );
  }

  /** Adds the API to `admin` and opens the UDP report port; returns that port. */
  async start(admin: AdminServer): Promise<number> {
    admin.registry.add(this);
    admin.registry.add(this.balancer);
    admin.registry.add(this.detector);
    admin.route('POST', '/register', (body) => this.register(body));
    admin.route('GET', '/instances', () => this.list());
    admin.route('POST', '/instances', (body) => this.addInstances(body), 'operator');
    admin.route('GET', '/flows', (query) => this.flows(query));
    admin.route('POST', '/ingress', (body) => {
      const b = (body ?? {}) as Record<string, unknown>;
      if (typeof b.host !== 'string' || typeof b.admin !== 'number') {
        throw new NfsError(ErrorCode.CONFIG, 'ingress: must be { host, admin }');
      }
      this.ingress = { host: b.host, admin: b.admin };
      const secondaries = this.configurer.tellAll();
      void this.persist();
      // Registered after the ingress's list was made (a replacement, an instance added): the ingress adds
      // them before it takes the secondaries, which may name them. They own new flows from the next live set.
      const known = new Set(Array.isArray(b.instances) ? b.instances : []);
      const missed = [...this.instances.values()]
        .filter((i) => !known.has(i.id) && !this.detector.isFailed(i.id))
        .map(({ id, host, port, workers }) => ({ id, host, port, workers }));
      // And which of them take new flows: an ingress started by hand knows none of them yet.
      return { ok: true, instances: missed, secondaries, live: this.configurer.liveIds() };
    });
    admin.route('POST', '/move', (body) => this.mover.request(body), 'operator');
    admin.route('POST', '/drain', (body) => this.drain(body), 'operator');
    // An instance that stops in order asks for its own drain (`nfstate nf --leave-on-stop`): a scale-down.
    admin.route('POST', '/leave', (body) => this.drain(body));
    admin.route('GET', '/moves', () => this.mover.moves);
    admin.route('GET', '/failures', () => this.detector.list());
    admin.route(
      'POST',
      '/fail',
      (body) => {
        const b = (body ?? {}) as Record<string, unknown>;
        if (typeof b.id !== 'string' || !this.detector.fail(b.id))
          throw new NfsError(ErrorCode.CONFIG, `fail.id: no live instance ${JSON.stringify(b.id)}`);
        return { ok: true };
      },
      'operator',
    );
    admin.route('GET', '/failovers', () => this.failovers);
    admin.route('GET', '/lb', () => this.balancer.status());
    this.dashboard.attach(admin);
    admin.route(
      'POST',
      '/lb',
      (body) => {
        const b = (body ?? {}) as Record<string, unknown>;
        if (typeof b.enabled !== 'boolean')
          throw new NfsError(ErrorCode.CONFIG, 'lb.enabled: must be a boolean');
        this.balancer.options.enabled = b.enabled;
        return this.balancer.status();
      },
      'operator',
    );
    admin.route('GET', '/sd', () => this.scrapeTargets(admin.port));
    admin.route('GET', '/clusters', () =>
      this.map.clusters().map((c) => ({ id: c.id, members: c.members.map((m) => m.id) })),
    );
    this.socket.on('message', (msg, from) => {
      this.onReport(msg, from);
    });
    this.detector.onProbe = (to, probe) => {
      this.socket.send(probe, to.port, to.address);
    };
    this.socket.bind(this.options.reportPort ?? 0, this.options.host);
    await once(this.socket, 'listening');
    await this.liveness.listen(this.options.host, this.options.livenessPort ?? 0);
    const settling = this.options.restore === undefined ? undefined : this.carryOn(this.options.restore);
    this.balancing = setInterval(() => void this.balancer.tick(), LB_TICK_MS);
    this.detector.start();
    // A leader that carries on answers once the moves its predecessor left open are settled: until then,
    // whoever asks where such a flow is, or to move it, would be told of a move half done.
    await settling;
    return this.socket.address().port;
  }

  /**
   * Everything a standby needs to carry on (journal.ts): saved at every change of membership, and before
   * the rule epochs reach the ceiling saved last.
   */
  snapshot(): ControllerSnapshot {
    return {
      version: 1,
      instances: [...this.instances.values()].map((i) => ({
        id: i.id,
        host: i.host,
        port: i.port,
        workers: i.workers,
        replication: i.replication,
        admin: i.admin,
        token: i.token,
        emitter: i.emitter,
        live: i.liveAt !== undefined,
      })),
      clusters: this.map.clusters(),
      ingress: this.ingress ?? null,
      failed: this.detector.list().map((f) => f.id),
      emitters: this.emitters,
      epochCeiling: this.epochCeiling,
      configCeiling: this.configCeiling,
    };
  }

  /**
   * Takes over from the controller that saved `s`: its instances (watched from now, so a silent one is
   * failed over here), their clusters, the ingress, the failed ones (fenced here too), and counters above
   * anything it may have handed out. The instances keep their configuration; they and the ingress reach
   * this controller at the same ports. Resolves once the moves it left open are settled.
   */
  private carryOn(s: Restored): Promise<void> {
    const now = this.clock.now();
    this.map.restore(s.clusters);
    for (const i of s.instances) {
      const { live, ...info } = i;
      this.instances.set(i.id, {
        ...info,
        load: undefined,
        reportedAt: 0,
        reportSeq: 0,
        configured: true,
        registeredAt: now,
        liveAt: live ? now : undefined,
      });
      this.detector.watch(i.id, Buffer.from(i.token, 'hex'));
    }
    // A failed instance saved while its failover ran may still be listed in its cluster: it is not one of
    // its members any more, and a newcomer must not be configured with it.
    for (const id of s.failed) {
      this.detector.restoreFailed(id, now);
      this.map.leave(id);
    }
    this.ingress = s.ingress ?? undefined;
    this.configurer.tellAll();
    this.emitters = s.emitters;
    this.epoch = s.epochCeiling;
    this.epochCeiling = s.epochCeiling + EPOCH_BLOCK;
    // The members keep the newest configuration they got and ignore older ones: this controller's must
    // rise above every one its predecessor sent, or a replacement would never be given its mates.
    this.configVersion = s.configCeiling;
    this.configCeiling = this.configVersion + EPOCH_BLOCK;
    this.logger.info('controller carries on from the journal', {
      instances: s.instances.length,
      clusters: s.clusters.length,
      failed: s.failed.length,
      open_moves: s.moves.length,
    });
    void this.persist();
    return this.mover.settleOpenMoves(s.moves);
  }

  /** Saves the registry (journal.ts), one save at a time, each with the state as it is when it starts. */
  private persist(): Promise<void> {
    const journal = this.options.journal;
    if (journal === undefined) return Promise.resolve();
    this.saving = this.saving
      .then(() => journal.save(this.snapshot()))
      .catch((err: unknown) => {
        this.logger.error('controller journal not saved: a standby would carry on from an older one', {
          error: String(err),
        });
      });
    return this.saving;
  }

  /** A new configuration version, saved in blocks as the rule epochs are. */
  private nextConfigVersion(): number {
    const version = ++this.configVersion;
    if (version === this.configCeiling - EPOCH_BLOCK / 2) {
      this.configCeiling += EPOCH_BLOCK;
      void this.persist();
    }
    return version;
  }

  /** A new rule epoch; half-way to the ceiling, the next ceiling is saved, long before it is reached. */
  private nextEpoch(): number {
    const epoch = ++this.epoch;
    if (epoch === this.epochCeiling - EPOCH_BLOCK / 2) {
      this.epochCeiling += EPOCH_BLOCK;
      void this.persist();
    }
    return epoch;
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.balancing);
    this.detector.stop();
    this.dashboard.stop();
    this.socket.close();
    this.liveness.close();
  }

  /** The switch's packet counters of an instance's flows: the load-balancing unit's flow weights. */
  private async flowPackets(id: string): Promise<Map<string, number>> {
    const ingress = this.ingress;
    if (ingress === undefined) return new Map();
    return new Map((await ingressFlows(ingress, id)).flows.map((f) => [f.flow, f.packets]));
  }

  /**
   * GET /sd: every role's admin endpoint, in the shape of Prometheus's HTTP service discovery
   * (`http_sd_configs`), so that a scrape configuration names the controller and follows every instance
   * that joins, fails or is replaced. Labels: `role`, and `nf` and `cluster` for instances.
   */
  private scrapeTargets(adminPort: number): ScrapeTargets[] {
    const target = (host: string, port: number, labels: Record<string, string>): ScrapeTargets => ({
      targets: [`${host}:${port}`],
      labels,
    });
    const out = [target(this.options.host, adminPort, { role: 'controller' })];
    if (this.ingress !== undefined)
      out.push(target(this.ingress.host, this.ingress.admin, { role: 'ingress' }));
    const egress = this.options.egress;
    if (egress !== undefined) out.push(target(egress.host, egress.admin, { role: 'sink' }));
    for (const i of this.instances.values()) {
      if (this.detector.isFailed(i.id)) continue;
      const cluster = this.map.clusterOf(i.id)?.id;
      out.push(
        target(i.host, i.admin, { role: 'nf', nf: i.id, ...(cluster === undefined ? {} : { cluster }) }),
      );
    }
    return out;
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_controller_instances', {}, this.instances.size]);
    out.push(['nfstate_controller_clusters', {}, this.map.clusters().length]);
    out.push(['nfstate_controller_load_reports_total', {}, this.reports]);
    out.push(['nfstate_controller_bad_load_reports_total', {}, this.badReports]);
    out.push(['nfstate_controller_bad_liveness_connections_total', {}, this.liveness.bad]);
    this.configurer.collect(out);
    this.mover.collect(out);
    this.detection.collect(out);
    this.recovery.collect(out);
  }

  private async register(body: unknown): Promise<{
    cluster: string;
    secondary: string | null;
    report: number;
    heartbeat_ms: number;
    liveness: number;
    token: string;
    emitter: number;
  }> {
    const info = parseInstance(body);
    if (this.detector.isFailed(info.id)) {
      throw new NfsError(
        ErrorCode.STATE,
        `register: ${info.id} was declared failed and stays fenced; start it under a new id`,
      );
    }
    this.instances.set(info.id, {
      ...info,
      load: undefined,
      reportedAt: 0,
      reportSeq: 0,
      configured: false,
      registeredAt: this.clock.now(),
      liveAt: undefined,
      token: randomBytes(16).toString('hex'),
      // 1 … 65535 (the stamp has 16 bits for it); 0 means no instance.
      emitter: (this.emitters = (this.emitters % 65535) + 1),
    });
    // Until the ingress knows it, no live set may name it: another registration's would, and be refused.
    if (this.ingress !== undefined) this.joining.add(info.id);
    const cluster = this.map.join({ id: info.id, host: info.host });
    this.logger.info('instance registered', { id: info.id, host: info.host, cluster });
    try {
      await this.configurer.configure(cluster);
      await this.admit(info);
    } catch (err) {
      // The instance gives up when its registration fails: it must not stay registered, or every later live
      // set, secondary and failover would count on a process that is gone.
      this.joining.delete(info.id);
      this.instances.delete(info.id);
      const left = this.map.leave(info.id);
      // Its mates must stop counting it as a peer, and the ingress as live: retried past this answer.
      if (left !== undefined)
        await this.configurer.reconfigure('configure', { id: info.id, cluster: left }, () =>
          this.configurer.configure(left),
        ).first;
      const ingress = this.ingress;
      if (ingress !== undefined)
        await this.configurer.reconfigure('live', { id: info.id }, () => this.configurer.pushLive(ingress))
          .first;
      throw err;
    }
    // Until the ingress has the secondaries, its flows have no replica: retried past this answer.
    await this.configurer.reconfigure('secondaries', { id: info.id }, () => this.configurer.pushSecondaries())
      .first;
    await this.persist();
    // Only now: the instance starts its heartbeats when it has this answer.
    const registered = this.instances.get(info.id)!;
    this.detector.watch(info.id, Buffer.from(registered.token, 'hex'));
    this.dashboard.instance('joined', info.id);
    return {
      cluster,
      secondary: this.map.secondaryOf(info.id) ?? null,
      report: this.socket.address().port,
      heartbeat_ms: this.detector.options.heartbeatMs,
      liveness: this.liveness.port,
      token: registered.token,
      emitter: registered.emitter,
    };
  }

  /**
   * Fails over an instance the detector declared failed (DESIGN.md §6): steps 1 to 5, the fences, the
   * takeover and the re-point, in failover.ts; then
   * 6. it leaves its cluster: the others stop accepting its frames and get new peers, and the ingress learns
   *    the new secondaries, whose primaries close their batches at once so that no packet falls between a
   *    secondary's last record and its first copy;
   * 7. with a provisioner, a replacement starts and joins (in the background).
   */
  private async failover(id: string, declared: number, detectMs: number): Promise<void> {
    const x = this.instances.get(id);
    if (x === undefined) return;
    const cluster = this.map.clusterOf(id)?.id;
    const record = await failOver(
      x,
      { declared, detectMs },
      {
        replicas: this.options.replicas !== false,
        ...(this.options.egress === undefined ? {} : { egress: this.options.egress }),
        moveTimeoutMs: this.options.moveTimeoutMs ?? DEFAULT_MOVE_TIMEOUT_MS,
      },
      {
        calls: this.calls,
        mover: this.mover,
        ingress: this.ingress,
        successor: this.options.replicas === false ? undefined : this.successorOf(id),
        anyLive: () => this.instances.get(this.configurer.liveIds()[0] ?? ''),
        fenceLiveness: () => this.liveness.fence(id),
        pushLive: (ingress) => this.configurer.pushLive(ingress),
        nextEpoch: () => this.nextEpoch(),
      },
      this.logger,
      this.clock,
    );
    this.map.leave(id);
    this.instances.delete(id);
    this.liveness.forget(id);
    // Step 6. Without it the survivors keep a peer that is gone and the ingress copies to a secondary that
    // is gone: flows with no replica. A failure is retried in the background (the next failover must not
    // wait behind a member that hangs: it may be the next to fail), and the record says if it never succeeds.
    const configured =
      cluster === undefined
        ? undefined
        : this.configurer.reconfigure('configure', { id, cluster }, () => this.configurer.configure(cluster));
    await configured?.first;
    const pushed = this.configurer.reconfigure('secondaries', { id }, () =>
      this.configurer.pushSecondaries(),
    );
    await pushed.first;
    void Promise.all([configured?.done, pushed.done]).then((errors) => {
      const failed = errors.filter((e) => e !== undefined);
      if (failed.length > 0) record.reconfigure_error = failed.join('; ');
    });
    await this.persist();
    this.failovers.push(record);
    this.dashboard.failedOver(record);
    this.detection.observe(record.detect_ms / 1000);
    if (record.error === undefined) this.recovery.observe(record.recover_ms / 1000);
    if (this.failovers.length > MAX_FAILOVERS_KEPT) this.failovers.shift();
    if (record.error === undefined) this.logger.info('failover', { ...record });
    else this.logger.error('failover', { ...record });
    if (this.options.provisioner !== undefined && this.options.replaceFailed !== false) {
      this.addInstances({ host: x.host })
        .then(({ added }) => (record.replacement = added[0]?.id ?? null))
        .catch((err: unknown) => {
          this.logger.error('failover: no replacement started', { id, error: String(err) });
        });
    }
  }

  /**
   * Who takes over a failed instance: its secondary as the ingress knows it (where its copies went), or if
   * that failed too another live member of its cluster.
   */
  private successorOf(id: string): Registered | undefined {
    const secondary = this.configurer.secondaryOf(id) ?? undefined;
    const mates = this.map.clusterOf(id)?.members.map((m) => m.id) ?? [];
    const pick = [secondary, ...mates].find((m) => m !== undefined && m !== id && this.configurer.isLive(m));
    return pick === undefined ? undefined : this.instances.get(pick);
  }

  /**
   * A registered instance becomes live for new flows. With an ingress running, the ingress first learns
   * its address; running flows keep their owners (the ingress pins each one whose default owner the new
   * live set changes). Without one yet, the ingress gets every registered instance when it starts.
   */
  private async admit(inst: InstanceInfo): Promise<void> {
    const ingress = this.ingress;
    if (ingress !== undefined) {
      await this.calls.post(ingress, '/instances', {
        id: inst.id,
        host: inst.host,
        port: inst.port,
        workers: inst.workers,
      });
      this.joining.delete(inst.id);
      await this.configurer.pushLive(ingress);
    }
    const r = this.instances.get(inst.id);
    if (r === undefined) return;
    r.liveAt = this.clock.now();
    this.logger.info('instance live', {
      id: inst.id,
      cluster: this.map.clusterOf(inst.id)?.id,
      join_ms: round2(r.liveAt - r.registeredAt),
    });
  }

  /**
   * POST /instances { count?, host? }: starts instances through the provisioner; each registers, joins a
   * cluster and is live for new flows before this answers, with the time each took from the request.
   */
  private async addInstances(
    body: unknown,
  ): Promise<{ added: { id: string; cluster: string | null; ms: number; join_ms: number }[] }> {
    const b = (body ?? {}) as Record<string, unknown>;
    const count = b.count ?? 1;
    if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > MAX_ADD) {
      throw new NfsError(ErrorCode.CONFIG, `instances.count: must be an integer 1..${MAX_ADD}`);
    }
    const host = b.host;
    if (host !== undefined && (typeof host !== 'string' || host === '')) {
      throw new NfsError(ErrorCode.CONFIG, 'instances.host: must be a non-empty string');
    }
    const provisioner = this.options.provisioner;
    if (provisioner === undefined) {
      throw new NfsError(
        ErrorCode.STATE,
        'instances: this controller has no provisioner (no launcher started it), so it cannot start ' +
          'instances; start one on its host with `nfstate nf --controller HOST:PORT …` and it joins when it registers',
      );
    }
    const started = this.clock.now();
    this.logger.info('instances requested', { count, ...(host === undefined ? {} : { host }) });
    const ids = await provisioner.add(count, host);
    const now = this.clock.now();
    return {
      added: ids.map((id) => {
        const r = this.instances.get(id);
        const live = r?.liveAt ?? now;
        return {
          id,
          cluster: this.map.clusterOf(id)?.id ?? null,
          ms: round2(live - started),
          join_ms: round2(live - (r?.registeredAt ?? started)),
        };
      }),
    };
  }

  /** GET /flows?owner=ID: every running flow (or those of one instance), with its owner and packets so far. */
  private async flows(query: unknown): Promise<{ flows: FlowOwner[] }> {
    const owner = ((query ?? {}) as Record<string, unknown>).owner;
    if (owner !== undefined && (typeof owner !== 'string' || !this.instances.has(owner))) {
      throw new NfsError(ErrorCode.CONFIG, `flows.owner: no instance ${JSON.stringify(owner)}`);
    }
    const ingress = this.ingress;
    if (ingress === undefined) throw new NfsError(ErrorCode.STATE, 'flows: no ingress has registered');
    return { flows: (await ingressFlows(ingress, owner)).flows };
  }

  private get moveTimeoutMs(): number {
    return this.options.moveTimeoutMs ?? DEFAULT_MOVE_TIMEOUT_MS;
  }

  /**
   * Drains an instance and lets it leave: new flows stop going to it (running flows are pinned where they
   * are), each of its flows moves to another member of its cluster (another cluster if it is alone), then it
   * leaves its cluster and the remaining members are told their new peers.
   */
  private async drain(
    body: unknown,
  ): Promise<{ id: string; moved: number; aborted: number; duration_ms: number }> {
    const b = (body ?? {}) as Record<string, unknown>;
    const inst = typeof b.id === 'string' ? this.instances.get(b.id) : undefined;
    if (inst === undefined)
      throw new NfsError(ErrorCode.CONFIG, `drain.id: no instance ${JSON.stringify(b.id)}`);
    const ingress = this.ingress;
    if (ingress === undefined) throw new NfsError(ErrorCode.STATE, 'drain: no ingress has registered');
    const started = this.clock.now();
    this.draining.add(inst.id);
    const live = this.configurer.liveIds();
    if (live.length === 0) throw new NfsError(ErrorCode.STATE, 'drain: it is the last instance');
    await this.configurer.pushLive(ingress);
    const flows = (await ingressFlows(ingress, inst.id)).flows.map((f) => f.flow);
    const cluster = this.map.clusterOf(inst.id);
    const mates = (cluster?.members ?? []).map((m) => m.id).filter((id) => live.includes(id));
    const targets = mates.length > 0 ? mates : live;
    // One batched move per target, all at once: the flows are spread over the targets in turn.
    const byTarget = targets.map((_, t) => flows.filter((__, i) => i % targets.length === t));
    const records = (
      await Promise.all(
        byTarget.map((batch, t) =>
          batch.length === 0
            ? Promise.resolve([])
            : this.mover
                .moveFlows(batch.map(canonicalString), targets[t]!, 'order-preserving')
                .catch(() => batch.map((flow) => ({ aborted: true, flow }))),
        ),
      )
    ).flat();
    const moved = records.filter((r) => !r.aborted).length;
    const aborted = records.length - moved;
    if (aborted === 0) {
      const left = this.map.leave(inst.id);
      this.instances.delete(inst.id);
      this.balancer.forget(inst.id);
      this.detector.forget(inst.id);
      this.draining.delete(inst.id);
      this.dashboard.instance('left', inst.id);
      if (left !== undefined) await this.configurer.configure(left);
      await this.configurer.pushSecondaries();
      await this.persist();
    }
    this.logger.info('instance drained', { id: inst.id, moved, aborted });
    return { id: inst.id, moved, aborted, duration_ms: this.clock.now() - started };
  }

  private list(): InstanceView[] {
    const now = this.clock.now();
    return [...this.instances.values()].map((i) => ({
      id: i.id,
      host: i.host,
      port: i.port,
      workers: i.workers,
      admin: i.admin,
      replication: i.replication,
      cluster: this.map.clusterOf(i.id)?.id ?? null,
      secondary: this.map.secondaryOf(i.id) ?? null,
      configured: i.configured,
      live: this.configurer.isLive(i.id),
      failed: this.detector.isFailed(i.id),
      load: i.load ?? null,
      reported_ms_ago: i.reportedAt === 0 ? null : Math.round(now - i.reportedAt),
    }));
  }

  private onReport(msg: Buffer, from: dgram.RemoteInfo): void {
    if (looksLikeHeartbeat(msg)) {
      this.detector.receive(msg, from);
      return;
    }
    const r = decodeLoadReport(msg, (id) => {
      const token = this.instances.get(id)?.token;
      return token === undefined ? undefined : Buffer.from(token, 'hex');
    });
    const inst = r === undefined ? undefined : this.instances.get(r.id);
    if (r === undefined || inst === undefined || r.seq <= inst.reportSeq) {
      this.badReports++;
      return;
    }
    inst.reportSeq = r.seq;
    if (!this.detector.alive(inst.id)) return;
    this.reports++;
    inst.reportedAt = this.clock.now();
    inst.load = r.load;
    this.balancer.observe(inst.id, inst.load);
  }
}

const MAX_FAILOVERS_KEPT = 10_000;
/** The load-balancing unit's round: as often as instances report. */
const LB_TICK_MS = 100;
/** Instances one POST /instances may start. */
const MAX_ADD = 64;

function parseInstance(body: unknown): InstanceInfo {
  const b = (body ?? {}) as Record<string, unknown>;
  const str = (k: string): string => {
    const v = b[k];
    if (typeof v !== 'string' || v === '')
      throw new NfsError(ErrorCode.CONFIG, `register.${k}: must be a non-empty string`);
    return v;
  };
  const port = (k: string): number => {
    const v = b[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) {
      throw new NfsError(ErrorCode.CONFIG, `register.${k}: must be a port number`);
    }
    return v;
  };
  return {
    id: str('id'),
    host: str('host'),
    port: port('port'),
    workers: workerPorts(b.workers, 'register.workers'),
    replication: port('replication'),
    admin: port('admin'),
  };
}
