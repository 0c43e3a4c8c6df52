/**
 * A deployment wired by hand across hosts, as docs/deploy.md tells an operator to: each role started on its
 * own with `nfstate controller|nf|ingress|sink` and its flags, in a network namespace of its own (a host),
 * the namespaces joined by veth pairs to one bridge. NAT instances decide their ports in the controller's
 * log (`--sequencer`, `--global local=…`); the ingress learns the instances from the controller. Traffic
 * runs, one flow moves across clusters, one instance is killed with SIGKILL, another is stopped with SIGTERM
 * and leaves in order (`--leave-on-stop`: its flows move first, a scale-down); then the demo's checks: nothing
 * lost, reordered or duplicated, and every flow's state and the port pool as the oracle computes them from
 * the stamp log. Needs root (namespaces); skipped otherwise.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { adminCall } from '../../src/admin-call.js';
import { adminKeys } from '../../src/auth.js';
import { labDown } from '../../src/lab/lab.js';
import { ipBatch } from '../../src/lab/netns.js';
import { checkRun } from '../../src/launcher/demo-report.js';
import type { RunDigest } from '../../src/state/digest.js';
import { givenAllocations, readTrace, runOracle } from '../../src/traffic/oracle.js';
import type { SinkReport } from '../../src/traffic/sink.js';
import { CLI } from '../helpers/cli.js';
import { until } from '../helpers/poll.js';

const PREFIX = 'nfm-';
const NET = '10.78.0';
const ROOT = `${NET}.1`;
const HOSTS = ['ctl', 'sink', 'ing', 'gen', 'nf0', 'nf1', 'nf2', 'nf3'] as const;
type Host = (typeof HOSTS)[number];
const addr = (h: Host): string => `${NET}.${10 + HOSTS.indexOf(h)}`;

const root = process.getuid?.() === 0;

/** Builds the hosts: a bridge namespace, a namespace per host and one veth each, and the test's own. */
async function buildHosts(): Promise<void> {
  const br = `${PREFIX}br`;
  await ipBatch([
    `netns add ${br}`,
    `link add br0 netns ${br} type bridge`,
    `link add ${PREFIX}root type veth peer name vroot netns ${br}`,
    ...HOSTS.flatMap((h) => [
      `netns add ${PREFIX}${h}`,
      `link add eth0 netns ${PREFIX}${h} type veth peer name v${h} netns ${br}`,
    ]),
  ]);
  await ipBatch(
    ['link set br0 up', 'link set lo up', ...['root', ...HOSTS].map((h) => `link set v${h} master br0 up`)],
    br,
  );
  await ipBatch([`link set ${PREFIX}root up`, `addr add ${ROOT}/24 dev ${PREFIX}root`]);
  for (const h of HOSTS)
    await ipBatch(['link set lo up', 'link set eth0 up', `addr add ${addr(h)}/24 dev eth0`], `${PREFIX}${h}`);
}

interface Started {
  child: ChildProcess;
  ports: Record<string, number>;
}

