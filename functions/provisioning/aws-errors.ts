/**
 * Classifies AWS SDK errors once, for every adapter. The SDK has already retried these with
 * backoff (maxAttempts) by the time an adapter sees them.
 */
const THROTTLING = new Set([
  'ThrottlingException',
  'Throttling',
  'TooManyRequestsException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  'LimitExceededException',
  'SlowDown',
]);

const TRANSIENT = new Set([
  'InternalFailure',
  'InternalFailureException',
  'InternalServerError',
  'ServiceUnavailable',
  'ServiceUnavailableException',
  'InternalServerException',
  'RequestTimeout',
  'TimeoutError',
]);

function errorName(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && 'name' in error ? String(error.name) : undefined;
}

function httpStatus(error: unknown): number | undefined {
  const metadata = (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata;
  return metadata?.httpStatusCode;
}

export function isThrottling(error: unknown): boolean {
  const name = errorName(error);
  return (name !== undefined && THROTTLING.has(name)) || httpStatus(error) === 429;
}

export function isTransient(error: unknown): boolean {
  const name = errorName(error);
  const status = httpStatus(error);
  return (name !== undefined && TRANSIENT.has(name)) || (status !== undefined && status >= 500);
}

export function hasName(error: unknown, ...names: string[]): boolean {
  const name = errorName(error);
  return name !== undefined && names.includes(name);
}
