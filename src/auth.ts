/**
 * Authentication of the control plane outside the replication frames (wire/frame.ts): the admin API's
 * HTTP requests, and the datagrams an instance sends the controller (heartbeats and load reports).
 *
 * Admin requests are signed with HMAC-SHA256 under a key derived from the deployment key, one per scope:
 * `internal` for what the roles ask of each other (register, configure, move steps, take over, fence),
 * `operator` for what a person or a script asks of the controller (move, drain, fail, scale, the load
 * balancer switch). Holding the operator key does not let anyone forge an internal call, such as
 * installing flow state; the roles themselves (and the launcher), which hold the deployment key, may call
 * operator routes with the internal key. A signature covers the method, the path with its query, a timestamp, a nonce and
 * the body, so a request altered in flight fails, and one replayed is refused (the nonce was seen) or
 * stale (older than the window).
 *
 *   const keys = adminKeys(deploymentKey);
 *   headers[AUTH_HEADER] = signRequest(keys.operator, 'POST', '/move', body);
 *   verifier.verify([keys.operator], req.headers[AUTH_HEADER], 'POST', '/move', body); // undefined: accepted
 *
 * Datagrams carry a 16-byte tag under the instance's own token, which the controller handed it when it
 * registered (over an authenticated call): a spoofed heartbeat or load report cannot keep a dead instance
 * alive, and replays are refused by their sequence numbers.
 */
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';

export type AdminScope = 'internal' | 'operator';

/** The two admin keys of a deployment. */
export type AdminKeys = Readonly<Record<AdminScope, Buffer>>;

/** The header that carries a request's signature. */
export const AUTH_HEADER = 'x-nfstate-auth';

/**
 * How far a request's timestamp may be from the server's clock, either way: the hosts' clocks must agree
 * to within it, and a nonce is remembered for twice as long.
 */
export const AUTH_WINDOW_MS = 30_000;

/** Bytes of a datagram's tag. */
export const TAG_BYTES = 16;

const SCHEME = 'v1';
const NONCE_BYTES = 12;

/** Why a request was refused. */
export type AuthRejection = 'missing' | 'malformed' | 'stale' | 'bad_auth' | 'replayed';

/** The admin keys of the deployment whose key is `deploymentKey` (HKDF-SHA256, one label per scope). */
export function adminKeys(deploymentKey: Uint8Array): AdminKeys {
  const derive = (scope: AdminScope): Buffer =>
    Buffer.from(hkdfSync('sha256', deploymentKey, Buffer.alloc(0), `nfstate admin ${scope}`, 32));
  return { internal: derive('internal'), operator: derive('operator') };
}

function requestMac(
  key: Buffer,
  method: string,
  path: string,
  at: string,
  nonce: string,
  body: string,
): Buffer {
  return createHmac('sha256', key).update(`${method}\n${path}\n${at}\n${nonce}\n${body}`).digest();
}

/** The value of AUTH_HEADER for a request: `v1 <ms> <nonce> <mac>`. */
export function signRequest(
  key: Buffer,
  method: string,
  path: string,
  body: string,
  now = Date.now(),
): string {
  const at = String(Math.round(now));
  const nonce = randomBytes(NONCE_BYTES).toString('hex');
  return `${SCHEME} ${at} ${nonce} ${requestMac(key, method, path, at, nonce, body).toString('hex')}`;
}

/**
 * Checks signed requests and remembers their nonces for twice the window, so that each signature is
 * accepted once.
 */
export class RequestVerifier {
  /** nonce → when it may be forgotten; in insertion order, which is the order they expire in. */
  private readonly seen = new Map<string, number>();

  constructor(private readonly windowMs = AUTH_WINDOW_MS) {}

  /** Undefined when the request is signed with one of `keys` and accepted (its nonce is then spent), else why not. */
  verify(
    keys: readonly Buffer[],
    header: string | string[] | undefined,
    method: string,
    path: string,
    body: string,
    now = Date.now(),
  ): AuthRejection | undefined {
    if (header === undefined) return 'missing';
    const parts = typeof header === 'string' ? header.split(' ') : [];
    const [scheme, at, nonce, mac] = parts;
    if (
      parts.length !== 4 ||
      scheme !== SCHEME ||
      !/^\d{1,15}$/.test(at!) ||
      !/^[0-9a-f]{24}$/.test(nonce!) ||
      !/^[0-9a-f]{64}$/.test(mac!)
    )
      return 'malformed';
    const given = Buffer.from(mac!, 'hex');
    if (!keys.some((key) => timingSafeEqual(requestMac(key, method, path, at!, nonce!, body), given)))
      return 'bad_auth';
    if (Math.abs(now - Number(at)) > this.windowMs) return 'stale';
    for (const [n, until] of this.seen) {
      if (until > now) break;
      this.seen.delete(n);
    }
    if (this.seen.has(nonce!)) return 'replayed';
    this.seen.set(nonce!, now + 2 * this.windowMs);
    return undefined;
  }
}

/** A datagram's tag: HMAC-SHA256 of `data` under `key`, truncated. */
export function datagramTag(key: Uint8Array, data: Uint8Array): Buffer {
  return createHmac('sha256', key).update(data).digest().subarray(0, TAG_BYTES);
}

/** Whether `tag` is `data`'s tag under `key`. */
export function tagMatches(key: Uint8Array, data: Uint8Array, tag: Uint8Array): boolean {
  return tag.length === TAG_BYTES && timingSafeEqual(datagramTag(key, data), tag);
}
