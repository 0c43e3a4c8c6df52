/**
 * A service chain as one network function: every packet passes each NF of the chain, and a flow's state
 * is every NF's part of it together.
 *
 *   chain: [firewall, nat]                                   # topology: a list of types or { type, config }
 *   const nf = createNf('chain', { nfs: [{ type: 'firewall', config: { strict: true } }, { type: 'nat' }] }, g);
 *
 * Order. The connection's initiator (the first packet's source, before any NF) goes first to last; every
 * other packet — the replies — last to first, as a real chain's return path does: the NAT restores the
 * address the firewall knows before the firewall sees the reply. A packet an NF drops goes no further.
 *
 * Run to completion. The whole chain runs in the worker that owns the flow, so one stamp orders every NF,
 * one batch record replicates them all, and a move or a failover takes every NF's part together: a
 * successor resumes the firewall and the NAT from the same packet, and no NF of the chain can be ahead of
 * another after a failure (docs/architecture.md, "Service chains").
 *
 * Lazy parts. An NF's part is made by its `initFlow` when a packet first reaches it (an earlier NF may drop
 * the first packets). An `initFlow` that must wait for a strong global decision throws DECISION_PENDING
 * from `process`; the runtime runs the same packet again once the decision is in, and the chain resumes at
 * that NF, in the same direction, so the NFs before it see the packet once. The packet's bytes keep what
 * those NFs wrote, since the runtime parks the very buffer.
 *
 * State encoding: u32 initIp | u16 initPort | per NF: u8 present (0 | 1), then its full encoding. A delta:
 * per NF u8 0 (no part), 1 (the NF's delta since the chain's mark) or 2 (its full encoding: the part is new
 * since the mark, or the delta is asked from an older mark than the last). Applying a delta decodes every
 * NF's part before any changes, so a bad delta leaves the replica as it was.
 */
import { ErrorCode, NfsError } from '../errors.js';
import type { ByteReader, ByteWriter } from '../state/bytes.js';
import { ByteReader as Reader, ByteWriter as Writer } from '../state/bytes.js';
import { DECISION_PENDING } from '../state/global-strong.js';
import type { FlowContext, FlowKey, NetworkFunction, NfPart, PacketView, StateCodec } from '../types.js';
import { Verdict } from '../types.js';

export class ChainState {
  /** The first packet's source, before any NF: its packets go first to last, every other last to first. */
  initIp = 0;
  initPort = 0;
  /** Each NF's part, undefined until a packet reached that NF. */
  readonly parts: unknown[];

  constructor(n: number) {
    this.parts = new Array<unknown>(n).fill(undefined);
  }
}

/** Where a chain's last mark left each part (kept beside the state, which then encodes and compares plainly). */
interface Marks {
  gen: number;
  had: boolean[];
  marks: number[];
}

/** A packet that waited for a decision at NF `at` (in its direction's order): it resumes there. */
interface Resume {
  seq: number;
  at: number;
  fwd: boolean;
}

const scratch = new Writer(1024);

class ChainCodec implements StateCodec<ChainState> {
  private readonly marks = new WeakMap<ChainState, Marks>();

  constructor(private readonly nfs: readonly NetworkFunction<unknown>[]) {}

  encodeFull(s: ChainState, w: ByteWriter): void {
    w.u32(s.initIp);
    w.u16(s.initPort);
    this.nfs.forEach((nf, i) => {
      const part = s.parts[i];
      w.u8(part === undefined ? 0 : 1);
      if (part !== undefined) nf.codec.encodeFull(part, w);
    });
  }

  decodeFull(r: ByteReader): ChainState {
    const s = new ChainState(this.nfs.length);
    s.initIp = r.u32();
    s.initPort = r.u16();
    this.nfs.forEach((nf, i) => {
      const present = r.u8();
      if (present > 1) throw new NfsError(ErrorCode.STATE, `chain: bad presence byte ${present}`);
      if (present === 1) s.parts[i] = nf.codec.decodeFull(r);
    });
    return s;
  }

  mark(s: ChainState): number {
    let m = this.marks.get(s);
    if (m === undefined) {
      m = { gen: 0, had: this.nfs.map(() => false), marks: this.nfs.map(() => 0) };
      this.marks.set(s, m);
    }
    m.gen++;
    for (let i = 0; i < this.nfs.length; i++) {
      const part = s.parts[i];
      m.had[i] = part !== undefined;
      m.marks[i] = part === undefined ? 0 : this.nfs[i]!.codec.mark(part);
    }
    return m.gen;
  }

