/**
 * A stand-in for a role's admin API: answers each path with a canned reply (or one computed from the body,
 * possibly later, or never) and records every call.
 *
 *   const dst = await fakeAdmin({ '/move/expect': () => HANG });
 *   dst.calls; // [{ path: '/move/expect', body: { flows: [...] } }]
 *   await dst.close();
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A reply that never comes: the request hangs until the fake closes. */
export const HANG = Symbol('hang');

export type FakeReply = [number, unknown] | typeof HANG;

export interface FakeAdmin {
  port: number;
  calls: { path: string; body: unknown }[];
  close(): Promise<void>;
}

export async function fakeAdmin(
  replies: Record<string, (body: unknown, query: URLSearchParams) => FakeReply | Promise<FakeReply>>,
): Promise<FakeAdmin> {
  const calls: { path: string; body: unknown }[] = [];
  const server = http.createServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => {
      void (async () => {
        const url = new URL(req.url ?? '', 'http://fake');
        const path = url.pathname;
        const body = text === '' ? undefined : (JSON.parse(text) as unknown);
        calls.push({ path, body });
        const reply = (await replies[path]?.(body, url.searchParams)) ?? [200, { ok: true }];
        if (reply === HANG) return;
        res.statusCode = reply[0];
        res.end(JSON.stringify(reply[1]));
      })();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    calls,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
