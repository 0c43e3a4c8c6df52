/**
 * Cluster formation: instances are grouped in clusters of at most k, locality first — an instance joins a
 * cluster that already has members on its own host when one has room, else the emptiest cluster with room,
 * else a new cluster. Membership changes move nobody else: a join fills a gap, a leave leaves one. Each
 * instance's secondary is the next member of its cluster, in join order.
 *
 *   const map = new ClusterMap(4);
 *   map.join({ id: 'nf-0', host: 'a' });   // 'c0'
 *   map.secondaryOf('nf-0');               // undefined until a second member joins
 */
import { ErrorCode, NfsError } from '../errors.js';

export interface Member {
  id: string;
  host: string;
}

export interface Cluster {
  id: string;
  members: Member[];
}

export class ClusterMap {
  private readonly byId = new Map<string, Cluster>();
  private readonly clusterOfMember = new Map<string, Cluster>();
  private next = 0;

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1)
      throw new NfsError(ErrorCode.CONFIG, `cluster size: must be >= 1 (got ${size})`);
  }

  /** Places a new instance; returns its cluster's id. Joining twice keeps the first placement. */
  join(m: Member): string {
    const known = this.clusterOfMember.get(m.id);
    if (known !== undefined) return known.id;
    const open = [...this.byId.values()].filter((c) => c.members.length < this.size);
    const local = open.filter((c) => c.members.some((x) => x.host === m.host));
    // Fullest local cluster first keeps a host's instances together; otherwise fill the emptiest.
    const pick =
      local.sort((a, b) => b.members.length - a.members.length)[0] ??
      open.sort((a, b) => a.members.length - b.members.length)[0];
    const cluster = pick ?? this.create();
    cluster.members.push({ ...m });
    this.clusterOfMember.set(m.id, cluster);
    return cluster.id;
  }

  /** Removes an instance; returns the cluster it left (now one member short), if it was known. */
  leave(id: string): string | undefined {
    const cluster = this.clusterOfMember.get(id);
    if (cluster === undefined) return undefined;
    cluster.members = cluster.members.filter((m) => m.id !== id);
    this.clusterOfMember.delete(id);
    if (cluster.members.length === 0) this.byId.delete(cluster.id);
    return cluster.id;
  }

  /** Starts from the clusters a previous controller had (journal.ts): members in their join order. */
  restore(clusters: readonly Cluster[]): void {
    for (const c of clusters) {
      const cluster: Cluster = { id: c.id, members: c.members.map((m) => ({ id: m.id, host: m.host })) };
      this.byId.set(cluster.id, cluster);
      for (const m of cluster.members) this.clusterOfMember.set(m.id, cluster);
      const n = Number(c.id.slice(1));
      if (Number.isSafeInteger(n)) this.next = Math.max(this.next, n + 1);
    }
  }

  clusterOf(id: string): Cluster | undefined {
    return this.clusterOfMember.get(id);
  }

  /** The member that takes over `id`'s flows if it fails: the next one in its cluster. */
  secondaryOf(id: string): string | undefined {
    const members = this.clusterOfMember.get(id)?.members;
    if (members === undefined || members.length < 2) return undefined;
    const at = members.findIndex((m) => m.id === id);
    return members[(at + 1) % members.length]!.id;
  }

  clusters(): Cluster[] {
    return [...this.byId.values()].map((c) => ({ id: c.id, members: c.members.map((m) => ({ ...m })) }));
  }

  private create(): Cluster {
    const cluster: Cluster = { id: `c${this.next++}`, members: [] };
    this.byId.set(cluster.id, cluster);
    return cluster;
  }
}
