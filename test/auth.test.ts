import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, it } from 'node:test';
import {
  adminKeys,
  AUTH_HEADER,
  AUTH_WINDOW_MS,
  datagramTag,
  RequestVerifier,
  signRequest,
  tagMatches,
} from '../src/auth.js';
import { decodeLoadReport, encodeLoadReport, MAX_REPORT_BYTES } from '../src/controller/load-report.js';
import { ErrorCode, NfsError } from '../src/errors.js';
import { AdminServer } from '../src/admin-server.js';
import { MetricsRegistry } from '../src/metrics.js';
import { adminCall } from '../src/admin-call.js';
import { sample } from './helpers/poll.js';

const TIMEOUT = { timeout: 60_000 };
const deployment = Buffer.alloc(32, 0x5a);
const keys = adminKeys(deployment);

describe('admin keys and request signatures', TIMEOUT, () => {
  it('derives one key per scope, the same for the same deployment key and different for another', () => {
    assert.notDeepEqual(keys.internal, keys.operator);
    assert.deepEqual(adminKeys(Buffer.from(deployment)), keys);
    assert.notDeepEqual(adminKeys(Buffer.alloc(32, 0x5b)).internal, keys.internal);
    assert.equal(keys.internal.length, 32);
  });

  it('accepts a signed request once, and refuses it altered, replayed, stale, unsigned or garbled', () => {
    const v = new RequestVerifier();
    const now = 1_000_000;
    const body = '{"flow":"udp 10.0.0.1:1 10.0.0.2:2","to":"nf-1"}';
    const header = signRequest(keys.operator, 'POST', '/move', body, now);
    assert.equal(v.verify([keys.operator], header, 'POST', '/move', body + ' ', now), 'bad_auth');
    assert.equal(v.verify([keys.operator], header, 'POST', '/drain', body, now), 'bad_auth');
    assert.equal(v.verify([keys.operator], header, 'GET', '/move', body, now), 'bad_auth');
    assert.equal(v.verify([keys.internal], header, 'POST', '/move', body, now), 'bad_auth');
    assert.equal(v.verify([keys.operator], header, 'POST', '/move', body, now), undefined);
    assert.equal(v.verify([keys.operator], header, 'POST', '/move', body, now + 1), 'replayed');
    const old = signRequest(keys.operator, 'POST', '/move', body, now - AUTH_WINDOW_MS - 1);
    assert.equal(v.verify([keys.operator], old, 'POST', '/move', body, now), 'stale');
    const ahead = signRequest(keys.operator, 'POST', '/move', body, now + AUTH_WINDOW_MS + 1);
    assert.equal(v.verify([keys.operator], ahead, 'POST', '/move', body, now), 'stale');
    assert.equal(v.verify([keys.operator], undefined, 'POST', '/move', body, now), 'missing');
    for (const garbled of [
      '',
      'v1',
      header.replace('v1', 'v2'),
      header + ' x',
      header.slice(0, -2),
      ['a', 'b'],
    ])
      assert.equal(
        v.verify([keys.operator], garbled, 'POST', '/move', body, now),
        'malformed',
        String(garbled),
      );
    // Either of several keys: what an operator route takes.
    const internal = signRequest(keys.internal, 'POST', '/move', body, now);
    assert.equal(v.verify([keys.operator, keys.internal], internal, 'POST', '/move', body, now), undefined);
  });

  it('forgets a nonce once its signature could only be stale, and stays refused meanwhile', () => {
    const v = new RequestVerifier(1000);
    const header = signRequest(keys.internal, 'POST', '/x', '', 0);
    assert.equal(v.verify([keys.internal], header, 'POST', '/x', '', 0), undefined);
    assert.equal(v.verify([keys.internal], header, 'POST', '/x', '', 999), 'replayed');
    assert.equal(v.verify([keys.internal], header, 'POST', '/x', '', 1001), 'stale');
  });

  it('tags datagrams: any changed byte or another key fails', () => {
    const data = Buffer.from('heartbeat bytes');
    const tag = datagramTag(keys.internal, data);
    assert.equal(tagMatches(keys.internal, data, tag), true);
    assert.equal(tagMatches(keys.operator, data, tag), false);
    assert.equal(tagMatches(keys.internal, data, tag.subarray(1)), false);
    for (let i = 0; i < data.length; i++) {
      const changed = Buffer.from(data);
      changed[i] = changed[i]! ^ 1;
      assert.equal(tagMatches(keys.internal, changed, tag), false);
    }
  });
});

