/**
 * Fuzzing the admin API's request handling (src/metrics.ts AdminServer, with auth.ts signatures) over
 * real HTTP: random methods, paths, queries, headers, signatures and bodies, and raw request bytes that are
 * damaged or random. Whatever comes in, the answer is 2xx or 4xx (a body that does not parse is the
 * client's fault, never a 5xx), a body over the limit is refused, and the server keeps serving.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { adminKeys, AUTH_HEADER, signRequest } from '../../src/auth.js';
import { ErrorCode, NfsError } from '../../src/errors.js';
import { AdminServer, MAX_BODY_BYTES } from '../../src/admin-server.js';
import { MetricsRegistry } from '../../src/metrics.js';
import { concat, mutate, report, Rng } from './corpus.js';

const REQUESTS = 600;
const RAW = 300;
const keys = adminKeys(randomBytes(32));
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

interface Reply {
  status: number;
  body: string;
}

function request(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: Uint8Array,
): Promise<Reply> {
  // A body always has its framing: without it, Node's client sends a GET's body bare, as a next request.
  if (body !== undefined && headers['transfer-encoding'] === undefined)
    headers = { ...headers, 'content-length': String(body.length) };
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : Buffer.from(body));
  });
}

/** Writes raw bytes on a fresh connection, half-closes it, and returns the status line's code (0: none). */
function raw(port: number, bytes: Uint8Array): Promise<number> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.end(Buffer.from(bytes));
    });
    let text = '';
    s.setEncoding('latin1');
    s.on('data', (c: string) => (text += c));
    s.on('error', () => undefined);
    s.on('close', () => {
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve(m === null ? 0 : Number(m[1]));
    });
  });
}

const TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz";

function randomHeaders(rng: Rng): Record<string, string> {
  const h: Record<string, string> = {};
  for (let i = rng.int(4); i > 0; i--) {
    let name = 'x-';
    for (let k = 1 + rng.int(12); k > 0; k--) name += TOKEN_CHARS[rng.int(TOKEN_CHARS.length)]!;
    let value = '';
    for (let k = rng.int(40); k > 0; k--) value += String.fromCharCode(0x20 + rng.int(0x5f));
    h[name] = value.trim();
  }
  if (rng.int(3) === 0)
    h['content-type'] = rng.pick([
      'application/json',
      'text/plain',
      'application/x-www-form-urlencoded; charset=utf-8',
    ]);
  return h;
}

/** A JSON body for /sum, valid or with a wrong shape, before any damage. */
function sumBody(rng: Rng): string {
  switch (rng.int(5)) {
    case 0:
      return JSON.stringify({ values: Array.from({ length: rng.int(10) }, () => rng.int(1000) - 500) });
    case 1:
      return JSON.stringify({ values: ['1', null, { a: 1 }] });
    case 2:
      return JSON.stringify(rng.pick([null, 3, 'text', [], true]));
    case 3:
      return '['.repeat(1 + rng.int(5000)) + ']'.repeat(rng.int(5000));
    default:
      return JSON.stringify({ values: [1, 2], extra: '\u0000\ud800' });
  }
}

