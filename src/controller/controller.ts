/**
 * The controller: the registry of NF instances and their clusters. Instances register over HTTP when they
 * start and report their load over UDP every 100 ms; the controller places each new instance in a cluster
 * (locality first, see clusters.ts), picks its secondary, and tells every member of the changed cluster who
 * its peers now are (POST /cluster on each member's admin port), so they replicate to each other.
 *
 *   const c = new Controller({ clusterSize: 4, host: '127.0.0.1' }, logger);
 *   await c.start(admin);          // routes on an AdminServer; returns the UDP report port
 *
 * HTTP API: POST /register (answers with the instance's cluster, its secondary and the UDP port for load
 * reports), GET /instances, GET /clusters, plus /metrics and /healthz.
 *
 * Load report (UDP, one JSON object): { "id": "nf-3", "received": n, "processed": n, "flows": n, "busy": 0..1 }.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import { ErrorCode, NfsError } from '../errors.js';
import type { AdminServer } from '../metrics.js';
import type { Clock, Logger, MetricSample, MetricSource } from '../types.js';
import { ClusterMap } from './clusters.js';

export interface InstanceInfo {
  id: string;
  host: string;
  /** Data port (stamped packets). */
  port: number;
  /** Replication port (peers' batches). */
  replication: number;
  /** Admin HTTP port. */
  admin: number;
}

export interface LoadReport {
  received: number;
  processed: number;
  flows: number;
  busy: number;
}

interface Registered extends InstanceInfo {
  load: LoadReport | undefined;
  reportedAt: number;
  /** The cluster configuration this instance has acknowledged. */
  configured: boolean;
}

const MAX_REPORT_BYTES = 1024;

export class Controller implements MetricSource {
  private readonly map: ClusterMap;
  private readonly instances = new Map<string, Registered>();
  private readonly socket = dgram.createSocket('udp4');
  private configVersion = 0;
  reports = 0;
  badReports = 0;

  constructor(
    private readonly options: { clusterSize: number; host: string; reportPort?: number },
    private readonly logger: Logger,
    private readonly clock: Clock,
  ) {
    this.map = new ClusterMap(options.clusterSize);
  }

  /** Adds the API to `admin` and opens the UDP report port; returns that port. */
  async start(admin: AdminServer): Promise<number> {
    admin.registry.add(this);
    admin.route('POST', '/register', (body) => this.register(body));
    admin.route('GET', '/instances', () => this.list());
    admin.route('GET', '/clusters', () =>
      this.map.clusters().map((c) => ({ id: c.id, members: c.members.map((m) => m.id) })),
    );
    this.socket.on('message', (msg) => {
      this.onReport(msg);
    });
    this.socket.bind(this.options.reportPort ?? 0, this.options.host);
    await once(this.socket, 'listening');
    return this.socket.address().port;
  }

  stop(): void {
    this.socket.close();
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_controller_instances', {}, this.instances.size]);
    out.push(['nfstate_controller_clusters', {}, this.map.clusters().length]);
    out.push(['nfstate_controller_load_reports_total', {}, this.reports]);
    out.push(['nfstate_controller_bad_load_reports_total', {}, this.badReports]);
  }

  private async register(
    body: unknown,
  ): Promise<{ cluster: string; secondary: string | null; report: number }> {
    const info = parseInstance(body);
    this.instances.set(info.id, { ...info, load: undefined, reportedAt: 0, configured: false });
    const cluster = this.map.join({ id: info.id, host: info.host });
    this.logger.info('instance registered', { id: info.id, host: info.host, cluster });
    await this.configure(cluster);
    return { cluster, secondary: this.map.secondaryOf(info.id) ?? null, report: this.socket.address().port };
  }

  /** Tells every member of a cluster its peers; the members then replicate to each other. */
  private async configure(clusterId: string): Promise<void> {
    const cluster = this.map.clusters().find((c) => c.id === clusterId);
    if (cluster === undefined) return;
    // Pushes for concurrent joins may arrive in any order; the version lets a member keep the newest.
    const version = ++this.configVersion;
    const members = cluster.members.map((m) => this.instances.get(m.id)!);
    await Promise.all(
      members.map(async (m) => {
        const peers = members
          .filter((p) => p.id !== m.id)
          .map((p) => ({ id: p.id, host: p.host, port: p.replication }));
        const res = await fetch(`http://${m.host}:${m.admin}/cluster`, {
          method: 'POST',
          body: JSON.stringify({ version, cluster: clusterId, members: members.map((p) => p.id), peers }),
          signal: AbortSignal.timeout(5000),
        });
        if (!res.ok)
          throw new NfsError(ErrorCode.PROCESS, `${m.id}: cluster configuration refused (${res.status})`);
        m.configured = true;
      }),
    );
  }

  private list(): unknown[] {
    const now = this.clock.now();
    return [...this.instances.values()].map((i) => ({
      id: i.id,
      host: i.host,
      port: i.port,
      admin: i.admin,
      replication: i.replication,
      cluster: this.map.clusterOf(i.id)?.id ?? null,
      secondary: this.map.secondaryOf(i.id) ?? null,
      configured: i.configured,
      load: i.load ?? null,
      reported_ms_ago: i.reportedAt === 0 ? null : Math.round(now - i.reportedAt),
    }));
  }

  private onReport(msg: Buffer): void {
    if (msg.length > MAX_REPORT_BYTES) {
      this.badReports++;
      return;
    }
    let r: unknown;
    try {
      r = JSON.parse(msg.toString('utf8'));
    } catch {
      this.badReports++;
      return;
    }
    const o = (r ?? {}) as Record<string, unknown>;
    const inst = typeof o.id === 'string' ? this.instances.get(o.id) : undefined;
    const nums = [o.received, o.processed, o.flows, o.busy];
    if (inst === undefined || !nums.every((n) => typeof n === 'number' && Number.isFinite(n) && n >= 0)) {
      this.badReports++;
      return;
    }
    this.reports++;
    inst.reportedAt = this.clock.now();
    inst.load = {
      received: o.received as number,
      processed: o.processed as number,
      flows: o.flows as number,
      busy: o.busy as number,
    };
  }
}

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
    replication: port('replication'),
    admin: port('admin'),
  };
}
