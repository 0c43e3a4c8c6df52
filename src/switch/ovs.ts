/**
 * An Open vSwitch bridge as the deployment's switch (`demo --switch ovs`): Debian's `openvswitch-switch`,
 * its userspace datapath, run in a network namespace of its own so that nothing it creates touches the
 * machine, and reached over one veth pair.
 *
 *   host side (root namespace)           namespace nfo-XXXXXX
 *   10.231.a.b+1  <── veth ──>  br-phy 10.231.a.b+2 (the tunnels' underlay)
 *                                br0: vin (VXLAN from the hosts, port 4789)
 *                                     vout (VXLAN to the ingress's door at 10.231.a.b+1:4790)
 *
 * Hosts (the demo's generator) send their frames to `switchAddress`:4789; OVS classifies each by the flows
 * that the ingress writes (openflow.ts) and sends it on, its route in the destination address, to the
 * ingress, which binds its VXLAN door at `hostAddress`.
 *
 *   const bridge = await OvsBridge.start(logger);
 *   await programOvs(bridge.mgmt, liveFlows([0, 1], 1));
 *   await bridge.stop();
 */
import { execFile } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ErrorCode, NfsError } from '../errors.js';
import { alive, ip, ipBatch } from '../lab/netns.js';
import type { Logger } from '../types.js';
import { VXLAN_PORT } from '../wire/vxlan.js';
import { TO_INGRESS } from './openflow.js';

const run = promisify(execFile);
/**
 * Packets a closed loop keeps in flight through the bridge (`demo --switch ovs --rate 0`). OVS reads its
 * port with an AF_PACKET socket, whose buffer (the kernel's rmem_default, 208 KiB: about 270 small frames,
 * and not settable per namespace) overflows while OVS sets up a burst of new flows one upcall at a time;
 * with the generator's default of 512 a burst of 200 new flows lost 30 to 286 packets there, with 128 none.
 */
export const OVS_WINDOW = 128;
/** Where OVS sends the frames it routed: the ingress's VXLAN door, at `hostAddress`. */
export const INGRESS_DOOR_PORT = VXLAN_PORT + 1;
const TIMEOUT_MS = 20_000;
const SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';
const BINARIES = [
  '/usr/sbin/ovs-vswitchd',
  '/usr/sbin/ovsdb-server',
  '/usr/bin/ovs-vsctl',
  '/usr/bin/ovs-ofctl',
];

/** Why an OVS bridge cannot start on this machine, or null when it can. */
export function ovsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'the OVS switch runs in a network namespace, which needs root';
  const missing = [...BINARIES, SCHEMA].filter((p) => !existsSync(p));
  if (missing.length > 0)
    return `Open vSwitch is not installed (no ${missing.join(', ')}): apt-get install openvswitch-switch`;
  return null;
}

async function exec(file: string, args: readonly string[], input?: string): Promise<string> {
  try {
    const call = run(file, [...args], { timeout: TIMEOUT_MS });
    // A tool that exits before it reads its input (no bridge there) fails the write with EPIPE: its exit
    // status and stderr say why, below.
    call.child.stdin?.on('error', () => undefined);
    call.child.stdin?.end(input);
    return (await call).stdout;
  } catch (e) {
    const why = ((e as { stderr?: string }).stderr ?? (e as Error).message).trim();
    throw new NfsError(ErrorCode.PROCESS, `${file} ${args.join(' ')}: ${why}`, { cause: e });
  }
}

/**
 * Writes `lines` (`ovs-ofctl add-flows` lines, each maybe led by add, delete or delete_strict) to the bridge
 * at `mgmt` in one OpenFlow 1.4 bundle: OVS applies all or none, and the call returns once it has.
 */
export async function programOvs(mgmt: string, lines: readonly string[]): Promise<void> {
  if (lines.length === 0) return;
  await exec('ovs-ofctl', ['-O', 'OpenFlow14', '--bundle', 'add-flows', mgmt, '-'], `${lines.join('\n')}\n`);
}

const RUN_DIR_PREFIX = 'nfstate-ovs-';

export class OvsBridge {
  private stopped = false;

