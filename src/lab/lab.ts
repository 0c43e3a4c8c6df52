/**
 * `nfstate lab`: a testbed of Linux network namespaces on one machine. Two real hosts — a client and a
 * server, each a namespace with a kernel vxlan device pointed at the deployment — and every nfstate role
 * (ingress, controller, sink, each NF instance) in a namespace of its own, all joined by veth pairs to one
 * bridge (in a namespace of its own too). Real kernel TCP and UDP between the hosts go through the chain.
 *
 *   const lab = await Lab.start({ topology: labTopology(), logDir });
 *   lab.exec('client', ['iperf', '-u', '-c', lab.hosts.server.address]);
 *   await lab.stop();                 // or, after a crash: await labDown()
 *
 * The network (198.18.0.0/15 is reserved for benchmarking, RFC 2544):
 *
 *    client ns                    bridge ns (br0)                  server ns
 *    vxlan0 10.1.0.2/24 ──┐       198.18.0.0/24                ┌── vxlan0 198.51.100.10/24
 *    eth0   198.18.0.2  ──┴──────┤ ├──────┬──────┬──────┬─────┴── eth0 198.18.0.3
 *                           root .1  ingress .10  controller .11  sink .12  nf-i .20+i
 *
 * Beside it, for comparison, the kernel's own path between the same hosts: a router namespace (`<prefix>kr`,
 * .4) with a vxlan device toward each host, forwarding between 10.9.1.0/24 (the client's second vxlan
 * device, 10.9.1.2) and 10.9.2.0/24 (the server's, 10.9.2.2): the same transfer, the same encapsulation,
 * forwarded by the kernel instead of going through nfstate.
 *
 * The hosts route everything through their gateway (10.1.0.1, 198.51.100.1), which the ingress answers ARP
 * for; their vxlan devices send to the ingress and learn nothing (`nolearning`), and send real checksums
 * (`ethtool -K vxlan0 tx off`: between namespaces the kernel would otherwise leave the inner TCP checksum
 * to an offload that never comes). The root namespace joins the bridge too (`<prefix>root`, .1), so that
 * this process reaches every role's admin API. The NAT's public address (203.0.113.1 by default) is routed
 * by the server through its gateway like any other.
 *
 * Everything the lab makes carries its prefix (`nfl-` by default): `labDown` removes every namespace and
 * root link with it, after killing what runs inside, and is what `stop`, a failed start, and `nfstate lab
 * down` after a crash all do.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, NfsError } from '../errors.js';
import { silentLogger } from '../log.js';
import { CHAIN_TYPE } from '../nfs/index.js';
import type { Logger } from '../types.js';
import { parseTopology, type Topology } from '../launcher/config.js';
import { LocalDeployment, type Endpoints, type Placement } from '../launcher/local.js';
import { VXLAN_PORT } from '../wire/vxlan.js';
import { alive, ip, ipBatch, linksHere, namespaces, pidsIn } from './netns.js';

export const LAB_PREFIX = 'nfl-';
const NET = '198.18.0';
const ROOT_ADDRESS = `${NET}.1`;
const UNDERLAY_MTU = 9000;
/** The hosts' vxlan MTU: what a 1500-byte underlay leaves for the inner frame, as a real host would have. */
export const HOST_MTU = 1450;
const VNI = 1;

export type LabHostName = 'client' | 'server';

export interface LabHost {
  readonly netns: string;
  /** Its VTEP's address on the lab network. */
  readonly vtep: string;
  /** Its own address, on its vxlan device. */
  readonly address: string;
  readonly prefix: string;
  readonly gateway: string;
  /** Its address on the kernel's path (a second vxlan device toward the kernel router). */
  readonly kernel: string;
}

const HOSTS: Readonly<Record<LabHostName, Omit<LabHost, 'netns'>>> = {
  client: {
    vtep: `${NET}.2`,
    address: '10.1.0.2',
    prefix: '10.1.0.0/24',
    gateway: '10.1.0.1',
    kernel: '10.9.1.2',
  },
  server: {
    vtep: `${NET}.3`,
    address: '198.51.100.10',
    prefix: '198.51.100.0/24',
    gateway: '198.51.100.1',
    kernel: '10.9.2.2',
  },
};
const ROUTER = `${NET}.4`;
/** The kernel path: per host, its VNI and its network, the router holding .1 of it. */
const KERNEL_NETS: Readonly<Record<LabHostName, { vni: number; net: string }>> = {
  client: { vni: 2, net: '10.9.1' },
  server: { vni: 3, net: '10.9.2' },
};

