import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createClient, RESP_TYPES } from 'redis';
import { Children, HOST, nfSpec } from '../../bench/dataplane.js';
import { decodeStored, RemoteStateNf, storeKey } from '../../bench/remote-state-nf.js';
import { runRemoteStateBench, startRedis } from '../../bench/remote-state.js';
import { wallClock } from '../../src/clock.js';
import { FlowProcessor } from '../../src/nf/processor.js';
import { createNf, nfTypes } from '../../src/nfs/index.js';
import { silentLogger } from '../../src/log.js';
import { stateDigest } from '../../src/state/digest.js';
import { CrdtGlobalState } from '../../src/state/global-crdt.js';
import { LocalGlobalState } from '../../src/state/global-local.js';
import { DropReason } from '../../src/types.js';
import { STAMP_HEADER_LENGTH, writeStampHeader } from '../../src/wire/geneve.js';
import { stamped } from '../helpers/packets.js';
import { until } from '../helpers/poll.js';

const FLOWS = 16;
const PACKETS = 20;
const SIGNATURE = new TextEncoder().encode('GET /etc/passwd');

/**
 * Round-major, sent in one burst: each flow has packets queued behind the one in Redis's hands. Flow 3
 * carries an IDS signature; a replay of flow 0's fifth packet comes last.
 */
function trace(): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let seq = 1; seq <= PACKETS; seq++)
    for (let flow = 0; flow < FLOWS; flow++)
      out.push(stamped({ flow, seq, ...(flow === 3 && seq === 2 ? { payload: SIGNATURE } : {}) }));
  out.push(stamped({ flow: 0, seq: 5 }));
  return out;
}

/** Bad input of four kinds, each to be counted and dropped. */
function malformed(): Uint8Array[] {
  const noInner = new Uint8Array(STAMP_HEADER_LENGTH + 4);
  writeStampHeader(noInner, 0, { vni: 1, flags: 0, epoch: 1, seq: 1, timeMs: 0 });
  const badVersion = stamped({ flow: 1, seq: 1 }).slice();
  badVersion[0] = 0xc7;
  const seqZero = stamped({ flow: 2, seq: 1 }).slice();
  new DataView(seqZero.buffer).setBigUint64(20, 0n);
  return [new Uint8Array([0]), noInner, badVersion, seqZero];
}

/** Output datagrams per flow, in order; a flow is told apart by its inner source, which no NF here shares. */
function byFlow(datagrams: readonly Uint8Array[]): Map<string, string[]> {
  const flows = new Map<string, string[]>();
  for (const d of datagrams) {
    const src = Buffer.from(d.subarray(STAMP_HEADER_LENGTH + 12, STAMP_HEADER_LENGTH + 16)).toString('hex');
    const port = (d[STAMP_HEADER_LENGTH + 20]! << 8) | d[STAMP_HEADER_LENGTH + 21]!;
    const key = `${src}:${port}`;
    const list = flows.get(key) ?? [];
    list.push(Buffer.from(d).toString('hex'));
    flows.set(key, list);
  }
  return flows;
}

