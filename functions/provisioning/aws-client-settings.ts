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

/**
 * Sockets one SDK client may hold open at once. The SDK's default, 50, binds only where many
 * requests share a process: never in Lambda, where a container serves one request and that
 * request makes at most a few calls to one client at once, but in the local edge's scale-out
 * mode, which runs hundreds of invocations in a few processes as Lambda would run them in
 * hundreds of containers. There a call waiting for a pooled socket counts the wait against
 * `connectionTimeout` (the SDK starts that timer when the request is made, not when a socket is
 * free; @smithy/node-http-handler 4.x), so a call that never left the process failed like a
 * network fault: a registry read under `make storm` did, three times over, and answered 503.
 * Sized for the most invocations one process runs in the storm (about 300) times the calls a
 * request makes to one client at once (up to 3, when it retires a certificate): the pool never
 * binds, here or in AWS, and still cannot grow without bound.
 */
export const MAX_SOCKETS_PER_CLIENT = 1_000;

export function awsClientSettings(region: string, maxAttempts = 3) {
  return {
    region,
    maxAttempts,
    requestHandler: {
      connectionTimeout: 1_000,
      requestTimeout: AWS_CALL_TIMEOUT_MS,
      throwOnRequestTimeout: true,
      httpAgent: { maxSockets: MAX_SOCKETS_PER_CLIENT },
      httpsAgent: { maxSockets: MAX_SOCKETS_PER_CLIENT },
    },
  };
}
