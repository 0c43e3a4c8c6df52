/**
 * Packet loss for a chaos run, with nftables (the kernel here has no netem): a table of its own, in the
 * namespace the deployment runs in (loopback), whose rules drop a share of the TCP segments to or from
 * some ports. Removing the table heals everything at once; a run that crashed leaves it behind, and the
 * next run's `open` removes it first.
 *
 *   const nft = await Nftables.open('nfstate_chaos');
 *   await nft.drop([41000, 41001], 30);   // 30 % of the segments to and from those ports
 *   await nft.drop([41002], 100);          // a partition: all of them
 *   await nft.close();
 */
import { execFile } from 'node:child_process';
import { ErrorCode, NfsError } from '../errors.js';

const NFT = 'nft';

function nft(args: readonly string[], input?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(NFT, [...args], { timeout: 10_000 }, (err, _out, stderr) => {
      if (err === null) resolve();
      else reject(new NfsError(ErrorCode.PROCESS, `nft ${args.join(' ')}: ${stderr.trim() || err.message}`));
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Why nftables cannot be used here, or undefined when it can. */
export async function nftablesMissing(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'nftables needs root';
  try {
    await nft(['list', 'tables']);
    return undefined;
  } catch (err) {
    return `nftables does not work here: ${(err as Error).message}`;
  }
}

export class Nftables {
  private constructor(private readonly table: string) {}

  /** A fresh table named `table` (one left by an earlier run is removed first). */
  static async open(table: string): Promise<Nftables> {
    if (!/^[a-z_][a-z0-9_]{0,30}$/.test(table)) throw new RangeError(`nftables: bad table name ${table}`);
    const t = new Nftables(table);
    await t.close();
    await nft(
      ['-f', '-'],
      `table inet ${table} {\n  chain input {\n    type filter hook input priority -10; policy accept;\n  }\n}\n`,
    );
    return t;
  }

  /** Drops `percent` % of the TCP segments to or from `ports`, until `heal`. */
  async drop(ports: readonly number[], percent: number): Promise<void> {
    if (ports.length === 0) return;
    if (!ports.every((p) => Number.isInteger(p) && p > 0 && p < 65536))
      throw new RangeError(`nftables: bad ports ${ports.join(',')}`);
    const set = `{ ${ports.join(', ')} }`;
    const share = Math.max(0, Math.min(100, Math.round(percent)));
    // numgen's share is 0..99: all of it is a plain drop.
    const some = share >= 100 ? [] : ['numgen', 'random', 'mod', '100', '<', String(share)];
    for (const dir of ['dport', 'sport'])
      await nft(['add', 'rule', 'inet', this.table, 'input', 'tcp', dir, set, ...some, 'drop']);
  }

  /** Removes every rule: nothing is dropped any more. */
  async heal(): Promise<void> {
    await nft(['flush', 'chain', 'inet', this.table, 'input']);
  }

  /** Removes the table; a no-op when there is none. */
  async close(): Promise<void> {
    await nft(['delete', 'table', 'inet', this.table]).catch(() => undefined);
  }
}
