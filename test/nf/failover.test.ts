import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { after, describe, it } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { NfInstance } from '../../src/nf/instance.js';
import type { NfInstanceOptions } from '../../src/nf/instance.js';
import { flowKeyOf } from '../../src/packet/flow-key.js';
import { Packet } from '../../src/packet/packet.js';
import { Sink } from '../../src/traffic/sink.js';
import { DropReason } from '../../src/types.js';
import { STAMP_HEADER_LENGTH, StampFlag, StampView } from '../../src/wire/geneve.js';
import { stamped } from '../helpers/packets.js';
import { CrdtGlobalState } from '../../src/state/global-crdt.js';
import type { GlobalSnapshot } from '../../src/types.js';
import { until } from '../helpers/poll.js';

const FLOWS = 12;
const BEFORE = 40;
const AFTER = 20;
const BATCH = 16;

/** An ids instance whose batches close by size only, so what the last one left out is exactly known. */
function options(
  id: string,
  release: 'immediate' | 'after-replication',
  egress: number,
  partition: { index: number; count: number },
  cluster?: { members: string[]; key: string },
): NfInstanceOptions {
  return {
    id,
    host: '127.0.0.1',
    port: 0,
    threads: 2,
    nf: { type: 'ids', config: {} },
    processor: {
      release,
      batchSize: BATCH,
      batchTimeoutMs: 60_000,
      maxHeld: 1024,
      gapTimeoutMs: 5000,
      flowIdleMs: 60_000,
    },
    egress: { host: '127.0.0.1', port: egress },
    partition,
    ...(cluster === undefined ? {} : { cluster }),
    logger: silentLogger,
  };
}

/**
 * Two instances in-process, nf-a the primary of every flow and nf-b its secondary (it gets a copy of every
 * packet, as the switch sends them). nf-a stops dead after 40 packets per flow — its batches closed at 16
 * and 32 — and nf-b takes over, then receives the flows' packets directly. It resumes from the last batch
 * (33), or in output-commit mode from the one before (17): there nf-a may not have released the last
 * batch's output yet. Against a third instance that ran every packet without a fault.
 */
