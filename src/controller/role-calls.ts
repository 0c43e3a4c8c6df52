/**
 * The controller's calls to the roles' admin APIs (admin-call.ts), signed with the deployment's internal
 * key (auth.ts): `post` within the admin client's timeout, or one given; `call` within a step's deadline,
 * whose failure says which step on which role.
 *
 *   const calls = new RoleCalls(adminKey, clock);
 *   await calls.call(dst, dst.id, '/move/expect', { flows }, clock.now() + 2000);
 */
import { adminCall, type AdminCallOptions } from '../admin-call.js';
import { ErrorCode, NfsError } from '../errors.js';
import type { Clock } from '../types.js';
import type { AdminAddress, FlowOwner } from './records.js';

export class RoleCalls {
  constructor(
    private readonly key: Buffer | undefined,
    private readonly clock: Clock,
  ) {}

  /** A call to a role's admin API, signed with the internal key. */
  post(to: AdminAddress, path: string, body: unknown, timeoutMs?: number): Promise<Record<string, unknown>> {
    const options: AdminCallOptions = {};
    if (this.key !== undefined) options.key = this.key;
    if (timeoutMs !== undefined) options.timeoutMs = timeoutMs;
    return adminCall(to.host, to.admin, path, body, options);
  }

  /**
   * One admin call of a move, bounded by `deadline` (clock ms). A missed deadline becomes NFS_ERR_TIMEOUT, an
   * unreachable role NFS_ERR_PROCESS; both say which step on which role.
   */
  async call(
    to: AdminAddress,
    who: string,
    path: string,
    body: unknown,
    deadline: number,
  ): Promise<Record<string, unknown>> {
    try {
      return await this.post(to, path, body, Math.max(1, Math.ceil(deadline - this.clock.now())));
    } catch (err) {
      if (err instanceof NfsError) throw err;
      if (err instanceof Error && err.name === 'TimeoutError')
        throw new NfsError(ErrorCode.TIMEOUT, `move: ${path} on ${who} missed the move's deadline`, {
          cause: err,
          retriable: true,
        });
      throw new NfsError(ErrorCode.PROCESS, `move: ${path} on ${who} failed: ${String(err)}`, {
        cause: err,
        retriable: true,
      });
    }
  }
}

/** The switch's flows (or one owner's), and its stamp clock as it listed them. */
export async function ingressFlows(
  ingress: AdminAddress,
  owner?: string,
): Promise<{ flows: FlowOwner[]; stampMs: number }> {
  const path = owner === undefined ? '/flows' : `/flows?owner=${encodeURIComponent(owner)}`;
  const r = (await adminCall(ingress.host, ingress.admin, path)) as unknown as {
    flows: FlowOwner[];
    stamp_ms: number;
  };
  return { flows: r.flows, stampMs: r.stamp_ms };
}
