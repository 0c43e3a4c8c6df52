/**
 * Aho–Corasick multi-pattern matching, compiled into a full transition table (a DFA: failure links are
 * folded into the table at build time), so scanning costs one array read per byte and never
 * backtracks. Scanning is resumable: `scan` starts from a node and returns the node it ended in, so a
 * pattern split across packets is found when the caller keeps that node between them.
 *
 *   const ac = new AhoCorasick([enc('/etc/passwd'), enc('cmd.exe')]);
 *   let node = AhoCorasick.ROOT;
 *   node = ac.scan(buf, off, off + len, node, sink);   // sink.onMatch(patternIndex, endOffset)
 *
 * Layout: `next[node * 256 + byte]` is the node after reading `byte`; the patterns that end at a node
 * (its own and, through failure links, its suffixes') are `outList[outStart[node] … outStart[node+1])`.
 */
import { ErrorCode, NfsError } from '../errors.js';

export interface MatchSink {
  /** Pattern `pattern` (its index in the constructor's list) ends just before buf[end]. */
  onMatch(pattern: number, end: number): void;
}

/** Above this many nodes the 1 KiB-per-node table stops being a sensible trade (32 MiB). */
export const MAX_NODES = 1 << 15;

export class AhoCorasick {
  static readonly ROOT = 0;
  readonly nodes: number;
  readonly next: Int32Array;
  readonly outStart: Uint32Array;
  readonly outList: Uint32Array;

  constructor(patterns: readonly Uint8Array[]) {
    let total = 1;
    for (const p of patterns) {
      if (p.length === 0) throw new NfsError(ErrorCode.CONFIG, 'aho-corasick: empty pattern');
      total += p.length;
    }
    if (total > MAX_NODES) {
      throw new NfsError(
        ErrorCode.CONFIG,
        `aho-corasick: ${total - 1} pattern bytes exceed the table limit of ${MAX_NODES - 1}`,
      );
    }
    // The trie, in a table sized for the worst case (no shared prefixes); -1 marks a missing edge.
    const next = new Int32Array(total * 256).fill(-1);
    const own: number[][] = [[]];
    let nodes = 1;
    patterns.forEach((p, index) => {
      let u = 0;
      for (const byte of p) {
        let v = next[u * 256 + byte]!;
        if (v < 0) {
          v = nodes++;
          next[u * 256 + byte] = v;
          own.push([]);
        }
        u = v;
      }
      own[u]!.push(index);
    });

    // Breadth first, so a node's failure target (always shallower) is complete before the node: a
    // missing edge then copies the failure target's edge, and outputs extend the failure target's.
    const fail = new Int32Array(nodes);
    const outputs: number[][] = new Array<number[]>(nodes);
    outputs[0] = own[0]!;
    const queue = new Int32Array(nodes);
    let head = 0;
    let tail = 0;
    for (let c = 0; c < 256; c++) {
      const v = next[c]!;
      if (v < 0) next[c] = 0;
      else {
        fail[v] = 0;
        queue[tail++] = v;
      }
    }
    while (head < tail) {
      const u = queue[head++]!;
      const f = fail[u]!;
      outputs[u] = own[u]!.length === 0 ? outputs[f]! : own[u]!.concat(outputs[f]!);
      for (let c = 0; c < 256; c++) {
        const v = next[u * 256 + c]!;
        const viaFail = next[f * 256 + c]!;
        if (v < 0) next[u * 256 + c] = viaFail;
        else {
          fail[v] = viaFail;
          queue[tail++] = v;
        }
      }
    }

    this.nodes = nodes;
    this.next = next.slice(0, nodes * 256);
    this.outStart = new Uint32Array(nodes + 1);
    let count = 0;
    for (let u = 0; u < nodes; u++) {
      this.outStart[u] = count;
      count += outputs[u]!.length;
    }
    this.outStart[nodes] = count;
    this.outList = new Uint32Array(count);
    for (let u = 0; u < nodes; u++) this.outList.set(outputs[u]!, this.outStart[u]);
  }

  /** Reads buf[from, to) starting at `node`, reports every match to `sink`, and returns the end node. */
  scan(buf: Uint8Array, from: number, to: number, node: number, sink: MatchSink): number {
    const next = this.next;
    const outStart = this.outStart;
    let u = node;
    for (let i = from; i < to; i++) {
      u = next[u * 256 + buf[i]!]!;
      const a = outStart[u]!;
      const b = outStart[u + 1]!;
      for (let j = a; j < b; j++) sink.onMatch(this.outList[j]!, i + 1);
    }
    return u;
  }
}
