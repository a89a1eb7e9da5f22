/**
 * Settings every AWS SDK client shares (the function, the reconciler and the operator tools).
 *
 * `throwOnRequestTimeout` matters: @smithy/node-http-handler 4.x only logs a warning when
 * `requestTimeout` passes unless it is set, and a hung call would then eat the Lambda's whole
 * timeout. With it, a call that gets no answer within AWS_CALL_TIMEOUT_MS fails with
 * TimeoutError and the SDK retries it (standard mode, exponential backoff). Each request also
 * passes an abort signal derived from its own deadline (deadline.ts), which caps the retries.
 */
export const AWS_CALL_TIMEOUT_MS = 3_000;

/**
 * AWS IoT control-plane calls: one attempt and one retry. Admission (admission.ts) paces a
 * region's requests to its quota, so a throttle that still happens means the quota is spent for
 * now: more retries inside the function would spend it again while the device waits, and the
 * device retries anyway (429 + Retry-After). One layer of retry, the device's. The one retry
 * stays for a lost answer or a 5xx, which every IoT step survives (iot.ts: each can be repeated).
 */
export const IOT_MAX_ATTEMPTS = 2;

export function awsClientSettings(region: string, maxAttempts = 3) {
  return {
    region,
    maxAttempts,
    requestHandler: {
      connectionTimeout: 1_000,
      requestTimeout: AWS_CALL_TIMEOUT_MS,
      throwOnRequestTimeout: true,
    },
  };
}
