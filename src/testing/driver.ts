/**
 * A minimal NF runtime for tests: builds packets from text addresses, keeps per-flow state by
 * canonical key, numbers each flow's packets 1, 2, 3 … and fills a FlowContext the way a worker does
 * (seeded random, stamp time, event collection).
 *
 *   const d = new Driver(createNat({}, global), global);
 *   const r = d.send(udp('10.0.0.1', 1234, '192.0.2.1', 53, 'q'));   // r.verdict, r.pkt (re-parsed)
 */
import assert from 'node:assert/strict';
import { ErrorCode, NfsError } from '../errors.js';
import { buildIcmp, buildTcp, buildUdp } from '../packet/build.js';
import { flowHash, flowKeyOf, flowKeyString, parseIpv4 } from '../packet/flow-key.js';
import { Packet } from '../packet/packet.js';
import { ByteReader, ByteWriter } from '../state/bytes.js';
import {
  DropReason,
  type FlowContext,
  type FlowKey,
  type GlobalState,
  type NetworkFunction,
  type NfEvent,
  type Verdict,
} from '../types.js';

export const ip = parseIpv4;

/** Asserts that `fn` throws NfsError CONFIG naming `nf.config.<field>`. */
export function expectConfigError(fn: () => unknown, field: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof NfsError, `expected NfsError, got ${String(e)}`);
    assert.equal(e.code, ErrorCode.CONFIG);
    assert.ok(e.message.startsWith(`nf.config.${field}: `), e.message);
    return true;
  });
}

function bytesOf(payload: Uint8Array | string): Uint8Array {
  return typeof payload === 'string' ? new TextEncoder().encode(payload) : payload;
}

const scratch = new Uint8Array(70_000);

export function udp(
  src: string,
  sport: number,
  dst: string,
  dport: number,
  payload: Uint8Array | string = '',
): Uint8Array {
  const n = buildUdp(scratch, 0, {
    srcIp: ip(src),
    dstIp: ip(dst),
    srcPort: sport,
    dstPort: dport,
    payload: bytesOf(payload),
  });
  return scratch.slice(0, n);
}

export function tcp(
  src: string,
  sport: number,
  dst: string,
  dport: number,
  flags: number,
  payload: Uint8Array | string = '',
): Uint8Array {
  const n = buildTcp(scratch, 0, {
    srcIp: ip(src),
    dstIp: ip(dst),
    srcPort: sport,
    dstPort: dport,
    seq: 1000,
    ack: 2000,
    flags,
    payload: bytesOf(payload),
  });
  return scratch.slice(0, n);
}

export function icmpEcho(src: string, dst: string, id: number, type = 8): Uint8Array {
  const n = buildIcmp(scratch, 0, {
    srcIp: ip(src),
    dstIp: ip(dst),
    type,
    code: 0,
    id,
    seq: 1,
    payload: new Uint8Array(8),
  });
  return scratch.slice(0, n);
}

export function parsed(bytes: Uint8Array): Packet {
  const p = new Packet();
  const reason = p.parse(bytes, 0, bytes.length);
  if (reason !== DropReason.NONE) throw new Error(`packet does not parse: reason ${reason}`);
  return p;
}

/** A FlowContext whose random stream is xorshift32, reseeded from the flow and sequence number. */
export class TestContext implements FlowContext {
  key: FlowKey = { srcIp: 0, dstIp: 0, srcPort: 0, dstPort: 0, proto: 0 };
  seq = 0;
  now = 0;
  readonly events: NfEvent[] = [];
  private x = 1;

  constructor(readonly global: GlobalState) {}

  fill(key: FlowKey, seq: number, now: number): this {
    this.key = key;
    this.seq = seq;
    this.now = now;
    this.x =
      (flowHash(key.srcIp, key.dstIp, key.srcPort, key.dstPort, key.proto) ^ Math.imul(seq, 0x9e3779b1)) | 1;
    return this;
  }

  random(): number {
    let x = this.x;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.x = x;
    return (x >>> 0) / 0x100000000;
  }

  emit(event: NfEvent): void {
    this.events.push(event);
  }
}

export interface Flow<S> {
  readonly key: FlowKey;
  state: S;
  seq: number;
}

export interface SendResult<S> {
  verdict: Verdict;
  /** The packet as the NF left it, re-parsed (so its checksums were verified). */
  pkt: Packet;
  bytes: Uint8Array;
  state: S;
  flow: Flow<S>;
  events: NfEvent[];
}

export class Driver<S> {
  readonly flows = new Map<string, Flow<S>>();
  readonly ctx: TestContext;
  now = 1_700_000_000_000;
  private readonly view = new Packet();

  /**
   * @param replies resolve replies to translated addresses as the switch does (`nf.replyOwner`): such a
   *   packet joins the connection it answers rather than starting a flow of its own
   */
  constructor(
    readonly nf: NetworkFunction<S>,
    readonly global: GlobalState,
    private readonly replies = false,
  ) {
    this.ctx = new TestContext(global);
  }

  /** Runs one packet (a copy of `bytes`) through the NF, `dtMs` after the previous one. */
  send(bytes: Uint8Array, dtMs = 1): SendResult<S> {
    this.now += dtMs;
    const buf = bytes.slice();
    const pkt = this.view;
    const reason = pkt.parse(buf, 0, buf.length);
    if (reason !== DropReason.NONE) throw new Error(`packet does not parse: reason ${reason}`);
    const key = flowKeyOf((this.replies ? this.nf.replyOwner?.(pkt) : undefined) ?? pkt);
    const name = flowKeyString(key);
    const events0 = this.ctx.events.length;
    let flow = this.flows.get(name);
    if (flow === undefined) {
      this.ctx.fill(key, 1, this.now);
      flow = { key, state: this.nf.initFlow(pkt, this.ctx), seq: 0 };
      this.flows.set(name, flow);
    }
    flow.seq++;
    const verdict = this.nf.process(pkt, flow.state, this.ctx.fill(flow.key, flow.seq, this.now));
    return {
      verdict,
      pkt: parsed(buf),
      bytes: buf,
      state: flow.state,
      flow,
      events: this.ctx.events.slice(events0),
    };
  }

  /** The flow `bytes` belongs to, if it has state. */
  flowOf(bytes: Uint8Array): Flow<S> | undefined {
    const pkt = parsed(bytes);
    return this.flows.get(flowKeyString(flowKeyOf(pkt)));
  }

  release(flow: Flow<S>): void {
    this.nf.releaseFlow(flow.state, this.ctx.fill(flow.key, flow.seq + 1, this.now));
    this.flows.delete(flowKeyString(flow.key));
  }
}

/** A writer that never has to grow here: growth is ByteWriter's own concern, tested with it. */
export function writer(): ByteWriter {
  return new ByteWriter(1 << 20);
}

export function encodeFull<S>(nf: NetworkFunction<S>, state: S): Uint8Array {
  const w = writer();
  nf.codec.encodeFull(state, w);
  return w.view().slice();
}

export function decodeFull<S>(nf: NetworkFunction<S>, bytes: Uint8Array): S {
  const r = new ByteReader(bytes);
  const s = nf.codec.decodeFull(r);
  if (r.remaining !== 0) throw new Error(`decodeFull left ${r.remaining} bytes`);
  return s;
}