  private constructor(
    readonly netns: string,
    private readonly veth: string,
    private readonly runDir: string,
    /** The root namespace's end: the ingress's VXLAN door binds here. */
    readonly hostAddress: string,
    /** Where hosts send their VXLAN frames (port 4789). */
    readonly switchAddress: string,
    private readonly logger: Logger,
  ) {}

  /** The bridge's OpenFlow management socket (a path, so it reaches into the namespace). */
  get mgmt(): string {
    return `unix:${join(this.runDir, 'br0.mgmt')}`;
  }

  /** What a deployment's ingress needs of the bridge (DeploymentOptions.ovs). */
  get forIngress(): { mgmt: string; host: string } {
    return { mgmt: this.mgmt, host: this.hostAddress };
  }

  /**
   * Removes the bridges whose process died without stopping them (kill -9, Ctrl-C: OVS's daemons detach, so
   * they outlive it): their daemons, namespace and veth pair.
   */
  static async sweep(logger: Logger): Promise<void> {
    for (const name of readdirSync(tmpdir()).filter((n) => n.startsWith(RUN_DIR_PREFIX))) {
      const runDir = join(tmpdir(), name);
      let owner: { pid: number; netns: string; veth: string };
      try {
        owner = JSON.parse(readFileSync(join(runDir, 'owner'), 'utf8')) as typeof owner;
      } catch {
        continue;
      }
      if (alive(owner.pid)) continue;
      logger.warn('removing an OVS bridge whose process is gone', { netns: owner.netns, pid: owner.pid });
      await new OvsBridge(owner.netns, owner.veth, runDir, '', '', logger).stop();
    }
  }

  static async start(logger: Logger): Promise<OvsBridge> {
    const why = ovsUnavailable();
    if (why !== null) throw new NfsError(ErrorCode.CONFIG, `ovs: ${why}`);
    await OvsBridge.sweep(logger);
    const tag = randomBytes(3).toString('hex');
    const netns = `nfo-${tag}`;
    const veth = `nfo-${tag}-h`;
    // A /30 of 10.231.0.0/16 that no interface here has: two bridges can run side by side.
    const used = await ip(['-o', '-4', 'addr', 'show']);
    let base = '';
    do base = `10.231.${randomInt(256)}.${4 * randomInt(64)}`;
    while (used.includes(` ${base.replace(/\d+$/, (d) => String(Number(d) + 1))}/`));
    const [a, b, c, d] = base.split('.').map(Number) as [number, number, number, number];
    const hostAddress = `${a}.${b}.${c}.${d + 1}`;
    const switchAddress = `${a}.${b}.${c}.${d + 2}`;
    const runDir = mkdtempSync(join(tmpdir(), RUN_DIR_PREFIX));
    // What a later start needs to remove this bridge if this process dies without stopping it.
    writeFileSync(join(runDir, 'owner'), JSON.stringify({ pid: process.pid, netns, veth }));
    const bridge = new OvsBridge(netns, veth, runDir, hostAddress, switchAddress, logger);
    try {
      await bridge.build();
    } catch (err) {
      await bridge.stop();
      throw err;
    }
    logger.info('ovs bridge up', { netns, hostAddress, switchAddress, mgmt: bridge.mgmt });
    return bridge;
  }

