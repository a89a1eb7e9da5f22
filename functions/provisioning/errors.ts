/**
 * The closed set of failures the service answers with. Each kind maps once to an HTTP status;
 * the handler turns any of them into the sample's error body `{"status":"error","message"}`.
 */
export type ProvisioningErrorKind =
  | 'malformed' // 400: the request can't be understood or is invalid
  | 'unauthenticated' // 401: the signature does not verify
  | 'forbidden' // 403: not on the allowlist, or did not come through CloudFront
  | 'already-provisioned' // 409
  | 'conflict' // 409: the record's state does not allow this now (a move under way, a reset)
  | 'too-large' // 413
  | 'throttled' // 429: AWS or a concurrent request; retry after retryAfterSeconds
  | 'rate-limited' // 429: the device asks more often than its per-device limit allows
  | 'internal' // 500: our fault
  | 'unavailable'; // 503: a dependency failed; safe to retry

const STATUS: Record<ProvisioningErrorKind, number> = {
  malformed: 400,
  unauthenticated: 401,
  forbidden: 403,
  'already-provisioned': 409,
  conflict: 409,
  'too-large': 413,
  throttled: 429,
  'rate-limited': 429,
  internal: 500,
  unavailable: 503,
};

export class ProvisioningError extends Error {
  override readonly name = 'ProvisioningError';
  readonly status: number;

  constructor(
    readonly kind: ProvisioningErrorKind,
    message: string,
    readonly retryAfterSeconds?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.status = STATUS[kind];
  }
}

export const malformed = (message: string) => new ProvisioningError('malformed', message);
export const unauthenticated = (message: string) => new ProvisioningError('unauthenticated', message);
export const forbidden = (message: string) => new ProvisioningError('forbidden', message);
export const conflict = (message: string, retryAfterSeconds?: number) =>
  new ProvisioningError('conflict', message, retryAfterSeconds);
export const throttled = (message: string, retryAfterSeconds: number, cause?: unknown) =>
  new ProvisioningError('throttled', message, retryAfterSeconds, { cause });
/** A device over its own limit (status interval, renewal interval): not AWS trouble, no alarm. */
export const rateLimited = (message: string, retryAfterSeconds: number) =>
  new ProvisioningError('rate-limited', message, retryAfterSeconds);
export const unavailable = (message: string, cause?: unknown) =>
  new ProvisioningError('unavailable', message, 2, { cause });

/** How long a device is asked to wait while its registry record is too large to write. */
export const RECORD_TOO_LARGE_RETRY_AFTER_SECONDS = 300;

/**
 * The device's registry record can't be written: DynamoDB refuses items over 400 KB. A 500, not a
 * 4xx: the request is sound and the record is ours, so the device keeps retrying (slowly) instead
 * of giving up, and the 5xx alarm calls an operator, who is the only one who can fix it. The
 * message names the problem instead of "internal error".
 */
export const recordTooLarge = (what: string, cause: unknown) =>
  new ProvisioningError(
    'internal',
    `this device's registry record is over DynamoDB's 400 KB item size limit (${what}); ` +
      'an operator must shrink it (`gdp-admin reset` drops what earlier versions left); retry later',
    RECORD_TOO_LARGE_RETRY_AFTER_SECONDS,
    { cause },
  );

/** Any thrown value as a ProvisioningError; unknown errors become a 500 without leaking details. */
export function asProvisioningError(error: unknown): ProvisioningError {
  if (error instanceof ProvisioningError) return error;
  return new ProvisioningError('internal', 'internal error; the device may retry', undefined, {
    cause: error,
  });
}
