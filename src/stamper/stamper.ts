/**
 * The stamper: gives every packet its flow's next sequence number (1, 2, 3 …) and an ingress time.
 * Those two numbers are the total order per flow that every later stage relies on: reordering, batches,
 * moves and replay are all exact because of them.
 *
 *   const s = new Stamper({ flowIdleMs: 60_000 });
 *   const seq = s.next(pkt, hash, now); // then write seq and time into the packet's stamp
 *
 * Idle flows are forgotten through one coarse timer wheel. A forgotten flow that comes back starts again
 * at 1; NF instances keep flows longer than the stamper does (see nf/processor.ts), so the restart is
 * seen as a new flow there too.
 */
import { flowKeyOf } from '../packet/flow-key.js';
import { FlowTable, type FlowVisitor } from '../packet/flow-table.js';
import { TimerWheel } from '../timer-wheel.js';
import type { FlowKey, MetricSample, MetricSource } from '../types.js';

class StampedFlow {
  seq = 0;
  lastSeen = 0;
  constructor(readonly key: FlowKey) {}
}

export class Stamper implements MetricSource {
  private readonly flows = new FlowTable<StampedFlow>();
  private readonly idle: TimerWheel<StampedFlow>;
  stamped = 0;
  flowsCreated = 0;
  flowsExpired = 0;

  constructor(private readonly options: { flowIdleMs: number }) {
    this.idle = new TimerWheel<StampedFlow>(Math.max(1, Math.min(1000, options.flowIdleMs / 8)), 64);
  }

  /**
   * The next sequence number of a flow — the packet's own (a PacketView is a FlowKey), or the connection a
   * reply to a translated address belongs to.
   */
  next(id: FlowKey, now: number): number {
    let flow = this.flows.getFlow(id);
    if (flow === undefined) {
      const key = flowKeyOf(id);
      flow = new StampedFlow(key);
      this.flows.set(key, flow);
      this.flowsCreated++;
      this.idle.add(flow, now + this.options.flowIdleMs);
    }
    flow.lastSeen = now;
    this.stamped++;
    return ++flow.seq;
  }

  /** The last sequence number given to a flow's packets (0 if it has none). */
  lastSeq(key: FlowKey): number {
    return this.flows.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto)?.seq ?? 0;
  }

  /**
   * The flows it is numbering now, each with its last sequence number, which is also its packet count
   * (not hot path: membership changes and flow statistics walk them).
   */
  *counts(): IterableIterator<[FlowKey, number]> {
    for (const [key, flow] of this.flows.entries()) yield [key, flow.seq];
  }

  /** The flows it is numbering now, each as its 5-tuple (not hot path: a change of membership walks them). */
  forEachFlow(visit: FlowVisitor): void {
    this.flows.forEachKey(visit);
  }

  get size(): number {
    return this.flows.size;
  }

  tick(now: number): void {
    this.idle.advance(now, (flow) => {
      const deadline = flow.lastSeen + this.options.flowIdleMs;
      if (deadline > now) {
        this.idle.add(flow, deadline);
      } else {
        this.flows.delete(flow.key);
        this.flowsExpired++;
      }
    });
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_stamper_packets_total', {}, this.stamped]);
    out.push(['nfstate_stamper_flows', {}, this.flows.size]);
    out.push(['nfstate_stamper_flows_created_total', {}, this.flowsCreated]);
    out.push(['nfstate_stamper_flows_expired_total', {}, this.flowsExpired]);
  }
}
