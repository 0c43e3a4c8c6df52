/**
 * The deployment topology: which NF runs, how many instances in how many clusters, batch and reorder
 * bounds, and where each role binds. Read from YAML (camelCase keys), validated field by field, with
 * defaults applied; docs/configuration.md is the reference.
 *
 *   const topo = loadTopology('deploy.yaml');
 *   // deploy.yaml:4: clusters: must be an integer >= 1 (got "three")
 *   // deploy.yaml:2: unknown field 'clustrs' (did you mean 'clusters'?)
 *
 *   const inline = parseTopology({ nf: { type: 'nat' }, clusters: 2 });
 *   inline.perCluster; // 4, the default
 *
 * Validation stops at the first bad field and names it by its dotted path. Unknown fields are rejected at
 * every level, because a misspelt key that silently falls back to a default is the worst config bug.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { isMap, isPair, isScalar, LineCounter, parseDocument, Parser } from 'yaml';
import type { CST, Document } from 'yaml';
import { ErrorCode, NfsError } from '../errors.js';
import {
  FieldError,
  bool,
  describe,
  hostPortOrNull,
  int,
  ipv4,
  isMapping,
  mapping,
  oneOf,
  pathOrNull,
  positive,
  section,
  urls,
  type Mapping,
} from './config-fields.js';
import type { BalancerOptions } from '../controller/balancer.js';
import { DEFAULT_BALANCER } from '../controller/balancer.js';
import { DEFAULT_MOVE_TIMEOUT_MS } from '../controller/mover.js';
import type { FailureOptions } from '../controller/detector.js';
import { DEFAULT_FAILURE } from '../controller/detector.js';
import { DEFAULT_EDGE, type EdgeConfig, type HostConfig } from '../edge/hosts.js';
import { CHAIN_TYPE, isNfModule, isNfType, nfTypes, type NfType } from '../nfs/index.js';
import { parseCidr } from '../packet/flow-key.js';
import { MAX_THREADS } from '../nf/messages.js';

export interface Topology {
  /**
   * The NF every instance runs: a built-in type with its config, an NF module (`nf.module` in the file; its
   * type is the module's absolute path), or a service chain (`chain:` in the file), which is the type
   * `chain` with `config.nfs` listing the chain's NFs in order (nfs/chain.ts).
   */
  readonly nf: {
    readonly type: string;
    /** Passed as-is to the NF's factory, which validates it. */
    readonly config: Readonly<Record<string, unknown>>;
  };
  readonly clusters: number;
  readonly perCluster: number;
  /**
   * Instances that can be added while the deployment runs. Shared pools (NAT ports) are split from the
   * start among clusters × perCluster + spareInstances instances, so a newcomer has a slice of its own.
   */
  readonly spareInstances: number;
  /** Worker threads per NF instance. */
  readonly threads: number;
  readonly batch: { readonly size: number; readonly timeoutMs: number };
  /** Per flow: out-of-order packets held while waiting for a gap, and how long a gap may stay open. */
  readonly reorder: { readonly maxHeld: number; readonly gapTimeoutMs: number };
  readonly flowIdleMs: number;
  /** Bind address of every role. */
  readonly host: string;
  readonly ingress: { readonly port: number; readonly servicePort: number; readonly adminPort: number };
  /** "host:port" to forward the payloads of delivered packets to, or null. */
  readonly egress: { readonly deliver: string | null };
  readonly sink: { readonly port: number; readonly pcap: string | null };
  /** Geneve virtual network identifier. */
  readonly vni: number;
  /**
   * Where each instance sends its batches' state changes: `cluster` (its cluster's other members),
   * `all` (every other instance: the no-cluster baseline) or `off`.
   */
  readonly replication: Replication;
  /** When processed packets leave: at once, or once their batch is acknowledged by the peers. */
  readonly release: Release;
  /** The controller's load-balancing unit (see controller/balancer.ts). */
  readonly lb: Readonly<BalancerOptions>;
  /** Flow moves: the deadline up to the re-point, past which a move aborts. */
  readonly move: { readonly timeoutMs: number };
  /** The controller's failure detection unit (see controller/detector.ts). */
  readonly failure: Readonly<FailureOptions>;
  /**
   * Where strong global state (the NAT's port pool) is decided: `local`, a log the controller keeps (one
   * machine); `etcd`, a log in the etcd cluster at `endpoints`; `none`, no log: every worker has its own
   * share of each pool, and a flow re-created after a failover may get another value.
   */
  readonly global: { readonly store: GlobalStoreKind; readonly endpoints: readonly string[] };
  /** Real hosts at the edge, through their kernel vxlan devices (edge/hosts.ts); null: none. */
  readonly edge: EdgeConfig | null;
}

