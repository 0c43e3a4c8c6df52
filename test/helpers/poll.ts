/**
 * Waiting on a running deployment from a test: poll a condition, read one Prometheus sample.
 *
 *   await until(async () => (await sinkDelivered()) === sent);
 *   sample(await metrics(admin), 'nfstate_replication_replicas');
 */

/** Resolves once `cond` holds, or after `ms` (the caller's assertion then says what did not happen). */
export async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond()) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
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