for (const { release, resume } of [
  { release: 'immediate', resume: 2 * BATCH + 1 },
  { release: 'after-replication', resume: BATCH + 1 },
] as const) {
  describe(
    `failover between two instances (takeover with replay), release ${release}`,
    { timeout: 120_000 },
    () => {
      const key = randomBytes(32).toString('hex');
      const out: { seq: number; flow: number; flags: number }[] = [];
      const sink = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 * 1024 * 1024 });
      // The reference run's output, not looked at.
      const discard = dgram.createSocket('udp4');
      const client = dgram.createSocket('udp4');
      const made: NfInstance[] = [];
      const view = new StampView();

      function instance(id: string, egress: number, members?: string[]): NfInstance {
        const cluster = members === undefined ? undefined : { members, key };
        const nf = new NfInstance(options(id, release, egress, { index: made.length, count: 3 }, cluster));
        made.push(nf);
        return nf;
      }

      after(async () => {
        await Promise.all(made.map((nf) => nf.stop()));
        sink.close();
        discard.close();
        client.close();
      });

      /** Packets `from` … `last` of every flow to `to`, and as the switch does, a copy of each to `copyTo`. */
      async function send(to: number, from: number, last: number, copyTo?: number): Promise<void> {
        for (let seq = from; seq <= last; seq++) {
          for (let f = 0; f < FLOWS; f++) {
            client.send(stamped({ flow: f, seq }), to, '127.0.0.1');
            if (copyTo !== undefined)
              client.send(stamped({ flow: f, seq, flags: StampFlag.COPY }), copyTo, '127.0.0.1');
          }
          if (seq % 8 === 0) await new Promise((r) => setTimeout(r, 2));
        }
      }

      it('the secondary resumes every flow from its replica, replays the kept copies, and ends as a fault-free run', async () => {
        sink.on('message', (msg) => {
          assert.equal(view.parse(msg, 0, msg.length), DropReason.NONE);
          out.push({ seq: view.seq, flow: msg[msg.length - 8]!, flags: view.flags });
        });
        sink.bind(0, '127.0.0.1');
        discard.bind(0, '127.0.0.1');
        await Promise.all([once(sink, 'listening'), once(discard, 'listening')]);
        const egress = sink.address().port;
        const a = instance('nf-a', egress, ['nf-b']);
        const b = instance('nf-b', egress, ['nf-a']);
        const reference = instance('nf-ref', discard.address().port);
        await Promise.all(made.map((nf) => nf.start()));
        await a.replicateTo([{ id: 'nf-b', host: '127.0.0.1', port: b.replicas!.port }]);
        await b.replicateTo([{ id: 'nf-a', host: '127.0.0.1', port: a.replicas!.port }]);

        await send(a.port, 1, BEFORE, b.port);
        await until(() => a.counter('processed') === FLOWS * BEFORE);
        const log = b.replayLog!;
        // Two records per flow reached nf-b (versions 1 and 2, next = 17 and 33): the copies it may replay stay.
        await until(() => log.trimmed === FLOWS * (resume - 1));
        assert.equal(log.trimmed, FLOWS * (resume - 1));
        assert.equal(log.size, FLOWS);
        assert.equal(b.counter('processed'), 0, 'a secondary does not process copies');
        // What nf-a emitted before it died: everything, or in output-commit mode the acknowledged batches.
        const emitted = release === 'immediate' ? BEFORE : 2 * BATCH;
        await until(() => out.length === FLOWS * emitted);

        // nf-a is gone. nf-b takes over, then gets the flows' packets from the switch.
        const keys = Array.from({ length: FLOWS }, (_, f) => {
          const d = stamped({ flow: f, seq: 1 });
          const p = new Packet();
          p.parse(d, STAMP_HEADER_LENGTH, d.length - STAMP_HEADER_LENGTH);
          return flowKeyOf(p);
        });
        const replayed = BEFORE - resume + 1;
        const report = await b.takeOver('nf-a', keys);
        assert.deepEqual(
          { ...report, ms: 0 },
          { flows: FLOWS, with_state: FLOWS, stale: 0, replayed: FLOWS * replayed, gaps: 0, ms: 0 },
        );
        await send(b.port, BEFORE + 1, BEFORE + AFTER);
        const total = BEFORE + AFTER;
        await until(() => b.counter('processed') === FLOWS * (total - resume + 1), 10_000);
        // Output commit holds the last open batch: close it, as the end of a run does.
        b.flushBatches();

        // At the sink: every stamp of every flow, the replayed ones marked REPLAY (a second time for those
        // nf-a had emitted already). nf-a, cut off but still running, may release more of its own output
        // meanwhile (its catch-up closes its open batch, which its peer refuses), so the wait counts stamps
        // and replays, not datagrams.
        const stamps = (): number => new Set(out.map((o) => o.flow * (total + 1) + o.seq)).size;
        const replayCount = (): number => out.filter((o) => (o.flags & StampFlag.REPLAY) !== 0).length;
        await until(() => stamps() === FLOWS * total && replayCount() >= FLOWS * replayed, 10_000);
        for (let f = 0; f < FLOWS; f++) {
          const mine = out.filter((o) => o.flow === f);
          const plain = mine.filter((o) => (o.flags & StampFlag.REPLAY) === 0).map((o) => o.seq);
          const replays = mine.filter((o) => (o.flags & StampFlag.REPLAY) !== 0).map((o) => o.seq);
          assert.deepEqual(
            [...new Set([...plain, ...replays])].sort((x, y) => x - y),
            Array.from({ length: total }, (_, i) => i + 1),
            `flow ${f}: every stamp delivered`,
          );
          assert.deepEqual(
            replays,
            Array.from({ length: replayed }, (_, i) => resume + i),
            `flow ${f}: the replay is exactly what the state it resumed from lacks, in stamp order`,
          );
        }

        // The same final state as an instance that saw every packet and never failed.
        await send(reference.port, 1, total);
        await until(() => reference.counter('processed') === FLOWS * total, 10_000);
        const [got, want] = await Promise.all([b.digest(), reference.digest()]);
        const byFlow = (d: typeof got): string[] =>
          d.flows.map((f) => `${f.flow} ${f.packets} ${f.digest}`).sort();
        assert.deepEqual(byFlow(got), byFlow(want));
        // And the same per-source byte counts and port sets (the ids NF's eventual global state): nf-b holds
        // nf-a's counts as of its last records, and its replay of packets nf-a had counted counts nothing again.
        const eventual = (d: typeof got): Pick<GlobalSnapshot, 'counters' | 'sets'> =>
          CrdtGlobalState.joinSnapshots(
            (d.eventual ?? []).map((x) => new Uint8Array(Buffer.from(x, 'base64'))),
          );
        assert.deepEqual(eventual(got), eventual(want));
        assert.equal(Object.keys(eventual(want).counters['ids.bytes'] ?? {}).length, FLOWS, 'not vacuous');

        // nf-a's replicas went with the takeover, and nf-a is fenced there: what it sends when it comes back
        // (its stop closes and ships its batches) is refused.
        assert.deepEqual(Object.keys(b.replicas!.digests()), []);
        await a.stop();
        await new Promise((r) => setTimeout(r, 100));
        assert.deepEqual(Object.keys(b.replicas!.digests()), []);

        // A flow taken over moves on inside the cluster: nf-b becomes its new owner's secondary, and a copy of
        // its next packet is kept, as for any flow of a peer, not run as a replay of the failed instance's.
        const moved = keys[0]!;
        const to = { host: '127.0.0.1', port: discard.address().port };
        const [frozen] = await b.moveStep('freeze', [{ key: moved }], { to });
        assert.equal(frozen!.ok, true);
        await b.moveStep('commit', [{ key: moved }]);
        await b.finishMoves([moved], 0);
        const processed = b.counter('processed');
        client.send(stamped({ flow: 0, seq: total + 1, flags: StampFlag.COPY }), b.port, '127.0.0.1');
        await until(() => log.size > 0);
        assert.deepEqual(log.take(moved).seqs, [total + 1], 'the copy is kept');
        assert.equal(b.counter('processed'), processed, 'and not processed');
      });
    },
  );
}