export const GLOBAL_STORES = ['local', 'etcd', 'none'] as const;
export type GlobalStoreKind = (typeof GLOBAL_STORES)[number];

export const RELEASE_MODES = ['immediate', 'after-replication'] as const;
export type Release = (typeof RELEASE_MODES)[number];

export const REPLICATION_MODES = ['cluster', 'all', 'off'] as const;
export type Replication = (typeof REPLICATION_MODES)[number];

/** The thesis's deployment: 3 clusters of 4 instances, 2 worker threads each. */
export const THESIS_SHAPE = { clusters: 3, perCluster: 4, threads: 2 } as const;

/**
 * The demo's shape on a machine with `cores` cores, when no flag or file names one. The thesis's twelve
 * instances, their 24 workers, the ingress, the sink and the controller need a core each to show the
 * deployment's own latency; on fewer, they measure the scheduler (every hop waits for a core). Two
 * clusters of two, one worker each, still have moves inside and across clusters and a secondary for
 * every flow.
 */
export function machineShape(cores: number): { clusters: number; perCluster: number; threads: number } {
  return cores >= 12 ? { ...THESIS_SHAPE } : { clusters: 2, perCluster: 2, threads: 1 };
}

/** Every default; `nf.type` has none and must be given. */
export const DEFAULT_TOPOLOGY: Readonly<Omit<Topology, 'nf'>> = deepFreeze({
  ...THESIS_SHAPE,
  spareInstances: 4,
  batch: { size: 30, timeoutMs: 50 },
  reorder: { maxHeld: 1024, gapTimeoutMs: 250 },
  flowIdleMs: 60_000,
  host: '127.0.0.1',
  ingress: { port: 0, servicePort: 0, adminPort: 0 },
  egress: { deliver: null },
  sink: { port: 0, pcap: null },
  vni: 1,
  replication: 'cluster',
  release: 'immediate',
  lb: DEFAULT_BALANCER,
  move: { timeoutMs: DEFAULT_MOVE_TIMEOUT_MS },
  failure: { ...DEFAULT_FAILURE },
  global: { store: 'local', endpoints: [] },
  edge: null,
});

const MAX_BATCH = 100_000;
const MAX_VNI = 0xffffff;
/** A move's source waits this long at most for a hand-over (see launcher/run-nf.ts, /move/finish). */
const MAX_MOVE_TIMEOUT_MS = 60_000;
const MAX_HEARTBEAT_MS = 60_000;
const MAX_MISS_COUNT = 1000;

const FIELDS = {
  root: [
    'nf',
    'chain',
    'clusters',
    'perCluster',
    'spareInstances',
    'threads',
    'batch',
    'reorder',
    'flowIdleMs',
    'host',
    'ingress',
    'egress',
    'sink',
    'vni',
    'replication',
    'release',
    'lb',
    'move',
    'failure',
    'global',
    'edge',
  ],
  nf: ['type', 'module', 'config'],
  edge: ['vxlanPort', 'vtepPort', 'mac', 'hosts'],
  host: ['prefix', 'vtep', 'vni', 'gateway'],
  batch: ['size', 'timeoutMs'],
  reorder: ['maxHeld', 'gapTimeoutMs'],
  ingress: ['port', 'servicePort', 'adminPort'],
  egress: ['deliver'],
  sink: ['port', 'pcap'],
  move: ['timeoutMs'],
  failure: ['heartbeatMs', 'missCount', 'probeMs'],
  global: ['store', 'endpoints'],
  lb: [
    'enabled',
    'high',
    'low',
    'sustainMs',
    'settleMs',
    'cooldownMs',
    'capacityPps',
    'queueLimit',
    'maxMovesPerRound',
  ],
} as const;

