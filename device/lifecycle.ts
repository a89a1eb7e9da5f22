/**
 * After day one (docs/protocol.md, docs/device.md): a provisioned device asks POST /device-status
 * what to do (nothing, renew, follow a move, re-provision) and renews its certificate with
 * POST /device-renew. Both are signed with the key of the device's current certificate, which
 * is sent along: no fleet secret is needed once a device is provisioned.
 */
import { z } from 'zod';
import {
  PROVISIONING_PATH,
  RENEW_PATH,
  STATUS_PATH,
  type RenewAnswer,
  type StatusAnswer,
} from '../functions/provisioning/wire';
import { isRetryableStatus } from './backoff';
import { describeWait, postWithRetries, type ExchangeOptions } from './exchange';
import { signedLifecycleRequest } from './keys';
import type { DeviceCredentials, LifecycleState } from './store';

/** How often a device that was told "nothing to do" asks again, by default. */
export const DEFAULT_STATUS_INTERVAL_SECONDS = 3600;

/**
 * Longest Retry-After a lifecycle call waits for. The service asks for a day when a device
 * renewed less than a day ago: the device then carries on with what it has and asks another time.
 */
export const LONGEST_LIFECYCLE_WAIT_MS = 60_000;

/** `when-due` (default), `always` (--check-status), `never` (--no-check-status). */
export type StatusCheckMode = 'when-due' | 'always' | 'never';

/** How lifecycle calls are made: retries, waits, and (in tests) the transport. */
export type ExchangeTuning = Pick<
  ExchangeOptions<unknown>,
  'backoff' | 'requestTimeoutMs' | 'onRetry' | 'giveUpWhenRefused' | 'longestWaitMs' | 'sleep' | 'fetch'
>;

/** The service refused the call (401, 403, or another 4xx): asking again unchanged cannot help. */
export class LifecycleRefusedError extends Error {
  constructor(
    readonly operation: 'status' | 'renew',
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'LifecycleRefusedError';
  }
}

/** No usable answer after the retries, or the service asked to come back later than we wait. */
export class LifecycleUnavailableError extends Error {
  constructor(
    readonly operation: 'status' | 'renew',
    message: string,
    /** The last HTTP status, when there was one (429: throttled, 409: a move under way). */
    readonly status?: number,
    readonly retryAfterMs?: number,
    readonly connectionRefused = false,
  ) {
    super(message);
    this.name = 'LifecycleUnavailableError';
  }
}

/** What 401 means on these calls, for a person reading the device's output. */
export const UNVERIFIED_EXPLANATION =
  'the service could not verify this device: the certificate it sent is not (or no longer) the one ' +
  'the registry holds for it, its signature did not verify, the nonce was used before, or the ' +
  'device clock is more than 5 minutes off';

/**
 * The lifecycle URL beside the provisioning URL: the same distribution, with the trailing
 * /device-provisioning (or /device-status) replaced. Undefined when the URL has neither path.
 */
export function lifecycleUrl(
  fromUrl: string | undefined,
  path: typeof STATUS_PATH | typeof RENEW_PATH,
): string | undefined {
  if (!fromUrl) return undefined;
  let url: URL;
  try {
    url = new URL(fromUrl);
  } catch {
    return undefined;
  }
  const pathname = url.pathname.replace(/\/+$/, '');
  const known = [PROVISIONING_PATH, STATUS_PATH, RENEW_PATH].find((known) => pathname.endsWith(known));
  if (!known) return undefined;
  url.pathname = pathname.slice(0, pathname.length - known.length) + path;
  return url.toString();
}

export interface StatusCheckDecision {
  readonly due: boolean;
  /** Said to the person watching: why the check runs, or why not. */
  readonly reason: string;
}

export interface StatusCheckInputs {
  readonly mode: StatusCheckMode;
  readonly intervalSeconds: number;
  readonly state: LifecycleState;
  /** A renewal replaced a certificate the service has not confirmed retired yet. */
  readonly previousAwaitingRetirement: boolean;
  readonly now: Date;
}

/**
 * Whether to ask the service on this start. A device that was told "nothing to do" recently
 * doesn't ask again within the interval; anything still open (a renewal to finish or to prove, an
 * action it was told about, a renewal point passed) makes it ask now.
 */