/**
 * A false alarm: nf-a is declared failed while it works, and goes on processing, emitting and replicating
 * until it would learn it is fenced. Failed over in the controller's order — its successor nf-b refuses its
 * records, the egress drops its output for packets stamped from then on, nf-b takes over — nothing is lost:
 * what nf-a emits for a packet stamped earlier passes, and nf-b replays everything from the last record it
 * accepted. (Had the egress been fenced first, nf-a's next record would have reached nf-b and trimmed copies
 * of packets whose output the egress dropped.)
 */
describe('failover of an instance that still works (a false alarm)', { timeout: 120_000 }, () => {
  const key = randomBytes(32).toString('hex');
  const client = dgram.createSocket('udp4');
  const sink = new Sink({ host: '127.0.0.1', port: 0 }, silentLogger);
  const made: NfInstance[] = [];
  const T0 = 1_700_000_000_000;

  after(async () => {
    await Promise.all(made.map((nf) => nf.stop()));
    await sink.stop();
    client.close();
  });

  it('loses nothing and delivers nothing twice, whatever the fenced instance still emits', async () => {
    await sink.start();
    const instance = (id: string, peer: string, index: number): NfInstance => {
      const cluster = { members: [peer], key };
      const nf = new NfInstance(options(id, 'immediate', sink.port, { index, count: 2 }, cluster));
      made.push(nf);
      return nf;
    };
    const a = instance('nf-a', 'nf-b', 0);
    const b = instance('nf-b', 'nf-a', 1);
    await Promise.all(made.map((nf) => nf.start()));
    a.setEmitter(1);
    b.setEmitter(2);
    await a.replicateTo([{ id: 'nf-b', host: '127.0.0.1', port: b.replicas!.port }]);
    await b.replicateTo([{ id: 'nf-a', host: '127.0.0.1', port: a.replicas!.port }]);
    /** Packets `from` … `last` of every flow, stamped at T0 + seq, to `to` and as copies to `copyTo`. */
    const send = async (to: number, from: number, last: number, copyTo?: number): Promise<void> => {
      for (let seq = from; seq <= last; seq++) {
        for (let f = 0; f < FLOWS; f++) {
          client.send(stamped({ flow: f, seq, timeMs: T0 + seq }), to, '127.0.0.1');
          if (copyTo !== undefined)
            client.send(
              stamped({ flow: f, seq, timeMs: T0 + seq, flags: StampFlag.COPY }),
              copyTo,
              '127.0.0.1',
            );
        }
        if (seq % 8 === 0) await new Promise((r) => setTimeout(r, 2));
      }
    };

    await send(a.port, 1, BEFORE, b.port);
    await until(() => b.replayLog!.trimmed === FLOWS * 2 * BATCH);
    assert.equal(b.replayLog!.trimmed, FLOWS * 2 * BATCH, 'two records per flow reached nf-b');

    // Declared failed. 1: nf-b takes nothing more from nf-a. 2-3: the switch's clock reads T0 + 49, and the
    // egress drops nf-a's output for packets stamped from then on.
    b.fenceOrigin('nf-a');
    sink.fence(1, T0 + 49);
    // nf-a has not heard yet: it processes 41 … 56, emits them, and closes its third batch at 48.
    await send(a.port, BEFORE + 1, 56, b.port);
    await until(() => a.counter('processed') === FLOWS * 56);
    assert.equal(a.counter('processed'), FLOWS * 56);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(b.replayLog!.trimmed, FLOWS * 2 * BATCH, 'nf-a’s third record was refused');
    // 4: nf-b takes over, from its last accepted record (33 on), and the flows come to it from now on.
    const keys = Array.from({ length: FLOWS }, (_, f) => {
      const d = stamped({ flow: f, seq: 1 });
      const p = new Packet();
      p.parse(d, STAMP_HEADER_LENGTH, d.length - STAMP_HEADER_LENGTH);
      return flowKeyOf(p);
    });
    const report = await b.takeOver('nf-a', keys);
    assert.equal(report.replayed, FLOWS * (56 - 2 * BATCH));
    await send(b.port, 57, 60);
    await until(() => sink.report().delivered === FLOWS * 60, 10_000);
    const r = sink.report();
    assert.deepEqual(
      { delivered: r.delivered, duplicated: r.duplicated, reordered: r.reordered },
      { delivered: FLOWS * 60, duplicated: 0, reordered: 0 },
      'every stamp of every flow once, in order',
    );
    assert.equal(
      r.fenced,
      FLOWS * (56 - 48),
      'nf-a’s output for 49 … 56 was dropped; nf-b’s replay delivered it',
    );
    assert.equal(r.replays, FLOWS * (48 - 2 * BATCH), 'nf-b’s replay of 33 … 48, which nf-a had delivered');
  });
});
