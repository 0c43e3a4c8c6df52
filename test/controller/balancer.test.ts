import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BalancerEnv, BalancerOptions } from '../../src/controller/balancer.js';
import { Balancer, DEFAULT_BALANCER } from '../../src/controller/balancer.js';
import { ManualClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';

/**
 * A deployment in miniature: instances in clusters, flows with packet rates, and the switch's per-flow
 * counters and the instances' processed counters advancing with simulated time. Load is rate over a
 * capacity of 1000 packets/s, so a flow of 200 packets/s is 0.2 of an instance.
 */
class Sim implements BalancerEnv {
  readonly clock = new ManualClock(0);
  readonly owner = new Map<string, string>();
  readonly rate = new Map<string, number>();
  readonly packets = new Map<string, number>();
  readonly processed = new Map<string, number>();
  readonly moves: { flow: string; from: string; to: string; at: number }[] = [];
  readonly asked: string[] = [];
  readonly refuse = new Set<string>();
  readonly lb: Balancer;

  constructor(
    private readonly members: { id: string; cluster: string }[],
    options: Partial<BalancerOptions> = {},
  ) {
    this.lb = new Balancer(
      { ...DEFAULT_BALANCER, capacityPps: 1000, ...options },
      this,
      silentLogger,
      this.clock,
    );
    for (const m of members) this.processed.set(m.id, 0);
  }

  flow(flow: string, on: string, pps: number): void {
    this.owner.set(flow, on);
    this.rate.set(flow, pps);
    this.packets.set(flow, this.packets.get(flow) ?? 0);
  }

  instances(): readonly { id: string; cluster: string | undefined }[] {
    return this.members;
  }

  flowPackets(id: string): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const [flow, on] of this.owner) if (on === id) out.set(flow, this.packets.get(flow)!);
    return Promise.resolve(out);
  }

  move(flows: string[], to: string): Promise<{ flow: string; aborted: boolean; duration_ms: number }[]> {
    return Promise.resolve(
      flows.map((flow) => {
        if (this.refuse.has(flow)) return { flow, aborted: true, duration_ms: 0 };
        this.moves.push({ flow, from: this.owner.get(flow)!, to, at: this.clock.now() });
        this.owner.set(flow, to);
        return { flow, aborted: false, duration_ms: 0 };
      }),
    );
  }

  needInstance(from: string): void {
    this.asked.push(from);
  }

  /** `ms` of traffic in report-sized steps, each followed by every instance's report and a round. */
  async run(ms: number): Promise<void> {
    for (let t = 0; t < ms; t += 100) {
      this.clock.advance(100);
      for (const [flow, pps] of this.rate) {
        this.packets.set(flow, this.packets.get(flow)! + pps / 10);
        const on = this.owner.get(flow)!;
        this.processed.set(on, this.processed.get(on)! + pps / 10);
      }
      for (const m of this.members) {
        this.lb.observe(m.id, {
          received: this.processed.get(m.id)!,
          processed: this.processed.get(m.id)!,
          flows: 0,
          busy: 0,
          queue: 0,
        });
      }
      await this.lb.tick();
    }
  }

  overloaded(id: string): boolean {
    const s = this.lb.status() as { instances: { id: string; overloaded: boolean }[] };
    return s.instances.find((i) => i.id === id)!.overloaded;
  }
}

const oneCluster = (...ids: string[]): { id: string; cluster: string }[] =>
  ids.map((id) => ({ id, cluster: 'c0' }));