  encodeDelta(s: ChainState, since: number, w: ByteWriter): void {
    const m = this.marks.get(s);
    const exact = m !== undefined && m.gen === since;
    this.nfs.forEach((nf, i) => {
      const part = s.parts[i];
      if (part === undefined) {
        w.u8(0);
      } else if (exact && m.had[i] === true) {
        w.u8(1);
        nf.codec.encodeDelta(part, m.marks[i]!, w);
      } else {
        w.u8(2);
        nf.codec.encodeFull(part, w);
      }
    });
  }

  applyDelta(s: ChainState, r: ByteReader): void {
    const next = this.nfs.map((nf, i) => {
      const tag = r.u8();
      const part = s.parts[i];
      if (tag === 0) return part;
      if (tag === 2) return nf.codec.decodeFull(r);
      if (tag !== 1 || part === undefined)
        throw new NfsError(ErrorCode.STATE, `chain: delta tag ${tag} for ${nf.name}'s part, which is absent`);
      scratch.reset();
      nf.codec.encodeFull(part, scratch);
      const copy = nf.codec.decodeFull(new Reader(scratch.view().slice()));
      nf.codec.applyDelta(copy, r);
      return copy;
    });
    next.forEach((part, i) => (s.parts[i] = part));
  }
}

export class Chain implements NetworkFunction<ChainState> {
  readonly name: string;
  readonly codec: ChainCodec;
  readonly replyOwner?: (pkt: PacketView) => FlowKey | null | undefined;
  private readonly resumes = new WeakMap<ChainState, Resume>();

  constructor(private readonly nfs: readonly NetworkFunction<unknown>[]) {
    if (nfs.length === 0) throw new NfsError(ErrorCode.CONFIG, 'chain: needs at least one NF');
    const names = nfs.map((nf) => nf.name);
    const twice = names.find((n, i) => names.indexOf(n) !== i);
    if (twice !== undefined)
      throw new NfsError(
        ErrorCode.CONFIG,
        `chain: ${twice} appears twice; each NF type may appear once (their shared pools would collide)`,
      );
    this.name = names.join('>');
    this.codec = new ChainCodec(nfs);
    const translating = nfs.filter((nf) => nf.replyOwner !== undefined);
    if (translating.length > 0)
      this.replyOwner = (pkt) => {
        for (const nf of translating) {
          const owner = nf.replyOwner!(pkt);
          if (owner !== undefined) return owner;
        }
        return undefined;
      };
  }

  initFlow(pkt: PacketView): ChainState {
    const s = new ChainState(this.nfs.length);
    s.initIp = pkt.srcIp;
    s.initPort = pkt.srcPort;
    return s;
  }

  process(pkt: PacketView, s: ChainState, ctx: FlowContext): Verdict {
    const nfs = this.nfs;
    const n = nfs.length;
    const resume = this.resumes.get(s);
    let fwd = pkt.srcIp === s.initIp && pkt.srcPort === s.initPort;
    let i = 0;
    if (resume !== undefined && resume.seq === ctx.seq) {
      this.resumes.delete(s);
      fwd = resume.fwd;
      i = resume.at;
    }
    for (; i < n; i++) {
      const at = fwd ? i : n - 1 - i;
      const nf = nfs[at]!;
      let part = s.parts[at];
      try {
        if (part === undefined) {
          part = nf.initFlow(pkt, ctx);
          s.parts[at] = part;
        }
        if (nf.process(pkt, part, ctx) === Verdict.DROP) return Verdict.DROP;
      } catch (err) {
        if (err === DECISION_PENDING) this.resumes.set(s, { seq: ctx.seq, at: i, fwd });
        throw err;
      }
    }
    return Verdict.FORWARD;
  }

  releaseFlow(s: ChainState, ctx: FlowContext): void {
    this.nfs.forEach((nf, i) => {
      const part = s.parts[i];
      if (part !== undefined) nf.releaseFlow(part, ctx);
    });
  }

  allocations(s: ChainState): Record<string, number> {
    const out: Record<string, number> = {};
    this.nfs.forEach((nf, i) => {
      const part = s.parts[i];
      if (part !== undefined) Object.assign(out, nf.allocations(part));
    });
    return out;
  }

  parts(s: ChainState): readonly NfPart[] {
    const out: NfPart[] = [];
    this.nfs.forEach((nf, i) => {
      const part = s.parts[i];
      if (part !== undefined) out.push({ nf, state: part });
    });
    return out;
  }
}
