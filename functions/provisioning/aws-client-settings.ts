/**
 * Settings every AWS SDK client of the function shares. Each call is bounded in time, so a hung
 * connection can't eat the Lambda timeout and leave no time for the undo of a failed request.
 * With the SDK's retries (standard mode, exponential backoff) the worst case per call stays
 * well inside the function's 20 s timeout.
 */
export function awsClientSettings(region: string, maxAttempts = 3) {
  return {
    region,
    maxAttempts,
    requestHandler: { connectionTimeout: 2_000, requestTimeout: 5_000 },
  };
}
