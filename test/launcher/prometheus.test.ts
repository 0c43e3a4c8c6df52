/**
 * What a Prometheus user sees of a running deployment: the controller's discovery names every role, every
 * role's `/metrics` passes `promtool check metrics` (HELP, TYPE, names, histograms) and serves only metrics
 * of the catalog with the labels it lists, and the histograms count the packets, acknowledgements, moves
 * and failovers that happened. Then the checkers are fed wrong input and must fail.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { adminCall } from '../../src/admin-call.js';
import type { ScrapeTargets } from '../../src/controller/controller.js';
import type { Endpoints } from '../../src/launcher/local.js';
import { CLI } from '../helpers/cli.js';
import { repoPath } from '../helpers/paths.js';
import { catalogProblems, promtool } from '../helpers/prometheus.js';
import { sample, until } from '../helpers/poll.js';

type Up = Endpoints & { logs: string; operator_key: string };

const hasPromtool = spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status === 0;

async function scrape(target: string): Promise<string> {
  const res = await fetch(`http://${target}/metrics`);
  assert.equal(res.status, 200, `/metrics of ${target}`);
  return res.text();
}

describe('Prometheus', { timeout: 600_000 }, () => {
  it('the controller discovers every role; each passes promtool, serves only the catalog, and its histograms count what happened', async (t) => {
    if (!hasPromtool) {
      t.skip('promtool not installed (Debian package prometheus; npm test installs it as root)');
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'nfstate-prom-'));
    const file = join(dir, 'topology.yaml');
    writeFileSync(
      file,
      [
        // The clients are on loopback: the NAT takes them for internal hosts.
        'chain: [firewall, { type: nat, config: { internal: 127.0.0.0/8 } }]',
        'clusters: 2',
        'perCluster: 2',
        'threads: 1',
        'spareInstances: 1',
        '',
      ].join('\n'),
    );
    const child = spawn(process.execPath, [CLI, 'up', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => {
      if (child.exitCode === null) child.kill('SIGINT');
    });
    const [first] = (await once(createInterface({ input: child.stdout }), 'line')) as [string];
    const ends = JSON.parse(first) as Up;
    const key = Buffer.from(readFileSync(ends.operator_key, 'utf8').trim(), 'hex');
    const controller = ends.controller.admin;

    // Traffic: 8 flows through the front door, 20 packets each.
    const clients = Array.from({ length: 8 }, () => dgram.createSocket('udp4'));
    for (const c of clients) c.bind(0, '127.0.0.1');
    await Promise.all(clients.map((c) => once(c, 'listening')));
    const send = async (rounds: number): Promise<void> => {
      for (let r = 0; r < rounds; r++) {
        for (const c of clients) c.send(`packet ${r}`, ends.ingress.servicePort, '127.0.0.1');
        await new Promise((res) => setTimeout(res, 5));
      }
    };
    await send(10);
    const delivered = async (): Promise<number> =>
      sample(await scrape(`127.0.0.1:${ends.sink.admin}`), 'nfstate_sink_delivered_total');
    await until(async () => (await delivered()) === 80, 20_000);
    assert.equal(await delivered(), 80);

    // A move inside a cluster and one across, then a declared failure: each is timed by a histogram.
    const flows = (
      (await adminCall('127.0.0.1', controller, '/flows')) as unknown as {
        flows: { flow: string; owner: string }[];
      }
    ).flows;
    const clusterOf = new Map(ends.instances.map((i) => [i.id, i.cluster]));
    const [moved] = flows;
    assert.ok(moved !== undefined, 'the flows are known to the controller');
    const peer = ends.instances.find(
      (i) => i.id !== moved.owner && i.cluster === clusterOf.get(moved.owner),
    )!;
    const away = ends.instances.find((i) => i.cluster !== clusterOf.get(moved.owner))!;
    await adminCall('127.0.0.1', controller, '/move', { flow: moved.flow, to: peer.id }, { key });
    await adminCall('127.0.0.1', controller, '/move', { flow: moved.flow, to: away.id }, { key });
    const victim = ends.instances.find((i) => i.id !== away.id)!;
    await adminCall('127.0.0.1', controller, '/fail', { id: victim.id }, { key });
    const failovers = async (): Promise<number> =>
      ((await adminCall('127.0.0.1', controller, '/failovers')) as unknown as unknown[]).length;
    await until(async () => (await failovers()) === 1, 20_000);
    await send(10);
    await until(async () => (await delivered()) === 160, 20_000);
    assert.equal(await delivered(), 160, 'nothing lost through the moves and the failover');

    // Discovery names the controller, the ingress, the sink and every live instance: the failed one left,
    // and its replacement (from the spare pool) joined.
    const discovered = async (): Promise<ScrapeTargets[]> =>
      (await (await fetch(`http://127.0.0.1:${controller}/sd`)).json()) as ScrapeTargets[];
    const nfTargets = async (): Promise<ScrapeTargets[]> =>
      (await discovered()).filter((g) => g.labels.role === 'nf');
    await until(async () => (await nfTargets()).length === ends.instances.length, 20_000);
    const targets = await discovered();
    assert.deepEqual(
      targets.map((g) => g.labels.role).filter((r) => r !== 'nf'),
      ['controller', 'ingress', 'sink'],
      JSON.stringify(targets),
    );
    const nfs = targets.filter((g) => g.labels.role === 'nf');
    assert.equal(nfs.length, ends.instances.length);
    const victimTarget = `${victim.host}:${victim.admin}`;
    assert.ok(
      !nfs.some((g) => g.targets.includes(victimTarget)),
      'the failed instance is no longer a target',
    );
    assert.ok(
      nfs.every((g) => /^c\d+$/.test(g.labels.cluster ?? '')),
      JSON.stringify(nfs),
    );

    const texts = new Map<string, string>();
    for (const g of targets)
      for (const target of g.targets) texts.set(`${g.labels.role} ${target}`, await scrape(target));
    for (const [who, text] of texts) {
      const lint = promtool(text);
      assert.equal(lint.status, 0, `promtool check metrics on ${who}:\n${lint.output}`);
      assert.deepEqual(catalogProblems(text), [], who);
      assert.ok(sample(text, 'process_resident_memory_bytes') > 0, `${who} serves its process metrics`);
    }
    const all = (role: string): string[] =>
      [...texts].filter(([who]) => who.startsWith(role + ' ')).map(([, text]) => text);
    const sum = (texts: string[], name: string): number =>
      texts.reduce((s, text) => s + (Number.isNaN(sample(text, name)) ? 0 : sample(text, name)), 0);
    assert.equal(sum(all('sink'), 'nfstate_sink_latency_seconds_count'), 160);
    const acks = all('nf')
      .flatMap((text) => text.split('\n'))
      .filter((l) => l.startsWith('nfstate_replication_ack_seconds_count{'))
      .reduce((s, l) => s + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
    assert.ok(acks > 0, 'replication acknowledgements are timed');
    const [ctl] = all('controller');
    assert.equal(sample(ctl!, 'nfstate_controller_move_seconds_count', 'kind="intra",result="done"'), 1);
    assert.equal(sample(ctl!, 'nfstate_controller_move_seconds_count', 'kind="inter",result="done"'), 1);
    assert.equal(sample(ctl!, 'nfstate_fdu_detection_seconds_count'), 1);
    assert.equal(sample(ctl!, 'nfstate_controller_failover_recovery_seconds_count'), 1);

    for (const c of clients) c.close();
    child.kill('SIGINT');
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0);
  });

  it('the checkers fail on wrong input: promtool on a metric without HELP or a counter without _total, the catalog on an unknown metric or label', (t) => {
    if (!hasPromtool) {
      t.skip('promtool not installed');
      return;
    }
    assert.notEqual(promtool('# TYPE x_total counter\nx_total 1\n').status, 0, 'no HELP');
    assert.notEqual(promtool('# HELP x an x\n# TYPE x counter\nx 1\n').status, 0, 'a counter without _total');
    assert.equal(promtool('# HELP x_total an x\n# TYPE x_total counter\nx_total 1\n').status, 0);
    assert.deepEqual(catalogProblems('nfstate_nf_flows{nf="a"} 1\n'), []);
    assert.equal(catalogProblems('nfstate_made_up_total 1\n').length, 1);
    assert.equal(catalogProblems('nfstate_nf_flows{nf="a",colour="red"} 1\n').length, 1);
    assert.equal(catalogProblems('nfstate_sink_latency_seconds_bucket{le="0.1",peer="x"} 1\n').length, 1);
  });

  it('deploy/: the Prometheus configuration passes promtool check config; every dashboard query parses and names only catalogued metrics', (t) => {
    if (!hasPromtool) {
      t.skip('promtool not installed');
      return;
    }
    const config = spawnSync(
      'promtool',
      ['check', 'config', repoPath('deploy', 'prometheus', 'prometheus.yml')],
      {
        encoding: 'utf8',
      },
    );
    assert.equal(config.status, 0, config.stdout + config.stderr);

    const dashboard = JSON.parse(readFileSync(repoPath('deploy', 'grafana', 'nfstate.json'), 'utf8')) as {
      panels: { type: string; title: string; targets?: { expr: string }[] }[];
    };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((q) => q.expr));
    assert.ok(exprs.length > 0);
    for (const expr of exprs) assert.deepEqual(unknownMetrics(expr), [], expr);
    assert.deepEqual(checkRules(exprs).status, 0, checkRules(exprs).output);
    // The checks fail on a query that does not parse, and on a metric the catalog lacks.
    assert.notEqual(checkRules(['sum(rate(nfstate_sink_delivered_total[1m])']).status, 0);
    assert.deepEqual(unknownMetrics('rate(nfstate_sink_lost_total[1m])'), ['nfstate_sink_lost_total']);
  });
});

/** `promtool check rules` on the queries, each a recording rule, with Grafana's interval variable filled in. */
function checkRules(exprs: readonly string[]): { status: number | null; output: string } {
  const file = join(mkdtempSync(join(tmpdir(), 'nfstate-rules-')), 'rules.yml');
  const rules = exprs.map((e, i) => ({
    record: `nfstate:dashboard_${i}`,
    expr: e.replaceAll('$__rate_interval', '1m'),
  }));
  // JSON is YAML.
  writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
  const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
  return { status: r.status, output: r.stdout + r.stderr };
}

/** The metric names a query uses that the catalog lacks (a histogram's series count as the histogram). */
function unknownMetrics(expr: string): string[] {
  return [...expr.matchAll(/\b((?:nfstate|process|nodejs)_[a-z0-9_]+)/g)]
    .map(([, name]) => name!)
    .filter((name) => catalogProblems(`${name} 1`).length > 0);
}
