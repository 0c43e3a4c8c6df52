/**
 * deploy/: the container image, the Compose file and the Kubernetes manifests, checked without Docker or a
 * cluster. Each Kubernetes object is valid against the Kubernetes API's schema (unknown fields refused) and
 * the Compose file against the Compose specification's (schemas.ts), and a broken one of each is refused; the
 * objects refer to each other consistently; every nfstate command line they hold uses only flags the real
 * CLI's `--help` lists for that command, each with a value where it takes one; and the Dockerfile builds
 * from files the repository has, into an image whose ENTRYPOINT is the compiled CLI.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { posix } from 'node:path';
import { before, describe, it } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { nfstate } from '../helpers/cli.js';
import { repoPath } from '../helpers/paths.js';
import { KUBERNETES_KINDS, validateCompose, validateKubernetes } from './schemas.js';

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

function obj(v: unknown, what: string): Obj {
  assert.ok(isObj(v), `${what}: expected a mapping`);
  return v;
}

function list(v: unknown, what: string): unknown[] {
  if (v === undefined) return [];
  assert.ok(Array.isArray(v), `${what}: expected a list`);
  return v as unknown[];
}

function str(v: unknown, what: string): string {
  assert.equal(typeof v, 'string', `${what}: expected a string`);
  return v as string;
}

const IMAGE = 'nfstate:0.1.0';
const ROLES = ['controller', 'ingress', 'nf', 'sink'] as const;
type Role = (typeof ROLES)[number];

// ---------------------------------------------------------------------------------------------------------
// Command lines

/**
 * Splits a shell command line into words, as sh would before expansion: quotes removed, `$VAR` and
 * `$(…)` kept as written. Enough for the one-line start scripts in deploy/.
 */
function shellWords(script: string): string[] {
  const words: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < script.length; i++) {
    const c = script[i]!;
    if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else if (c === "'" || c === '"') {
      const end = script.indexOf(c, i + 1);
      assert.ok(end > i, `unterminated ${c} in: ${script}`);
      word = (word ?? '') + script.slice(i + 1, end);
      i = end;
    } else if (c === '$' && script[i + 1] === '(') {
      let depth = 0;
      let j = i + 1;
      for (; j < script.length; j++) {
        if (script[j] === '(') depth++;
        if (script[j] === ')' && --depth === 0) break;
      }
      assert.ok(j < script.length, `unterminated $( in: ${script}`);
      word = (word ?? '') + script.slice(i, j + 1);
      i = j;
    } else {
      assert.ok(!';&|<>`\\'.includes(c), `only one plain command per start script: ${script}`);
      word = (word ?? '') + c;
    }
  }
  if (word !== undefined) words.push(word);
  return words;
}

/** The nfstate arguments a `sh -c` start script runs: it must be `exec nfstate …`, alone. */
function scriptArgs(script: string, where: string): string[] {
  const words = shellWords(script);
  assert.deepEqual(words.slice(0, 2), ['exec', 'nfstate'], `${where}: a start script is "exec nfstate …"`);
  return words.slice(2);
}

interface CommandLine {
  where: string;
  args: string[];
}

interface HelpFlag {
  takesValue: boolean;
}

/** The flags `nfstate <role> --help` lists, read from commander's help. */
async function helpFlags(role: Role): Promise<Map<string, HelpFlag>> {
  const r = await nfstate([role, '--help'], 60_000);
  assert.equal(r.code, 0, `nfstate ${role} --help: ${r.stderr}`);
  const flags = new Map<string, HelpFlag>();
  for (const line of r.stdout.split('\n')) {
    const m = /^ {2}(?:-[A-Za-z], )?(--[a-z0-9-]+)(?: ([<[])[^>\]]*[>\]])?(?:\s|$)/.exec(line);
    if (m !== null) flags.set(m[1]!, { takesValue: m[2] !== undefined });
  }
  assert.ok(flags.has('--help'), `nfstate ${role} --help lists no options:\n${r.stdout}`);
  return flags;
}

