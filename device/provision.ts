/**
 * One provisioning exchange with the service, as a device in the field does it: build and sign
 * the request (v1 or v2), POST it to the global URL, retry what is worth retrying, and hand back
 * the credentials. The answer's shape is the 2018 sample's (functions/provisioning/wire.ts).
 */
import { z } from 'zod';
import type { V1Request, V2Request } from '../functions/provisioning/wire';
import type { BackoffPolicy } from './backoff';
import { postWithRetries, type RetryNotice } from './exchange';
import {
  createKeyAndCsr,
  signedV1Request,
  signedV2Request,
  throwawaySigningKeyPem,
  type DeviceKeyType,
} from './keys';
import type { DeviceCredentials } from './store';

export type { RetryNotice } from './exchange';

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

export async function provisionDevice(options: ProvisionOptions): Promise<ProvisionResult> {
  const keyAndCsr = options.ownKey ? await createKeyAndCsr(options.thingName, options.keyType) : undefined;
  const signingKeyPem = options.fakeSignature ? throwawaySigningKeyPem() : options.signingKeyPem;
  if (!signingKeyPem) throw new Error('a signing key is needed to provision (--signing-key)');

  const outcome = await postWithRetries({
    url: options.apiUrl,
    body: () => signRequest(options, signingKeyPem, keyAndCsr?.csrPem),
    answer: successAnswer,
    headers: options.headers,
    backoff: options.backoff,
    requestTimeoutMs: options.requestTimeoutMs,
    onRetry: options.onRetry,
    giveUpWhenRefused: options.giveUpWhenRefused,
    sleep: options.sleep,
  });
  if (outcome.kind === 'refused') throw new ProvisioningRejectedError(outcome.status, outcome.message);
  if (outcome.kind === 'unavailable') {
    throw new ProvisioningUnavailableError(outcome.message, outcome.attempts, outcome.connectionRefused);
  }
  const { answer } = outcome;
  const privateKeyPem = keyAndCsr?.privateKeyPem ?? answer.PrivateKey;
  if (!privateKeyPem) {
    throw new ProvisioningUnavailableError('the service answered without a private key', outcome.attempts);
  }
  return {
    attempts: outcome.attempts,
    latencyMs: outcome.latencyMs,
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

function signRequest(
  options: ProvisionOptions,
  signingKeyPem: string,
  csrPem?: string,
): V1Request | V2Request {
  const parts = { thingName: options.thingName, signingKeyPem, csrPem };
  return options.protocol === 'v2' ? signedV2Request(parts) : signedV1Request(parts);
}
