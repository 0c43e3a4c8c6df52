/**
 * The per-packet FlowContext: one mutable object per worker (and one per oracle run), re-filled before
 * each `process` call. `random()` is xorshift32 seeded from the flow hash and the sequence number, so a
 * replayed packet draws the same numbers.
 */
import type { FlowContext, FlowKey, GlobalState, NfEvent } from '../types.js';

export class PacketContext implements FlowContext {
  key!: FlowKey;
  seq = 0;
  now = 0;
  private rng = 1;

  constructor(
    readonly global: GlobalState,
    private readonly onEvent: (event: NfEvent) => void,
  ) {}

  /** Points the context at the next packet of a flow. */
  set(key: FlowKey, flowHash: number, seq: number, now: number): void {
    this.key = key;
    this.seq = seq;
    this.now = now;
    // Mixes the sequence number in with a large odd constant so consecutive seeds differ in every bit.
    const seed =
      (flowHash ^ Math.imul(seq, 0x9e3779b1) ^ Math.imul((seq / 0x100000000) | 0, 0x85ebca6b)) >>> 0;
    this.rng = seed === 0 ? 0x6d2b79f5 : seed;
  }

  random(): number {
    let x = this.rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.rng = x >>> 0;
    return this.rng / 0x100000000;
  }

  emit(event: NfEvent): void {
    this.onEvent(event);
  }
}
