/**
 * The admin HTTP endpoint every role serves: `/metrics` (metrics.ts), `/healthz`, and the routes the role
 * adds, each open or taking signed requests only (auth.ts).
 *
 *   const admin = new AdminServer({ port: 0, registry: new MetricsRegistry() });
 *   admin.route('POST', '/move', async (body) => controller.move(parseMove(body)));
 *   admin.raw('/events', (req, res) => res.end('…')); // answered by the handler itself, not as JSON
 *   const port = await admin.start(); // GET /metrics, GET /healthz, POST /move, GET /events
 *   await admin.stop();
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { AUTH_HEADER, RequestVerifier } from './auth.js';
import type { AdminKeys, AdminScope, AuthRejection } from './auth.js';
import { ErrorCode, NfsError } from './errors.js';
import { METRICS_CONTENT_TYPE, type MetricsRegistry } from './metrics.js';
import type { Logger, MetricSample, MetricSource } from './types.js';

/** A route's handler: gets the parsed JSON body (POST) or the query parameters (GET); returns JSON. */
export type RouteHandler = (body: unknown) => unknown;

/**
 * A route that answers on the response itself: a page, or a stream that stays open (server-sent events).
 * It owns `res` from the call on; the connection closes with the client or with the server's `stop()`.
 */
export type RawHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** Who may call a route: anyone (reads), or requests signed with that scope's key (auth.ts). */
export type RouteScope = AdminScope | 'open';

export interface AdminServerOptions {
  /** Bind address; default 127.0.0.1. Any other needs `keys`. */
  host?: string;
  /** 0 binds an ephemeral port; `start()` returns the one chosen. */
  port: number;
  registry: MetricsRegistry;
  /** The deployment's admin keys: every route but the open ones then takes only signed requests. */
  keys?: AdminKeys;
  logger?: Logger;
}

type Route = { scope: RouteScope } & ({ handler: RouteHandler } | { raw: RawHandler });

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Largest POST body accepted; checked while reading, before buffering more. */
export const MAX_BODY_BYTES = 1024 * 1024;

// An admin call waits on a controller at most this long for its request to arrive, so a stuck client
// cannot pin a socket forever.
const REQUEST_TIMEOUT_MS = 10_000;

/**
 * A small JSON-over-HTTP server: `/metrics` (Prometheus text), `/healthz`, and the routes a role adds.
 *
 * Responses: a handler's return value as JSON with 200 (`{}` when it returns undefined); a bad JSON body
 * 400 `{error}`; a thrown `NfsError` 400 `{error, code}`; anything else thrown 500 `{error}`; an unknown
 * path 404; a known path with another method 405; a request to a route that is not open, without a valid
 * signature, 401 `{error, code: NFS_ERR_AUTH}` (counted by reason, and its handler never runs).
 * Registering the same method and path again replaces the handler, which is how a role swaps `/healthz`
 * for a readiness check. A raw route (`raw()`) answers by itself, in any content type, and may stay open
 * (server-sent events): `stop()` ends it with every other connection.
 *
 * Reads (GET) are open by default and changes (POST) take the internal key; a role marks the routes an
 * operator calls as `operator`. Without keys every route is open, which only loopback may serve.
 */
export class AdminServer implements MetricSource {
  private readonly host: string;
  private readonly requestedPort: number;
  /** Where `/metrics` reads from; components attaching to this server add their sources here. */
  readonly registry: MetricsRegistry;
  private readonly keys: AdminKeys | undefined;
  private readonly verifier = new RequestVerifier();
  private readonly rejected = new Map<AuthRejection, number>();
  private readonly logger: Logger | undefined;
  private readonly routes = new Map<string, Map<'GET' | 'POST', Route>>();
  private server: Server | undefined;
  private starting: Promise<number> | undefined;
  private stopping: Promise<void> | undefined;
  private boundPort = 0;
  private readonly sockets = new Set<Socket>();
  // Registered like any route so that it shows in 405 answers, but answered with text, not JSON.
  private readonly metricsRoute: RouteHandler = () => undefined;

