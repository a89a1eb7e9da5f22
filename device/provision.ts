/**
 * One provisioning exchange with the service, as a device in the field does it: build and sign
 * the request (v1 or v2), POST it to the global URL, retry what is worth retrying, and hand back
 * the credentials. The answer's shape is the 2018 sample's (functions/provisioning/wire.ts).
 */
import { z } from 'zod';
import type { SuccessAnswer, V1Request, V2Request } from '../functions/provisioning/wire';
import {
  DEFAULT_BACKOFF,
  isRetryableStatus,
  parseRetryAfter,
  retryDelayMs,
  type BackoffPolicy,
} from './backoff';
import {
  createKeyAndCsr,
  signedV1Request,
  signedV2Request,
  throwawaySigningKeyPem,
  type DeviceKeyType,
} from './keys';
import type { DeviceCredentials } from './store';

export type ProtocolVersion = 'v1' | 'v2';

export interface ProvisionOptions {
  readonly thingName: string;
  readonly apiUrl: string;
  /** Fleet private key, or the device's own signing key when its public key is registered (v2). */
  readonly signingKeyPem?: string;
  /** Generate the key here and send a CSR (`--own-key`); otherwise the service returns a key. */
  readonly ownKey: boolean;
  readonly keyType: DeviceKeyType;
  readonly protocol: ProtocolVersion;
  /** Sign with a key nobody registered, to show the service rejecting the device. */
  readonly fakeSignature?: boolean;
  /** Extra request headers (`--header`), e.g. the local edge's X-Local-Viewer-*. */
  readonly headers?: Readonly<Record<string, string>>;
  readonly backoff?: BackoffPolicy;
  readonly requestTimeoutMs?: number;
  readonly onRetry?: (retry: RetryNotice) => void;
  /**
   * Stop at the first refused connection instead of retrying it (a local stack that is down does
   * not come up within the backoff; a device in the field keeps retrying).
   */
  readonly giveUpWhenRefused?: boolean;
  /** Waits between attempts; tests replace it to avoid sleeping. */
  readonly sleep?: (ms: number) => Promise<void>;
}

export interface RetryNotice {
  readonly attempt: number;
  readonly maxAttempts: number;
  readonly delayMs: number;
  /** "HTTP 429: <message>" or the network error. */
  readonly reason: string;
}

export interface ProvisionResult {
  readonly credentials: DeviceCredentials;
  readonly attempts: number;
  /** From the first request to the accepted answer, retries included. */
  readonly latencyMs: number;
}

/** The service refused the device (4xx): retrying the same request cannot help. */
export class ProvisioningRejectedError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ProvisioningRejectedError';
  }
}

/** Network errors, 5xx or 429 on every attempt, or an answer that is not the protocol's. */
export class ProvisioningUnavailableError extends Error {
  constructor(
    message: string,
    readonly attempts: number,
    /** Nothing accepted the TCP connection (ECONNREFUSED) on the last attempt. */
    readonly connectionRefused = false,
  ) {
    super(message);
    this.name = 'ProvisioningUnavailableError';
  }
}

const successAnswer = z.object({
  status: z.literal('success'),
  region: z.string().min(1),
  distance: z.number(),
  endpointAddress: z.string().min(1),
  certificatePem: z.string().includes('BEGIN CERTIFICATE'),
  PrivateKey: z.string().optional(),
});

const errorAnswer = z.object({ status: z.literal('error'), message: z.string() });

