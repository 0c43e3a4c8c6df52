/**
 * The compliance suite (nfstate/testing) on every built-in NF and on chains of them, and on NFs broken on
 * purpose, which it must reject: a check that cannot fail proves nothing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createNf } from '../../src/nfs/index.js';
import type { ByteReader, ByteWriter } from '../../src/state/bytes.js';
import {
  checkCodecAndDeterminism,
  checkRobustness,
  type ComplianceSubject,
} from '../../src/testing/compliance.js';
import { Verdict, type NetworkFunction, type PacketView } from '../../src/types.js';

interface Entry extends Omit<ComplianceSubject, 'create'> {
  readonly type: string;
  readonly config: Record<string, unknown>;
}

const entries: readonly Entry[] = [
  {
    label: 'nat',
    type: 'nat',
    config: { publicIp: '203.0.113.1', portFirst: 40000, portLast: 40002, internal: '10.0.0.0/8' },
    ips: ['10.0.0.1', '10.0.0.2', '192.0.2.1', '203.0.113.1'],
    ports: [53, 80, 1234, 40000, 40001, 40002],
  },
  {
    label: 'firewall (strict)',
    type: 'firewall',
    config: {
      rules: [
        { action: 'allow', src: '10.0.0.0/8' },
        { action: 'allow', proto: 'tcp', dstPort: '80' },
        { action: 'deny', proto: 'udp', dstPort: '1000-2000' },
      ],
      default: 'deny',
      strict: true,
      udpIdleMs: 1000,
      tcpIdleMs: 5000,
      timeWaitMs: 500,
    },
    ips: ['10.0.0.1', '192.0.2.1', '192.0.2.2'],
    ports: [22, 80, 1500, 5000],
  },
  {
    label: 'firewall (loose)',
    type: 'firewall',
    config: {
      rules: [{ action: 'deny', dst: '192.0.2.2/32' }],
      strict: false,
      udpIdleMs: 1000,
      tcpIdleMs: 5000,
    },
    ips: ['10.0.0.1', '192.0.2.1', '192.0.2.2'],
    ports: [22, 80, 5000],
  },
  {
    label: 'lb (maglev)',
    type: 'lb',
    config: { vip: '198.51.100.10', port: 80, backends: ['10.1.0.1:8080', '10.1.0.2'], tableSize: 251 },
    ips: ['192.0.2.1', '198.51.100.10', '10.1.0.1', '10.1.0.2'],
    ports: [80, 8080, 1234],
  },
  {
    label: 'lb (least-connections)',
    type: 'lb',
    config: {
      vip: '198.51.100.10',
      backends: ['10.1.0.1:8080', '10.1.0.2:8080', '10.1.0.3'],
      algorithm: 'least-connections',
    },
    ips: ['192.0.2.1', '198.51.100.10', '10.1.0.1', '10.1.0.3'],
    ports: [80, 8080, 1234],
  },
  {
    label: 'ids',
    type: 'ids',
    config: { scanPorts: 3, heavyBytes: 600, logLimit: 8 },
    ips: ['10.0.0.1', '192.0.2.1', '192.0.2.2'],
    ports: [1, 2, 3, 4, 80],
  },
  {
    label: 'chain firewall (strict) > nat',
    type: 'chain',
    config: {
      nfs: [
        {
          type: 'firewall',
          config: { rules: [{ action: 'allow', src: '10.0.0.0/8' }], default: 'deny', strict: true },
        },
        { type: 'nat', config: { publicIp: '203.0.113.1', portFirst: 40000, portLast: 40002 } },
      ],
    },
    ips: ['10.0.0.1', '10.0.0.2', '192.0.2.1', '203.0.113.1'],
    ports: [53, 80, 1234, 40000, 40001],
  },
  {
    label: 'chain ids > lb',
    type: 'chain',
    config: {
      nfs: [
        { type: 'ids', config: { scanPorts: 3, heavyBytes: 600, logLimit: 8 } },
        { type: 'lb', config: { vip: '198.51.100.10', port: 80, backends: ['10.1.0.1:8080', '10.1.0.2'] } },
      ],
    },
    ips: ['192.0.2.1', '198.51.100.10', '10.1.0.1'],
    ports: [80, 8080, 1234],
  },
];

for (const e of entries) {
  const subject: ComplianceSubject = { ...e, create: (g) => createNf(e.type, e.config, g) };
  test(
    `${e.label}: codec round trips, delta invariant and determinism on random sequences`,
    { timeout: 60_000 },
    () => {
      checkCodecAndDeterminism(subject);
    },
  );
  test(`${e.label}: odd but parseable packets never throw`, { timeout: 60_000 }, () => {
    checkRobustness(subject);
  });
}

/** A packet counter whose flaws are chosen: each must make the suite fail. */
function counter(flaw: 'none' | 'delta' | 'random' | 'throws'): NetworkFunction<{ n: number }> {
  return {
    name: 'counter',
    initFlow: () => ({ n: 0 }),
    process(pkt: PacketView, s: { n: number }): Verdict {
      if (flaw === 'throws' && pkt.ttl === 0) throw new Error('ttl 0');
      // Depends on something other than the packet, its state and its context: not replayable.
      s.n += flaw === 'random' ? 1 + Math.round(Math.random()) : 1;
      return Verdict.FORWARD;
    },
    releaseFlow: () => undefined,
    allocations: () => ({}),
    codec: {
      encodeFull: (s: { n: number }, w: ByteWriter) => w.u32(s.n),
      decodeFull: (r: ByteReader) => ({ n: r.u32() }),
      mark: (s: { n: number }) => s.n,
      // Right: the count; broken: forgets everything after the first packet.
      encodeDelta: (s: { n: number }, _since: number, w: ByteWriter) => w.u32(flaw === 'delta' ? 1 : s.n),
      applyDelta: (s: { n: number }, r: ByteReader) => {
        s.n = r.u32();
      },
    },
  };
}

const subjectOf = (flaw: Parameters<typeof counter>[0]): ComplianceSubject => ({
  label: `counter (${flaw})`,
  create: () => counter(flaw),
  ips: ['10.0.0.1', '192.0.2.1'],
  ports: [53, 80],
});

test(
  'the suite passes a correct NF and fails one whose delta loses state, one that is not deterministic, and one that throws on odd packets',
  { timeout: 60_000 },
  () => {
    checkCodecAndDeterminism(subjectOf('none'));
    checkRobustness(subjectOf('none'));
    const opts = { numRuns: 1000, timeLimitMs: 10_000 };
    assert.throws(() => {
      checkCodecAndDeterminism(subjectOf('delta'), opts);
    }, /^Error: counter \(delta\): delta from mark/);
    assert.throws(() => {
      checkCodecAndDeterminism(subjectOf('random'), opts);
    }, /^Error: counter \(random\): .*Property failed/s);
    assert.throws(() => {
      checkRobustness(subjectOf('throws'), opts);
    }, /^Error: counter \(throws\): ttl 0/);
  },
);