  constructor(opts: AdminServerOptions) {
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
      throw new NfsError(
        ErrorCode.CONFIG,
        `admin port: must be an integer 0..65535 (got ${String(opts.port)})`,
      );
    }
    this.host = opts.host ?? '127.0.0.1';
    if (opts.keys === undefined && !isLoopback(this.host))
      throw new NfsError(
        ErrorCode.CONFIG,
        `admin API on ${this.host}: an address other than loopback needs the deployment key`,
      );
    this.requestedPort = opts.port;
    this.registry = opts.registry;
    this.keys = opts.keys;
    this.logger = opts.logger;
    this.registry.add(this);
    this.route('GET', '/metrics', this.metricsRoute);
    this.route('GET', '/healthz', () => ({ ok: true }));
  }

  /** The bound port while started, else 0. */
  get port(): number {
    return this.boundPort;
  }

  route(
    method: 'GET' | 'POST',
    path: string,
    handler: RouteHandler,
    scope: RouteScope = method === 'GET' ? 'open' : 'internal',
  ): void {
    this.add(path, method, { handler, scope });
  }

  /**
   * Registers an open GET route that `handler` answers itself, with any content type, for as long as it
   * likes: nothing is read from the request and no signature is asked for, as for any read. A handler that
   * throws before it answers gets a 500.
   */
  raw(path: string, handler: RawHandler): void {
    this.add(path, 'GET', { raw: handler, scope: 'open' });
  }

  private add(path: string, method: 'GET' | 'POST', route: Route): void {
    let byMethod = this.routes.get(path);
    if (byMethod === undefined) {
      byMethod = new Map();
      this.routes.set(path, byMethod);
    }
    byMethod.set(method, route);
  }

  collect(out: MetricSample[]): void {
    for (const [reason, n] of this.rejected) out.push(['nfstate_admin_rejected_total', { reason }, n]);
  }

  /** Binds and resolves with the port. Calling it again while started returns the same port. */
  start(): Promise<number> {
    // A start during a stop binds afresh once the old listener is closed.
    if (this.stopping !== undefined) return this.stopping.then(() => this.start());
    if (this.starting !== undefined) return this.starting;
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.logger?.error('admin request failed', { err });
        sendJson(res, 500, { error: 'internal error' });
      });
    });
    server.requestTimeout = REQUEST_TIMEOUT_MS;
    server.headersTimeout = REQUEST_TIMEOUT_MS;
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.server = server;
    this.starting = new Promise<number>((resolve, reject) => {
      const onError = (err: Error): void => {
        this.server = undefined;
        this.starting = undefined;
        reject(
          new NfsError(
            ErrorCode.PROCESS,
            `admin server: cannot listen on ${this.host}:${this.requestedPort}`,
            {
              cause: err,
            },
          ),
        );
      };
      server.once('error', onError);
      server.listen(this.requestedPort, this.host, () => {
        server.off('error', onError);
        server.on('error', (err) => this.logger?.error('admin server error', { err }));
        this.boundPort = (server.address() as AddressInfo).port;
        resolve(this.boundPort);
      });
    });
    return this.starting;
  }

  /** Closes the listener and every open connection. Safe to call twice, or before `start()`. */
  stop(): Promise<void> {
    if (this.stopping !== undefined) return this.stopping;
    const server = this.server;
    const starting = this.starting;
    if (server === undefined || starting === undefined) return Promise.resolve();
    this.stopping = (async () => {
      try {
        await starting;
      } catch {
        return; // never listened, nothing to close
      }
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        // Keep-alive connections would hold close() open until the client goes away.
        for (const socket of this.sockets) socket.destroy();
      });
      this.server = undefined;
      this.starting = undefined;
      this.boundPort = 0;
    })().finally(() => {
      this.stopping = undefined;
    });
    return this.stopping;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://admin');
    } catch {
      req.resume();
      sendJson(res, 400, { error: 'bad request target' });
      return;
    }
    const byMethod = this.routes.get(url.pathname);
    if (byMethod === undefined) {
      req.resume();
      sendJson(res, 404, { error: `no route ${url.pathname}` });
      return;
    }
    const method = req.method === 'GET' || req.method === 'POST' ? req.method : undefined;
    const route = method === undefined ? undefined : byMethod.get(method);
    if (method === undefined || route === undefined) {
      req.resume();
      res.setHeader('allow', [...byMethod.keys()].join(', '));
      sendJson(res, 405, { error: `method ${req.method ?? '?'} not allowed on ${url.pathname}` });
      return;
    }
    if ('raw' in route) {
      req.resume();
      try {
        route.raw(req, res);
      } catch (err) {
        this.logger?.error('admin handler failed', { path: url.pathname, err });
        if (res.headersSent) res.destroy();
        else sendJson(res, 500, { error: err instanceof Error ? err.message : String(err) });
      }
      return;
    }
    const { handler, scope } = route;
    if (handler === this.metricsRoute) {
      req.resume();
      this.serveMetrics(res);
      return;
    }

    let body = '';
    if (method === 'POST') {
      const read = await readBody(req, MAX_BODY_BYTES);
      if (read === TOO_LARGE) {
        sendJson(res, 413, { error: `body larger than ${MAX_BODY_BYTES} bytes` });
        return;
      }
      if (read === ABORTED) return;
      body = read;
    } else {
      req.resume();
    }
    if (this.keys !== undefined && scope !== 'open') {
      const keys = scope === 'operator' ? [this.keys.operator, this.keys.internal] : [this.keys.internal];
      const why = this.verifier.verify(keys, req.headers[AUTH_HEADER], method, req.url ?? '/', body);
      if (why !== undefined) {
        this.rejected.set(why, (this.rejected.get(why) ?? 0) + 1);
        this.logger?.warn('admin request refused', { path: url.pathname, scope, why });
        sendJson(res, 401, { error: `${url.pathname}: not authenticated (${why})`, code: ErrorCode.AUTH });
        return;
      }
    }

    let input: unknown;
    if (method === 'POST') {
      if (body.length === 0) {
        input = undefined;
      } else {
        try {
          input = JSON.parse(body) as unknown;
        } catch (err) {
          sendJson(res, 400, { error: `bad JSON body: ${(err as Error).message}` });
          return;
        }
      }
    } else {
      input = Object.fromEntries(url.searchParams);
    }

    try {
      const result = await handler(input);
      sendJson(res, 200, result === undefined ? {} : result);
    } catch (err) {
      if (err instanceof NfsError) {
        sendJson(res, 400, { error: err.message, code: err.code, retriable: err.retriable });
      } else {
        this.logger?.error('admin handler failed', { path: url.pathname, err });
        sendJson(res, 500, { error: err instanceof Error ? err.message : String(err) });
      }
    }
  }

  private serveMetrics(res: ServerResponse): void {
    let text: string;
    try {
      text = this.registry.render();
    } catch (err) {
      this.logger?.error('metrics render failed', { err });
      sendJson(res, 500, { error: 'metrics render failed' });
      return;
    }
    res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  let text: string;
  try {
    // undefined for a function or symbol result, which JSON cannot carry.
    const json = JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) as
      string | undefined;
    text = json ?? '{}';
  } catch (err) {
    status = 500;
    text = JSON.stringify({ error: `response not serializable: ${(err as Error).message}` });
  }
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const TOO_LARGE = Symbol('too-large');
const ABORTED = Symbol('aborted');

/** Reads the body as UTF-8, refusing more than `limit` bytes before buffering them. */
function readBody(req: IncomingMessage, limit: number): Promise<string | typeof TOO_LARGE | typeof ABORTED> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) {
    req.resume();
    return Promise.resolve(TOO_LARGE);
  }
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        done = true;
        chunks.length = 0;
        resolve(TOO_LARGE);
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    const abort = (): void => {
      if (done) return;
      done = true;
      resolve(ABORTED);
    };
    req.on('error', abort);
    // 'close' before 'end' means the client went away mid-body.
    req.on('close', abort);
  });
}