/** Checks a command line against `--help`: known flags, values where they take one. */
function checkAgainstHelp(line: CommandLine, help: ReadonlyMap<Role, ReadonlyMap<string, HelpFlag>>): void {
  const [role, ...rest] = line.args;
  assert.ok(ROLES.includes(role as Role), `${line.where}: '${role}' is not a role command`);
  const flags = help.get(role as Role)!;
  for (let i = 0; i < rest.length; i++) {
    const word = rest[i]!;
    assert.ok(word.startsWith('--'), `${line.where}: '${word}' is not a flag (a value without its flag?)`);
    const [name, inline] = word.split(/=(.*)/s) as [string, string | undefined];
    const flag = flags.get(name);
    assert.ok(
      flag !== undefined,
      `${line.where}: nfstate ${role} has no ${name} (see nfstate ${role} --help)`,
    );
    if (!flag.takesValue) {
      assert.equal(inline, undefined, `${line.where}: ${name} takes no value`);
      continue;
    }
    if (inline !== undefined) continue;
    const value = rest[i + 1];
    assert.ok(value !== undefined && !value.startsWith('--'), `${line.where}: ${name} needs a value`);
    i++;
  }
}

/** The value of a flag in an argument list. */
function flagValue(args: readonly string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i >= 0) return args[i + 1];
  return args.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
}

// ---------------------------------------------------------------------------------------------------------
// Kubernetes

interface K8sObject {
  file: string;
  doc: Obj;
  kind: string;
  name: string;
}

function loadKubernetes(): K8sObject[] {
  const dir = repoPath('deploy', 'k8s');
  const out: K8sObject[] = [];
  for (const file of readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()) {
    for (const [i, d] of parseAllDocuments(readFileSync(posix.join(dir, file), 'utf8')).entries()) {
      const where = `deploy/k8s/${file} #${i + 1}`;
      assert.deepEqual(d.errors, [], `${where}: YAML errors`);
      const doc = d.toJS() as unknown;
      if (doc === null) continue;
      const o = obj(doc, where);
      const metadata = obj(o.metadata, `${where} metadata`);
      out.push({ file: where, doc: o, kind: str(o.kind, `${where} kind`), name: str(metadata.name, where) });
    }
  }
  return out;
}

/** The pod template of a workload, or undefined for other kinds. */
function podTemplate(o: K8sObject): Obj | undefined {
  if (o.kind !== 'Deployment' && o.kind !== 'StatefulSet') return undefined;
  return obj(obj(o.doc.spec, `${o.file} spec`).template, `${o.file} template`);
}

function containersOf(o: K8sObject): Obj[] {
  const template = podTemplate(o);
  if (template === undefined) return [];
  return list(obj(template.spec, `${o.file} pod spec`).containers, `${o.file} containers`).map((c, i) =>
    obj(c, `${o.file} container ${i}`),
  );
}

/** The nfstate command line a container runs, with k8s's `$$` escape undone. */
function k8sCommandLine(o: K8sObject, c: Obj): CommandLine {
  const where = `${o.file} (${o.kind} ${o.name})`;
  const args = list(c.args, `${where} args`).map((a) => str(a, `${where} args`).replaceAll('$$', '$'));
  if (c.command === undefined) return { where, args };
  assert.deepEqual(c.command, ['sh', '-c'], `${where}: command is the image's ENTRYPOINT or sh -c`);
  assert.equal(args.length, 1, `${where}: sh -c takes one script`);
  return { where, args: scriptArgs(args[0]!, where) };
}

// ---------------------------------------------------------------------------------------------------------
// Compose

function loadCompose(): Obj {
  const text = readFileSync(repoPath('deploy', 'compose.yaml'), 'utf8');
  return obj(parse(text, { merge: true }) as unknown, 'deploy/compose.yaml');
}

