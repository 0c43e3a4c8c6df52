/**
 * Leader election for the controller through etcd: every controller campaigns, one leads, and a standby
 * takes over when the leader dies, resigns or is cut off from etcd.
 *
 *   const election = new LeaderElection({ hosts, prefix: 'nfstate/', id: 'ctl-a', value: '{"admin":7000}',
 *     ttlSeconds: 4, logger });
 *   election.onDemoted = (reason) => controller.standDown(reason);   // stop acting at once
 *   await election.start();
 *   await election.campaign();           // resolves once this candidate leads
 *   election.watchLeader((leader) => repoint(leader?.value));
 *   await election.stop();               // resigns, revokes, closes the client
 *
 * Layout. Each candidate holds one lease and one key under it, `<prefix>election/<name>/<lease id, hex>`,
 * whose value is `{"id":…,"value":…}`: the layout of etcd's Go client, so `etcdctl elect -l
 * <prefix>election/<name>` shows the leader. The leader is the key with the lowest create revision; that
 * revision is the leader's `term`, which only grows, so it can fence what a stale leader sends. A
 * candidate waits for the keys before its own to go: revoked by a resignation, or expired with a dead
 * holder's lease.
 *
 * Why a leader demotes itself after half its TTL without a renewal. Leadership is the lease, and the
 * lease lives on the etcd leader's clock: it expires `ttl` after the last renewal etcd applied (with
 * etcd's default settings a new etcd leader gives every lease a fresh TTL, which only lengthens it).
 * etcd applied that renewal after we sent it, so the lease lives at least until `sent + ttl` on our
 * monotonic clock, and no other candidate can lead before it expires. A holder that cannot renew
 * (quorum lost, partitioned, etcd stalled) therefore stops at `sent + ttl/2`: half a TTL of margin for
 * clock rate differences, a late timer and the other candidates' delay, so that two controllers never
 * act as leader at once. The price is availability: a stall of etcd longer than the margin left
 * demotes a healthy leader. Renewals go out every ttl/8 and a failed one is retried after at most
 * ttl/8 + 100 ms, so a stall shorter than about ttl/3 costs nothing: a dead member, or an etcd leader
 * election if the TTL is several times etcd's election time (4 s for etcd-local's 250 ms elections on
 * a loaded machine; 2 s rides out a follower's loss, not always the etcd leader's). `isLeader` checks
 * the age itself, so a process whose event loop stalled past the limit reads false before its timer
 * runs. What a lease cannot stop is a process frozen (SIGSTOP, a long GC pause) between its check and
 * its act: fence such acts with `term`.
 *
 * etcd3 (1.1.x) is used below its Election class, whose calls have no deadlines, whose waits cannot be
 * cancelled, and whose lease declares itself lost only after twice the TTL; every call here has a
 * deadline (etcd holds one about 7 s when it has no leader). The client itself is global/etcd-client.ts
 * (no circuit breaker, capped watch backoff, bounded watch cancel). A channel still connecting at
 * `close()` (etcd unreachable) is closed only after 1 s, on a timer of etcd3's: a process whose etcd was
 * unreachable exits up to 1 s after stop().
 */
import { performance } from 'node:perf_hooks';
import {
  Etcd3,
  EtcdLeaseInvalidError,
  GRPCDeadlineExceededError,
  type IKeyValue,
  type Lease,
  type Watcher,
} from 'etcd3';
import { ErrorCode, NfsError } from '../errors.js';
import { DEFAULT_DEADLINE_MS, withDeadline } from '../global/store.js';
import { cancelWatcher, etcdClient } from '../global/etcd-client.js';
import type { Logger, MetricSample, MetricSource } from '../types.js';