describe('fuzz: admin API requests', { timeout: 60_000 }, () => {
  let server: AdminServer;
  let port = 0;
  const handled = { sum: 0, item: 0, op: 0 };

  before(async () => {
    server = new AdminServer({ port: 0, registry: new MetricsRegistry(), keys });
    server.route(
      'POST',
      '/sum',
      (body) => {
        handled.sum++;
        const values = (body as { values?: unknown } | null | undefined)?.values;
        if (!Array.isArray(values) || !values.every((v) => typeof v === 'number'))
          throw new NfsError(ErrorCode.USAGE, 'values: must be a list of numbers');
        return { sum: values.reduce((a, v) => a + v, 0) };
      },
      'open',
    );
    server.route('GET', '/item', (query) => {
      handled.item++;
      const id = (query as Record<string, string>).id;
      if (id === undefined || !/^\d{1,6}$/.test(id))
        throw new NfsError(ErrorCode.USAGE, 'id: must be a number');
      return { id: Number(id) };
    });
    server.route(
      'POST',
      '/op',
      () => {
        handled.op++;
        return { ok: true };
      },
      'operator',
    );
    port = await server.start();
  });

  after(async () => {
    agent.destroy();
    await server.stop();
  });

  it(`answers ${REQUESTS} random requests with 2xx or 4xx`, async (t) => {
    const rng = new Rng(0x5eed_0a01);
    const statuses: Record<string, number> = {};
    let signedOk = 0;
    for (let i = 0; i < REQUESTS; i++) {
      const route = rng.pick([
        '/sum',
        '/sum',
        '/op',
        '/op',
        '/item',
        '/item?id=12',
        '/item?id=x%00',
        '/healthz',
        '/metrics',
        '/nope',
        '/sum/',
      ]);
      // Mostly the route's own method, so that most requests get past the routing to the body and auth.
      const own = route === '/sum' || route === '/op' ? 'POST' : 'GET';
      const method =
        rng.int(5) === 0 ? rng.pick(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD']) : own;
      const path =
        route +
        (rng.int(6) === 0
          ? `${route.includes('?') ? '&' : '?'}q=${encodeURIComponent(String.fromCharCode(...rng.bytes(rng.int(12))))}`
          : '');
      const headers = randomHeaders(rng);
      let body: Uint8Array | undefined;
      if (method === 'POST' || rng.int(5) === 0) {
        const text = sumBody(rng);
        const pick = rng.int(4);
        body =
          pick === 0
            ? rng.bytes(rng.int(300))
            : pick === 1
              ? mutate(new TextEncoder().encode(text), rng)
              : new TextEncoder().encode(text);
      }
      // Signatures for the operator route: right, damaged, or under another key.
      if (route === '/op' && rng.int(4) !== 0) {
        const text = body === undefined ? '' : Buffer.from(body).toString('utf8');
        const sig = signRequest(
          rng.int(4) === 0 ? adminKeys(randomBytes(32)).operator : keys.operator,
          method,
          path,
          text,
        );
        headers[AUTH_HEADER] =
          rng.int(3) === 0
            ? new TextDecoder()
                .decode(mutate(new TextEncoder().encode(sig), rng))
                .replace(/[^\x20-\x7e]/g, '')
            : sig;
      }
      const reply = await request(port, method, path, headers, body).catch((err: unknown) => {
        throw new Error(`${method} ${path} ${JSON.stringify(headers)} ${body?.length}: ${String(err)}`);
      });
      statuses[reply.status] = (statuses[reply.status] ?? 0) + 1;
      assert.ok(
        reply.status >= 200 && reply.status < 500,
        `${method} ${path}: ${reply.status} ${reply.body}`,
      );
      if (route === '/op' && reply.status === 200) signedOk++;
    }
    assert.ok(
      signedOk > 0 && (statuses['401'] ?? 0) > 0 && (statuses['400'] ?? 0) > 0,
      JSON.stringify({ signedOk, statuses, handled }),
    );
    report(t, 'admin http', {
      requests: REQUESTS,
      signedOk,
      ...handled,
      ...Object.fromEntries(Object.entries(statuses).map(([s, n]) => [`status_${s}`, n])),
    });
  });

  it('refuses a body over the limit, declared or streamed, before buffering it', async () => {
    const declared = await raw(
      port,
      new TextEncoder().encode(
        `POST /sum HTTP/1.1\r\nHost: a\r\nContent-Length: ${MAX_BODY_BYTES + 1}\r\n\r\n{}`,
      ),
    );
    assert.equal(declared, 413);
    const streamed = await request(
      port,
      'POST',
      '/sum',
      { 'transfer-encoding': 'chunked' },
      new Uint8Array(MAX_BODY_BYTES + 10).fill(0x20),
    );
    assert.equal(streamed.status, 413);
  });

  it(`answers ${RAW} damaged and random raw requests with 4xx or nothing, and keeps serving`, async (t) => {
    const rng = new Rng(0x5eed_0a02);
    const seeds = [
      'GET /item?id=7 HTTP/1.1\r\nHost: a\r\n\r\n',
      'POST /sum HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"values":[1,2]}',
      'POST /sum HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"val\r\n0\r\n\r\n',
      `POST /op HTTP/1.1\r\nHost: a\r\n${AUTH_HEADER}: ${signRequest(keys.operator, 'POST', '/op', '')}\r\nContent-Length: 0\r\n\r\n`,
    ].map((s) => new TextEncoder().encode(s));
    const statuses: Record<string, number> = {};
    let unparsableTarget = 0;
    for (let i = 0; i < RAW; i++) {
      const seed = rng.pick(seeds);
      // Half keep their request line, so that the damage reaches the headers, the body and the handlers.
      const line = seed.indexOf(0x0a) + 1;
      const bytes =
        i % 5 === 4
          ? rng.bytes(rng.int(200))
          : i % 2 === 0
            ? concat(seed.subarray(0, line), mutate(seed.subarray(line), rng))
            : mutate(seed, rng);
      const status = await raw(port, bytes);
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (!targetParses(bytes)) unparsableTarget++;
      assert.ok(
        status === 0 || (status >= 200 && status < 500),
        `${status} for ${JSON.stringify(Buffer.from(bytes).toString('latin1'))}`,
      );
    }
    const health = await request(port, 'GET', '/healthz', {});
    assert.equal(health.status, 200);
    report(t, 'admin raw', {
      requests: RAW,
      unparsableTarget,
      ...Object.fromEntries(Object.entries(statuses).map(([s, n]) => [`status_${s}`, n])),
    });
  });

  it('answers 400 to a request target the URL parser refuses', async () => {
    for (const target of ['http://[', '//[', 'http://a:99999/', 'http://%zz/']) {
      const status = await raw(
        port,
        new TextEncoder().encode(`GET ${target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n`),
      );
      assert.ok(status >= 400 && status < 500, `${target}: ${status}`);
    }
  });
});

/** Whether the request line's target is one `new URL(target, base)` accepts (or there is no request line). */
function targetParses(bytes: Uint8Array): boolean {
  const line = Buffer.from(bytes).toString('latin1').split('\r\n')[0]!.split(' ');
  if (line.length < 2) return true;
  try {
    new URL(line[1]!, 'http://admin');
    return true;
  } catch {
    return false;
  }
}
