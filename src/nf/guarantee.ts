import { ErrorCode, NfsError } from '../errors.js';

/**
 * OpenNF's guarantees for a move. `order-preserving`: the destination processes the flow strictly in stamp
 * order, the source's parked packets before the switch's new ones. `loss-free`: the destination processes the
 * switch's packets as they come and the source's (older) ones when they arrive: nothing is lost, order may
 * not hold. `none`: the source drops what it parked and the destination starts at the first packet it sees.
 */
export const GUARANTEES = ['none', 'loss-free', 'order-preserving'] as const;
export type Guarantee = (typeof GUARANTEES)[number];

/** A guarantee named in an API request; absent means `order-preserving`. */
export function parseGuarantee(v: unknown, field: string): Guarantee {
  if (v === undefined) return 'order-preserving';
  if (typeof v !== 'string' || !(GUARANTEES as readonly string[]).includes(v))
    throw new NfsError(ErrorCode.CONFIG, `${field}: must be one of ${GUARANTEES.join(', ')}`);
  return v as Guarantee;
}
