import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TcpFlag } from '../../src/packet/build.js';
import { Chain, ChainState } from '../../src/nfs/chain.js';
import { createNf } from '../../src/nfs/index.js';
import { NatRole, NAT_PORT_POOL, type NatState } from '../../src/nfs/nat.js';
import { ConnState, type FirewallState } from '../../src/nfs/firewall.js';
import { ByteReader } from '../../src/state/bytes.js';
import { flowDigestOf } from '../../src/state/digest.js';
import { LocalGlobalState } from '../../src/state/global-local.js';
import { DECISION_PENDING } from '../../src/state/global-strong.js';
import { NfsError } from '../../src/errors.js';
import type { NetworkFunction, PacketView, StateCodec } from '../../src/types.js';
import { Verdict } from '../../src/types.js';
import {
  decodeFull,
  Driver,
  encodeFull,
  expectConfigError,
  ip,
  parsed,
  TestContext,
  tcp,
  udp,
  writer,
} from '../../src/testing/driver.js';

/** An NF that logs each call as `name:seq` and counts its packets; `dropFrom` drops from that packet on. */
class Spy implements NetworkFunction<{ seen: number }> {
  readonly codec: StateCodec<{ seen: number }> = {
    encodeFull: (s, w) => w.u32(s.seen),
    decodeFull: (r) => ({ seen: r.u32() }),
    mark: (s) => s.seen,
    encodeDelta: (s, _since, w) => w.u32(s.seen),
    applyDelta: (s, r) => {
      s.seen = r.u32();
    },
  };
  /** initFlow throws DECISION_PENDING this many times first (a strong global decision to wait for). */
  pending = 0;

  constructor(
    readonly name: string,
    private readonly log: string[],
    private readonly dropFrom = Infinity,
  ) {}

  initFlow(): { seen: number } {
    if (this.pending > 0) {
      this.pending--;
      throw DECISION_PENDING;
    }
    this.log.push(`${this.name}:init`);
    return { seen: 0 };
  }

  process(pkt: PacketView, s: { seen: number }, ctx: { seq: number }): Verdict {
    s.seen++;
    this.log.push(`${this.name}:${ctx.seq}`);
    return ctx.seq >= this.dropFrom ? Verdict.DROP : Verdict.FORWARD;
  }

  releaseFlow(): void {}

  allocations(s: { seen: number }): Record<string, number> {
    return { [`${this.name}.seen`]: s.seen };
  }
}

function run(chain: Chain, bytes: Uint8Array, state: ChainState | undefined, seq: number) {
  const ctx = new TestContext(new LocalGlobalState());
  const pkt = parsed(bytes.slice());
  ctx.fill({ srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 17 }, seq, 1000 + seq);
  const s = state ?? chain.initFlow(pkt);
  return { state: s, verdict: chain.process(pkt, s, ctx) };
}

describe('Chain', { timeout: 60_000 }, () => {
  it("runs the initiator's packets first to last, every other packet last to first", () => {
    const log: string[] = [];
    const chain = new Chain([new Spy('a', log), new Spy('b', log), new Spy('c', log)]);
    const { state } = run(chain, udp('10.0.0.1', 1000, '192.0.2.1', 53), undefined, 1);
    run(chain, udp('192.0.2.1', 53, '10.0.0.1', 1000), state, 2);
    run(chain, udp('10.0.0.1', 1000, '192.0.2.1', 53), state, 3);
    assert.deepEqual(log, [
      'a:init',
      'a:1',
      'b:init',
      'b:1',
      'c:init',
      'c:1',
      'c:2',
      'b:2',
      'a:2',
      'a:3',
      'b:3',
      'c:3',
    ]);
    assert.equal(chain.name, 'a>b>c');
  });

  it('a packet an NF drops goes no further; the NFs after it make their part when a packet first reaches them', () => {
    const log: string[] = [];
    const gate = new Spy('gate', log);
    const chain = new Chain([new Spy('first', log, 2), gate]);
    const { state, verdict } = run(chain, udp('10.0.0.1', 1000, '192.0.2.1', 53), undefined, 1);
    assert.equal(verdict, Verdict.FORWARD);
    assert.equal(run(chain, udp('10.0.0.1', 1000, '192.0.2.1', 53), state, 2).verdict, Verdict.DROP);
    assert.deepEqual(log, ['first:init', 'first:1', 'gate:init', 'gate:1', 'first:2']);
    assert.deepEqual(chain.allocations(state), { 'first.seen': 2, 'gate.seen': 1 });
    assert.deepEqual(
      chain.parts(state).map((p) => p.nf.name),
      ['first', 'gate'],
    );
  });

  it('a packet held up by a decision at a later NF resumes there: the NFs before it see it once', () => {
    const log: string[] = [];
    const later = new Spy('nat', log);
    const chain = new Chain([new Spy('fw', log), later]);
    later.pending = 1;
    const bytes = udp('10.0.0.1', 1000, '192.0.2.1', 53);
    const state = chain.initFlow(parsed(bytes));
    assert.throws(
      () => run(chain, bytes, state, 1),
      (e) => e === DECISION_PENDING,
    );
    // The runtime runs the same packet again once the decision is in.
    assert.equal(run(chain, bytes, state, 1).verdict, Verdict.FORWARD);
    assert.deepEqual(log, ['fw:init', 'fw:1', 'nat:init', 'nat:1']);
    // A different packet after a wait starts from the beginning.
    later.pending = 0;
    run(chain, bytes, state, 2);
    assert.deepEqual(log.slice(4), ['fw:2', 'nat:2']);
  });

  it('each NF type once: two of one would share its pools', () => {
    assert.throws(() => new Chain([new Spy('a', []), new Spy('a', [])]), /appears twice/);
    assert.throws(() => new Chain([]), NfsError);
  });

  it('codec: deltas from the last mark, full parts where the mark is older or the part new; atomic apply', () => {
    const log: string[] = [];
    const chain = new Chain([new Spy('a', log), new Spy('b', log, 3)]);
    const { state } = run(chain, udp('10.0.0.1', 1000, '192.0.2.1', 53), undefined, 1);
    const old = chain.codec.mark(state);
    const full = encodeFull(chain, state);
    const latest = chain.codec.mark(state);
    run(chain, udp('10.0.0.1', 1000, '192.0.2.1', 53), state, 2);
    for (const mark of [old, latest]) {
      const w = writer();
      chain.codec.encodeDelta(state, mark, w);
      // The latest mark sends deltas (tag 1), an older one full parts (tag 2).
      assert.equal(w.view()[0], mark === latest ? 1 : 2);
      const replica = decodeFull(chain, full);
      chain.codec.applyDelta(replica, new ByteReader(w.view()));
      assert.deepEqual(replica, state);
      const cut = decodeFull(chain, full);
      assert.throws(() => {
        chain.codec.applyDelta(cut, new ByteReader(w.view().subarray(0, w.length - 1)));
      });
      assert.deepEqual(cut, decodeFull(chain, full), 'a bad delta leaves the replica as it was');
    }
    const bad = encodeFull(chain, state);
    bad[6] = 7;
    assert.throws(() => decodeFull(chain, bad), NfsError);
  });
});

