import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FlowOwner, MoveRecord } from '../../src/controller/controller.js';
import { startEtcd, type EtcdCluster } from '../../src/global/etcd-local.js';
import { parseTopology } from '../../src/launcher/config.js';
import type { Endpoints } from '../../src/launcher/local.js';
import type { RoleProcess } from '../../src/launcher/role-process.js';
import { LocalDeployment } from '../../src/launcher/local.js';
import { adminCall } from '../../src/admin-call.js';
import { parseFlowKeyString } from '../../src/packet/flow-key.js';
import { metrics, sample, until } from '../helpers/poll.js';

/**
 * One cluster of two ids instances, full; plain UDP clients through the front door, one flow per client
 * socket. The ids NF keeps a per-packet log, so a flow's full state grows with every packet while the
 * changes of one batch stay small.
 */
describe(
  'LocalDeployment: instances added while it runs (multi-process on loopback)',
  { timeout: 600_000 },
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'nfstate-local-'));
    const deployment = new LocalDeployment(
      parseTopology({ nf: { type: 'ids' }, clusters: 1, perCluster: 2, threads: 1, spareInstances: 2 }),
      { logDir: dir },
    );
    let ends: Endpoints;
    const running: dgram.Socket[] = [];
    const fresh: dgram.Socket[] = [];
    let sent = 0;
    const api = (path: string, body?: unknown): Promise<Record<string, unknown>> =>
      adminCall('127.0.0.1', ends.controller.admin, path, body, {
        timeoutMs: 60_000,
        key: deployment.adminKey,
      });
    const owners = async (): Promise<Map<string, string | null>> =>
      new Map(((await api('/flows')).flows as FlowOwner[]).map((f) => [f.flow, f.owner]));
    const adminOf = async (id: string): Promise<number> =>
      ((await api('/instances')) as unknown as { id: string; admin: number }[]).find((i) => i.id === id)!
        .admin;

    async function clients(n: number): Promise<dgram.Socket[]> {
      return Promise.all(
        Array.from({ length: n }, async () => {
          const s = dgram.createSocket('udp4');
          s.bind(0, '127.0.0.1');
          await once(s, 'listening');
          return s;
        }),
      );
    }

    /** Sends `packets` datagrams on each flow and waits until the sink has them all. */
    async function send(flows: readonly dgram.Socket[], packets: number): Promise<void> {
      for (let p = 0; p < packets; p++) {
        for (const s of flows) s.send(`packet ${p} of a flow`, ends.ingress.servicePort, '127.0.0.1');
        sent += flows.length;
        // Paced, so that no socket buffer on the way overflows.
        await new Promise((r) => setTimeout(r, 2));
      }
      await until(async () => (await deployment.sinkReport()).delivered === sent, 10_000);
      assert.equal((await deployment.sinkReport()).delivered, sent);
    }

    const move = async (flow: string, to: string): Promise<MoveRecord> =>
      (await api('/move', { flow, to })) as unknown as MoveRecord;

    let placedBefore: Map<string, string | null>;
    /** The flows moved onto the first newcomer, with what their inter-cluster moves shipped. */
    const movedIn: MoveRecord[] = [];

    before(async () => {
      ends = await deployment.start();
      running.push(...(await clients(12)));
      await send(running, 30);
      placedBefore = await owners();
    });

    after(async () => {
      for (const s of [...running, ...fresh]) s.close();
      await deployment.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it('no role has its spec or the deployment key on its command line, which every local user can read', () => {
      const roles = deployment.roles();
      assert.equal(roles.length, 5, 'sink, controller, two instances, ingress');
      for (const r of roles) {
        const args = readFileSync(`/proc/${r.child.pid}/cmdline`, 'utf8')
          .split('\0')
          .filter((arg) => arg !== '');
        assert.equal(args.at(-3), 'role');
        assert.equal(args.at(-1), r.name);
        assert.ok(!args.some((arg) => arg.includes('key') || arg.includes('{')), args.join(' '));
      }
    });

    it('the first newcomer forms a new cluster (every cluster is full), is live, and running flows stay put', async () => {
      const { added } = (await api('/instances', { count: 1 })) as {
        added: { id: string; cluster: string; ms: number; join_ms: number }[];
      };
      assert.equal(added.length, 1);
      assert.equal(added[0]!.id, 'nf-2');
      assert.equal(added[0]!.cluster, 'c1');
      assert.ok(added[0]!.ms >= added[0]!.join_ms && added[0]!.join_ms >= 0);
      assert.deepEqual(await owners(), placedBefore, 'no running flow changed owner');
      // Moves across clusters ship the whole state: these flows are what the next newcomer must catch up on.
      const flows = [...placedBefore.keys()].slice(0, 4);
      for (const flow of flows) {
        const m = await move(flow, 'nf-2');
        assert.equal(m.aborted, false, JSON.stringify(m));
        assert.equal(m.intra, false);
        movedIn.push(m);
      }
      await send(running, 10);
    });

    it('the next newcomer joins that cluster and gets its mate’s flows at once, so a move to it ships only the delta', async () => {
      const { added } = (await api('/instances', {})) as { added: { id: string; cluster: string }[] };
      assert.deepEqual(
        added.map((a) => [a.id, a.cluster]),
        [['nf-3', 'c1']],
      );
      const clusters = (await api('/clusters')) as unknown as { id: string; members: string[] }[];
      assert.deepEqual(
        clusters.map((c) => [c.id, [...c.members].sort()]),
        [
          ['c0', ['nf-0', 'nf-1']],
          ['c1', ['nf-2', 'nf-3']],
        ],
      );
      // No packet has flowed since it joined, so every replica it holds came with the catch-up.
      const newcomer = await metrics(await adminOf('nf-3'));
      assert.equal(sample(newcomer, 'nfstate_replication_replicas'), movedIn.length);
      assert.equal(sample(newcomer, 'nfstate_replication_repairs_asked_total'), 0);
      const mate = await metrics(await adminOf('nf-2'));
      assert.ok(sample(mate, 'nfstate_replication_catch_up_bytes_total') > 0);
      for (const inter of movedIn) {
        const m = await move(inter.flow, 'nf-3');
        assert.equal(m.aborted, false, JSON.stringify(m));
        assert.equal(m.intra, true, 'installed from its own replica, which the catch-up made current');
        assert.ok(
          m.state_bytes * 4 < inter.state_bytes,
          `${m.state_bytes} B inside the cluster vs ${inter.state_bytes} B when it came from the other cluster`,
        );
      }
    });

    it('new flows are placed on the newcomers too; every replica matches its owner, newcomers included', async () => {
      fresh.push(...(await clients(40)));
      await send(fresh, 5);
      const now = await owners();
      // The client's endpoint may come first or second in a flow's canonical key, by address then port.
      const ownerOf = (port: number): string | null | undefined =>
        [...now].find(([flow]) => {
          const k = parseFlowKeyString(flow);
          return k.srcPort === port || k.dstPort === port;
        })?.[1];
      const placed = fresh.map((s) => ownerOf(s.address().port));
      assert.ok(!placed.includes(undefined), 'every new flow is listed with its owner');
      assert.ok(placed.includes('nf-2') && placed.includes('nf-3'), `new flows went to ${placed.join(', ')}`);
      await send([...running, ...fresh], 10);
      const own = await deployment.digests();
      assert.equal(own.length, 4);
      assert.deepEqual(await deployment.checkReplicas(own), []);
      assert.equal(
        own[3]!.flows.filter((f) => movedIn.some((m) => m.flow === f.flow)).length,
        movedIn.length,
      );
    });

    it('refuses more instances than the topology has spare pool slices for, with a clear error', async () => {
      await assert.rejects(
        api('/instances', { count: 1 }),
        /add 1: 4 instances started of at most 4.*spareInstances/,
      );
      await assert.rejects(api('/instances', { host: '10.9.9.9' }), /every instance on 127\.0\.0\.1/);
    });
  },
);