describe('Balancer (the load-balancing unit)', { timeout: 60_000 }, () => {
  it('calls an instance overloaded only after sustainMs above high, and normal again only below low', async () => {
    const sim = new Sim(oneCluster('a', 'b'), { enabled: false });
    sim.flow('x', 'a', 900);
    await sim.run(300);
    assert.equal(sim.overloaded('a'), false, 'above high, but not for sustainMs yet');
    await sim.run(300);
    assert.equal(sim.overloaded('a'), true);
    sim.rate.set('x', 700);
    await sim.run(500);
    assert.equal(sim.overloaded('a'), true, 'between the watermarks it stays overloaded');
    sim.rate.set('x', 500);
    await sim.run(200);
    assert.equal(sim.overloaded('a'), false, 'below low it is normal again');
    sim.rate.set('x', 1000);
    await sim.run(200);
    assert.equal(sim.overloaded('a'), false, 'a short spike is not overload');
  });

  it('moves the heaviest flows to the least-loaded member of the cluster, then to another cluster, filling none past low', async () => {
    const sim = new Sim([
      { id: 'a', cluster: 'c0' },
      { id: 'b', cluster: 'c0' },
      { id: 'c', cluster: 'c0' },
      { id: 'd', cluster: 'c1' },
    ]);
    for (let i = 1; i <= 4; i++) sim.flow(`h${i}`, 'a', 200 - i);
    for (let i = 0; i < 10; i++) sim.flow(`l${i}`, 'a', 11);
    sim.flow('b0', 'b', 300);
    sim.flow('c0', 'c', 500);
    sim.flow('d0', 'd', 100);
    await sim.run(1000);
    assert.deepEqual(
      sim.moves.map((m) => [m.flow, m.from, m.to]),
      [
        ['h1', 'a', 'b'],
        ['h2', 'a', 'd'],
      ],
      'h1 fits b (0.3 + 0.2), not c (0.5 + 0.2); h2 no longer fits b, so it leaves the cluster',
    );
    await sim.run(2000);
    assert.equal(sim.moves.length, 2, 'a is under low now: nothing more moves');
    const s = sim.lb.status() as { intra: number; inter: number; moves: number };
    assert.deepEqual([s.moves, s.intra, s.inter], [2, 1, 1]);
    assert.deepEqual(sim.asked, []);
  });

  it('asks for another instance when no instance has room, and moves nothing', async () => {
    const sim = new Sim(oneCluster('a', 'b', 'c'));
    for (let i = 0; i < 5; i++) sim.flow(`h${i}`, 'a', 300);
    sim.flow('b0', 'b', 550);
    sim.flow('c0', 'c', 550);
    await sim.run(3000);
    assert.deepEqual(sim.moves, []);
    assert.deepEqual(sim.asked, ['a'], 'once, then it waits for an instance to come');
  });

  for (const cooldownMs of [0, 3000]) {
    it(`${cooldownMs === 0 ? 'without' : 'with'} a cooldown, a flow that just moved ${cooldownMs === 0 ? 'moves straight back' : 'stays put; another flow goes'}`, async () => {
      const sim = new Sim(oneCluster('a', 'b'), { cooldownMs });
      sim.flow('h', 'a', 500);
      sim.flow('x', 'a', 400);
      sim.flow('y', 'b', 50);
      await sim.run(1000);
      assert.deepEqual(
        sim.moves.map((m) => [m.flow, m.to]),
        [['h', 'b']],
      );
      // Now b is overloaded and a has room again.
      sim.rate.set('y', 400);
      sim.rate.set('x', 50);
      await sim.run(1500);
      assert.deepEqual(
        sim.moves.map((m) => [m.flow, m.to]),
        cooldownMs === 0
          ? [
              ['h', 'b'],
              ['h', 'a'],
            ]
          : [
              ['h', 'b'],
              ['y', 'a'],
            ],
      );
    });
  }

  it('keeps no cooldown for a flow whose move aborted, and tries it again after the instance settles', async () => {
    const sim = new Sim(oneCluster('a', 'b'));
    sim.flow('h', 'a', 500);
    sim.flow('x', 'a', 400);
    sim.refuse.add('h');
    await sim.run(800);
    const first = (sim.lb.status() as { aborted: number }).aborted;
    assert.ok(first >= 1, 'the refused move is recorded as aborted');
    sim.refuse.clear();
    await sim.run(1000);
    assert.deepEqual(
      sim.moves.map((m) => [m.flow, m.to]),
      [['h', 'b']],
    );
  });

  it('does nothing while disabled', async () => {
    const sim = new Sim(oneCluster('a', 'b'), { enabled: false });
    sim.flow('h', 'a', 2000);
    await sim.run(2000);
    assert.deepEqual(sim.moves, []);
  });
});