export async function provisionDevice(options: ProvisionOptions): Promise<ProvisionResult> {
  const keyAndCsr = options.ownKey ? await createKeyAndCsr(options.thingName, options.keyType) : undefined;
  const signingKeyPem = options.fakeSignature ? throwawaySigningKeyPem() : options.signingKeyPem;
  if (!signingKeyPem) throw new Error('a signing key is needed to provision (--signing-key)');
  const policy = options.backoff ?? DEFAULT_BACKOFF;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((done) => setTimeout(done, ms)));
  const started = Date.now();

  for (let attempt = 1; ; attempt++) {
    // A v2 request is signed afresh on every attempt: the service may remember the nonce of one
    // that failed half-way, and the timestamp must stay within its window.
    const body = signRequest(options, signingKeyPem, keyAndCsr?.csrPem);
    const outcome = await postOnce(options, body);
    if (outcome.kind === 'success') {
      const answer = outcome.answer;
      const privateKeyPem = keyAndCsr?.privateKeyPem ?? answer.PrivateKey;
      if (!privateKeyPem) {
        throw new ProvisioningUnavailableError('the service answered without a private key', attempt);
      }
      return {
        attempts: attempt,
        latencyMs: Date.now() - started,
        credentials: {
          privateKeyPem,
          certificatePem: answer.certificatePem,
          identity: {
            thingName: options.thingName,
            region: answer.region,
            endpointAddress: answer.endpointAddress,
            distance: answer.distance,
            provisionedAt: new Date().toISOString(),
            keySource: keyAndCsr ? 'device' : 'service',
          },
        },
      };
    }
    if (outcome.kind === 'rejected') throw new ProvisioningRejectedError(outcome.status, outcome.message);
    const refused = outcome.connectionRefused === true;
    if (refused && options.giveUpWhenRefused) {
      throw new ProvisioningUnavailableError(`nothing accepts connections: ${outcome.reason}`, attempt, true);
    }
    if (attempt >= policy.maxAttempts) {
      throw new ProvisioningUnavailableError(
        `gave up after ${attempt} attempts; last: ${outcome.reason}`,
        attempt,
        refused,
      );
    }
    const delayMs = retryDelayMs(attempt, policy, outcome.retryAfterMs);
    options.onRetry?.({ attempt, maxAttempts: policy.maxAttempts, delayMs, reason: outcome.reason });
    await sleep(delayMs);
  }
}

function signRequest(
  options: ProvisionOptions,
  signingKeyPem: string,
  csrPem?: string,
): V1Request | V2Request {
  const parts = { thingName: options.thingName, signingKeyPem, csrPem };
  return options.protocol === 'v2' ? signedV2Request(parts) : signedV1Request(parts);
}

type Outcome =
  | { kind: 'success'; answer: SuccessAnswer }
  | { kind: 'rejected'; status: number; message: string }
  | { kind: 'retry'; reason: string; retryAfterMs?: number; connectionRefused?: boolean };

async function postOnce(options: ProvisionOptions, body: V1Request | V2Request): Promise<Outcome> {
  let response: Response;
  let text: string;
  try {
    response = await fetch(options.apiUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...options.headers },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(options.requestTimeoutMs ?? 30_000),
    });
    text = await response.text();
  } catch (error) {
    const cause = (error as Error & { cause?: { code?: unknown } }).cause;
    return {
      kind: 'retry',
      reason: describeNetworkError(error),
      connectionRefused: cause?.code === 'ECONNREFUSED',
    };
  }
  const message = serverMessage(text);
  if (response.ok) {
    const parsed = successAnswer.safeParse(safeJson(text));
    if (parsed.success) return { kind: 'success', answer: parsed.data };
    // The sample answered errors with HTTP 200 and an error body; such a service still says no.
    const refused = errorAnswer.safeParse(safeJson(text));
    if (refused.success) return { kind: 'rejected', status: response.status, message: refused.data.message };
    return { kind: 'retry', reason: `HTTP ${response.status} with an answer that is not the protocol's` };
  }
  if (isRetryableStatus(response.status)) {
    return {
      kind: 'retry',
      reason: `HTTP ${response.status}: ${message}`,
      retryAfterMs: parseRetryAfter(response.headers.get('retry-after')),
    };
  }
  return { kind: 'rejected', status: response.status, message };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function serverMessage(text: string): string {
  const parsed = errorAnswer.safeParse(safeJson(text));
  if (parsed.success) return parsed.data.message;
  const snippet = text.trim().slice(0, 200);
  return snippet === '' ? '(no message)' : snippet;
}

function describeNetworkError(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as Error & { cause?: unknown }).cause;
    const detail = cause instanceof Error ? `: ${cause.message}` : '';
    return `${error.name === 'TimeoutError' ? 'timed out' : error.message}${detail}`;
  }
  return String(error);
}