describe('chain [firewall (strict), nat]', { timeout: 60_000 }, () => {
  function setup() {
    const global = new LocalGlobalState();
    const nf = createNf(
      'chain',
      {
        nfs: [
          {
            type: 'firewall',
            config: { strict: true, default: 'deny', rules: [{ action: 'allow', src: '10.0.0.0/8' }] },
          },
          { type: 'nat', config: { publicIp: '203.0.113.1', portFirst: 40000, portLast: 40009 } },
        ],
      },
      global,
    ) as NetworkFunction<ChainState>;
    return { nf, d: new Driver(nf, global, true) };
  }

  it('a connection the client opens: its packets leave translated, the replies come back translated and tracked', () => {
    const { d, nf } = setup();
    const syn = d.send(tcp('10.0.0.5', 5555, '192.0.2.9', 80, TcpFlag.SYN));
    assert.equal(syn.verdict, Verdict.FORWARD);
    assert.equal(syn.pkt.srcIp, ip('203.0.113.1'));
    const port = syn.pkt.srcPort;
    const synAck = d.send(tcp('192.0.2.9', 80, '203.0.113.1', port, TcpFlag.SYN | TcpFlag.ACK));
    assert.equal(synAck.flow, syn.flow);
    assert.equal(synAck.verdict, Verdict.FORWARD);
    assert.equal(synAck.pkt.dstIp, ip('10.0.0.5'));
    assert.equal(synAck.pkt.dstPort, 5555);
    d.send(tcp('10.0.0.5', 5555, '192.0.2.9', 80, TcpFlag.ACK));
    const [fw, nat] = syn.state.parts as [FirewallState, NatState];
    assert.equal(fw.conn, ConnState.ESTABLISHED, 'the firewall saw the reply as the responder’s, before NAT');
    assert.equal(fw.pktsRev, 1);
    assert.equal(nat.role, NatRole.OUTBOUND);
    assert.deepEqual(nf.allocations(syn.state), { [NAT_PORT_POOL]: port });
    const digest = flowDigestOf(nf, syn.state);
    assert.deepEqual(Object.keys(digest.parts ?? {}), ['firewall', 'nat']);
  });

  it('strict: a connection the outside opens never reaches the NAT', () => {
    const { d } = setup();
    const r = d.send(tcp('192.0.2.9', 80, '10.0.0.5', 5555, TcpFlag.ACK));
    assert.equal(r.verdict, Verdict.DROP);
    assert.deepEqual(
      r.state.parts.map((p) => p !== undefined),
      [true, false],
    );
  });

  it('config errors name the field', () => {
    const g = new LocalGlobalState();
    expectConfigError(() => createNf('chain', {}, g), 'nfs');
    expectConfigError(() => createNf('chain', { nfs: [] }, g), 'nfs');
    expectConfigError(() => createNf('chain', { nfs: [{ type: 'router' }] }, g), 'nfs[0].type');
    expectConfigError(() => createNf('chain', { nfs: [{ type: 'nat', config: 7 }] }, g), 'nfs[0].config');
    expectConfigError(
      () => createNf('chain', { nfs: [{ type: 'nat', publicIp: '1.2.3.4' }] }, g),
      'nfs[0].publicIp',
    );
    expectConfigError(
      () => createNf('chain', { nfs: [{ type: 'nat', config: { portFirst: 0 } }] }, g),
      'portFirst',
    );
  });
});