  private async build(): Promise<void> {
    const { netns, veth, runDir } = this;
    await ipBatch([
      `netns add ${netns}`,
      `link add ${veth} type veth peer name ${netns}-s netns ${netns}`,
      `addr add ${this.hostAddress}/30 dev ${veth}`,
      `link set ${veth} up`,
    ]);
    await ipBatch(['link set lo up', `link set ${netns}-s up`], netns);
    // OVS reads frames off the veth with AF_PACKET and checks the UDP checksum of each tunnel packet, which
    // the sending side would otherwise leave for an offload that a veth never performs.
    await exec('ethtool', ['-K', veth, 'tx', 'off']);
    const env = { OVS_RUNDIR: runDir, OVS_LOGDIR: runDir, OVS_DBDIR: runDir };
    const db = `unix:${join(runDir, 'db.sock')}`;
    await exec('ovsdb-tool', ['create', join(runDir, 'conf.db'), SCHEMA]);
    const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
    const inNs = (file: string, args: string[]): Promise<string> =>
      exec('ip', ['netns', 'exec', netns, 'env', ...envArgs, file, ...args]);
    await inNs('ovsdb-server', [
      join(runDir, 'conf.db'),
      `--remote=p${db}`,
      `--pidfile=${join(runDir, 'ovsdb-server.pid')}`,
      `--log-file=${join(runDir, 'ovsdb-server.log')}`,
      '--detach',
    ]);
    const vsctl = (...args: string[]): Promise<string> =>
      inNs('ovs-vsctl', [`--db=${db}`, '--timeout=20', ...args]);
    await vsctl('--no-wait', 'init');
    await inNs('ovs-vswitchd', [
      db,
      `--pidfile=${join(runDir, 'ovs-vswitchd.pid')}`,
      `--log-file=${join(runDir, 'ovs-vswitchd.log')}`,
      '--detach',
    ]);
    const words = (text: string): string[] => text.split(' ');
    const tunnel = (name: string, ofport: number, remote: string, dstPort: number): string[] =>
      words(
        `-- add-port br0 ${name} -- set interface ${name} type=vxlan ofport_request=${ofport} ` +
          `options:remote_ip=${remote} options:local_ip=${this.switchAddress} options:key=flow ` +
          `options:dst_port=${dstPort}`,
      );
    await vsctl(
      ...words(`add-br br-phy -- set bridge br-phy datapath_type=netdev -- add-port br-phy ${netns}-s`),
      ...words('-- add-br br0 -- set bridge br0 datapath_type=netdev fail_mode=secure'),
      ...tunnel('vin', 1, 'flow', VXLAN_PORT),
      // Not the hosts' port: to OVS, a tunnel is its remote address and port, and a frame from the
      // host's address to 4789 would come in by `vout` and could not leave by it.
      ...tunnel('vout', TO_INGRESS, this.hostAddress, INGRESS_DOOR_PORT),
    );
    await ipBatch(
      [`addr add ${this.switchAddress}/30 dev br-phy`, 'link set br-phy up', 'link set br0 up'],
      netns,
    );
    // Both ends know each other's address at once: a first burst would otherwise wait on ARP, and lose.
    const hostMac = readFileSync(`/sys/class/net/${veth}/address`, 'utf8').trim();
    const phyMac = (await ip(['-n', netns, '-o', 'link', 'show', 'br-phy'])).match(
      /link\/ether ([0-9a-f:]{17})/,
    )?.[1];
    if (phyMac === undefined) throw new NfsError(ErrorCode.PROCESS, 'ovs: br-phy has no MAC address');
    await ip(['neigh', 'replace', this.switchAddress, 'lladdr', phyMac, 'dev', veth, 'nud', 'permanent']);
    const ctl = join(
      runDir,
      `ovs-vswitchd.${readFileSync(join(runDir, 'ovs-vswitchd.pid'), 'utf8').trim()}.ctl`,
    );
    await inNs('ovs-appctl', ['-t', ctl, 'tnl/arp/set', 'br-phy', this.hostAddress, hostMac]);
  }

  /** Stops OVS and removes the namespace, the veth pair and the run directory; safe to call twice. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const pids: number[] = [];
    for (const daemon of ['ovs-vswitchd', 'ovsdb-server']) {
      const pidFile = join(this.runDir, `${daemon}.pid`);
      if (!existsSync(pidFile)) continue;
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      try {
        process.kill(pid, 'SIGTERM');
        pids.push(pid);
      } catch {
        // Gone already.
      }
    }
    for (let i = 0; i < 40 && pids.some(alive); i++) await sleep(50);
    for (const pid of pids.filter(alive)) process.kill(pid, 'SIGKILL');
    // Deleting the namespace deletes its end of the veth pair, and with it ours; OVS's taps die with it.
    await ip(['netns', 'del', this.netns]).catch(() => undefined);
    await ip(['link', 'del', this.veth]).catch(() => undefined);
    rmSync(this.runDir, { recursive: true, force: true });
    this.logger.info('ovs bridge down', { netns: this.netns });
  }
}