/** Starts `nfstate ARGS` on host `h`; resolves with the ports it prints once it is up. */
async function start(h: Host, args: readonly string[], children: ChildProcess[]): Promise<Started> {
  const child = spawn('ip', ['netns', 'exec', `${PREFIX}${h}`, process.execPath, CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const lines = createInterface({ input: child.stdout });
  const first = await Promise.race([
    once(lines, 'line').then(([l]) => l as string),
    once(child, 'exit').then(() => {
      throw new Error(`${args[0]} on ${h} exited before it was up:\n${stderr}`);
    }),
  ]);
  return { child, ports: JSON.parse(first) as Record<string, number> };
}

describe('multi-host by hand, in network namespaces', { timeout: 600_000 }, () => {
  it('roles wired by flags pass the demo checks through a move across clusters, a kill -9 and a scale-down', async (t) => {
    if (!root) {
      t.skip('needs root: it makes network namespaces');
      return;
    }
    await labDown(PREFIX);
    const children: ChildProcess[] = [];
    t.after(async () => {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
      await labDown(PREFIX);
    });
    await buildHosts();
    const dir = mkdtempSync(join(tmpdir(), 'nfstate-multihost-'));
    const keyHex = 'cd'.repeat(32);
    const keyFile = join(dir, 'deployment.key');
    writeFileSync(keyFile, keyHex + '\n', { mode: 0o600 });
    const key = ['--key-file', keyFile];
    const stampLog = join(dir, 'stamps.pcap');

    const sink = await start(
      'sink',
      ['sink', '--host', addr('sink'), '--admin-port', '9403', ...key],
      children,
    );
    const ctl = await start(
      'ctl',
      [
        'controller',
        ...['--host', addr('ctl'), '--port', '9400', '--cluster-size', '2', '--sequencer', '--lb', 'off'],
        ...['--egress', `${addr('sink')}:9403`, ...key],
      ],
      children,
    );
    const controller = `${addr('ctl')}:9400`;
    const nfHosts = ['nf0', 'nf1', 'nf2', 'nf3'] as const;
    const nfs = await Promise.all(
      nfHosts.map((h, i) =>
        start(
          h,
          [
            'nf',
            ...['--nf', 'nat', '--id', `nf-${i}`, '--threads', '1', '--host', addr(h), '--leave-on-stop'],
            ...['--controller', controller, '--egress', `${addr('sink')}:${sink.ports.port}`],
            ...['--global', `local=${addr('ctl')}:${ctl.ports.sequencer}`, ...key],
          ],
          children,
        ),
      ),
    );
    const ingress = await start(
      'ing',
      ['ingress', '--host', addr('ing'), '--controller', controller, '--stamp-log', stampLog, ...key],
      children,
    );

    // Where each instance is, from the controller: two clusters of two.
    const call = (path: string, body?: unknown, k?: Buffer) =>
      adminCall(addr('ctl'), 9400, path, body, k === undefined ? {} : { key: k });
    const instances = (await call('/instances')) as unknown as { id: string; cluster: string }[];
    assert.deepEqual(instances.map((i) => i.cluster).sort(), ['c0', 'c0', 'c1', 'c1']);

    const gen = spawn(
      'ip',
      [
        ...['netns', 'exec', `${PREFIX}gen`, process.execPath, CLI, 'gen', '--host', addr('gen')],
        ...['--target', `${addr('ing')}:${ingress.ports.port}`, '--flows', '40', '--packets', '100'],
        ...['--rate', '1000', '--json'],
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(gen);
    let genOut = '';
    gen.stdout.on('data', (c: Buffer) => (genOut += c.toString()));

    // A second into the run (1,000 of its 4,000 packets): move a flow to the other cluster, then kill the
    // instance that owns the most flows.
    const flows = async (): Promise<{ flow: string; owner: string }[]> =>
      ((await call('/flows')) as unknown as { flows: { flow: string; owner: string }[] }).flows;
    await until(async () => (await flows()).length === 40, 20_000);
    const clusterOf = new Map(instances.map((i) => [i.id, i.cluster]));
    const [moved] = await flows();
    const to = instances.find((i) => i.cluster !== clusterOf.get(moved!.owner))!.id;
    const operator = adminKeys(Buffer.from(keyHex, 'hex')).operator;
    const record = (await call('/move', { flow: moved!.flow, to }, operator)) as { aborted: boolean };
    assert.equal(record.aborted, false, JSON.stringify(record));
    const owners = new Map<string, number>();
    for (const f of await flows()) owners.set(f.owner, (owners.get(f.owner) ?? 0) + 1);
    const victim = [...owners].sort((a, b) => b[1] - a[1])[0]![0];
    nfs[Number(victim.slice(3))]!.child.kill('SIGKILL');
    await until(async () => ((await call('/failovers')) as unknown as unknown[]).length === 1, 20_000);
    // Then a scale-down: SIGTERM to an instance of the other cluster, which has its flows moved to its mate
    // before it stops, in order (exit 0, no failover).
    const leaver = instances.find((i) => i.cluster !== clusterOf.get(victim))!.id;
    const leaving = nfs[Number(leaver.slice(3))]!.child;
    leaving.kill('SIGTERM');
    const [left] = (await once(leaving, 'exit')) as [number | null];
    assert.equal(left, 0, 'the instance left in order');
    const registered = (await call('/instances')) as unknown as { id: string }[];
    assert.deepEqual(
      registered.map((i) => i.id).sort(),
      instances
        .map((i) => i.id)
        .filter((id) => id !== victim && id !== leaver)
        .sort(),
    );
    assert.ok(!(await flows()).some((f) => f.owner === leaver), 'no flow is left on the instance that left');

    const [code] = (await once(gen, 'exit')) as [number | null];
    assert.equal(code, 0, genOut);
    const sent = (JSON.parse(genOut) as { sent: number }).sent;
    const report = async (): Promise<SinkReport> =>
      (await adminCall(addr('sink'), 9403, '/report')) as unknown as SinkReport;
    await until(async () => (await report()).delivered >= sent, 20_000);

    // The demo's checks: the stamp log is complete once the ingress has stopped.
    ingress.child.kill('SIGINT');
    await once(ingress.child, 'exit');
    assert.equal(
      ((await call('/failovers')) as unknown as unknown[]).length,
      1,
      'the leaver was not failed over',
    );
    const live = instances.filter((i) => i.id !== victim && i.id !== leaver);
    const own = await Promise.all(
      live.map(async (i) => {
        const n = nfs[Number(i.id.slice(3))]!;
        return (await adminCall(
          addr(nfHosts[Number(i.id.slice(3))]!),
          n.ports.admin!,
          '/digest',
        )) as unknown as RunDigest;
      }),
    );
    const r = await report();
    const checked = checkRun({ type: 'nat', config: {} }, 'local', stampLog, own, r, sent);
    assert.equal(checked.lost, 0, 'lost');
    assert.equal(r.reordered, 0, 'reordered');
    assert.equal(r.duplicated, 0, 'duplicated');
    assert.equal(checked.stamped, sent);
    const { cmp } = checked;
    // On a mismatch: each side's digest of the flows that differ, and what happened to the instances.
    const allFlows = own.flatMap((d) => d.flows);
    const ref = runOracle({ type: 'nat', config: {} }, readTrace(stampLog), givenAllocations(allFlows));
    const bad = new Set(checked.cmp.mismatched);
    const history = {
      victim,
      leaver,
      mine: allFlows.filter((f) => bad.has(f.flow)),
      theirs: ref.flows.filter((f) => bad.has(f.flow)),
      moves: await call('/moves'),
      failovers: await call('/failovers'),
    };
    assert.equal(cmp.matches, true, JSON.stringify({ ...cmp, flows: undefined, ...history }));
    assert.equal(cmp.flows, 40);
  });
});
