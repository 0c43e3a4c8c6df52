/**
 * A whole deployment on one machine, each role its own process on loopback: a sink, a controller, C
 * clusters × K NF instances with W worker threads each (they register with the controller, which forms the
 * clusters), and an ingress (stamper + switch) in front of them. `nfstate up`
 * and `nfstate demo` are built on it.
 *
 *   const d = new LocalDeployment(topology, { logDir, stampLog, ackTo });
 *   const ends = await d.start();   // ends.ingress.port, ends.ingress.servicePort, admin ports …
 *   const own = await d.digests(); await d.checkReplicas(own); await d.stop();
 *
 * Start order is sink, controller, instances, ingress, so nothing sends to a port that is not yet open; stop order
 * is the reverse. Each child writes its JSON log lines to `<logDir>/<role>.log`.
 */
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, NfsError } from '../errors.js';
import { adminCall } from '../metrics.js';
import { createNf } from '../nfs/index.js';
import { LocalGlobalState } from '../state/global-local.js';
import type { FlowDigest, RunDigest } from '../state/digest.js';
import type { Endpoint } from '../switch/ingress.js';
import type { SinkReport } from '../traffic/sink.js';
import type { Topology } from './config.js';
import { parseHostPort } from './config.js';
import type { ControllerSpec, IngressSpec, NfSpec, RoleCommand, RoleReply, SinkSpec } from './roles.js';

const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));
const START_TIMEOUT_MS = 20_000;
const REPLY_TIMEOUT_MS = 20_000;

export interface DeploymentOptions {
  logDir: string;
  /** Ingress records every stamped packet here (the oracle's input). */
  stampLog?: string;
  /** Where the sink acknowledges deliveries (a closed-loop generator). */
  ackTo?: { host: string; port: number };
}

export class RoleProcess {
  readonly ports: Promise<Record<string, number>>;
  private readonly waiting: ((msg: RoleReply) => void)[] = [];
  private exited = false;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    this.ports = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new NfsError(ErrorCode.PROCESS, `${name}: not ready within ${START_TIMEOUT_MS} ms`));
      }, START_TIMEOUT_MS);
      child.on('message', (msg: RoleReply) => {
        if (msg.type === 'ready') {
          clearTimeout(timer);
          resolve(msg.ports);
        } else {
          this.waiting.shift()?.(msg);
        }
      });
      child.on('exit', (code, signal) => {
        this.exited = true;
        clearTimeout(timer);
        reject(
          new NfsError(ErrorCode.PROCESS, `${name}: exited during start (code ${code}, signal ${signal})`),
        );
        for (const w of this.waiting.splice(0)) w({ type: 'error', error: `${name} exited` });
      });
    });
    // A failed start is reported through `ports`; keep the rejection from going unhandled meanwhile.
    this.ports.catch(() => undefined);
  }

  request(cmd: RoleCommand): Promise<RoleReply> {
    if (this.exited) return Promise.resolve({ type: 'error', error: `${this.name} has exited` });
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        resolve({ type: 'error', error: `${this.name}: no reply to ${cmd.type}` });
      }, REPLY_TIMEOUT_MS);
      this.waiting.push((msg) => {
        clearTimeout(timer);
        resolve(msg);
      });
      this.child.send(cmd);
    });
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    await this.request({ type: 'stop' });
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

export interface Endpoints {
  ingress: { port: number; servicePort: number; admin: number };
  sink: { port: number; admin: number };
  controller: { admin: number; report: number };
  instances: (Endpoint & { admin: number; replication: number; cluster: string; secondary: string | null })[];
}

export class LocalDeployment {
  sink: RoleProcess | undefined;
  controller: RoleProcess | undefined;
  private controllerAdmin = 0;
  ingress: RoleProcess | undefined;
  instances: RoleProcess[] = [];
  private readonly logFds: number[] = [];

  constructor(
    private readonly topology: Topology,
    private readonly options: DeploymentOptions,
  ) {}

