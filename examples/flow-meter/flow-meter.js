// @ts-check
/**
 * flow-meter: a per-flow policer, an NF of one's own for nfstate. Each flow may send `rate` packets a
 * second with bursts of up to `burst` (a token bucket); the packets above that are dropped, and each source
 * address's dropped packets are counted across every flow and instance in eventual global state (a CRDT
 * counter), which a dashboard or an alert reads.
 *
 *   nf: { module: ./flow-meter.js, config: { rate: 10, burst: 5 } }     # in a topology
 *   npx nfstate demo --nf ./examples/flow-meter/flow-meter.js           # or straight from the command line
 *
 * What makes it safe to move and fail over, as nfstate requires of every NF:
 * - it decides from the packet, its flow's state and the context only: the bucket fills with the stamp's
 *   time (`ctx.now`), never the wall clock, so a successor replaying a packet decides what the first
 *   instance decided, and the oracle agrees;
 * - its state encodes in full and as a delta, and a delta applies to a replica at the mark it was taken
 *   from, reading everything before changing anything, so a truncated delta leaves the replica as it was.
 * `examples/flow-meter/flow-meter.test.js` checks both with nfstate's compliance suite.
 */
import { ConfigReader, Verdict } from 'nfstate/nf';

/**
 * @typedef {object} MeterState
 * @property {number} tokens  packets the flow may still send at once
 * @property {number} last    the stamp time (ms) the bucket was last filled at
 * @property {number} passed
 * @property {number} policed
 * @property {number} warned  1 once the flow was reported
 */

/**
 * @param {Record<string, unknown>} config
 * @param {import('nfstate/nf').GlobalState} global
 * @returns {import('nfstate/nf').NetworkFunction<MeterState>}
 */
export default function createFlowMeter(config, global) {
  const c = new ConfigReader('', config);
  const rate = c.integer('rate', 20, 1, 1_000_000);
  const burst = c.integer('burst', 10, 1, 1_000_000);
  c.done();
  // Resolved once: the hot path only calls the handle.
  const policedBySource = global.counters('meter.policed');

  /** @type {import('nfstate/nf').StateCodec<MeterState>} */
  const codec = {
    // tokens f64 | last f64 | passed u32 | policed u32 | warned u8
    encodeFull(s, w) {
      w.f64(s.tokens);
      w.f64(s.last);
      w.u32(s.passed);
      w.u32(s.policed);
      w.u8(s.warned);
    },
    decodeFull(r) {
      return { tokens: r.f64(), last: r.f64(), passed: r.u32(), policed: r.u32(), warned: r.u8() };
    },
    // Packets seen: every packet changes the state, so the count says how far a replica is.
    mark: (s) => s.passed + s.policed,
    // The whole state is 25 bytes, smaller than any bookkeeping of what changed: a delta is all of it.
    encodeDelta(s, _since, w) {
      codec.encodeFull(s, w);
    },
    applyDelta(s, r) {
      const next = codec.decodeFull(r);
      s.tokens = next.tokens;
      s.last = next.last;
      s.passed = next.passed;
      s.policed = next.policed;
      s.warned = next.warned;
    },
  };

  return {
    name: 'flow-meter',
    initFlow: (_pkt, ctx) => ({ tokens: burst, last: ctx.now, passed: 0, policed: 0, warned: 0 }),
    process(_pkt, s, ctx) {
      if (ctx.now > s.last) {
        s.tokens = Math.min(burst, s.tokens + ((ctx.now - s.last) * rate) / 1000);
        s.last = ctx.now;
      }
      if (s.tokens >= 1) {
        s.tokens -= 1;
        s.passed++;
        return Verdict.FORWARD;
      }
      s.policed++;
      policedBySource.add(ctx.key.srcIp, 1);
      if (s.warned === 0) {
        s.warned = 1;
        ctx.emit({ type: 'policed', seq: ctx.seq, rate });
      }
      return Verdict.DROP;
    },
    releaseFlow: () => undefined,
    allocations: () => ({}),
    codec,
  };
}