/**
 * With etcd, the launcher keeps a standby controller at hand, as a service manager would: whichever controller
 * exits (killed, or a leader that lost its lease) is started again, and the next one leads.
 */
describe(
  'LocalDeployment with etcd: a controller that exits is started again (multi-process, real etcd)',
  { timeout: 600_000 },
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'nfstate-local-'));
    let etcd: EtcdCluster;
    let deployment: LocalDeployment;
    let ends: Endpoints;
    const leads = (p: RoleProcess): boolean =>
      readFileSync(join(dir, `${p.name}.log`), 'utf8').includes('"controller leads"');
    const answers = (): Promise<boolean> =>
      adminCall('127.0.0.1', ends.controller.admin, '/instances', undefined, { timeoutMs: 500 }).then(
        () => true,
        () => false,
      );

    before(async () => {
      etcd = await startEtcd(1);
      deployment = new LocalDeployment(
        parseTopology({
          nf: { type: 'firewall' },
          clusters: 1,
          perCluster: 2,
          threads: 1,
          global: { store: 'etcd', endpoints: etcd.clientUrls },
        }),
        { logDir: dir },
      );
      ends = await deployment.start();
    });

    after(async () => {
      await deployment.stop();
      await etcd.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it('a killed standby is replaced by a new standby', async () => {
      assert.deepEqual(
        deployment.controllers.map((p) => p.name),
        ['controller', 'controller-standby'],
      );
      deployment.controllers[1]!.child.kill('SIGKILL');
      await until(() => deployment.controllers.length === 3, 5000);
      assert.equal(deployment.controllers[2]?.name, 'controller-3');
      assert.ok(leads(deployment.controllers[0]!) && !leads(deployment.controllers[2]));
    });

    it('a killed leader: the standby leads, and another standby is started; twice over', async () => {
      // [killed, the one that leads next, controllers started by then]
      for (const [killed, next, count] of [
        [0, 2, 4],
        [2, 3, 5],
      ] as const) {
        deployment.controllers[killed]!.child.kill('SIGKILL');
        await until(() => leads(deployment.controllers[next]!), 15_000);
        assert.ok(leads(deployment.controllers[next]!), `${deployment.controllers[next]!.name} leads`);
        await until(answers, 5000);
        assert.ok(await answers(), 'the new leader answers at the same admin port');
        await until(() => deployment.controllers.length === count, 5000);
        assert.equal(deployment.controllers.at(-1)?.name, `controller-${count}`);
      }
      const listed = (await adminCall(
        '127.0.0.1',
        ends.controller.admin,
        '/instances',
      )) as unknown as unknown[];
      assert.equal(Object.keys(listed).length, 2, 'the journal carried both instances over');
    });
  },
);