  async start(): Promise<Endpoints> {
    const t = this.topology;
    // A bad NF config is reported here, once, before any process starts.
    createNf(t.nf.type, { ...t.nf.config }, new LocalGlobalState());
    mkdirSync(this.options.logDir, { recursive: true });
    try {
      const deliver = t.egress.deliver === null ? null : parseHostPort(t.egress.deliver, 'egress.deliver');
      const sinkSpec: SinkSpec = {
        host: t.host,
        port: t.sink.port,
        adminPort: 0,
        ackTo: this.options.ackTo ?? null,
        deliver,
        pcap: t.sink.pcap,
      };
      this.sink = this.spawn('sink', 'sink', sinkSpec);
      const sinkPorts = await this.sink.ports;
      const count = t.clusters * t.perCluster;
      const controllerSpec: ControllerSpec = {
        host: t.host,
        adminPort: 0,
        // The no-cluster baseline is one cluster of everyone.
        clusterSize: t.replication === 'all' ? count : t.perCluster,
      };
      this.controller = this.spawn('controller', 'controller', controllerSpec);
      const cp = await this.controller.ports;
      this.controllerAdmin = cp.admin!;
      const key = randomBytes(32).toString('hex');
      for (let i = 0; i < count; i++) {
        const spec: NfSpec = {
          id: `nf-${i}`,
          host: t.host,
          port: 0,
          adminPort: 0,
          threads: t.threads,
          nf: { type: t.nf.type, config: { ...t.nf.config } },
          processor: {
            release: t.release,
            batchSize: t.batch.size,
            batchTimeoutMs: t.batch.timeoutMs,
            maxHeld: t.reorder.maxHeld,
            gapTimeoutMs: t.reorder.gapTimeoutMs,
            // Longer than the stamper's, so a flow the stamper restarts at 1 has left the instance too.
            flowIdleMs: t.flowIdleMs * 2,
          },
          egress: { host: t.host, port: sinkPorts.port! },
          partition: { index: i, count },
          // Members and peers come from the controller once the instance has registered.
          ...(t.replication === 'off' ? {} : { cluster: { members: [], key } }),
          controller: { host: t.host, admin: cp.admin! },
        };
        this.instances.push(this.spawn(spec.id, 'nf', spec));
      }
      // An instance is ready once registered, and the controller configures a cluster before answering.
      await Promise.all(this.instances.map((p) => p.ports));
      const registered = (await this.controllerGet('/instances')) as Endpoints['instances'];
      const instances = registered.sort((a, b) => Number(a.id.slice(3)) - Number(b.id.slice(3)));
      const ingressSpec: IngressSpec = {
        host: t.host,
        port: t.ingress.port,
        servicePort: t.ingress.servicePort,
        adminPort: t.ingress.adminPort,
        instances: instances.map(({ id, host, port }) => ({ id, host, port })),
        vni: t.vni,
        flowIdleMs: t.flowIdleMs,
        stampLog: this.options.stampLog ?? null,
        controller: { host: t.host, admin: cp.admin! },
      };
      this.ingress = this.spawn('ingress', 'ingress', ingressSpec);
      const ip = await this.ingress.ports;
      return {
        ingress: { port: ip.port!, servicePort: ip.servicePort!, admin: ip.admin! },
        sink: { port: sinkPorts.port!, admin: sinkPorts.admin! },
        controller: { admin: cp.admin!, report: cp.report! },
        instances,
      };
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Each instance's flow digests and global state, in instance order. */
  async digests(): Promise<RunDigest[]> {
    const replies = await Promise.all(this.instances.map((p) => p.request({ type: 'digest' })));
    return replies.map((r) => {
      if (r.type !== 'digest') throw new NfsError(ErrorCode.PROCESS, `digest failed: ${JSON.stringify(r)}`);
      return r.digest;
    });
  }

  /**
   * Checks that every member of each instance's cluster holds its flows exactly as the instance does
   * (same flows, same state digests). Call after `digests()`, which closes the open batches and waits for
   * their acknowledgements. Returns the disagreements, empty when every replica matches.
   */
  async checkReplicas(own: readonly RunDigest[]): Promise<string[]> {
    if (this.topology.replication === 'off') return [];
    const held = await this.replicaDigests();
    const clusters = (await this.controllerGet('/clusters')) as { id: string; members: string[] }[];
    const index = (id: string): number => Number(id.slice(3));
    const problems: string[] = [];
    own.forEach((digest, i) => {
      const want = new Map(digest.flows.map((f) => [f.flow, f.digest]));
      const members = clusters.find((c) => c.members.includes(`nf-${i}`))?.members ?? [];
      for (const j of members.map(index)) {
        if (j === i) continue;
        const got = new Map((held[j]![`nf-${i}`] ?? []).map((f) => [f.flow, f.digest]));
        for (const [flow, d] of want) {
          if (got.get(flow) !== d)
            problems.push(`nf-${j} holds ${flow} of nf-${i} ${got.has(flow) ? 'differently' : 'not at all'}`);
        }
        if (got.size !== want.size)
          problems.push(`nf-${j} holds ${got.size} flows of nf-${i}, which has ${want.size}`);
      }
    });
    return problems;
  }

  /** A GET on the controller's API. */
  controllerGet(path: string): Promise<unknown> {
    return adminCall(this.topology.host, this.controllerAdmin, path);
  }

  /** For each instance: the replicas it holds, by the instance they came from. */
  private async replicaDigests(): Promise<Record<string, FlowDigest[]>[]> {
    const replies = await Promise.all(this.instances.map((p) => p.request({ type: 'replicas' })));
    return replies.map((r) => {
      if (r.type !== 'replicas')
        throw new NfsError(ErrorCode.PROCESS, `replicas failed: ${JSON.stringify(r)}`);
      return r.replicas;
    });
  }

  async sinkReport(): Promise<SinkReport> {
    const r = await this.sink!.request({ type: 'report' });
    if (r.type !== 'report')
      throw new NfsError(ErrorCode.PROCESS, `sink report failed: ${JSON.stringify(r)}`);
    return r.report;
  }

  async stopIngress(): Promise<void> {
    await this.ingress?.stop();
  }

  async stop(): Promise<void> {
    await this.ingress?.stop();
    await Promise.all(this.instances.map((p) => p.stop()));
    await this.controller?.stop();
    await this.sink?.stop();
    for (const fd of this.logFds.splice(0)) closeSync(fd);
  }

  private spawn(name: string, role: string, spec: object): RoleProcess {
    const fd = openSync(join(this.options.logDir, `${name}.log`), 'a');
    this.logFds.push(fd);
    const child = fork(CLI, ['role', role, JSON.stringify(spec)], { stdio: ['ignore', fd, fd, 'ipc'] });
    return new RoleProcess(name, child);
  }
}
