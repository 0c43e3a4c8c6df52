/**
 * Latency distribution in microseconds, on an HDR histogram (3 significant digits from 1 µs to one
 * hour), so that p99.9 stays exact to 0.1% whatever the spread. Used by the sink per run and by benches;
 * histograms from several processes are shipped as strings and merged.
 *
 *   const h = new LatencyHistogram();
 *   h.record(now - stampUs);
 *   const wire = h.encode();                         // HdrHistogram V2 compressed base64
 *   total.merge(LatencyHistogram.decode(wire));
 *   total.toJSON();                                  // { count, p50, p90, p99, p999, max, mean }
 */
import { build, decodeFromCompressedBase64, encodeIntoCompressedBase64 } from 'hdr-histogram-js';
import type { Histogram } from 'hdr-histogram-js';
import { ErrorCode, NfsError } from '../errors.js';

/** The largest latency tracked, in µs (one hour); larger values are recorded as this. */
export const MAX_LATENCY_US = 3_600_000_000;

export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

function newHistogram(): Histogram {
  // 64-bit counts so that a long run cannot overflow a bucket; pure JS (no wasm) so it needs no init and
  // no explicit destroy.
  return build({
    bitBucketSize: 64,
    autoResize: false,
    lowestDiscernibleValue: 1,
    highestTrackableValue: MAX_LATENCY_US,
    numberOfSignificantValueDigits: 3,
    useWebAssembly: false,
  });
}

export class LatencyHistogram {
  private readonly h: Histogram;

  constructor() {
    this.h = newHistogram();
  }

  /** Records one latency in µs, rounded to a whole µs and clamped to [0, MAX_LATENCY_US]; NaN is ignored. */
  record(us: number): void {
    if (Number.isNaN(us)) return;
    const v = us <= 0 ? 0 : us >= MAX_LATENCY_US ? MAX_LATENCY_US : Math.round(us);
    this.h.recordValue(v);
  }

  get count(): number {
    return this.h.totalCount;
  }

  /** The value at percentile `p` (0..100) in µs; 0 when empty. */
  percentile(p: number): number {
    if (this.h.totalCount === 0) return 0;
    const q = p <= 0 ? 0 : p >= 100 ? 100 : p;
    return Math.min(this.h.getValueAtPercentile(q), MAX_LATENCY_US);
  }

  /** Largest recorded value in µs (to histogram precision once decoded); 0 when empty. */
  get max(): number {
    return this.h.totalCount === 0 ? 0 : Math.min(this.h.maxValue, MAX_LATENCY_US);
  }

  get mean(): number {
    return this.h.totalCount === 0 ? 0 : this.h.mean;
  }

  /** Adds every value of `other` to this histogram. */
  merge(other: LatencyHistogram): void {
    this.h.add(other.h);
  }

  reset(): void {
    this.h.reset();
  }

  toJSON(): LatencySummary {
    return {
      count: this.count,
      p50: this.percentile(50),
      p90: this.percentile(90),
      p99: this.percentile(99),
      p999: this.percentile(99.9),
      max: this.max,
      mean: this.mean,
    };
  }

  /** The HdrHistogram V2 compressed base64 encoding, readable by any HdrHistogram implementation. */
  encode(): string {
    return encodeIntoCompressedBase64(this.h);
  }

  /**
   * Decodes `encode()`'s output (or any V2 histogram whose values fit one hour in µs).
   * Throws NfsError FRAME when the string is not one.
   */
  static decode(s: string): LatencyHistogram {
    const out = new LatencyHistogram();
    let decoded: Histogram;
    try {
      decoded = decodeFromCompressedBase64(s, 64, false, MAX_LATENCY_US);
    } catch (err) {
      throw new NfsError(ErrorCode.FRAME, `latency histogram: cannot decode (${(err as Error).message})`, {
        cause: err,
      });
    }
    try {
      out.h.add(decoded);
    } catch (err) {
      throw new NfsError(ErrorCode.FRAME, `latency histogram: ${(err as Error).message}`, { cause: err });
    }
    return out;
  }
}
