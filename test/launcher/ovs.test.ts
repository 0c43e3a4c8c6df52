/**
 * The demo with an Open vSwitch bridge as its switch (`--switch ovs`): the generator's VXLAN frames go
 * through a real OVS (userspace datapath, in a namespace of its own), which classifies each by the flows
 * the ingress wrote, and moves inside and across clusters and a kill -9 lose nothing. Also: a bridge whose
 * process died is removed by the next start; `nfstate up --switch ovs` carries hosts' VXLAN through it.
 *
 * Needs root and Debian's openvswitch-switch (CI installs it); skipped with the reason otherwise.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { namespaces } from '../../src/lab/netns.js';
import type { DemoSummary } from '../../src/launcher/demo-report.js';
import { summaryFailures } from '../../src/launcher/demo-report.js';
import { silentLogger } from '../../src/log.js';
import { ovsUnavailable, OvsBridge } from '../../src/switch/ovs.js';
import { buildUdp } from '../../src/packet/build.js';
import { ETHERTYPE_IPV4, writeVxlanFrame } from '../../src/wire/vxlan.js';
import { CLI, nfstate } from '../helpers/cli.js';
import { textCollector } from '../helpers/packets.js';
import { until } from '../helpers/poll.js';
import { repoPath } from '../helpers/paths.js';

const skip = ovsUnavailable() ?? false;

describe('demo --switch ovs', { skip, timeout: 300_000 }, () => {
  it('moves flows inside and across clusters and fails over a killed instance through OVS, losing nothing', async () => {
    const r = await nfstate(
      [
        'demo',
        '--json',
        '--switch',
        'ovs',
        ...['--nf', 'firewall', '--clusters', '2', '--per-cluster', '2'],
        ...['--flows', '60', '--packets', '50', '--rate', '1000', '--moves', '6', '--kill', '1'],
      ],
      240_000,
    );
    assert.equal(r.code, 0, `demo failed:\n${r.stdout}\n${r.stderr}`);
    const s = JSON.parse(r.stdout) as DemoSummary;
    assert.deepEqual(summaryFailures(s), []);
    assert.equal(s.lost, 0);
    assert.equal(s.reordered, 0);
    assert.equal(s.state_matches_oracle, true);
    assert.equal(s.moves.count, 6);
    assert.ok(s.moves.intra > 0 && s.moves.inter > 0, JSON.stringify(s.moves));
    assert.equal(s.failovers.count, 1);
    // Every packet stamped came through the bridge, with its route.
    assert.equal(s.switch.kind, 'ovs');
    const { followed, overridden } = s.switch as { followed: number; overridden: number };
    assert.equal(followed + overridden, s.stamped);
    assert.equal(s.stamped, s.sent);
    assert.deepEqual(await namespaces('nfo-'), [], 'the bridge is gone');
  });

  it('runs under nfstate up: hosts send VXLAN to the bridge, what they send comes out at the egress, SIGINT removes the bridge', async (t) => {
    const { socket: dest, port: destPort, got } = await textCollector();
    const dir = mkdtempSync(join(tmpdir(), 'nfstate-up-'));
    const file = join(dir, 'topology.yaml');
    writeFileSync(
      file,
      `nf: { type: ids }\nclusters: 1\nperCluster: 2\nthreads: 1\negress: { deliver: "127.0.0.1:${destPort}" }\n`,
    );
    const child = spawn(process.execPath, [CLI, 'up', '-c', file, '--switch', 'ovs'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    t.after(() => {
      if (child.exitCode === null) child.kill('SIGINT');
      dest.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const [first] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
    const up = JSON.parse(first) as {
      switch: { kind: string; netns: string; vxlan: { host: string; port: number } };
    };
    assert.equal(up.switch.kind, 'ovs');
    const host = dgram.createSocket('udp4');
    t.after(() => host.close());
    for (let i = 0; i < 20; i++) {
      const frame = new Uint8Array(100);
      const h = writeVxlanFrame(frame, 0, {
        vni: 1,
        dst: 0x02_00_00_00_00_01,
        src: 0x02_00_00_00_00_02,
        etherType: ETHERTYPE_IPV4,
      });
      const n = buildUdp(frame, h, {
        srcIp: 0x0a_00_00_01 + (i % 4),
        dstIp: 0xc6_33_64_0a,
        srcPort: 5000,
        dstPort: 80,
        payload: Buffer.from(`hello ${i}`),
      });
      host.send(frame.subarray(0, h + n), up.switch.vxlan.port, up.switch.vxlan.host);
    }
    await until(() => got.length === 20);
    assert.deepEqual([...got].sort(), Array.from({ length: 20 }, (_, i) => `hello ${i}`).sort());
    child.kill('SIGINT');
    await once(child, 'exit');
    assert.deepEqual(await namespaces(up.switch.netns), []);
  });

  it('removes, at the next start, a bridge whose process was killed', async () => {
    // A process that starts a bridge and is killed with it up.
    const child = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const { OvsBridge } = await import(${JSON.stringify(repoPath('dist/src/switch/ovs.js'))});
         const b = await OvsBridge.start({ info() {}, warn() {}, error() {}, debug() {} });
         process.stdout.write(b.netns + '\\n');`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const [line] = (await once(child.stdout, 'data')) as [Buffer];
    const netns = line.toString().trim();
    child.kill('SIGKILL');
    await once(child, 'exit');
    assert.deepEqual(await namespaces(netns), [netns], 'the killed process left its bridge');
    await OvsBridge.sweep(silentLogger);
    assert.deepEqual(await namespaces('nfo-'), []);
  });
});
