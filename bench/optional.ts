/**
 * Packages only the benchmarks use (plotting, the Redis client) are optional dependencies: nfstate runs,
 * and its tests and demo pass, without them. A benchmark that needs one loads it here, and where it is
 * missing says which and how to get it.
 *
 *   const vega = await loadOptional('vega', 'plots', () => import('vega'));
 */
import { ErrorCode, NfsError } from '../src/errors.js';

export async function loadOptional<T>(name: string, what: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw err;
    throw new NfsError(
      ErrorCode.CONFIG,
      `${what}: the optional package ${name} is not installed (npm install ${name})`,
      { cause: err },
    );
  }
}