export interface LeaderElectionOptions {
  /** Client URLs of the etcd members, `http://host:port`. */
  hosts: readonly string[];
  /** The deployment's key prefix; ends with '/' by convention. */
  prefix: string;
  /** This candidate's name, published while it leads. */
  id: string;
  /** What followers need to reach the leader (an address); published while it leads. Default ''. */
  value?: string;
  /** Which election, under the prefix. Default 'controller'. */
  name?: string;
  /**
   * The lease's TTL in whole seconds: a dead leader is replaced within about this long, and one that is
   * cut off demotes itself after half of it. Take at least 3 times etcd's election timeout.
   */
  ttlSeconds: number;
  logger: Logger;
  /** The deadline of each etcd call other than a renewal. Default DEFAULT_DEADLINE_MS. */
  deadlineMs?: number;
}

/** The current leader as etcd holds it. */
export interface Leader {
  readonly id: string;
  readonly value: string;
  /** The create revision of its key: higher for every new leadership. */
  readonly term: number;
}

/** Why a leader lost its leadership without resigning. */
export const Demotion = {
  /** No renewal succeeded for half the TTL: the lease may expire any moment (no quorum, partition). */
  STALE: 'keepalive-stale',
  /** etcd says the lease is gone. */
  EXPIRED: 'lease-expired',
  /** Someone deleted the leader's key. */
  DELETED: 'key-deleted',
} as const;
export type Demotion = (typeof Demotion)[keyof typeof Demotion];

export interface LeaderWatch {
  /** Stops delivery; safe to repeat. */
  stop(): void;
}

const MAX_ID_BYTES = 256;

export class LeaderElection implements MetricSource {
  /** Called once per lost leadership, at once, with why; never after resign() or stop(). */
  onDemoted: ((reason: Demotion) => void) | undefined;
  readonly counts = {
    terms: 0,
    demotions: 0,
    resignations: 0,
    renewalFailures: 0,
    callFailures: 0,
    leaderChanges: 0,
  };
  readonly id: string;
  private readonly hosts: string[];
  private readonly keyPrefix: string;
  private readonly record: string;
  private readonly ttlSeconds: number;
  private readonly deadlineMs: number;
  private readonly logger: Logger;
  /** A leader stops this long after it sent its last successful renewal. */
  private readonly demoteAfterMs: number;
  private readonly renewEveryMs: number;
  /** Pause after a failed call, and the longest wait for an answer that a watch event should bring. */
  private readonly retryMs: number;
  private readonly pollMs: number;
  private readonly reconnect = { closing: false };

  private client: Etcd3 | undefined;
  private stopping: Promise<void> | undefined;
  private watcher: Watcher | undefined;
  /** The current key and lease, from the campaign's start until it is withdrawn or lost. */
  private candidacy: Candidacy | undefined;
  /** Set while this candidate leads; always the candidacy too. */
  private leading: Candidacy | undefined;
  private campaigning: { run: Promise<void>; abort: AbortController } | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  /** Leases given up but not yet known revoked. */
  private readonly unrevoked = new Set<Candidacy>();
  /** Counts watch events and lost candidacies: a loop that read at `changes` waits for it to move. */
  private changes = 0;
  private readonly wakers = new Set<() => void>();
  private readonly observers = new Map<(leader: Leader | undefined) => void, Observed>();
  private observing = false;
  private current: Observed = { known: false, leader: undefined };