export function statusCheckDue(inputs: StatusCheckInputs): StatusCheckDecision {
  const { mode, state, now } = inputs;
  if (mode === 'never') return { due: false, reason: 'status check switched off (--no-check-status)' };
  if (mode === 'always') return { due: true, reason: 'status check asked for (--check-status)' };
  const last = state.lastStatusCheck;
  if (!last) return { due: true, reason: 'never checked' };
  if (inputs.previousAwaitingRetirement) {
    return { due: true, reason: 'the certificate a renewal replaced is not retired yet' };
  }
  if (last.action !== 'none') return { due: true, reason: `the last check asked to ${last.action}` };
  if (last.renewAfter && Date.parse(last.renewAfter) <= now.getTime()) {
    return { due: true, reason: `the certificate is past its renewal point (${last.renewAfter})` };
  }
  const elapsedSeconds = (now.getTime() - Date.parse(last.at)) / 1000;
  if (!(elapsedSeconds < inputs.intervalSeconds)) {
    return { due: true, reason: `last checked ${describeAge(elapsedSeconds)} ago` };
  }
  return {
    due: false,
    reason:
      `checked ${describeAge(elapsedSeconds)} ago (every ${describeAge(inputs.intervalSeconds)}; ` +
      '--check-status asks now)',
  };
}

function describeAge(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return 'at an unknown time';
  return describeWait(seconds * 1000);
}

const statusAnswer = z.object({
  status: z.literal('success'),
  action: z.enum(['none', 'renew', 'move', 'reprovision']),
  provStatus: z.string(),
  region: z.string().min(1).optional(),
  endpointAddress: z.string().min(1).optional(),
  certificateId: z.string().optional(),
  certificateStatus: z.enum(['ACTIVE', 'RETIRING']).optional(),
  notAfter: z.string().optional(),
  renewAfter: z.string().optional(),
  movedFrom: z.string().optional(),
  message: z.string().default(''),
});

const renewAnswer = z.object({
  status: z.literal('success'),
  region: z.string().min(1),
  endpointAddress: z.string().min(1),
  certificatePem: z.string().includes('BEGIN CERTIFICATE'),
  PrivateKey: z.string().optional(),
  certificateId: z.string().min(1),
  notAfter: z.string(),
  previousRetiredBy: z.string().optional(),
});

export interface LifecycleCall {
  readonly url: string;
  /** The credentials whose certificate and key the request is signed with. */
  readonly credentials: DeviceCredentials;
  readonly headers?: Readonly<Record<string, string>>;
  readonly tuning?: ExchangeTuning;
}

/** POST /device-status, signed with `credentials`; reports the region it connects to now. */
export async function requestStatus(call: LifecycleCall): Promise<StatusAnswer> {
  const { identity, certificatePem, privateKeyPem } = call.credentials;
  return exchange('status', call, statusAnswer, isRetryableStatus, () =>
    signedLifecycleRequest({
      operation: 'status',
      thingName: identity.thingName,
      certificatePem,
      privateKeyPem,
      region: identity.region,
    }),
  );
}

/** POST /device-renew with a new key's CSR, signed with the current certificate's key. */
export async function requestRenewal(
  call: LifecycleCall & { readonly csrPem: string },
): Promise<RenewAnswer> {
  const { identity, certificatePem, privateKeyPem } = call.credentials;
  // 409 with Retry-After: an operator's move is under way and ends soon. Without it, the record
  // was reset: asking again cannot help (the next status check says to provision again).
  const retryable = (status: number, retryAfterMs: number | undefined) =>
    (status === 409 && retryAfterMs !== undefined) || isRetryableStatus(status);
  return exchange('renew', call, renewAnswer, retryable, () =>
    signedLifecycleRequest({
      operation: 'renew',
      thingName: identity.thingName,
      certificatePem,
      privateKeyPem,
      csrPem: call.csrPem,
    }),
  );
}

async function exchange<Answer>(
  operation: 'status' | 'renew',
  call: LifecycleCall,
  answer: z.ZodType<Answer>,
  retryStatus: (status: number, retryAfterMs: number | undefined) => boolean,
  body: () => object,
): Promise<Answer> {
  const outcome = await postWithRetries({
    longestWaitMs: LONGEST_LIFECYCLE_WAIT_MS,
    ...call.tuning,
    url: call.url,
    headers: call.headers,
    answer,
    retryStatus,
    body,
  });
  if (outcome.kind === 'answer') return outcome.answer;
  if (outcome.kind === 'refused') throw new LifecycleRefusedError(operation, outcome.status, outcome.message);
  throw new LifecycleUnavailableError(
    operation,
    outcome.message,
    outcome.status,
    outcome.retryAfterMs,
    outcome.connectionRefused,
  );
}
