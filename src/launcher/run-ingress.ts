/**
 * The ingress as a process (`nfstate role ingress`, or `nfstate ingress`): stamper and switch, and the admin
 * routes the controller drives it by — instances joining, the live set, the secondaries, the rules of moves
 * and failovers, and the flows and their owners.
 */
import { ErrorCode, NfsError } from '../errors.js';
import type { FlowOwner } from '../controller/records.js';
import { createLogger } from '../log.js';
import { adminCall } from '../admin-call.js';
import { flowKeyString, parseFlowKeyString } from '../packet/flow-key.js';
import type { Endpoint } from '../switch/ingress.js';
import { Ingress } from '../switch/ingress.js';
import { workerPorts } from '../nf/messages.js';
import { LinkType, PcapWriter } from '../traffic/pcap.js';
import type { FlowKey, Logger } from '../types.js';
import { StrongPools } from '../global/strong-pool.js';
import { HostTable } from '../edge/hosts.js';
import { createNf, loadNfModules } from '../nfs/index.js';
import { LocalGlobalState } from '../state/global-local.js';
import { StrongGlobalState } from '../state/global-strong.js';
import { ReplyMap } from '../switch/replies.js';
import { liveFlows, ruleFlows } from '../switch/openflow.js';
import { INGRESS_DOOR_PORT, programOvs } from '../switch/ovs.js';
import { openStore, type IngressSpec, flowList, serveAdmin, attach } from './roles.js';

export async function runIngress(spec: IngressSpec): Promise<void> {
  const logger = createLogger('ingress');
  const replies = await followReplies(spec, logger);
  const edge = spec.edge ?? undefined;
  const ingress = new Ingress(
    {
      host: spec.host,
      port: spec.port,
      servicePort: spec.servicePort,
      instances: spec.instances,
      vni: spec.vni,
      flowIdleMs: spec.flowIdleMs,
      ...(spec.stampLog === null ? {} : { stampLog: new PcapWriter(spec.stampLog, LinkType.RAW) }),
      ...(edge === undefined
        ? {}
        : {
            edge: {
              port: edge.vxlanPort,
              hosts: new HostTable(edge),
              ...(edge.egress === undefined ? {} : { egress: edge.egress }),
            },
          }),
      ...(replies === undefined ? {} : { replies: replies.map }),
      ...(spec.ovs === undefined ? {} : { ovs: { host: spec.ovs.host, port: INGRESS_DOOR_PORT } }),
    },
    logger,
  );
  const ports = await ingress.start();
  const ovs = spec.ovs === undefined ? undefined : openFlow(spec.ovs.mgmt, spec.vni);
  await ovs?.live(ingress.endpoints.map((_, i) => i));
  const { admin, sign } = await serveAdmin(spec, ingress);
  admin.route('GET', '/rules', () => ingress.switch.listRules());
  // Instances can join while it runs: the routes read the ingress's own, growing list.
  const instances = ingress.endpoints;
  admin.route('POST', '/rules', (body) => installRule(ingress, instances, body, ovs));
  admin.route('POST', '/live', (body) => setLive(ingress, instances, body, ovs));
  admin.route('GET', '/owner', (query) => ownerOf(ingress, instances, query));
  admin.route('POST', '/owner', (body) => ownersOf(ingress, instances, body));
  admin.route('GET', '/flows', (query) => flowsOf(ingress, instances, query));
  admin.route('POST', '/instances', (body) => addInstance(ingress, body));
  admin.route('POST', '/secondaries', (body) => setSecondaries(ingress, instances, body));
  if (spec.controller !== undefined) {
    // The answer names each instance's secondary: copies flow from the first packet on.
    const answer = await adminCall(
      spec.controller.host,
      spec.controller.admin,
      '/ingress',
      { host: spec.host, admin: admin.port, instances: instances.map((i) => i.id) },
      sign,
    );
    // Instances that registered after the launcher listed them for this ingress (a replacement, one added).
    if (Array.isArray(answer.instances))
      for (const missed of answer.instances) await addInstance(ingress, missed);
    if (Array.isArray(answer.live)) await setLive(ingress, instances, { instances: answer.live }, ovs);
    setSecondaries(ingress, instances, answer);
  }
  attach(
    {
      collect: (out) => {
        ingress.collect(out);
      },
      stop: async () => {
        await ingress.stop();
        await replies?.stop();
      },
    },
    admin,
    { ...ports, admin: admin.port },
  );
}

/**
 * Follows the deployment's log as every instance does, for the NF's pools alone (the ingress claims
 * nothing), so that the NF can tell whose connection a reply to a translated address belongs to. Undefined
 * when there is no log, or the NF translates no address.
 */