describe('load reports', TIMEOUT, () => {
  const token = Buffer.alloc(16, 3);
  const load = { received: 5, processed: 4, flows: 2, busy: 0.5, queue: 1 };
  const keyOf = (id: string): Buffer | undefined => (id === 'nf-0' ? token : undefined);

  it('round-trip under the instance token, and nothing else decodes', () => {
    const msg = encodeLoadReport('nf-0', 7, load, token);
    assert.deepEqual(decodeLoadReport(msg, keyOf), { id: 'nf-0', seq: 7, load });
    assert.equal(decodeLoadReport(encodeLoadReport('nf-0', 7, load, Buffer.alloc(16, 4)), keyOf), undefined);
    assert.equal(decodeLoadReport(encodeLoadReport('nf-1', 7, load, token), keyOf), undefined);
    for (let n = 0; n < msg.length; n++) assert.equal(decodeLoadReport(msg.subarray(0, n), keyOf), undefined);
    const changed = Buffer.from(msg);
    changed[changed.indexOf('5')] = '6'.charCodeAt(0);
    assert.equal(decodeLoadReport(changed, keyOf), undefined);
    assert.equal(decodeLoadReport(Buffer.alloc(MAX_REPORT_BYTES + 1, 0x20), keyOf), undefined);
    const negative = encodeLoadReport('nf-0', 8, { ...load, queue: -1 }, token);
    assert.equal(decodeLoadReport(negative, keyOf), undefined);
  });
});

describe('AdminServer with keys', TIMEOUT, () => {
  async function server(): Promise<{ admin: AdminServer; port: number; calls: string[] }> {
    const calls: string[] = [];
    const admin = new AdminServer({ port: 0, registry: new MetricsRegistry(), keys });
    admin.route('POST', '/install', (body) => void calls.push(`install ${JSON.stringify(body)}`));
    admin.route('POST', '/move', (body) => void calls.push(`move ${JSON.stringify(body)}`), 'operator');
    admin.route('GET', '/state', () => ({ calls: calls.length }));
    return { admin, port: await admin.start(), calls };
  }
  const refusal = (why: string) => (err: unknown) => {
    assert.ok(err instanceof NfsError && err.code === ErrorCode.AUTH, String(err));
    assert.match(err.message, new RegExp(`not authenticated \\(${why}\\)`));
    return true;
  };

  it('runs no handler for an unsigned, mis-signed or replayed change, counts each by reason, and serves reads to anyone', async () => {
    const { admin, port, calls } = await server();
    try {
      await assert.rejects(adminCall('127.0.0.1', port, '/install', { flows: 1 }), refusal('missing'));
      await assert.rejects(
        adminCall('127.0.0.1', port, '/install', { flows: 1 }, { key: keys.operator }),
        refusal('bad_auth'),
      );
      await assert.rejects(
        adminCall('127.0.0.1', port, '/move', { flow: 'f' }, { key: Buffer.alloc(32) }),
        refusal('bad_auth'),
      );
      assert.deepEqual(calls, []);
      assert.deepEqual(await adminCall('127.0.0.1', port, '/state'), { calls: 0 });
      await adminCall('127.0.0.1', port, '/install', { flows: 1 }, { key: keys.internal });
      await adminCall('127.0.0.1', port, '/move', { flow: 'f' }, { key: keys.operator });
      await adminCall('127.0.0.1', port, '/move', { flow: 'g' }, { key: keys.internal });
      assert.deepEqual(calls, ['install {"flows":1}', 'move {"flow":"f"}', 'move {"flow":"g"}']);
      // The same bytes again, as someone who recorded them would send them.
      const body = '{"flows":2}';
      const header = signRequest(keys.internal, 'POST', '/install', body);
      const send = (): Promise<number> =>
        new Promise((resolve, reject) => {
          const req = request(
            { host: '127.0.0.1', port, path: '/install', method: 'POST', headers: { [AUTH_HEADER]: header } },
            (res) => {
              res.resume();
              resolve(res.statusCode ?? 0);
            },
          );
          req.on('error', reject);
          req.end(body);
        });
      assert.equal(await send(), 200);
      assert.equal(await send(), 401);
      assert.equal(calls.length, 4);
      const text = admin.registry.render();
      assert.equal(sample(text, 'nfstate_admin_rejected_total', 'reason="missing"'), 1);
      assert.equal(sample(text, 'nfstate_admin_rejected_total', 'reason="bad_auth"'), 2);
      assert.equal(sample(text, 'nfstate_admin_rejected_total', 'reason="replayed"'), 1);
    } finally {
      await admin.stop();
    }
  });

  it('signs the path as the server reads it, query included', async () => {
    const { admin, port } = await server();
    admin.route('POST', '/q', (body) => body);
    try {
      const flow = "udp 10.0.0.1:1 10.0.0.2:2 'x'";
      assert.deepEqual(
        await adminCall('127.0.0.1', port, `/q?flow=${flow}`, { a: 1 }, { key: keys.internal }),
        {
          a: 1,
        },
      );
    } finally {
      await admin.stop();
    }
  });

  it('refuses to serve an unauthenticated API anywhere but loopback', () => {
    assert.throws(
      () => new AdminServer({ host: '0.0.0.0', port: 0, registry: new MetricsRegistry() }),
      (err) =>
        err instanceof NfsError &&
        err.code === ErrorCode.CONFIG &&
        /needs the deployment key/.test(err.message),
    );
    assert.doesNotThrow(
      () => new AdminServer({ host: '0.0.0.0', port: 0, registry: new MetricsRegistry(), keys }),
    );
    assert.doesNotThrow(
      () => new AdminServer({ host: '127.0.0.2', port: 0, registry: new MetricsRegistry() }),
    );
  });
});
