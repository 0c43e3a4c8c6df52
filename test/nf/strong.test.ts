import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, describe, it } from 'node:test';
import { SequencerClient } from '../../src/global/sequencer-client.js';
import { SequencerServer } from '../../src/global/sequencer-server.js';
import { silentLogger } from '../../src/log.js';
import { NfInstance } from '../../src/nf/instance.js';
import { flowKeyOf } from '../../src/packet/flow-key.js';
import { Packet } from '../../src/packet/packet.js';
import { DropReason } from '../../src/types.js';
import { STAMP_HEADER_LENGTH, StampFlag, StampView } from '../../src/wire/geneve.js';
import { stamped } from '../helpers/packets.js';
import { until } from '../helpers/poll.js';
import { NAT_PORT_POOL } from '../../src/nfs/nat.js';

const FLOWS = 24;
const BEFORE = 5;
const AFTER = 10;

/**
 * Strong global state in the log (the `local` one, a sequencer on TCP): two instances in one process, nf-a the
 * primary of every flow and nf-b its secondary. nf-a dies before any batch of its flows closed, so nf-b has
 * no replica and re-creates each flow from its copies. Its claims and decisions must find what nf-a was given,
 * or the outside world would see a flow change in the middle of a connection: the NAT's public port (a pool),
 * the lb's backend chosen by least connections (a decision).
 */
for (const { nf, config, what, of } of [
  { nf: 'nat', config: {}, what: 'the port', of: (p: Packet) => p.srcPort },
  // In a chain the NAT makes its part after the firewall has seen the packet: the packet waits for the port
  // at the NAT, and the chain resumes there.
  {
    nf: 'chain',
    config: { nfs: [{ type: 'firewall' }, { type: 'nat' }] },
    what: "the port (chain firewall > nat: the NAT's part)",
    of: (p: Packet) => p.srcPort,
  },
  {
    nf: 'lb',
    config: {
      vip: '198.51.100.10',
      backends: ['10.1.0.1:8080', '10.1.0.2:8080', '10.1.0.3:8080', '10.1.0.4:8080'],
      algorithm: 'least-connections',
    },
    what: 'the backend',
    of: (p: Packet) => p.dstIp,
  },
])
  describe(`strong global state: ${nf}, ${what} decided in the log`, { timeout: 120_000 }, () => {
    const key = randomBytes(32);
    const server = new SequencerServer({ key, logger: silentLogger });
    const out: { flow: number; seq: number; port: number; flags: number }[] = [];
    const sink = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 * 1024 * 1024 });
    const client = dgram.createSocket('udp4');
    const made: NfInstance[] = [];
    const view = new StampView();
    const inner = new Packet();

    function instance(id: string, egress: number, members: string[]): NfInstance {
      const one = new NfInstance({
        id,
        host: '127.0.0.1',
        port: 0,
        threads: 2,
        nf: { type: nf, config },
        processor: {
          release: 'immediate',
          batchSize: 30,
          batchTimeoutMs: 60_000,
          maxHeld: 1024,
          gapTimeoutMs: 5000,
          flowIdleMs: 60_000,
        },
        egress: { host: '127.0.0.1', port: egress },
        partition: { index: made.length, count: 2 },
        cluster: { members, key: key.toString('hex') },
        strong: new SequencerClient({ host: '127.0.0.1', port: server.port, key, logger: silentLogger }),
        logger: silentLogger,
      });
      made.push(one);
      return one;
    }

    after(async () => {
      await Promise.all(made.map((nf) => nf.stop()));
      await server.stop();
      sink.close();
      client.close();
    });

    async function send(to: number, from: number, last: number, copyTo?: number): Promise<void> {
      for (let seq = from; seq <= last; seq++) {
        // Later packets first, then the first: a new flow's packets wait for its port in stamp order.
        for (let f = FLOWS - 1; f >= 0; f--) {
          client.send(stamped({ flow: f, seq }), to, '127.0.0.1');
          if (copyTo !== undefined)
            client.send(stamped({ flow: f, seq, flags: StampFlag.COPY }), copyTo, '127.0.0.1');
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    }

    it(`a successor that replays a flow from its copies gets ${what} its primary was given`, async () => {
      await server.listen('127.0.0.1', 0);
      sink.on('message', (msg) => {
        assert.equal(view.parse(msg, 0, msg.length), DropReason.NONE);
        assert.equal(inner.parse(msg, view.innerOffset, view.innerLength), DropReason.NONE);
        out.push({ flow: msg[msg.length - 8]!, seq: view.seq, port: of(inner), flags: view.flags });
      });
      sink.bind(0, '127.0.0.1');
      await once(sink, 'listening');
      const egress = sink.address().port;
      const a = instance('nf-a', egress, ['nf-b']);
      const b = instance('nf-b', egress, ['nf-a']);
      await Promise.all(made.map((nf) => nf.start()));
      await a.replicateTo([{ id: 'nf-b', host: '127.0.0.1', port: b.replicas!.port }]);
      await b.replicateTo([{ id: 'nf-a', host: '127.0.0.1', port: a.replicas!.port }]);

      await send(a.port, 1, BEFORE, b.port);
      await until(() => out.length === FLOWS * BEFORE);
      assert.equal(a.counter('deciding'), FLOWS, `every new flow waited for ${what} once`);
      const given = new Map<number, number>();
      for (const o of out) {
        assert.equal(given.get(o.flow) ?? o.port, o.port, `flow ${o.flow}: one ${what} for all its packets`);
        given.set(o.flow, o.port);
      }
      if (nf !== 'lb') assert.equal(new Set(given.values()).size, FLOWS, 'no two flows share a port');
      // Stamp order held while the first packet waited for its port.
      for (let f = 0; f < FLOWS; f++) {
        const seqs = out.filter((o) => o.flow === f).map((o) => o.seq);
        assert.deepEqual(seqs, [1, 2, 3, 4, 5], `flow ${f} in stamp order`);
      }
      // nf-b mirrors the log, though it has none of the flows: its digest lists none of their holdings.
      assert.equal((await b.digest()).global.pools[NAT_PORT_POOL]?.length ?? 0, 0);

      const keys = Array.from({ length: FLOWS }, (_, f) => {
        const d = stamped({ flow: f, seq: 1 });
        const p = new Packet();
        p.parse(d, STAMP_HEADER_LENGTH, d.length - STAMP_HEADER_LENGTH);
        return flowKeyOf(p);
      });
      await a.stop();
      const report = await b.takeOver('nf-a', keys);
      assert.equal(report.with_state, 0, 'no batch had closed: every flow is re-created from its copies');
      assert.equal(report.replayed, FLOWS * BEFORE);
      await send(b.port, BEFORE + 1, BEFORE + AFTER);
      await until(() => out.length === FLOWS * (2 * BEFORE + AFTER), 10_000);
      for (const o of out.slice(FLOWS * BEFORE)) {
        assert.equal(o.port, given.get(o.flow), `flow ${o.flow} seq ${o.seq}: the port nf-a gave it`);
      }
      const replays = out.filter((o) => (o.flags & StampFlag.REPLAY) !== 0);
      assert.equal(replays.length, FLOWS * BEFORE);
      if (nf !== 'lb') {
        const pools = (await b.digest()).global.pools[NAT_PORT_POOL] ?? [];
        assert.deepEqual(
          pools.map((p) => p.value),
          [...given.values()].sort((x, y) => x - y),
          'nf-b holds exactly those ports now',
        );
      }
    });
  });