/** The nfstate command line of a Compose service, with Compose's `$$` escape undone; none for others. */
function composeCommandLine(name: string, service: Obj): CommandLine | undefined {
  const where = `deploy/compose.yaml services.${name}`;
  if (service.image !== IMAGE) return undefined;
  const command = list(service.command, `${where} command`).map((a) =>
    str(a, `${where} command`).replaceAll('$$', '$'),
  );
  if (service.entrypoint === undefined) return { where, args: command };
  const entrypoint = list(service.entrypoint, `${where} entrypoint`);
  if (entrypoint[0] !== 'sh') return undefined; // the controllers' network namespace holder
  assert.deepEqual(entrypoint, ['sh', '-c'], `${where}: entrypoint is the image's or sh -c`);
  assert.equal(command.length, 1, `${where}: sh -c takes one script`);
  return { where, args: scriptArgs(command[0]!, where) };
}

// ---------------------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  op: string;
  rest: string;
  line: number;
}

interface Stage {
  name: string | undefined;
  image: string;
  instructions: Instruction[];
}

/** The Dockerfile's instructions by stage: comments dropped, continuation lines joined, ARGs substituted. */
function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  const args = new Map<string, string>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1;
    let line = lines[i]!.trim();
    if (line === '' || line.startsWith('#')) continue;
    while (line.endsWith('\\')) {
      line = line.slice(0, -1);
      let next = lines[++i];
      while (next !== undefined && next.trim().startsWith('#')) next = lines[++i];
      assert.ok(next !== undefined, `Dockerfile:${start}: a continuation at the end of the file`);
      line += ' ' + next.trim();
    }
    const m = /^([A-Za-z]+)\s+(.*)$/.exec(line);
    assert.ok(m !== null, `Dockerfile:${start}: not an instruction: ${line}`);
    const op = m[1]!.toUpperCase();
    const rest = m[2]!.replace(
      /\$\{(\w+)\}|\$(\w+)/g,
      (all, a?: string, b?: string) => args.get(a ?? b!) ?? all,
    );
    if (op === 'ARG') {
      const [name, value = ''] = rest.split(/=(.*)/s) as [string, string | undefined];
      args.set(name.trim(), value.trim());
    }
    if (op === 'FROM') {
      const from = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
      assert.ok(from !== null, `Dockerfile:${start}: FROM image [AS name]`);
      stages.push({ image: from[1]!, name: from[2], instructions: [] });
      continue;
    }
    if (stages.length > 0) stages[stages.length - 1]!.instructions.push({ op, rest, line: start });
  }
  return stages;
}