/** Fixed addresses of the roles: the hosts' VTEPs are set up before the ingress starts. */
function roleAddress(name: string): string {
  if (name === 'ingress') return `${NET}.10`;
  if (name.startsWith('controller')) return `${NET}.11`;
  if (name === 'sink') return `${NET}.12`;
  const i = /^nf-(\d+)$/.exec(name);
  if (i !== null && Number(i[1]) < 200) return `${NET}.${20 + Number(i[1])}`;
  throw new NfsError(ErrorCode.CONFIG, `lab: no address for a role named '${name}'`);
}

const LAB_CHAIN = [
  {
    type: 'firewall',
    config: { strict: true, default: 'deny', rules: [{ action: 'allow', src: '10.0.0.0/8' }] },
  },
  { type: 'nat', config: { publicIp: '203.0.113.1', internal: '10.0.0.0/8' } },
];

/**
 * The lab's default deployment: a chain of a strict firewall (only connections the client opens, from their
 * SYN) and a NAT, 2 clusters of 2 instances with one worker thread each, failure detection at the defaults
 * (heartbeats every 20 ms, a probe before a pause is declared). A kernel TCP transfer runs at 70-80k packets/s
 * here, so a move's source parks more than the default 1,024 packets between its freeze and the re-point
 * (about 30 ms on 2 cores) and would take the flow back: the bound is raised to 8,192, about 100 ms of the
 * transfer.
 * `overrides` are topology fields on top (`replication: off`, other sizes …).
 */
export function labTopology(overrides: Record<string, unknown> = {}): Topology {
  const own = overrides.nf !== undefined || overrides.chain !== undefined;
  return parseTopology({
    ...(own ? {} : { chain: LAB_CHAIN }),
    clusters: 2,
    perCluster: 2,
    threads: 1,
    reorder: { maxHeld: 8192 },
    ...overrides,
  });
}

export interface LabOptions {
  topology: Topology;
  logDir: string;
  /** Names of everything the lab makes start with it (default `nfl-`). */
  prefix?: string;
  logger?: Logger;
}

/** What `nfstate lab` prints: where everything is. */
export interface LabDescription {
  prefix: string;
  network: string;
  bridge: string;
  root: { link: string; address: string };
  hosts: Record<LabHostName, LabHost>;
  /** The kernel's path between the hosts, for comparison: its router's namespace. */
  kernel_router: string;
  roles: Record<string, { netns: string; address: string }>;
  nat_public_ip: string | null;
  deployment: Endpoints;
  logs: string;
}

export interface LabRemoved {
  namespaces: string[];
  links: string[];
  killed: number;
}

function stateFile(prefix: string): string {
  return join(tmpdir(), `nfstate-lab-${prefix}.json`);
}

/** Network namespaces and the lab need root; say so plainly rather than fail on the first `ip` command. */
function requireRoot(): void {
  if (process.getuid?.() !== 0)
    throw new NfsError(
      ErrorCode.CONFIG,
      'nfstate lab needs root: it makes network namespaces, veth pairs and a bridge (run it with sudo)',
    );
}

/**
 * Removes every namespace and root link whose name starts with `prefix`, killing the processes inside
 * first (a deployment's roles, a host's tools). What `Lab.stop` does, and `nfstate lab down` after a crash.
 */
export async function labDown(prefix = LAB_PREFIX): Promise<LabRemoved> {
  requireRoot();
  const spaces = await namespaces(prefix);
  let killed = 0;
  for (const ns of spaces) {
    for (const pid of await pidsIn(ns)) {
      try {
        process.kill(pid, 'SIGKILL');
        killed++;
      } catch {
        // gone already
      }
    }
  }
  // Deleting a namespace deletes its links, and with them their veth peers.
  if (spaces.length > 0) await ipBatch(spaces.map((ns) => `netns delete ${ns}`));
  const links = await linksHere(prefix);
  for (const link of links) await ip(['link', 'delete', link]).catch(() => undefined);
  rmSync(stateFile(prefix), { force: true });
  return { namespaces: spaces, links, killed };
}

export class Lab {
  readonly hosts: Record<LabHostName, LabHost>;
  readonly bridge: string;
  private readonly roles = new Map<string, { netns: string; address: string }>();
  /** Namespaces are made one at a time: the controller may ask for several instances at once. */
  private making: Promise<unknown> = Promise.resolve();
  private deployment: LocalDeployment | undefined;
  private ends: Endpoints | undefined;
  private stopped = false;

