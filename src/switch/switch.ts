/**
 * The switch: where each stamped packet goes. Exact rules, installed by the controller for flows it has
 * placed (moves, failovers), win; every other flow goes to a default owner by Maglev consistent hashing
 * over the live instances, so a change of membership moves only about 1/N of the flows. Rules carry an
 * epoch so a stale one is recognisable. Each instance may have a secondary (the controller names it: the
 * next member of its cluster), which receives a copy of every packet of the instance's flows.
 *
 *   const sw = new Switch(['nf-0', 'nf-1']);
 *   sw.installRule(key, { primary: 1, epoch: 2 });
 *   sw.setSecondary(1, 0);
 *   const route = sw.route(pkt, hash, pkt.length); // route.primary, route.secondary (-1: none), route.epoch
 */
import { ErrorCode, NfsError } from '../errors.js';
import { canonicalKey, flowHash, flowKeyString } from '../packet/flow-key.js';
import { FlowTable, type FlowVisitor } from '../packet/flow-table.js';
import type { FlowKey, MetricSample, MetricSource } from '../types.js';
import { Maglev } from './maglev.js';

/** Where a packet goes: indexes into the switch's instance list. */
export interface Route {
  primary: number;
  /** -1 when the flow has no secondary. */
  secondary: number;
  epoch: number;
}

export class Rule {
  packets = 0;
  bytes = 0;
  constructor(
    readonly key: FlowKey,
    public primary: number,
    public epoch: number,
  ) {}
}

export interface RuleSpec {
  primary: number;
  epoch: number;
}

export class Switch implements MetricSource {
  private readonly rules = new FlowTable<Rule>();
  private maglev: Maglev;
  private live: number[] = [];
  /** Epoch of the default (hashed) placement; bumped whenever the live set changes. */
  private defaultEpoch = 1;
  /** The route `route` returns, filled in place. */
  private readonly out: Route = { primary: -1, secondary: -1, epoch: 1 };
  /** By instance index: its secondary's index, or -1. */
  private readonly secondaries: number[] = [];
  defaultPackets = 0;
  staleRules = 0;

  private readonly instances: string[];

  constructor(instances: readonly string[]) {
    this.instances = [...instances];
    this.maglev = new Maglev([]);
    this.setLive(instances.map((_, i) => i));
  }

  /**
   * An instance joined: it can be named in rules at once, and owns flows by default once `setLive` lists
   * it. Returns its index; an id already known keeps its index.
   */
  addInstance(id: string): number {
    const known = this.instances.indexOf(id);
    if (known >= 0) return known;
    return this.instances.push(id) - 1;
  }

  /** How many instances rules may name (indexes 0 to size - 1). */
  get size(): number {
    return this.instances.length;
  }

  /**
   * The instances that may own flows by default (indexes into the instance list). Each flow `running` visits
   * keeps its owner: one that has no rule and whose default owner changes gets a pin, a rule of epoch 0 (the
   * weakest, so the controller's next rule for it always wins). Returns how many were pinned. Only a changed
   * default costs more than a hash and two table reads, so a large deployment's failover is not held up here.
   */
  setLive(live: readonly number[], running?: (visit: FlowVisitor) => void): number {
    for (const i of live) this.check(i);
    const was = this.maglev;
    const wasLive = this.live;
    this.live = [...live];
    this.maglev = new Maglev(this.live.map((i) => this.instances[i]!));
    this.defaultEpoch++;
    let pinned = 0;
    running?.((srcIp, dstIp, srcPort, dstPort, proto) => {
      if (this.rules.get(srcIp, dstIp, srcPort, dstPort, proto) !== undefined) return;
      const hash = flowHash(srcIp, dstIp, srcPort, dstPort, proto);
      const before = was.lookup(hash);
      const after = this.maglev.lookup(hash);
      const owner = before < 0 ? -1 : wasLive[before]!;
      if (owner < 0 || (after >= 0 && this.live[after] === owner)) return;
      this.installRule(canonicalKey(srcIp, dstIp, srcPort, dstPort, proto), { primary: owner, epoch: 0 });
      pinned++;
    });
    return pinned;
  }

