/**
 * The load report an instance sends the controller every 100 ms, on the heartbeats' port: JSON, then the
 * 16-byte tag of those JSON bytes under the instance's token (auth.ts). `seq` rises with each report, so
 * a replayed one is refused like a forged one: neither may keep a dead instance alive or steer the
 * load-balancing unit.
 *
 *   socket.send(encodeLoadReport(id, ++seq, nf.load(), token), port, host);
 *   const r = decodeLoadReport(msg, (id) => tokenOf(id)); // undefined: malformed, unknown or forged
 */
import { datagramTag, TAG_BYTES, tagMatches } from '../auth.js';

export interface LoadReport {
  received: number;
  processed: number;
  flows: number;
  busy: number;
  /** Packets received but not yet processed. */
  queue: number;
}

/** Larger datagrams on the report port are refused before they are parsed. */
export const MAX_REPORT_BYTES = 1024;

export function encodeLoadReport(id: string, seq: number, load: LoadReport, key: Uint8Array): Buffer {
  const json = Buffer.from(JSON.stringify({ id, seq, ...load }), 'utf8');
  return Buffer.concat([json, datagramTag(key, json)]);
}

/**
 * The report's instance, sequence number and load, when it is well formed and tagged under the key that
 * `keyOf` gives for its instance; undefined otherwise.
 */
export function decodeLoadReport(
  msg: Uint8Array,
  keyOf: (id: string) => Uint8Array | undefined,
): { id: string; seq: number; load: LoadReport } | undefined {
  if (msg.length > MAX_REPORT_BYTES || msg.length <= TAG_BYTES) return undefined;
  const json = msg.subarray(0, msg.length - TAG_BYTES);
  let o: Record<string, unknown>;
  try {
    o = (JSON.parse(Buffer.from(json).toString('utf8')) ?? {}) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const key = typeof o.id === 'string' ? keyOf(o.id) : undefined;
  const nums = [o.seq, o.received, o.processed, o.flows, o.busy, o.queue];
  if (key === undefined || !nums.every((n) => typeof n === 'number' && Number.isFinite(n) && n >= 0))
    return undefined;
  if (!tagMatches(key, json, msg.subarray(json.length))) return undefined;
  return {
    id: o.id as string,
    seq: o.seq as number,
    load: {
      received: o.received as number,
      processed: o.processed as number,
      flows: o.flows as number,
      busy: o.busy as number,
      queue: o.queue as number,
    },
  };
}