  private constructor(
    private readonly options: LabOptions,
    readonly prefix: string,
  ) {
    this.bridge = `${prefix}br`;
    this.hosts = {
      client: { ...HOSTS.client, netns: `${prefix}client` },
      server: { ...HOSTS.server, netns: `${prefix}server` },
    };
  }

  /**
   * Makes the network, starts the deployment in it (`topology`, with the lab's edge), and returns once the
   * hosts can reach each other through it. A lab left over by a crash is removed first; one that another
   * process still runs is an error.
   */
  static async start(options: LabOptions): Promise<Lab> {
    requireRoot();
    const prefix = options.prefix ?? LAB_PREFIX;
    const file = stateFile(prefix);
    if (existsSync(file)) {
      const owner = (JSON.parse(readFileSync(file, 'utf8')) as { pid?: number }).pid;
      if (typeof owner === 'number' && owner !== process.pid && alive(owner))
        throw new NfsError(
          ErrorCode.STATE,
          `a lab with prefix '${prefix}' runs already (process ${owner}); stop it, or run nfstate lab down`,
        );
    }
    await labDown(prefix);
    writeFileSync(file, JSON.stringify({ pid: process.pid }));
    const lab = new Lab(options, prefix);
    try {
      await lab.build();
      await lab.deploy();
    } catch (err) {
      await lab.stop();
      throw err;
    }
    return lab;
  }

  /** The deployment running in the lab. */
  get running(): LocalDeployment {
    if (this.deployment === undefined) throw new NfsError(ErrorCode.STATE, 'lab: not started');
    return this.deployment;
  }

  get endpoints(): Endpoints {
    if (this.ends === undefined) throw new NfsError(ErrorCode.STATE, 'lab: not started');
    return this.ends;
  }

  describe(): LabDescription {
    const nf = this.options.topology.nf;
    const nfs =
      nf.type === CHAIN_TYPE ? (nf.config.nfs as { type: string; config: Record<string, unknown> }[]) : [nf];
    const nat = nfs.find((n) => n.type === 'nat');
    return {
      prefix: this.prefix,
      network: `${NET}.0/24`,
      bridge: this.bridge,
      root: { link: `${this.prefix}root`, address: ROOT_ADDRESS },
      hosts: this.hosts,
      kernel_router: `${this.prefix}kr`,
      roles: Object.fromEntries(this.roles),
      nat_public_ip:
        nat === undefined ? null : ((nat.config.publicIp as string | undefined) ?? '203.0.113.1'),
      deployment: this.endpoints,
      logs: this.options.logDir,
    };
  }

