import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareRuns, givenAllocations, runOracle, type TracePacket } from '../../src/traffic/oracle.js';
import type { GlobalSnapshot } from '../../src/types.js';
import { udp } from '../../src/testing/driver.js';

const CHAIN = {
  type: 'chain',
  config: {
    nfs: [
      { type: 'firewall', config: {} },
      { type: 'nat', config: { publicIp: '203.0.113.1', portFirst: 40000, portLast: 40009 } },
    ],
  },
};

function trace(): TracePacket[] {
  const t = 1_700_000_000_000;
  return [
    { data: udp('10.0.0.5', 5555, '192.0.2.9', 53, 'q1'), timeMs: t },
    // The reply to the NAT's public port (40000, its first), as the switch sees it.
    { data: udp('192.0.2.9', 53, '203.0.113.1', 40000, 'a1'), timeMs: t + 1 },
    { data: udp('10.0.0.5', 5555, '192.0.2.9', 53, 'q2'), timeMs: t + 2 },
    { data: udp('10.0.0.6', 6666, '192.0.2.9', 53, 'other'), timeMs: t + 3 },
  ];
}

describe('runOracle and compareRuns', { timeout: 60_000 }, () => {
  it('stamps a reply to a translated port as part of its connection, as the switch does', () => {
    const ref = runOracle(CHAIN, trace());
    assert.equal(ref.packets, 4);
    const conn = ref.flows.find((f) => f.flow === 'udp 10.0.0.5:5555 192.0.2.9:53');
    assert.equal(conn?.packets, 3, 'both directions in one flow');
    assert.equal(ref.flows.length, 2);
    assert.deepEqual(conn.allocations, { 'nat.port': 40000 });
    // As they leave the chain: translated out, translated back.
    assert.equal(ref.forwarded.get('udp 192.0.2.9:53 203.0.113.1:40000'), 2);
    assert.equal(ref.forwarded.get('udp 10.0.0.5:5555 192.0.2.9:53'), 1);
  });

  it("a chain's run that differs from the oracle in one NF's part is caught, and named by that NF", () => {
    const ref = runOracle(CHAIN, trace());
    const same = compareRuns(ref, ref);
    assert.equal(same.matches, true);
    assert.deepEqual(same.byNf, { firewall: 0, nat: 0 });
    const wrong = {
      ...ref,
      flows: ref.flows.map((f, i) =>
        i === 0 ? { ...f, digest: 'x'.repeat(32), parts: { ...f.parts, nat: 'y'.repeat(32) } } : f,
      ),
    };
    const cmp = compareRuns(wrong, ref);
    assert.equal(cmp.matches, false);
    assert.deepEqual(cmp.byNf, { firewall: 0, nat: 1 });
  });

  it('two live flows forced to one port are a mismatch, though the log lists one holder', () => {
    const [a, b] = runOracle(NAT, outbound()).flows.map((f) => f.flow);
    // What such a deployment holds: both flows on 40003, and a log that can name only one of them.
    const dep = runOracle(
      NAT,
      outbound(),
      new Map([
        [a!, { 'nat.port': 40003 }],
        [b!, { 'nat.port': 40003 }],
      ]),
    );
    const run = { flows: dep.flows, global: table([{ value: 40003, owner: b! }]) };
    const cmp = compareRuns(run, runOracle(NAT, outbound(), givenAllocations(run.flows)));
    assert.equal(cmp.matches, false);
    assert.deepEqual(cmp.duplicateAllocations, [`nat.port=40003: ${a} and ${b}`]);
    assert.deepEqual(cmp.badAllocations, [`nat.port=40003: ${a} holds it, the table names ${b}`]);
  });

  it('a port outside the pool is refused: the oracle allocates its own, and the comparison names it', () => {
    const [a, b] = runOracle(NAT, outbound()).flows.map((f) => f.flow);
    const wide = { type: 'nat', config: { ...NAT.config, portLast: 60000 } };
    const dep = runOracle(
      wide,
      outbound(),
      new Map([
        [a!, { 'nat.port': 50000 }],
        [b!, { 'nat.port': 40005 }],
      ]),
    );
    const cmp = compareRuns(dep, runOracle(NAT, outbound(), givenAllocations(dep.flows)));
    assert.equal(cmp.matches, false);
    assert.deepEqual(cmp.mismatched, [a]);
    assert.deepEqual(cmp.badAllocations, [`${a}: nat.port 50000 here, 40000 in the oracle`]);
    assert.equal(cmp.globalMatches, false, 'the tables of holders differ');
  });

  it('a flow whose port the log gives to another flow, or to none, is caught', () => {
    const ref = runOracle(NAT, outbound());
    const [a, b] = ref.flows.map((f) => f.flow);
    const same = compareRuns(ref, ref);
    assert.equal(same.matches && same.globalMatches, true);
    assert.deepEqual(same.globalCompared, ['pool nat.port'], 'the pool is what the NAT shares');

    const swapped = compareRuns(
      {
        flows: ref.flows,
        global: table([
          { value: 40000, owner: b! },
          { value: 40001, owner: a! },
        ]),
      },
      ref,
    );
    assert.equal(swapped.matches, false);
    assert.equal(swapped.globalMatches, false);
    assert.deepEqual(swapped.badAllocations, [
      `nat.port=40000: ${a} holds it, the table names ${b}`,
      `nat.port=40000: the table names ${b}, whose state does not hold it`,
      `nat.port=40001: ${b} holds it, the table names ${a}`,
      `nat.port=40001: the table names ${a}, whose state does not hold it`,
    ]);

    const unlisted = { flows: ref.flows, global: table([{ value: 40001, owner: b! }]) };
    assert.deepEqual(compareRuns(unlisted, ref).badAllocations, [
      `nat.port=40000: ${a} holds it, the table names no holder`,
    ]);
    // Without a log each worker lists only what it handed out: a flow restored elsewhere is in no list.
    const local = compareRuns(unlisted, ref, { log: false });
    assert.equal(local.matches && local.globalMatches, true);
    assert.deepEqual(local.globalCompared, []);
  });

  it('decisions: an LB backend the config lacks and a NAT inbound mapping nobody holds are refused', () => {
    const lb = {
      type: 'lb',
      config: {
        vip: '198.51.100.10',
        port: 80,
        backends: ['10.1.0.1:8080', '10.1.0.2:8080'],
        algorithm: 'least-connections',
      },
    };
    const client = [{ data: udp('10.0.0.5', 5555, '198.51.100.10', 80, 'get'), timeMs: 1_700_000_000_000 }];
    const chosen = runOracle(lb, client);
    const [flow] = chosen.flows.map((f) => f.flow);
    assert.deepEqual(compareRuns(chosen, chosen).globalCompared, ['counters lb.conns']);
    const nine = {
      ...chosen,
      flows: chosen.flows.map((f) => ({ ...f, allocations: { 'lb.backend': 9 } })),
    };
    const lbCmp = compareRuns(nine, runOracle(lb, client, givenAllocations(nine.flows)));
    assert.equal(lbCmp.matches, false);
    assert.deepEqual(lbCmp.badAllocations, [`${flow}: lb.backend 9 here, 0 in the oracle`]);

    // Unsolicited: nobody holds 40005, so the oracle's own lookup finds no mapping (-1), as the
    // deployment's did.
    const inbound = [
      ...outbound(),
      { data: udp('192.0.2.77', 99, '203.0.113.1', 40005, 'in'), timeMs: 1_700_000_000_002 },
    ];
    const honest = runOracle(NAT, inbound);
    const unsolicited = honest.flows.find((f) => f.allocations['nat.inbound'] === -1)!.flow;
    assert.equal(compareRuns(honest, runOracle(NAT, inbound, givenAllocations(honest.flows))).matches, true);
    const mapping = (10 * 2 ** 24 + 5) * 65536 + 5555;
    const mapped = {
      ...honest,
      flows: honest.flows.map((f) =>
        f.flow === unsolicited ? { ...f, allocations: { 'nat.inbound': mapping } } : f,
      ),
    };
    const natCmp = compareRuns(mapped, runOracle(NAT, inbound, givenAllocations(mapped.flows)));
    assert.equal(natCmp.matches, false);
    assert.deepEqual(natCmp.badAllocations, [
      `${unsolicited}: nat.inbound ${mapping} here, -1 in the oracle`,
    ]);
  });
});

const NAT = { type: 'nat', config: { publicIp: '203.0.113.1', portFirst: 40000, portLast: 40009 } };

/** Two outbound connections. */
function outbound(): TracePacket[] {
  const t = 1_700_000_000_000;
  return [
    { data: udp('10.0.0.5', 5555, '192.0.2.9', 53, 'a'), timeMs: t },
    { data: udp('10.0.0.6', 6666, '192.0.2.9', 53, 'b'), timeMs: t + 1 },
  ];
}

/** A deployment's global state whose only content is the log's table of `nat.port` holders. */
function table(holders: { value: number; owner: string }[]): GlobalSnapshot {
  return { pools: { 'nat.port': holders }, counters: {}, sets: {} };
}
