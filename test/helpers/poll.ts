/**
 * Waiting on a running deployment from a test: poll a condition, order a call against a timer, read one
 * Prometheus sample.
 *
 *   await until(async () => (await sinkDelivered()) === sent);
 *   await settlesBefore(store.submit(batch, { deadlineMs: 300 }), 1000);
 *   sample(await metrics(admin), 'nfstate_replication_replicas');
 */

/** Resolves once `cond` holds, or after `ms` (the caller's assertion then says what did not happen). */
export async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond()) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
}

/**
 * Whether `p` settles before a timer of `ms` armed now: an order of this process's own timers, not a
 * bound on how long anything takes. Node runs due timers in the order they expire, and the promise
 * jobs one of them starts before the next, so a call that armed its deadline timer before this one,
 * for less than `ms`, settles first however loaded the machine is; a call that waits on something else
 * (a longer default deadline, a server's own timeout) does not.
 *
 *   const call = store.submit(batch, { deadlineMs: 300 });
 *   assert.equal(await settlesBefore(call, 1000), true);
 */
export async function settlesBefore(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  const settled = p.then(
    () => true as const,
    () => true as const,
  );
  try {
    return await Promise.race([settled, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The Prometheus text of a role's admin port. */
export async function metrics(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics on ${port}: HTTP ${res.status}`);
  return res.text();
}

/** One sample's value (NaN if absent); `labels` is the start of its label set, e.g. `reason="gap"`. */
export function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(name + (labels === '' ? ' ' : `{${labels}`)));
  return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
}