test(
  'remote-state runs each NF as an nfstate worker does: the same output, in order, and the same state in Redis',
  { timeout: 600_000 },
  async () => {
    const children = new Children();
    const dir = mkdtempSync(join(tmpdir(), 'nfstate-remote-state-test-'));
    const redis = await startRedis(children, dir);
    const reader = createClient({ socket: { host: HOST, port: redis.port } }).withTypeMapping({
      [RESP_TYPES.BLOB_STRING]: Buffer,
    });
    const sink = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
    const sender = dgram.createSocket('udp4');
    try {
      await reader.connect();
      sink.bind(0, HOST);
      await once(sink, 'listening');
      const received: Uint8Array[] = [];
      sink.on('message', (msg) => received.push(msg));

      for (const type of nfTypes) {
        await redis.flush();
        received.length = 0;
        const { nf: nfConfig, processor: options } = nfSpec(type, 1, sink.address().port);

        const expected: Uint8Array[] = [];
        const global = new CrdtGlobalState(new LocalGlobalState(), { replica: 0 });
        const nf = createNf(type, nfConfig.config, global);
        const processor = new FlowProcessor(
          nf,
          global,
          options,
          (buf, off, len) => expected.push(buf.slice(off, off + len)),
          wallClock,
        );
        for (const d of trace()) processor.receive(d.slice(), 0, d.length);

        const remote = new RemoteStateNf(
          {
            id: `test-${type}`,
            host: HOST,
            port: 0,
            nf: nfConfig,
            redis: { host: HOST, port: redis.port },
            egress: { host: HOST, port: sink.address().port },
            flowIdleMs: options.flowIdleMs,
          },
          silentLogger,
        );
        try {
          const { port } = await remote.start();
          for (const d of [...malformed(), ...trace()]) sender.send(d, port, HOST);
          await until(() => remote.counters.received === 4 + FLOWS * PACKETS + 1, 10_000);
          await until(
            () =>
              remote.counters.processed + remote.counters.drops[DropReason.DUPLICATE]! ===
              FLOWS * PACKETS + 1,
            10_000,
          );
          await until(() => received.length === expected.length, 5_000);

          const c = remote.counters;
          assert.equal(c.failed, 0, type);
          assert.equal(
            c.drops[DropReason.TRUNCATED],
            2,
            `${type}: the lone byte and the stamp with no inner packet`,
          );
          assert.equal(c.drops[DropReason.BAD_VERSION], 1, type);
          assert.equal(c.drops[DropReason.BAD_HEADER], 1, `${type}: sequence number 0`);
          assert.equal(c.drops[DropReason.DUPLICATE], processor.counters.drops[DropReason.DUPLICATE], type);
          assert.equal(c.forwarded, processor.counters.forwarded, type);
          assert.equal(c.events, processor.counters.events, type);
          assert.deepEqual(byFlow(received), byFlow(expected), type);

          for (const [key, flow] of processor.flows.entries()) {
            const bytes = await reader.get(storeKey(key));
            assert.ok(bytes !== null, `${type}: a flow with no state in Redis`);
            const stored = decodeStored(nf, bytes);
            assert.equal(stored.expected, flow.expected, type);
            assert.equal(stateDigest(nf, stored.state), stateDigest(nf, flow.state), type);
          }
        } finally {
          await remote.stop();
        }
      }
    } finally {
      sender.close();
      sink.close();
      reader.destroy();
      await redis.stop();
      children.killAll();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

// A quick run against a real redis-server: this checks what the bench reports, never how fast anything is.
test(
  'the remote-state bench measures nfstate and remote-state side by side',
  { timeout: 600_000 },
  async () => {
    const steps: string[] = [];
    const r = await runRemoteStateBench({ nf: 'nat', quick: true, step: (s) => steps.push(s) });
    assert.equal(r.nf, 'nat');
    assert.match(r.redis_version, /^\d+\.\d+/);
    assert.deepEqual(
      r.points.map((p) => p.system),
      ['nfstate', 'remote-state'],
    );
    for (const p of r.points) {
      assert.ok(p.throughput_pps > 0, JSON.stringify(p));
      assert.ok(p.p50_us > 0 && p.p99_us >= p.p50_us, JSON.stringify(p));
      assert.equal(p.lost, 0, JSON.stringify(p));
    }
    assert.ok(
      r.latency_rate_pps > 0 && r.latency_rate_pps < Math.min(...r.points.map((p) => p.throughput_pps)),
    );
    assert.ok(r.throughput_ratio > 0 && r.p50_ratio > 0);
    assert.ok(steps.some((s) => s.startsWith('redis-server ')));
  },
);

test('without redis-server the bench says what to install', { timeout: 600_000 }, async () => {
  const path = process.env.PATH;
  process.env.PATH = '/nonexistent';
  try {
    await assert.rejects(runRemoteStateBench({ nf: 'nat', quick: true }), /apt-get install redis-server/);
  } finally {
    process.env.PATH = path;
  }
});