  constructor(options: LeaderElectionOptions) {
    const { hosts, prefix, id, value = '', name = 'controller', ttlSeconds } = options;
    if (!Array.isArray(hosts) || hosts.length === 0 || hosts.some((h) => typeof h !== 'string' || h === '')) {
      throw new NfsError(ErrorCode.CONFIG, 'election.hosts: at least one etcd client URL is needed');
    }
    if (typeof prefix !== 'string') throw new NfsError(ErrorCode.CONFIG, 'election.prefix: must be a string');
    if (typeof id !== 'string' || id === '' || Buffer.byteLength(id) > MAX_ID_BYTES) {
      throw new NfsError(ErrorCode.CONFIG, `election.id: must be a string of 1..${MAX_ID_BYTES} UTF-8 bytes`);
    }
    if (typeof value !== 'string') throw new NfsError(ErrorCode.CONFIG, 'election.value: must be a string');
    if (typeof name !== 'string' || name === '' || name.includes('/')) {
      throw new NfsError(ErrorCode.CONFIG, 'election.name: must be a non-empty string without "/"');
    }
    if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) {
      throw new NfsError(
        ErrorCode.CONFIG,
        `election.ttlSeconds: must be a whole number of seconds, at least 1, got ${String(ttlSeconds)}`,
      );
    }
    const deadlineMs = options.deadlineMs ?? DEFAULT_DEADLINE_MS;
    if (!Number.isFinite(deadlineMs) || deadlineMs <= 0) {
      throw new NfsError(
        ErrorCode.CONFIG,
        `election.deadlineMs: must be a positive number, got ${deadlineMs}`,
      );
    }
    this.id = id;
    this.hosts = options.hosts.slice();
    this.keyPrefix = `${prefix}election/${name}/`;
    this.record = JSON.stringify({ id, value });
    this.ttlSeconds = ttlSeconds;
    this.deadlineMs = deadlineMs;
    this.logger = options.logger;
    this.demoteAfterMs = (ttlSeconds * 1000) / 2;
    this.renewEveryMs = this.demoteAfterMs / 4;
    this.retryMs = Math.min(this.renewEveryMs, 100);
    this.pollMs = this.demoteAfterMs;
  }

  /** Connects and starts watching the election. Safe to repeat; an election that was stopped stays so. */
  start(): Promise<void> {
    if (this.stopping !== undefined) {
      return Promise.reject(new NfsError(ErrorCode.STATE, 'election: stopped; make a new one'));
    }
    if (this.client !== undefined) return Promise.resolve();
    this.client = etcdClient(this.hosts, this.reconnect, false);
    this.watch(this.client);
    return Promise.resolve();
  }

  /** Whether this candidate leads now; false as soon as its lease is no longer surely alive. */
  get isLeader(): boolean {
    const c = this.leading;
    if (c === undefined) return false;
    if (this.fresh(c)) return true;
    this.demote(c, Demotion.STALE);
    return false;
  }

  /** This candidate's term while it leads (see Leader.term). */
  get term(): number | undefined {
    return this.isLeader ? this.leading?.rev : undefined;
  }

  /**
   * Resolves once this candidate leads; at once if it does. Calls made while a campaign runs join it.
   * Failed etcd calls are retried until resign() or stop(), which reject it with NFS_ERR_STATE.
   */
  campaign(): Promise<void> {
    if (this.client === undefined || this.stopping !== undefined) {
      return Promise.reject(new NfsError(ErrorCode.STATE, 'election: not started'));
    }
    const client = this.client;
    if (this.isLeader) return Promise.resolve();
    if (this.campaigning === undefined) {
      const abort = new AbortController();
      const run = this.runCampaign(client, abort.signal).finally(() => {
        if (this.campaigning?.abort === abort) this.campaigning = undefined;
      });
      this.campaigning = { run, abort };
    }
    return this.campaigning.run;
  }

  /** The current leader, or undefined when none leads; NFS_ERR_TIMEOUT past the deadline. */
  async leader(options: { deadlineMs?: number; signal?: AbortSignal } = {}): Promise<Leader | undefined> {
    const first = await this.first(this.started(), options);
    return first?.leader;
  }

  /**
   * Calls `onChange` with the leader as soon as it is known, then on every change (undefined while none
   * leads), in etcd's order. Changes closer together than a read may arrive as one; the last call always
   * names the current leader. While etcd cannot be read, nothing is called: no news is not "no leader".
   */
  watchLeader(onChange: (leader: Leader | undefined) => void): LeaderWatch {
    const client = this.started();
    const seen: Observed = { known: false, leader: undefined };
    this.observers.set(onChange, seen);
    if (this.current.known) {
      queueMicrotask(() => {
        this.deliver(onChange, this.current.leader);
      });
    }
    if (!this.observing) {
      this.observing = true;
      void this.observe(client);
    }
    return {
      stop: () => {
        this.observers.delete(onChange);
      },
    };
  }

  /**
   * Gives up leadership, or withdraws a campaign, at once: the next candidate leads as soon as etcd
   * revokes the lease. If etcd cannot be reached the lease is left to expire, and revoked later if it
   * comes back first.
   */
  async resign(): Promise<void> {
    this.abortCampaign(new NfsError(ErrorCode.STATE, 'election: campaign withdrawn (resign)'));
    const c = this.candidacy;
    if (c === undefined) return;
    if (this.leading === c) {
      this.counts.resignations++;
      this.logger.info('election: resigned', { id: this.id, term: c.rev });
    }
    this.release(c);
    await this.revokeOrReap(c);
  }

  /**
   * Resigns if leading, revokes this candidate's leases, stops the watch and closes the client. Every
   * step has a deadline and nothing is left running, so the process can exit. Safe to repeat.
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  collect(out: MetricSample[]): void {
    const c = this.leading;
    out.push(['nfstate_election_leader', { id: this.id }, c !== undefined && this.fresh(c) ? 1 : 0]);
    out.push(['nfstate_election_terms_total', {}, this.counts.terms]);
    out.push(['nfstate_election_demotions_total', {}, this.counts.demotions]);
    out.push(['nfstate_election_resignations_total', {}, this.counts.resignations]);
    out.push(['nfstate_election_renewal_failures_total', {}, this.counts.renewalFailures]);
    out.push(['nfstate_election_call_failures_total', {}, this.counts.callFailures]);
    out.push(['nfstate_election_leader_changes_total', {}, this.counts.leaderChanges]);
  }

  private async shutdown(): Promise<void> {
    const client = this.client;
    this.abortCampaign(new NfsError(ErrorCode.STATE, 'election: stopped'));
    this.observers.clear();
    const c = this.candidacy;
    if (c !== undefined) {
      this.release(c);
      this.unrevoked.add(c);
    }
    this.bump();
    if (client === undefined) return;
    this.reconnect.closing = true;
    const watcher = this.watcher;
    this.watcher = undefined;
    await Promise.all([
      ...[...this.unrevoked].map((u) =>
        this.revoke(u).then(
          () => this.unrevoked.delete(u),
          (err: unknown) => {
            this.logger.warn('election: lease not revoked at stop; it expires by its TTL', {
              id: this.id,
              err: String(err),
            });
          },
        ),
      ),
      watcher === undefined ? undefined : cancelWatcher(client, watcher, 'election'),
    ]);
    this.unrevoked.clear();
    this.client = undefined;
    client.close();
  }

  private async runCampaign(client: Etcd3, signal: AbortSignal): Promise<void> {
    let failures = 0;
    for (;;) {
      signal.throwIfAborted();
      const c = (this.candidacy ??= new Candidacy(client, this.ttlSeconds, this.deadlineMs));
      const seen = this.changes;
      let waitMs = this.pollMs;
      try {
        await this.enter(client, c);
        signal.throwIfAborted();
        if (!c.isOpen()) continue;
        const first = await this.first(client);
        signal.throwIfAborted();
        if (failures > 0) this.logger.info('election: etcd answers again', { id: this.id });
        failures = 0;
        if (!c.isOpen()) continue;
        if (first?.key === c.key) {
          if (this.fresh(c)) {
            this.lead(c);
            return;
          }
          // First in line, but the lease has not been renewed lately: wait for the next renewal.
          waitMs = this.retryMs;
        } else if (first === undefined || first.leader.term > c.rev) {
          // Our key is gone: the lease expired while it could not be renewed. Queue again.
          this.release(c);
          this.reap(c);
          continue;
        }
      } catch (err) {
        signal.throwIfAborted();
        if (c.key === '' || err instanceof EtcdLeaseInvalidError) {
          // Never granted, or gone: start over with a new lease.
          this.release(c);
          this.reap(c);
        }
        this.counts.callFailures++;
        if (failures++ === 0) {
          this.logger.warn('election: etcd call failed; retrying', { id: this.id, err: String(err) });
        }
        waitMs = this.backoff(failures);
      }
      await this.changed(seen, waitMs);
    }
  }

  /** Grants the candidacy's lease and puts its key, whatever of that is not done yet. */
  private async enter(client: Etcd3, c: Candidacy): Promise<void> {
    if (c.key === '') {
      const id = await this.call('etcd lease grant', {}, () => c.lease.grant());
      // Withdrawn meanwhile: the lease gets no key, and expires.
      if (!c.isOpen()) return;
      c.key = this.keyPrefix + BigInt(id).toString(16);
      c.leaseId = id;
      void this.renew(c);
    }
    if (c.rev !== 0 || !c.isOpen()) return;
    // Create-if-absent, so that a retry after a lost answer finds the key that its first try made.
    const res = await this.call('etcd campaign transaction', {}, (deadline) =>
      client
        .if(c.key, 'Create', '==', 0)
        .then(client.put(c.key).value(this.record).lease(c.leaseId))
        .else(client.get(c.key))
        .options({ deadline })
        .commit(),
    );
    if (res.succeeded) {
      c.rev = Number(res.header.revision);
      return;
    }
    const kv = res.responses[0]?.response_range.kvs[0];
    if (kv === undefined) {
      throw new NfsError(ErrorCode.STATE, 'election: campaign key neither created nor found');
    }
    c.rev = Number(kv.create_revision);
  }

  /** Keeps the candidacy's lease alive until it is released; each success moves `renewedAt`. */
  private async renew(c: Candidacy): Promise<void> {
    while (c.isOpen()) {
      const sent = performance.now();
      let ok = false;
      try {
        await this.call('etcd lease keepalive', { deadlineMs: this.renewEveryMs }, (deadline) =>
          c.lease.keepaliveOnce({ deadline }),
        );
        ok = true;
      } catch (err) {
        if (!c.isOpen()) return;
        if (err instanceof EtcdLeaseInvalidError) {
          this.lost(c);
          return;
        }
        this.counts.renewalFailures++;
      }
      if (!c.isOpen()) return;
      if (ok) {
        c.renewedAt = Math.max(c.renewedAt, sent);
        if (this.leading === c) this.armWatchdog(c);
      }
      await c.sleep(ok ? this.renewEveryMs : this.retryMs);
    }
  }

  private lead(c: Candidacy): void {
    this.leading = c;
    this.counts.terms++;
    this.logger.info('election: leading', { id: this.id, term: c.rev });
    this.armWatchdog(c);
  }

  private armWatchdog(c: Candidacy): void {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(
      () => {
        this.watchdog = undefined;
        if (this.leading !== c) return;
        if (this.fresh(c)) this.armWatchdog(c);
        else this.demote(c, Demotion.STALE);
      },
      Math.max(0, c.renewedAt + this.demoteAfterMs - performance.now()),
    );
  }

  private fresh(c: Candidacy): boolean {
    return performance.now() - c.renewedAt < this.demoteAfterMs;
  }

  /** The candidacy's lease is gone: demote if it led, queue again if it campaigns. */
  private lost(c: Candidacy): void {
    if (this.leading === c) {
      this.demote(c, Demotion.EXPIRED);
      return;
    }
    this.release(c);
  }

  private demote(c: Candidacy, reason: Demotion): void {
    if (this.leading !== c) return;
    this.counts.demotions++;
    this.logger.warn('election: demoted', { id: this.id, term: c.rev, reason });
    this.release(c);
    // Revoking lets a standby take over at once if etcd is back before the lease expires.
    this.reap(c);
    try {
      this.onDemoted?.(reason);
    } catch (err) {
      this.logger.error('election: onDemoted threw', { id: this.id, err: String(err) });
    }
  }

  /** Stops acting on and renewing `c`, and forgets it as the candidacy; etcd is not told. */
  private release(c: Candidacy): void {
    if (this.leading === c) {
      this.leading = undefined;
      clearTimeout(this.watchdog);
      this.watchdog = undefined;
    }
    if (this.candidacy === c) this.candidacy = undefined;
    if (c.isOpen()) {
      c.close();
      this.bump();
    }
  }

  private async revokeOrReap(c: Candidacy): Promise<void> {
    try {
      await this.revoke(c);
    } catch (err) {
      this.logger.warn('election: lease not revoked; it expires by its TTL', {
        id: this.id,
        err: String(err),
      });
      this.reap(c);
    }
  }

  /** Revokes `c`'s lease in the background, until it is done or the election stops. */
  private reap(c: Candidacy): void {
    if (this.unrevoked.has(c) || this.stopping !== undefined) return;
    this.unrevoked.add(c);
    void (async () => {
      while (this.unrevoked.has(c) && this.stopping === undefined) {
        try {
          await this.revoke(c);
          this.unrevoked.delete(c);
        } catch {
          await this.changed(this.changes, this.pollMs);
        }
      }
    })();
  }

  /** Revokes `c`'s lease. One not granted yet holds no key (see enter): it is left to expire. */
  private revoke(c: Candidacy): Promise<void> {
    if (c.key === '') return Promise.resolve();
    return this.call('etcd lease revoke', {}, (deadline) => c.lease.revoke({ deadline }));
  }

  /** The key with the lowest create revision under the election, read with a deadline. */
  private async first(
    client: Etcd3,
    options: { deadlineMs?: number; signal?: AbortSignal } = {},
  ): Promise<{ key: string; leader: Leader } | undefined> {
    const res = await this.call('etcd range', options, (deadline) =>
      client.getAll().prefix(this.keyPrefix).sort('Create', 'Ascend').limit(1).options({ deadline }).exec(),
    );
    const kv = res.kvs[0];
    if (kv === undefined) return undefined;
    return { key: kv.key.toString(), leader: decodeLeader(kv, this.keyPrefix) };
  }

  private async observe(client: Etcd3): Promise<void> {
    let failures = 0;
    while (this.observers.size > 0 && this.stopping === undefined) {
      const seen = this.changes;
      let waitMs = this.pollMs;
      try {
        const first = await this.first(client);
        this.see(first?.leader);
        failures = 0;
      } catch {
        this.counts.callFailures++;
        waitMs = this.backoff(++failures);
      }
      await this.changed(seen, waitMs);
    }
    this.observing = false;
    // Unobserved, the last leader seen goes stale: a later subscriber waits for a fresh read.
    this.current = { known: false, leader: undefined };
  }

  private see(leader: Leader | undefined): void {
    if (this.current.known && sameLeader(this.current.leader, leader)) return;
    if (this.current.known) this.counts.leaderChanges++;
    this.current = { known: true, leader };
    for (const onChange of [...this.observers.keys()]) this.deliver(onChange, leader);
  }

  private deliver(onChange: (leader: Leader | undefined) => void, leader: Leader | undefined): void {
    const seen = this.observers.get(onChange);
    if (seen === undefined || (seen.known && sameLeader(seen.leader, leader))) return;
    seen.known = true;
    seen.leader = leader;
    try {
      onChange(leader);
    } catch (err) {
      this.logger.error('election: watchLeader callback threw', { id: this.id, err: String(err) });
    }
  }

  /** One watch on the whole election; its events only wake the loops, which then read. */
  private watch(client: Etcd3): void {
    const w = client.watch().prefix(this.keyPrefix).watcher();
    this.watcher = w;
    w.on('connected', () => {
      this.bump();
    });
    w.on('data', (res) => {
      const c = this.leading;
      for (const ev of res.events) {
        if (c !== undefined && ev.type === 'Delete' && ev.kv.key.toString() === c.key) {
          this.demote(c, Demotion.DELETED);
        }
      }
      this.bump();
    });
    w.on('error', (err) => {
      // etcd cancelled the watch (the revision it resumes from was compacted): watch again from now.
      if (this.watcher !== w) return;
      this.logger.warn('election: watch cancelled by etcd; watching again', {
        id: this.id,
        err: String(err),
      });
      this.bump();
      if (this.stopping === undefined) this.watch(client);
    });
  }

  /** The pause after `failures` failed calls in a row: doubling from retryMs up to pollMs. */
  private backoff(failures: number): number {
    return Math.min(this.retryMs * 2 ** Math.min(failures - 1, 16), this.pollMs);
  }

  /** Resolves once `changes` moves past `seen`, after `ms`, or at stop. */
  private changed(seen: number, ms: number): Promise<void> {
    if (this.changes !== seen || this.stopping !== undefined) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakers.add(done);
    });
  }

  private bump(): void {
    this.changes++;
    for (const wake of [...this.wakers]) wake();
  }

  private abortCampaign(reason: NfsError): void {
    const campaigning = this.campaigning;
    if (campaigning === undefined) return;
    this.campaigning = undefined;
    campaigning.abort.abort(reason);
    this.bump();
  }

  /** Runs one etcd call with a deadline; etcd's errors become retriable NfsErrors. */
  private async call<T>(
    what: string,
    options: { deadlineMs?: number; signal?: AbortSignal },
    fn: (deadline: number) => Promise<T>,
  ): Promise<T> {
    try {
      return await withDeadline(`election: ${what}`, { deadlineMs: this.deadlineMs, ...options }, fn);
    } catch (err) {
      if (err instanceof NfsError || err instanceof EtcdLeaseInvalidError) throw err;
      if (err instanceof GRPCDeadlineExceededError) {
        throw new NfsError(ErrorCode.TIMEOUT, `election: ${what}: no answer before the deadline`, {
          cause: err,
          retriable: true,
        });
      }
      throw new NfsError(ErrorCode.STATE, `election: ${what}: ${(err as Error).message}`, {
        cause: err,
        retriable: true,
      });
    }
  }

  private started(): Etcd3 {
    if (this.client === undefined || this.stopping !== undefined) {
      throw new NfsError(ErrorCode.STATE, 'election: not started');
    }
    return this.client;
  }
}