async function followReplies(
  spec: IngressSpec,
  logger: Logger,
): Promise<{ map: ReplyMap; stop: () => Promise<void> } | undefined> {
  if (spec.nf === undefined || spec.global === undefined) return undefined;
  const mirror = new StrongGlobalState(new LocalGlobalState());
  await loadNfModules(spec.nf);
  const nf = createNf(spec.nf.type, spec.nf.config, mirror);
  const replyOwner = nf.replyOwner?.bind(nf);
  if (replyOwner === undefined) return undefined;
  const store = await openStore(spec.global, logger);
  const pools = new StrongPools(store, { self: 'ingress' }, logger);
  for (const p of mirror.declared()) pools.define(p.name, p.first, p.last);
  const map = new ReplyMap(replyOwner);
  pools.onApplied = (data) => {
    mirror.applyLog([data]);
    map.changed();
  };
  await store.start();
  await pools.start();
  return {
    map,
    stop: async () => {
      await pools.stop();
      await store.stop();
    },
  };
}

/**
 * POST /secondaries { secondaries: { "nf-0": "nf-1", "nf-1": null, … } }: where copies of each named
 * instance's packets go (null: nowhere). Every entry is checked before any applies.
 */
function setSecondaries(
  ingress: Ingress,
  instances: readonly Endpoint[],
  body: unknown,
): { secondaries: Record<string, string | null> } {
  const given = ((body ?? {}) as Record<string, unknown>).secondaries;
  if (given === null || typeof given !== 'object' || Array.isArray(given))
    throw new NfsError(ErrorCode.CONFIG, 'secondaries: must map instance ids to instance ids or null');
  const index = (id: unknown, field: string): number => {
    const at = instances.findIndex((e) => e.id === id);
    if (at < 0) throw new NfsError(ErrorCode.CONFIG, `${field}: no instance ${JSON.stringify(id)}`);
    return at;
  };
  const pairs = Object.entries(given as Record<string, unknown>).map(([primary, secondary]) => [
    index(primary, 'secondaries'),
    secondary === null ? -1 : index(secondary, `secondaries.${primary}`),
  ]);
  for (const [p, s] of pairs) ingress.switch.setSecondary(p!, s!);
  const out: Record<string, string | null> = {};
  instances.forEach((e, i) => (out[e.id] = instances[ingress.switch.secondaryOf(i)]?.id ?? null));
  return { secondaries: out };
}

/**
 * POST /rules { flow: "udp 10.0.0.1:5000 198.51.100.10:80", primary: "nf-3", epoch, move? }
 * → { installed }, or many at once: { rules: [ … ] } → { installed: [ … ] }. Every rule of a list is checked
 * before any is installed, so a bad one changes nothing.
 */
async function installRule(
  ingress: Ingress,
  instances: readonly Endpoint[],
  body: unknown,
  ovs: OpenFlow | undefined,
): Promise<{ installed: boolean | boolean[] }> {
  const b = (body ?? {}) as Record<string, unknown>;
  const one = b.rules === undefined;
  if (!one && !Array.isArray(b.rules)) throw new NfsError(ErrorCode.CONFIG, 'rules: must be a list of rules');
  const rules = one
    ? [parseRule(instances, b, 'rule')]
    : (b.rules as unknown[]).map((r, i) => parseRule(instances, r, `rules[${i}]`));
  // Here first: a packet that OVS still classifies by the rule before is then sent by the new one.
  const installed = rules.map((r) => applyRule(ingress, r));
  await ovs?.rules(rules.filter((_, i) => installed[i]));
  return { installed: one ? installed[0]! : installed };
}

interface RuleRequest {
  key: FlowKey;
  spec: { primary: number; epoch: number };
  move: boolean;
}

function parseRule(instances: readonly Endpoint[], rule: unknown, field: string): RuleRequest {
  const b = (rule ?? {}) as Record<string, unknown>;
  const index = (name: string): number | undefined => {
    const v = b[name];
    if (v === undefined || v === null) return undefined;
    const i = instances.findIndex((e) => e.id === v);
    if (i < 0) throw new NfsError(ErrorCode.CONFIG, `${field}.${name}: no instance ${JSON.stringify(v)}`);
    return i;
  };
  if (typeof b.flow !== 'string')
    throw new NfsError(ErrorCode.CONFIG, `${field}.flow: must be a flow key string`);
  const primary = index('primary');
  if (primary === undefined) throw new NfsError(ErrorCode.CONFIG, `${field}.primary: required`);
  const epoch = b.epoch;
  if (typeof epoch !== 'number' || !Number.isInteger(epoch) || epoch < 0) {
    throw new NfsError(ErrorCode.CONFIG, `${field}.epoch: must be an integer >= 0`);
  }
  return { key: parseFlowKeyString(b.flow), spec: { primary, epoch }, move: b.move === true };
}

function applyRule(ingress: Ingress, r: RuleRequest): boolean {
  // A move also tells the old owner, with an end-of-move marker, that nothing more will come its way.
  return r.move ? ingress.repoint(r.key, r.spec) : ingress.switch.installRule(r.key, r.spec);
}