/**
 * Validates a parsed topology and applies defaults. Throws NfsError CONFIG `'<field path>: <problem>'`
 * for the first bad field; `where` names the value itself in the message when the value as a whole is
 * wrong (not a mapping).
 */
export function parseTopology(obj: unknown, where = 'topology', dir = process.cwd()): Topology {
  try {
    return validate(obj, where, dir);
  } catch (err) {
    if (err instanceof FieldError) throw new NfsError(ErrorCode.CONFIG, err.message);
    throw err;
  }
}

/**
 * Reads and validates a YAML topology file. Errors name the file and, where known, the line:
 * `deploy.yaml:7: batch.size: must be an integer 1..100000 (got 0)`.
 */
export function loadTopology(path: string): Topology {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new NfsError(ErrorCode.CONFIG, `${path}: cannot read topology file (${reason})`, { cause: err });
  }
  const lines = new LineCounter();
  const deep = tooDeep(text);
  if (deep !== undefined) {
    throw new NfsError(
      ErrorCode.CONFIG,
      `${path}:${lines.linePos(deep).line}: nested more than ${MAX_NESTING} levels deep`,
    );
  }
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const syntax = doc.errors[0];
  if (syntax !== undefined) {
    const pos = syntax.linePos?.[0] ?? lines.linePos(syntax.pos[0]);
    const what = syntax.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    throw new NfsError(ErrorCode.CONFIG, `${path}:${pos.line}:${pos.col}: YAML syntax error: ${what}`, {
      cause: syntax,
    });
  }
  let value: unknown;
  try {
    value = doc.toJS();
  } catch (err) {
    // For example more aliases than the parser allows (the "billion laughs" guard).
    throw new NfsError(ErrorCode.CONFIG, `${path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    return validate(value, 'topology', dirname(resolve(path)));
  } catch (err) {
    if (!(err instanceof FieldError)) throw err;
    const line = lineOf(doc, lines, err.path);
    throw new NfsError(ErrorCode.CONFIG, `${path}${line === undefined ? '' : `:${line}`}: ${err.message}`);
  }
}

/**
 * Far deeper than any topology. The YAML composer recurses once per level of nesting, and a file nested
 * thousands of levels deep exhausts the stack there; a second such file in the same process can then end
 * it (V8 aborts compiling a regular expression with no stack left), which no try/catch prevents.
 */
const MAX_NESTING = 64;

/**
 * The offset of the first collection nested deeper than MAX_NESTING, or undefined. Walks the parser's
 * concrete syntax tree, which is built without recursion, with a stack of its own.
 */
function tooDeep(text: string): number | undefined {
  const stack: [CST.Token, number][] = [];
  for (const token of new Parser().parse(text)) stack.push([token, 0]);
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [token, depth] = top;
    if (depth > MAX_NESTING) return token.offset;
    if (token.type === 'document' && token.value !== undefined) stack.push([token.value, depth]);
    if (token.type === 'block-map' || token.type === 'block-seq' || token.type === 'flow-collection') {
      for (const item of token.items) {
        if (item.key != null) stack.push([item.key, depth + 1]);
        if (item.value != null) stack.push([item.value, depth + 1]);
      }
    }
  }
  return undefined;
}

/** What a topology runs, for people: `nat`, or a chain's types in order, `firewall>nat`. */
export function nfLabel(nf: Topology['nf']): string {
  const name = (type: string): string => (isNfModule(type) ? basename(type).replace(/\.m?js$/, '') : type);
  if (nf.type !== CHAIN_TYPE) return name(nf.type);
  return (nf.config.nfs as { type: string }[]).map((n) => name(n.type)).join('>');
}

/** `dir`: where the file is, which an `nf.module` path is relative to. */
function validate(obj: unknown, where: string, dir: string): Topology {
  if (obj === null || obj === undefined) {
    throw new FieldError([], `${where}: is empty (expected a mapping with at least nf.type)`);
  }
  const root = mapping(obj, [], where, FIELDS.root);
  const d = DEFAULT_TOPOLOGY;
  const nf = root.chain === undefined ? nfSection(root.nf, dir) : chainSection(root, dir);

  const batch = section(root, 'batch', FIELDS.batch);
  const reorder = section(root, 'reorder', FIELDS.reorder);
  const ingress = section(root, 'ingress', FIELDS.ingress);
  const egress = section(root, 'egress', FIELDS.egress);
  const sink = section(root, 'sink', FIELDS.sink);
  const move = section(root, 'move', FIELDS.move);
  const failure = section(root, 'failure', FIELDS.failure);
  const global = section(root, 'global', FIELDS.global);
  const store = oneOf(global, ['global', 'store'], GLOBAL_STORES, d.global.store);
  const endpoints = urls(global, ['global', 'endpoints']);
  if (store === 'etcd' && endpoints.length === 0)
    throw new FieldError(['global', 'endpoints'], "global.endpoints: etcd needs its members' client URLs");
  const lb = section(root, 'lb', FIELDS.lb);
  const high = positive(lb, ['lb', 'high'], d.lb.high);
  const low = positive(lb, ['lb', 'low'], d.lb.low);
  if (low >= high)
    throw new FieldError(['lb', 'low'], `lb.low: must be below lb.high (${high}) (got ${low})`);

  return {
    nf,
    clusters: int(root, ['clusters'], d.clusters, 1),
    perCluster: int(root, ['perCluster'], d.perCluster, 1),
    spareInstances: int(root, ['spareInstances'], d.spareInstances, 0),
    threads: int(root, ['threads'], d.threads, 1, MAX_THREADS),
    batch: {
      size: int(batch, ['batch', 'size'], d.batch.size, 1, MAX_BATCH),
      timeoutMs: positive(batch, ['batch', 'timeoutMs'], d.batch.timeoutMs),
    },
    reorder: {
      maxHeld: int(reorder, ['reorder', 'maxHeld'], d.reorder.maxHeld, 1),
      gapTimeoutMs: positive(reorder, ['reorder', 'gapTimeoutMs'], d.reorder.gapTimeoutMs),
    },
    flowIdleMs: positive(root, ['flowIdleMs'], d.flowIdleMs),
    host: ipv4(root, ['host'], d.host),
    ingress: {
      port: int(ingress, ['ingress', 'port'], d.ingress.port, 0, 65535),
      servicePort: int(ingress, ['ingress', 'servicePort'], d.ingress.servicePort, 0, 65535),
      adminPort: int(ingress, ['ingress', 'adminPort'], d.ingress.adminPort, 0, 65535),
    },
    egress: { deliver: hostPortOrNull(egress, ['egress', 'deliver']) },
    sink: {
      port: int(sink, ['sink', 'port'], d.sink.port, 0, 65535),
      pcap: pathOrNull(sink, ['sink', 'pcap']),
    },
    vni: int(root, ['vni'], d.vni, 0, MAX_VNI),
    replication: oneOf(root, ['replication'], REPLICATION_MODES, d.replication),
    release: oneOf(root, ['release'], RELEASE_MODES, d.release),
    lb: {
      enabled: bool(lb, ['lb', 'enabled'], d.lb.enabled),
      high,
      low,
      sustainMs: int(lb, ['lb', 'sustainMs'], d.lb.sustainMs, 0),
      settleMs: int(lb, ['lb', 'settleMs'], d.lb.settleMs, 0),
      cooldownMs: int(lb, ['lb', 'cooldownMs'], d.lb.cooldownMs, 0),
      capacityPps: int(lb, ['lb', 'capacityPps'], d.lb.capacityPps, 0),
      queueLimit: int(lb, ['lb', 'queueLimit'], d.lb.queueLimit, 1),
      maxMovesPerRound: int(lb, ['lb', 'maxMovesPerRound'], d.lb.maxMovesPerRound, 1),
    },
    move: { timeoutMs: int(move, ['move', 'timeoutMs'], d.move.timeoutMs, 1, MAX_MOVE_TIMEOUT_MS) },
    failure: {
      heartbeatMs: int(failure, ['failure', 'heartbeatMs'], d.failure.heartbeatMs, 1, MAX_HEARTBEAT_MS),
      // One lost datagram must not fail an instance: at least two intervals of silence.
      missCount: int(failure, ['failure', 'missCount'], d.failure.missCount, 2, MAX_MISS_COUNT),
      probeMs: int(failure, ['failure', 'probeMs'], d.failure.probeMs, 0, MAX_HEARTBEAT_MS),
    },
    global: { store, endpoints },
    edge: root.edge === undefined || root.edge === null ? null : edgeSection(root.edge),
  };
}

function nfSection(v: unknown, dir: string): Topology['nf'] {
  const nf = mapping(v ?? {}, ['nf'], 'nf', FIELDS.nf);
  return { type: typeOrModule(nf, ['nf'], dir), config: { ...nfConfig(nf.config, ['nf', 'config']) } };
}

/**
 * `type: nat`, or `module: ./my-nf.js` (relative to the topology file): an NF of one's own, whose type is
 * the module's absolute path (nfs/index.ts). The module is imported where the NF runs, not here.
 */
function typeOrModule(nf: Mapping, path: readonly string[], dir: string): string {
  // A parsed topology holds a module's absolute path as its type: parsing it again keeps it.
  if (nf.module === undefined && typeof nf.type === 'string' && isNfModule(nf.type))
    return modulePath(nf.type, [...path, 'type'], dir);
  if (nf.module === undefined) return nfType(nf.type, [...path, 'type']);
  const at = [...path, 'module'];
  const field = fieldName(at);
  if (nf.type !== undefined) throw new FieldError(at, `${field}: give type or module, not both`);
  return modulePath(nf.module, at, dir);
}

function modulePath(v: unknown, at: readonly string[], dir: string): string {
  const field = fieldName(at);
  if (typeof v !== 'string' || !/\.(m?js)$/.test(v))
    throw new FieldError(
      at,
      `${field}: must be the path of a JavaScript module, *.js or *.mjs (got ${describe(v)})`,
    );
  const file = resolve(dir, v);
  if (!existsSync(file)) throw new FieldError(at, `${field}: no such file ${file}`);
  return file;
}

/** `chain[1].module` for a chain's entries, the path otherwise. */
function fieldName(path: readonly string[]): string {
  return path[0] === 'chain' && path.length >= 2
    ? [`chain[${path[1]}]`, ...path.slice(2)].join('.')
    : path.join('.');
}

function nfConfig(v: unknown, path: readonly string[]): Mapping {
  const config = v ?? {};
  if (!isMapping(config))
    throw new FieldError(path, `${path.join('.')}: must be a mapping (got ${describe(config)})`);
  return config;
}

/** `chain: [firewall, { type: nat, config: { … } }]`: the NFs in order, each once. */
function chainSection(root: Mapping, dir: string): Topology['nf'] {
  if (root.nf !== undefined)
    throw new FieldError(['chain'], 'chain: give either nf (one NF) or chain (a list of them), not both');
  const list = root.chain;
  if (!Array.isArray(list) || list.length === 0)
    throw new FieldError(['chain'], `chain: must be a non-empty list of NF types (got ${describe(list)})`);
  const nfs = list.map((entry: unknown, i) => {
    const path = ['chain', String(i)];
    if (typeof entry === 'string')
      return { type: /\.m?js$/.test(entry) ? modulePath(entry, path, dir) : nfType(entry, path), config: {} };
    const m = mapping(entry, path, `chain[${i}]`, FIELDS.nf);
    return {
      type: typeOrModule(m, path, dir),
      config: { ...nfConfig(m.config, [...path, 'config']) },
    };
  });
  const twice = nfs.find((n, i) => nfs.findIndex((m) => m.type === n.type) !== i);
  if (twice !== undefined)
    throw new FieldError(['chain'], `chain: ${twice.type} appears twice (each NF may appear once)`);
  return { type: CHAIN_TYPE, config: { nfs } };
}

/** The `edge` section: the host networks behind real hosts' VTEPs (edge/hosts.ts). */
function edgeSection(v: unknown): EdgeConfig {
  const edge = mapping(v, ['edge'], 'edge', FIELDS.edge);
  const mac = edge.mac ?? DEFAULT_EDGE.mac;
  if (typeof mac !== 'string' || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac))
    throw new FieldError(
      ['edge', 'mac'],
      `edge.mac: must be a MAC address like 02:6e:66:00:00:01 (got ${describe(mac)})`,
    );
  const list = edge.hosts;
  if (!Array.isArray(list) || list.length === 0)
    throw new FieldError(
      ['edge', 'hosts'],
      `edge.hosts: must be a non-empty list of host networks (got ${describe(list)})`,
    );
  const hosts = list.map((entry: unknown, i): HostConfig => {
    const path = ['edge', 'hosts', String(i)];
    const h = mapping(entry, path, `edge.hosts[${i}]`, FIELDS.host);
    const prefix = h.prefix;
    if (typeof prefix !== 'string' || !isCidr(prefix))
      throw new FieldError(
        [...path, 'prefix'],
        `edge.hosts[${i}].prefix: must be a CIDR like 10.1.0.0/24 (got ${describe(prefix)})`,
      );
    if (h.vtep === undefined)
      throw new FieldError([...path, 'vtep'], `edge.hosts[${i}].vtep: required (the host's VTEP address)`);
    const gateway = h.gateway === undefined ? {} : { gateway: ipv4(h, [...path, 'gateway'], '') };
    return {
      prefix,
      vtep: ipv4(h, [...path, 'vtep'], ''),
      vni: int(h, [...path, 'vni'], DEFAULT_TOPOLOGY.vni, 0, MAX_VNI),
      ...gateway,
    };
  });
  return {
    vxlanPort: int(edge, ['edge', 'vxlanPort'], DEFAULT_EDGE.vxlanPort, 0, 65535),
    vtepPort: int(edge, ['edge', 'vtepPort'], DEFAULT_EDGE.vtepPort, 1, 65535),
    mac,
    hosts,
  };
}