  /** Copies of `primary`'s packets go to `secondary` from now on (-1: to none). */
  setSecondary(primary: number, secondary: number): void {
    this.check(primary);
    if (secondary !== -1) this.check(secondary);
    while (this.secondaries.length <= primary) this.secondaries.push(-1);
    this.secondaries[primary] = secondary;
  }

  secondaryOf(primary: number): number {
    return this.secondaries[primary] ?? -1;
  }

  /** Installs or replaces a flow's rule; a rule older than the installed one is refused (false). */
  installRule(key: FlowKey, spec: RuleSpec): boolean {
    this.check(spec.primary);
    const existing = this.rules.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (existing !== undefined) {
      if (spec.epoch < existing.epoch) {
        this.staleRules++;
        return false;
      }
      existing.primary = spec.primary;
      existing.epoch = spec.epoch;
      return true;
    }
    this.rules.set(key, new Rule(key, spec.primary, spec.epoch));
    return true;
  }

  /** A flow's rule, if it has one. */
  ruleOf(key: FlowKey): Rule | undefined {
    return this.rules.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
  }

  /**
   * Where a packet of flow `id` (the packet itself, or the connection a reply belongs to) goes; `hash` is
   * the flow's, `bytes` the packet's length. The answer is valid until the next call.
   */
  route(id: FlowKey, hash: number, bytes: number): Route {
    const out = this.out;
    const rule = this.rules.size > 0 ? this.rules.getFlow(id) : undefined;
    if (rule !== undefined) {
      rule.packets++;
      rule.bytes += bytes;
      out.primary = rule.primary;
      out.epoch = rule.epoch;
    } else {
      this.defaultPackets++;
      const at = this.maglev.lookup(hash);
      out.primary = at < 0 ? -1 : this.live[at]!;
      out.epoch = this.defaultEpoch;
    }
    out.secondary = out.primary < 0 ? -1 : (this.secondaries[out.primary] ?? -1);
    return out;
  }

  /** Which instance owns a flow now: its rule's primary, or the default placement. -1 if none is live. */
  owner(key: FlowKey): number {
    const rule = this.rules.get(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto);
    if (rule !== undefined) return rule.primary;
    const at = this.maglev.lookup(flowHash(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto));
    return at < 0 ? -1 : this.live[at]!;
  }

  listRules(): {
    flow: string;
    primary: string;
    secondary: string | null;
    epoch: number;
    packets: number;
    bytes: number;
  }[] {
    return [...this.rules.entries()].map(([key, r]) => ({
      flow: flowKeyString(key),
      primary: this.instances[r.primary]!,
      secondary: this.instances[this.secondaryOf(r.primary)] ?? null,
      epoch: r.epoch,
      packets: r.packets,
      bytes: r.bytes,
    }));
  }

  collect(out: MetricSample[]): void {
    out.push(['nfstate_switch_rules', {}, this.rules.size]);
    out.push(['nfstate_switch_default_packets_total', {}, this.defaultPackets]);
    out.push(['nfstate_switch_stale_rules_total', {}, this.staleRules]);
    // Per flow only the controller's rules: a pin (epoch 0) is every running flow's at a change of the live
    // set, and every flow's behind an OVS bridge, which would make a series of each flow.
    for (const [key, r] of this.rules.entries()) {
      if (r.epoch === 0) continue;
      const labels = { flow: flowKeyString(key) };
      out.push(['nfstate_switch_rule_packets_total', labels, r.packets]);
      out.push(['nfstate_switch_rule_bytes_total', labels, r.bytes]);
    }
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.instances.length) {
      throw new NfsError(ErrorCode.CONFIG, `rule: no instance ${index} (have ${this.instances.length})`);
    }
  }
}