  /** Runs `argv` in a host's namespace. */
  exec(host: LabHostName, argv: readonly string[], stdio: StdioOptions = 'pipe'): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.hosts[host].netns, ...argv], { stdio });
  }

  /** Stops the deployment and removes the network. Safe to repeat. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.deployment?.stop().catch(() => undefined);
    await labDown(this.prefix);
  }

  private async build(): Promise<void> {
    const p = this.prefix;
    const br = this.bridge;
    const { client, server } = this.hosts;
    const router = `${p}kr`;
    await ipBatch([
      `netns add ${br}`,
      `netns add ${client.netns}`,
      `netns add ${server.netns}`,
      `netns add ${router}`,
      `link add br0 netns ${br} type bridge`,
      `link add ${p}root type veth peer name vroot netns ${br}`,
      `link add eth0 netns ${client.netns} type veth peer name vclient netns ${br}`,
      `link add eth0 netns ${server.netns} type veth peer name vserver netns ${br}`,
      `link add eth0 netns ${router} type veth peer name vrouter netns ${br}`,
    ]);
    await ipBatch(
      [
        'link set lo up',
        `link set br0 mtu ${UNDERLAY_MTU} up`,
        ...['vroot', 'vclient', 'vserver', 'vrouter'].map(
          (v) => `link set ${v} master br0 mtu ${UNDERLAY_MTU} up`,
        ),
      ],
      br,
    );
    // Where br_netfilter is loaded, bridged frames would go through iptables and conntrack: a plain L2
    // bridge needs neither, on either path.
    await ip([
      'netns',
      'exec',
      br,
      'sh',
      '-c',
      'for f in /proc/sys/net/bridge/bridge-nf-call-*; do [ -e "$f" ] && echo 0 > "$f"; done; true',
    ]);
    await ipBatch([`link set ${p}root mtu ${UNDERLAY_MTU} up`, `addr add ${ROOT_ADDRESS}/24 dev ${p}root`]);
    const ingress = roleAddress('ingress');
    const routerCommands = [
      'link set lo up',
      `link set eth0 mtu ${UNDERLAY_MTU} up`,
      `addr add ${ROUTER}/24 dev eth0`,
    ];
    for (const name of ['client', 'server'] as const) {
      const h = this.hosts[name];
      const k = KERNEL_NETS[name];
      const other = KERNEL_NETS[name === 'client' ? 'server' : 'client'];
      await ipBatch(
        [
          'link set lo up',
          `link set eth0 mtu ${UNDERLAY_MTU} up`,
          `addr add ${h.vtep}/24 dev eth0`,
          `link add vxlan0 type vxlan id ${VNI} remote ${ingress} local ${h.vtep} dstport ${VXLAN_PORT} nolearning`,
          `link set vxlan0 mtu ${HOST_MTU} addrgenmode none up`,
          `addr add ${h.address}/${h.prefix.split('/')[1]} dev vxlan0`,
          `route add default via ${h.gateway} dev vxlan0`,
          `link add vxlan1 type vxlan id ${k.vni} remote ${ROUTER} local ${h.vtep} dstport ${VXLAN_PORT} nolearning`,
          `link set vxlan1 mtu ${HOST_MTU} addrgenmode none up`,
          `addr add ${h.kernel}/24 dev vxlan1`,
          `route add ${other.net}.0/24 via ${k.net}.1 dev vxlan1`,
        ],
        h.netns,
      );
      for (const dev of ['vxlan0', 'vxlan1']) await ethtool(h.netns, ['-K', dev, 'tx', 'off']);
      routerCommands.push(
        `link add vx${name} type vxlan id ${k.vni} remote ${h.vtep} local ${ROUTER} dstport ${VXLAN_PORT} nolearning`,
        `link set vx${name} mtu ${HOST_MTU} addrgenmode none up`,
        `addr add ${k.net}.1/24 dev vx${name}`,
      );
    }
    await ipBatch(routerCommands, router);
    await ip(['netns', 'exec', router, 'sh', '-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward']);
  }

  private async deploy(): Promise<void> {
    const t = this.options.topology;
    const { client, server } = this.hosts;
    const topology: Topology = {
      ...t,
      host: ROOT_ADDRESS,
      edge: {
        vxlanPort: VXLAN_PORT,
        vtepPort: VXLAN_PORT,
        mac: t.edge?.mac ?? '02:6e:66:00:00:01',
        hosts: [client, server].map((h) => ({
          prefix: h.prefix,
          vtep: h.vtep,
          vni: VNI,
          gateway: h.gateway,
        })),
      },
    };
    const placement: Placement = { place: (name) => this.place(name) };
    this.deployment = new LocalDeployment(topology, {
      logDir: this.options.logDir,
      placement,
      logger: this.options.logger ?? silentLogger,
    });
    this.ends = await this.deployment.start();
  }

  /** A role's namespace, made on first use: a veth pair into the bridge and its fixed address. */
  private place(name: string): Promise<{ host: string; netns: string }> {
    const made = this.making.then(async () => {
      const address = roleAddress(name);
      // A controller started again (a standby, a replacement) shares the first one's namespace and address.
      const key = name.startsWith('controller') ? 'controller' : name;
      const known = this.roles.get(key);
      if (known !== undefined) return { host: known.address, netns: known.netns };
      const netns = `${this.prefix}${key}`;
      const peer = `v${address.split('.')[3]}`;
      await ipBatch([
        `netns add ${netns}`,
        `link add eth0 netns ${netns} type veth peer name ${peer} netns ${this.bridge}`,
      ]);
      await ipBatch([`link set ${peer} master br0 mtu ${UNDERLAY_MTU} up`], this.bridge);
      await ipBatch(
        ['link set lo up', `link set eth0 mtu ${UNDERLAY_MTU} up`, `addr add ${address}/24 dev eth0`],
        netns,
      );
      this.roles.set(key, { netns, address });
      return { host: address, netns };
    });
    this.making = made.catch(() => undefined);
    return made;
  }
}

/** `ethtool ARGS` in a namespace; a clear error where ethtool is missing. */
async function ethtool(netns: string, args: readonly string[]): Promise<void> {
  try {
    await ip(['netns', 'exec', netns, 'ethtool', ...args]);
  } catch (err) {
    if (String(err).includes('ethtool') && /No such file|not found|exec of/.test(String(err)))
      throw new NfsError(ErrorCode.CONFIG, "nfstate lab needs 'ethtool' (Debian: apt-get install ethtool)", {
        cause: err,
      });
    throw err;
  }
}