/**
 * POST /instances { id, host, port, workers? }: an instance joined; it owns no flow until `/live` lists it.
 * `workers` are its worker threads' ports, in order (Endpoint).
 */
async function addInstance(ingress: Ingress, body: unknown): Promise<{ id: string; index: number }> {
  const b = (body ?? {}) as Record<string, unknown>;
  if (typeof b.id !== 'string' || b.id === '')
    throw new NfsError(ErrorCode.CONFIG, 'instance.id: must be a non-empty string');
  if (typeof b.host !== 'string' || b.host === '')
    throw new NfsError(ErrorCode.CONFIG, 'instance.host: must be a non-empty string');
  const port = b.port;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)
    throw new NfsError(ErrorCode.CONFIG, 'instance.port: must be a port number 1..65535');
  const inst = { id: b.id, host: b.host, port, workers: workerPorts(b.workers, 'instance.workers') };
  return { id: b.id, index: await ingress.addInstance(inst) };
}

/** GET /owner?flow=…: the instance that owns a flow now. */
function ownerOf(ingress: Ingress, instances: readonly Endpoint[], query: unknown): { owner: string | null } {
  const flow = (query ?? {}) as Record<string, unknown>;
  if (typeof flow.flow !== 'string')
    throw new NfsError(ErrorCode.CONFIG, 'owner.flow: must be a flow key string');
  const at = ingress.switch.owner(parseFlowKeyString(flow.flow));
  return { owner: at < 0 ? null : instances[at]!.id };
}

/** POST /owner { flows: [ … ] }: the instance that owns each flow now (null: none is live). */
function ownersOf(
  ingress: Ingress,
  instances: readonly Endpoint[],
  body: unknown,
): { owners: (string | null)[] } {
  const keys = flowList(((body ?? {}) as Record<string, unknown>).flows, 'owner.flows');
  return {
    owners: keys.map((key) => {
      const at = ingress.switch.owner(key);
      return at < 0 ? null : (instances[at]?.id ?? null);
    }),
  };
}

/** POST /live { instances: ["nf-0", "nf-2"] }: the instances that own flows without a rule. */
async function setLive(
  ingress: Ingress,
  instances: readonly Endpoint[],
  body: unknown,
  ovs: OpenFlow | undefined,
): Promise<{ live: string[]; pinned: number }> {
  const list = (body ?? {}) as Record<string, unknown>;
  if (!Array.isArray(list.instances))
    throw new NfsError(ErrorCode.CONFIG, 'live.instances: must be a list of instance ids');
  const live = list.instances.map((id: unknown, i) => {
    const at = instances.findIndex((e) => e.id === id);
    if (at < 0)
      throw new NfsError(ErrorCode.CONFIG, `live.instances[${i}]: no instance ${JSON.stringify(id)}`);
    return at;
  });
  const pinned = ingress.setLive(live);
  await ovs?.live(live);
  return { live: live.map((i) => instances[i]!.id), pinned };
}

/** What this ingress writes to the OVS bridge that routes its traffic: each rule, and the live set. */
interface OpenFlow {
  rules(rules: readonly RuleRequest[]): Promise<void>;
  live(live: readonly number[]): Promise<void>;
}

function openFlow(mgmt: string, vni: number): OpenFlow {
  // One write at a time, in the order asked: two moves of one flow must reach OVS as they reached here.
  let last: Promise<void> = Promise.resolve();
  const write = (lines: string[]): Promise<void> => {
    const next = last.catch(() => undefined).then(() => programOvs(mgmt, lines));
    last = next;
    return next;
  };
  return {
    rules: (rules) => write(rules.flatMap((r) => ruleFlows(r.key, r.spec.primary, r.spec.epoch, vni))),
    live: (live) => write(liveFlows(live, vni)),
  };
}

/**
 * GET /flows[?owner=nf-3]: the flows running now (or one instance's), with owners and packets so far, and
 * the stamp clock as the list was made (`stamp_ms`: a failover fences the egress from there on).
 */
function flowsOf(
  ingress: Ingress,
  instances: readonly Endpoint[],
  query: unknown,
): { flows: FlowOwner[]; stamp_ms: number } {
  const owner = ((query ?? {}) as Record<string, unknown>).owner;
  const at = owner === undefined ? undefined : instances.findIndex((e) => e.id === owner);
  if (at === -1) throw new NfsError(ErrorCode.CONFIG, `flows.owner: no instance ${JSON.stringify(owner)}`);
  return {
    flows: ingress.flows(at).map((f) => ({
      flow: flowKeyString(f.key),
      owner: instances[f.owner]?.id ?? null,
      packets: f.packets,
    })),
    stamp_ms: ingress.stampTime(),
  };
}