interface Observed {
  known: boolean;
  leader: Leader | undefined;
}

/** One lease and the key it holds: a candidate's place in line. */
class Candidacy {
  readonly lease: Lease;
  leaseId = '';
  /** Empty until the lease is granted. */
  key = '';
  /** The key's create revision once it is put. */
  rev = 0;
  /** When the last successful renewal (at first the grant) was sent, on performance.now()'s clock. */
  renewedAt: number;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;

  constructor(client: Etcd3, ttlSeconds: number, deadlineMs: number) {
    this.renewedAt = performance.now();
    // The grant goes out now; renewals are ours (etcd3's own loop gives up only after twice the TTL).
    this.lease = client.lease(ttlSeconds, { autoKeepAlive: false, deadline: Date.now() + deadlineMs });
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.timer = setTimeout(resolve, ms);
    });
  }

  /** Until released: renewing, and counted on by the campaign. */
  isOpen(): boolean {
    return !this.closed;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.wake?.();
  }
}

function decodeLeader(kv: IKeyValue, keyPrefix: string): Leader {
  const term = Number(kv.create_revision);
  const raw = kv.value.toString();
  try {
    const v = JSON.parse(raw) as unknown;
    if (typeof v === 'object' && v !== null && 'id' in v && 'value' in v) {
      const { id, value } = v;
      if (typeof id === 'string' && typeof value === 'string') return { id, value, term };
    }
  } catch {
    // Not ours (another client's candidate): name it by its key.
  }
  return { id: kv.key.toString().slice(keyPrefix.length), value: raw, term };
}

function sameLeader(a: Leader | undefined, b: Leader | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.term === b.term && a.id === b.id && a.value === b.value;
}