/** The patterns of .dockerignore, as a predicate on repository-relative paths (the forms used there). */
function dockerignore(): (path: string) => boolean {
  const patterns = readFileSync(repoPath('.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  assert.ok(!patterns.some((p) => p.startsWith('!')), '.dockerignore: exceptions are not read here');
  // `**/` any folders, `*` and `?` inside one name; a pattern that names a folder drops what is under it.
  const toRegExp = (p: string): RegExp => {
    const parts = p.split(/(\*\*\/|\*|\?)/).map((part) => {
      if (part === '**/') return '(?:.*/)?';
      if (part === '*') return '[^/]*';
      if (part === '?') return '[^/]';
      return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    });
    return new RegExp(`^${parts.join('')}(?:/.*)?$`);
  };
  const res = patterns.map(toRegExp);
  return (path) => res.some((re) => re.test(path));
}

function workdirAt(stage: Stage, index: number): string {
  let dir = '/';
  for (const ins of stage.instructions.slice(0, index)) {
    if (ins.op === 'WORKDIR') dir = posix.resolve(dir, ins.rest.trim());
  }
  return dir;
}

/** COPY's flags and paths; the last path is the destination. */
function copyParts(ins: Instruction): { from: string | undefined; sources: string[]; dest: string } {
  const words = ins.rest.split(/\s+/);
  let from: string | undefined;
  while (words[0]?.startsWith('--')) {
    const flag = words.shift()!;
    if (flag.startsWith('--from=')) from = flag.slice('--from='.length);
  }
  assert.ok(!ins.rest.trim().startsWith('['), `Dockerfile:${ins.line}: COPY in its plain form`);
  const dest = words.pop();
  assert.ok(
    dest !== undefined && words.length > 0,
    `Dockerfile:${ins.line}: COPY needs a source and a destination`,
  );
  return { from, sources: words, dest };
}

// ---------------------------------------------------------------------------------------------------------

describe('deploy/k8s: Kubernetes manifests', { timeout: 60_000 }, () => {
  const objects = loadKubernetes();
  const byKind = (kind: string): K8sObject[] => objects.filter((o) => o.kind === kind);

  it('every object is valid against the Kubernetes schema of its kind, with no unknown field', () => {
    assert.ok(objects.length >= 10, `only ${objects.length} objects in deploy/k8s`);
    for (const o of objects) {
      assert.deepEqual(validateKubernetes(o.doc), [], `${o.file}: ${o.kind} ${o.name}`);
    }
    for (const kind of ['Namespace', 'Secret', 'ConfigMap', 'Service', 'Deployment', 'StatefulSet']) {
      assert.ok(byKind(kind).length > 0, `no ${kind} in deploy/k8s`);
    }
  });

  it('the checker refuses a broken object: wrong type, missing required field, unknown field, bad quantity', () => {
    const deployment = byKind('Deployment').find((o) => o.name === 'controller');
    assert.ok(deployment !== undefined, 'the controller Deployment');
    const broken = (edit: (d: Obj) => void): string[] => {
      const copy = structuredClone(deployment.doc);
      edit(copy);
      return validateKubernetes(copy);
    };
    const container = (d: Obj): Obj =>
      obj(list(obj(obj(obj(d.spec, 's').template, 't').spec, 'p').containers, 'c')[0], 'c');
    assert.match(
      broken((d) => (obj(d.spec, 'spec').replicas = 'two')).join('\n'),
      /\/spec\/replicas must be integer/,
    );
    assert.match(
      broken((d) => delete container(d).name).join('\n'),
      /\/spec\/template\/spec\/containers\/0 must have required property '?name'?/,
    );
    assert.match(
      broken((d) => (obj(d.spec, 'spec').replica = 2)).join('\n'),
      /^\/spec\/replica: not a field of the schema$/,
    );
    assert.match(
      broken((d) => (container(d).imagePullPolcy = 'Never')).join('\n'),
      /containers\/0\/imagePullPolcy: not a field/,
    );
    assert.match(
      broken((d) => (obj(obj(container(d).resources, 'r').requests, 'q').memory = 'lots')).join('\n'),
      /requests\/memory must match format "quantity"/,
    );
    assert.deepEqual(validateKubernetes({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' } }), [
      'no schema here for v1/Pod',
    ]);
    assert.ok(KUBERNETES_KINDS.length >= 6);
  });

  it('the objects fit together: namespace, selectors, ports, the key, the ConfigMap, the etcd members', () => {
    const configMaps = new Map(byKind('ConfigMap').map((c) => [c.name, obj(c.doc.data, `${c.file} data`)]));
    const secrets = new Map(
      byKind('Secret').map((s) => [s.name, obj(s.doc.stringData ?? s.doc.data, s.file)]),
    );
    const workloads = objects.filter((o) => podTemplate(o) !== undefined);
    for (const o of objects) {
      if (o.kind === 'Namespace') continue;
      assert.equal(obj(o.doc.metadata, o.file).namespace, 'nfstate', `${o.file}: in namespace nfstate`);
    }
    for (const w of workloads) {
      const spec = obj(w.doc.spec, w.file);
      const labels = obj(obj(podTemplate(w)!.metadata, w.file).labels, `${w.file} template labels`);
      const match = obj(obj(spec.selector, `${w.file} selector`).matchLabels, `${w.file} matchLabels`);
      for (const [k, v] of Object.entries(match)) assert.equal(labels[k], v, `${w.file}: selector ${k}`);
      if (w.kind === 'StatefulSet') {
        const governing = byKind('Service').find((s) => s.name === spec.serviceName);
        assert.ok(governing !== undefined, `${w.file}: serviceName ${String(spec.serviceName)} is a Service`);
        assert.equal(
          obj(governing.doc.spec, governing.file).clusterIP,
          'None',
          `${w.file}: a headless Service`,
        );
      }
      const podSpec = obj(podTemplate(w)!.spec, w.file);
      for (const v of list(podSpec.volumes, `${w.file} volumes`).map((x) => obj(x, w.file))) {
        if (v.secret !== undefined) {
          const name = str(obj(v.secret, w.file).secretName, `${w.file} secretName`);
          assert.ok(secrets.has(name), `${w.file}: Secret ${name} is in deploy/k8s`);
        }
      }
      for (const c of containersOf(w)) {
        for (const e of list(c.env, `${w.file} env`).map((x) => obj(x, w.file))) {
          const ref = isObj(e.valueFrom) ? e.valueFrom.configMapKeyRef : undefined;
          if (ref === undefined) continue;
          const { name, key } = obj(ref, w.file);
          assert.ok(
            configMaps.get(str(name, w.file))?.[str(key, w.file)] !== undefined,
            `${w.file}: ${String(name)}.${String(key)}`,
          );
        }
        for (const e of list(c.envFrom, `${w.file} envFrom`).map((x) => obj(x, w.file))) {
          const name = str(obj(e.configMapRef, w.file).name, w.file);
          assert.ok(configMaps.has(name), `${w.file}: ConfigMap ${name} is in deploy/k8s`);
        }
        if (c.image !== IMAGE) continue;
        // Every port an nfstate flag names is a declared container port.
        const line = k8sCommandLine(w, c);
        const declared = list(c.ports, `${w.file} ports`).map((p) => obj(p, w.file).containerPort);
        for (const flag of [
          '--port',
          '--admin-port',
          '--service-port',
          '--replication-port',
          '--report-port',
          '--liveness-port',
        ]) {
          const value = flagValue(line.args, flag);
          if (value !== undefined)
            assert.ok(
              declared.includes(Number(value)),
              `${line.where}: ${flag} ${value} is a container port`,
            );
        }
        assert.ok(
          flagValue(line.args, '--key-file')?.startsWith('/etc/nfstate/'),
          `${line.where}: --key-file from the Secret`,
        );
        assert.ok(
          /POD_IP/.test(flagValue(line.args, '--host') ?? ''),
          `${line.where}: --host is the pod's address`,
        );
      }
    }
    // Every Service selects a workload and targets ports its containers declare, with the same protocol.
    for (const s of byKind('Service')) {
      const spec = obj(s.doc.spec, s.file);
      const selector = obj(spec.selector, `${s.file} selector`);
      const targets = workloads.filter((w) => {
        const labels = obj(obj(podTemplate(w)!.metadata, w.file).labels, w.file);
        return Object.entries(selector).every(([k, v]) => labels[k] === v);
      });
      assert.equal(targets.length, 1, `${s.file}: Service ${s.name} selects one workload`);
      const ports = containersOf(targets[0]!).flatMap((c) =>
        list(c.ports, s.file).map((p) => obj(p, s.file)),
      );
      for (const p of list(spec.ports, `${s.file} ports`).map((x) => obj(x, s.file))) {
        const target = p.targetPort ?? p.port;
        const port = ports.find((q) => q.name === target || q.containerPort === target);
        assert.ok(
          port !== undefined,
          `${s.file}: Service ${s.name} port ${String(target)} is a container port`,
        );
        assert.equal(
          port.protocol ?? 'TCP',
          p.protocol ?? 'TCP',
          `${s.file}: ${s.name} ${String(target)} protocol`,
        );
      }
    }
    // The etcd endpoints are the StatefulSet's members, through its headless Service.
    const etcd = byKind('StatefulSet').find((o) => o.name === 'etcd');
    assert.ok(etcd !== undefined, 'an etcd StatefulSet');
    const replicas = obj(etcd.doc.spec, etcd.file).replicas;
    assert.equal(replicas, 3, 'a 3-member etcd');
    const members = Array.from({ length: 3 }, (_, i) => `http://etcd-${i}.etcd:2379`).join(',');
    assert.equal(configMaps.get('nfstate')?.ETCD_ENDPOINTS, members);
    assert.ok(isObj(JSON.parse(str(configMaps.get('nfstate')?.NF_CONFIG, 'NF_CONFIG'))), 'NF_CONFIG is JSON');
    const controller = byKind('Deployment').find((o) => o.name === 'controller');
    assert.equal(obj(controller?.doc.spec, 'controller spec').replicas, 2, 'a leader and a standby');
  });
});

describe('deploy/compose.yaml', { timeout: 60_000 }, () => {
  const compose = loadCompose();
  const services = obj(compose.services, 'services');

  it('is valid against the Compose specification', () => {
    assert.deepEqual(validateCompose(compose), []);
  });

  it('the checker refuses a broken file: unknown key, bad port, bad duration, bad subnet', () => {
    const broken = (edit: (c: Obj) => void): string => {
      const copy = structuredClone(compose);
      edit(copy);
      return validateCompose(copy).join('\n');
    };
    const service = (c: Obj, name: string): Obj => obj(obj(c.services, 'services')[name], name);
    assert.match(
      broken((c) => (service(c, 'sink').restrat = 'always')),
      /\/services\/sink must NOT have additional properties \(restrat\)/,
    );
    assert.match(
      broken((c) => (service(c, 'ingress').ports = ['9000:udp'])),
      /\/services\/ingress\/ports\/0 must match format "ports"/,
    );
    assert.match(
      broken((c) => (obj(service(c, 'controller').healthcheck, 'h').interval = 'two seconds')),
      /healthcheck\/interval must match format "duration"/,
    );
    assert.match(
      broken((c) => {
        const config = list(obj(obj(obj(c.networks, 'n').nfstate, 'n').ipam, 'i').config, 'c');
        obj(config[0], 'c').subnet = '172.30.0.0/99';
      }),
      /subnet must match format "subnet_ip_address"/,
    );
  });

  it('fits together: roles, fixed addresses, names, the key, the etcd members', () => {
    const subnet = str(
      obj(list(obj(obj(obj(compose.networks, 'n').nfstate, 'n').ipam, 'i').config, 'c')[0], 'c').subnet,
      'subnet',
    );
    const prefix = subnet.replace(/\.0\/24$/, '.');
    const addressOf = (name: string): string | undefined => {
      const service = obj(services[name], name);
      if (typeof service.network_mode === 'string')
        return addressOf(service.network_mode.replace(/^service:/, ''));
      const networks = service.networks;
      return isObj(networks) && isObj(networks.nfstate)
        ? (networks.nfstate.ipv4_address as string)
        : undefined;
    };
    const addresses = Object.entries(services)
      .filter(([, s]) => obj(s, 'service').network_mode === undefined)
      .map(([name]) => addressOf(name))
      .filter((a) => a !== undefined);
    assert.equal(new Set(addresses).size, addresses.length, 'every address once');
    const roles = new Map<Role, number>();
    const etcd = Object.keys(services).filter((n) => n.startsWith('etcd-'));
    assert.equal(etcd.length, 3, 'a 3-member etcd');
    const etcdUrls = etcd.map((n) => `http://${n}:2379`).join(',');
    for (const [name, s] of Object.entries(services)) {
      const line = composeCommandLine(name, obj(s, name));
      if (line === undefined) continue;
      const role = line.args[0] as Role;
      roles.set(role, (roles.get(role) ?? 0) + 1);
      const host = flagValue(line.args, '--host');
      assert.equal(host, addressOf(name), `${line.where}: --host is the service's fixed address`);
      assert.ok(host?.startsWith(prefix), `${line.where}: ${String(host)} in ${subnet}`);
      const secrets = list(obj(s, name).secrets, `${line.where} secrets`).map((x) => obj(x, line.where));
      assert.ok(
        secrets.some((x) => x.target === flagValue(line.args, '--key-file')),
        `${line.where}: --key-file is the secret`,
      );
      for (const flag of ['--controller', '--egress']) {
        const at = flagValue(line.args, flag)?.split(':')[0];
        if (at !== undefined) assert.ok(at in services, `${line.where}: ${flag} names a service (${at})`);
      }
      const config = flagValue(line.args, '--config');
      if (config !== undefined)
        assert.doesNotThrow(() => JSON.parse(config), `${line.where}: --config is JSON`);
      const urls = flagValue(line.args, '--etcd') ?? flagValue(line.args, '--global')?.replace(/^etcd=/, '');
      if (urls !== undefined) assert.equal(urls, etcdUrls, `${line.where}: the etcd members`);
    }
    assert.deepEqual(Object.fromEntries(roles), { controller: 2, ingress: 1, nf: 4, sink: 1 });
    assert.ok(
      obj(obj(compose.secrets, 'secrets').nfstate_key, 'nfstate_key').file !== undefined,
      'the key is a file',
    );
  });
});

describe('nfstate command lines in deploy/', { timeout: 180_000 }, () => {
  const help = new Map<Role, Map<string, HelpFlag>>();

  before(async () => {
    for (const role of ROLES) help.set(role, await helpFlags(role));
  });

  it('the start script tokenizer reads quotes and $(…) as sh does', () => {
    assert.deepEqual(shellWords(`exec nfstate nf --id "$POD_NAME-$(date +%s)" --host '1.2.3.4'`), [
      'exec',
      'nfstate',
      'nf',
      '--id',
      '$POD_NAME-$(date +%s)',
      '--host',
      '1.2.3.4',
    ]);
    assert.throws(() => shellWords('exec nfstate nf; rm -rf /'), /one plain command/);
  });

  it('the --help check refuses an unknown flag, a missing value and a stray value', () => {
    const check = (args: string[]): void => checkAgainstHelp({ where: 'test', args }, help);
    assert.throws(() => {
      check(['controller', '--etcd-endpoints', 'x']);
    }, /has no --etcd-endpoints/);
    assert.throws(() => {
      check(['nf', '--nf', 'nat', '--port']);
    }, /--port needs a value/);
    assert.throws(() => {
      check(['sink', '--port', '1', '2']);
    }, /'2' is not a flag/);
    assert.throws(() => {
      check(['gen', '--target', 'x:1']);
    }, /not a role command/);
    check(['controller', '--sequencer', '--port=9400']);
  });

  it('every flag the compose file and the manifests pass is one the command takes', () => {
    const lines: CommandLine[] = [];
    for (const o of loadKubernetes()) {
      for (const c of containersOf(o)) if (c.image === IMAGE) lines.push(k8sCommandLine(o, c));
    }
    const services = obj(loadCompose().services, 'services');
    for (const [name, s] of Object.entries(services)) {
      const line = composeCommandLine(name, obj(s, name));
      if (line !== undefined) lines.push(line);
    }
    assert.deepEqual([...new Set(lines.map((l) => l.args[0]))].sort(), [...ROLES]);
    for (const line of lines) checkAgainstHelp(line, help);
  });
});

describe('deploy/Dockerfile', { timeout: 60_000 }, () => {
  const stages = parseDockerfile(readFileSync(repoPath('deploy', 'Dockerfile'), 'utf8'));
  const ignored = dockerignore();

  it('builds in a build stage on node:20-bookworm-slim and runs from a second one', () => {
    assert.deepEqual(
      stages.map((s) => [s.name, s.image]),
      [
        ['build', 'node:20-bookworm-slim'],
        ['runtime', 'node:20-bookworm-slim'],
      ],
    );
    const runs = (s: Stage): string =>
      s.instructions
        .filter((i) => i.op === 'RUN')
        .map((i) => i.rest)
        .join('\n');
    const [build, runtime] = stages as [Stage, Stage];
    assert.match(runs(build), /apt-get install[^\n]*\bgcc\b/);
    assert.match(runs(build), /apt-get install[^\n]*\bmake\b[^\n]*\bpython3\b/);
    assert.match(runs(build), /\bnpm ci\b/);
    assert.match(runs(build), /\bnpm run build\b/);
    assert.match(runs(runtime), /\bnpm ci --omit=dev\b/);
    assert.doesNotMatch(runs(runtime), /apt-get|npm run build/);
  });

  it('copies only files the repository has and the build context keeps', () => {
    for (const [n, stage] of stages.entries()) {
      for (const ins of stage.instructions) {
        if (ins.op === 'ADD') assert.fail(`Dockerfile:${ins.line}: COPY, not ADD`);
        if (ins.op !== 'COPY') continue;
        const { from, sources } = copyParts(ins);
        if (from === undefined) {
          for (const src of sources) {
            const path = posix.normalize(src).replace(/\/$/, '');
            assert.ok(existsSync(repoPath(path)), `Dockerfile:${ins.line}: ${src} is in the repository`);
            assert.ok(!ignored(path), `Dockerfile:${ins.line}: .dockerignore drops ${src}`);
          }
          continue;
        }
        const source = stages.slice(0, n).find((s) => s.name === from);
        assert.ok(source !== undefined, `Dockerfile:${ins.line}: --from=${from} is an earlier stage`);
        // What the build stage produced at /src/… is what `npm run build` leaves here at ./…
        const root = workdirAt(source, source.instructions.length);
        for (const src of sources) {
          const rel = posix.relative(root, posix.resolve(root, src));
          assert.ok(!rel.startsWith('..'), `Dockerfile:${ins.line}: ${src} is under the build's ${root}`);
          assert.ok(existsSync(repoPath(rel)), `Dockerfile:${ins.line}: the build produces ${rel}`);
        }
      }
    }
  });

  it('ENTRYPOINT runs the compiled CLI, which the build produces, as an unprivileged user', () => {
    const runtime = stages[stages.length - 1]!;
    const entry = runtime.instructions.filter((i) => i.op === 'ENTRYPOINT');
    assert.equal(entry.length, 1);
    const argv = JSON.parse(entry[0]!.rest) as unknown;
    assert.deepEqual(argv, ['node', '/app/dist/src/cli/main.js']);
    // Follow /app/dist/src/cli/main.js back through the runtime stage's COPY --from=build to the build's path.
    const target = '/app/dist/src/cli/main.js';
    const origin = runtime.instructions.flatMap((ins, i) => {
      if (ins.op !== 'COPY') return [];
      const { from, sources, dest } = copyParts(ins);
      const at = posix.resolve(workdirAt(runtime, i), dest);
      if (from !== 'build' || sources.length !== 1 || !target.startsWith(`${at}/`)) return [];
      return [posix.join(sources[0]!, target.slice(at.length + 1))];
    });
    assert.deepEqual(origin, ['/src/dist/src/cli/main.js']);
    assert.ok(
      existsSync(repoPath('dist', 'src', 'cli', 'main.js')),
      'npm run build makes dist/src/cli/main.js',
    );
    const users = runtime.instructions.filter((i) => i.op === 'USER').map((i) => i.rest.trim());
    assert.ok(users.length > 0, 'the runtime stage sets USER');
    assert.ok(!['root', '0', '0:0'].includes(users[users.length - 1]!), 'the last USER is not root');
    const userAt = runtime.instructions.findLastIndex((i) => i.op === 'USER');
    const entryAt = runtime.instructions.findIndex((i) => i.op === 'ENTRYPOINT');
    assert.ok(userAt < entryAt, 'USER comes before ENTRYPOINT');
  });

  it('.dockerignore keeps what a build on the host left out of the context', () => {
    for (const path of [
      'node_modules',
      'dist',
      'bench-results',
      '.git',
      'native/build',
      'examples/x/node_modules',
    ]) {
      assert.ok(ignored(path), `.dockerignore drops ${path}`);
    }
    for (const path of ['src/cli/main.ts', 'native/udp.c', 'package-lock.json']) {
      assert.ok(!ignored(path), `.dockerignore keeps ${path}`);
    }
  });
});