function nfType(v: unknown, path: readonly string[]): NfType {
  const expected = nfTypes.join(', ');
  const field = path.length === 2 && path[0] === 'chain' ? `chain[${path[1]}]` : path.join('.');
  if (v === undefined) throw new FieldError(path, `${field}: required (one of ${expected})`);
  if (typeof v !== 'string') {
    throw new FieldError(path, `${field}: must be one of ${expected} (got ${describe(v)})`);
  }
  if (!isNfType(v)) throw new FieldError(path, `${field}: unknown NF '${v}' (expected ${expected})`);
  return v;
}

function isCidr(s: string): boolean {
  if (!/^[0-9.]+\/[0-9]{1,2}$/.test(s)) return false;
  try {
    parseCidr(s);
    return true;
  } catch {
    return false;
  }
}

/** The 1-based line of the key at `path` in the document, if the document has it. */
function lineOf(doc: Document, lines: LineCounter, path: readonly string[]): number | undefined {
  let node: unknown = doc.contents;
  let offset: number | undefined;
  for (const key of path) {
    if (!isMap(node)) break;
    const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === key);
    if (pair === undefined || !isScalar(pair.key) || pair.key.range == null) break;
    offset = pair.key.range[0];
    node = pair.value;
  }
  return offset === undefined ? undefined : lines.linePos(offset).line;
}

function deepFreeze<T extends object>(o: T): T {
  for (const v of Object.values(o)) if (typeof v === 'object' && v !== null) deepFreeze(v as object);
  return Object.freeze(o);
}
