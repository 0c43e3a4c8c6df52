/**
 * The etcd3 client as nfstate's etcd users (the GlobalStore, the controller's election) need it: every
 * call of theirs carries its own deadline and retry, so the client adds no waits of its own that outlast
 * an outage or a close.
 *
 *   const closing = { closing: false };
 *   const client = etcdClient(hosts, closing);
 *   …
 *   closing.closing = true;            // watch streams stop reconnecting
 *   await cancelWatcher(client, w, 'etcd');
 *   client.close();
 *
 * etcd3 (1.1.x) pitfalls this answers:
 *   - each member's calls pass a circuit breaker that refuses the member for 5 s after 3 failures, a
 *     deadline counting as one: after a quorum loss the client would refuse every call for up to 5 s
 *     more once etcd is back. Where that matters, the breaker is replaced by nothing (passThrough);
 *   - the watch manager reconnects on a timer with up to 30 s of backoff, which outlives `close()`:
 *     the backoff is capped at MAX_RECONNECT_MS, and 0 once closing;
 *   - `Watcher.cancel()` while the watch's create request is unanswered waits for an answer that may
 *     never come: cancelWatcher bounds it, then cancels the stream itself.
 */
import { Etcd3, type IOptions, type Watcher } from 'etcd3';
import { withDeadline } from './store.js';

/** The longest wait between two watch-stream reconnects. */
const MAX_RECONNECT_MS = 500;
/** How long a watch's cancel may take before the stream is cancelled under it. */
const CANCEL_WATCH_MS = 500;

/**
 * `breaker: false` replaces etcd3's per-member circuit breaker (the election, whose calls must recover the
 * moment etcd does). The GlobalStore keeps it: without it, its instances under load lost packets and
 * exited (seen in `nfstate demo --global etcd`; cause not found), while a claim's deadline (8 s) already
 * outlasts the breaker's 5 s.
 */
export function etcdClient(hosts: string[], closing: { closing: boolean }, breaker = true): Etcd3 {
  const watchBackoff = new Reconnect(closing, 25, MAX_RECONNECT_MS);
  return new Etcd3({
    hosts,
    faultHandling: breaker ? { watchBackoff } : { host: passThrough, watchBackoff },
  });
}

type HostPolicy = ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;

/**
 * The policy each member's calls go through: none. etcd3's default is a circuit breaker that refuses a
 * member for 5 s after 3 failed calls, a deadline counting as one, so a quorum loss trips every member
 * and the client then refuses all calls for up to 5 s after etcd is back, delaying the takeover as
 * long. Calls here have deadlines and loops that retry them, and the client's own retry moves a refused
 * connection (a dead member) to the next member at once.
 */
function passThrough(): HostPolicy {
  const noEvents = () => ({ dispose: () => undefined });
  // `_altReturn` exists in the type only, as in cockatiel's own policies.
  const policy = {
    onSuccess: noEvents,
    onFailure: noEvents,
    execute: async (fn, signal) => fn({ signal: signal ?? new AbortController().signal }),
  } satisfies Omit<HostPolicy, '_altReturn'>;
  return policy as unknown as HostPolicy;
}

/** Reconnect delays of the watch stream: doubling up to a cap, and 0 once the client closes. */
class Reconnect {
  constructor(
    private readonly shared: { closing: boolean },
    private readonly ms: number,
    private readonly maxMs: number,
  ) {}

  get duration(): number {
    return this.shared.closing ? 0 : this.ms;
  }

  next(): Reconnect {
    return new Reconnect(this.shared, Math.min(this.ms * 2, this.maxMs), this.maxMs);
  }
}

/**
 * Cancels `w` within CANCEL_WATCH_MS. etcd3 waits for the answer to a create request before it
 * cancels, and keeps the stream open meanwhile; past the bound, the stream is cancelled under it.
 */
export async function cancelWatcher(client: Etcd3, w: Watcher, who: string): Promise<void> {
  try {
    await withDeadline(`${who}: watch cancel`, { deadlineMs: CANCEL_WATCH_MS }, () => w.cancel());
  } catch {
    // etcd3 keeps this private: the manager's one stream for the client's watches.
    const manager = (client as unknown as { watchManager?: { stream?: { cancel(): void } } }).watchManager;
    manager?.stream?.cancel();
  }
}
