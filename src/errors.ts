/**
 * One error type for the whole project: every failure has a stable `code` (listed in docs/errors.md),
 * an optional `cause`, and says whether retrying can help.
 *
 *   throw new NfsError('NFS_ERR_CONFIG', 'clusters: must be a positive integer');
 */
export const ErrorCode = {
  CONFIG: 'NFS_ERR_CONFIG',
  USAGE: 'NFS_ERR_USAGE',
  FRAME: 'NFS_ERR_FRAME',
  AUTH: 'NFS_ERR_AUTH',
  TIMEOUT: 'NFS_ERR_TIMEOUT',
  STATE: 'NFS_ERR_STATE',
  PCAP: 'NFS_ERR_PCAP',
  PROCESS: 'NFS_ERR_PROCESS',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class NfsError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; retriable?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'NfsError';
    this.code = code;
    this.retriable = options.retriable ?? false;
  }
}
