/**
 * Renewing the device certificate without ever being left without one that works:
 *
 *   1. a new key and CSR, kept in pending/ before anything is sent;
 *   2. POST /device-renew signed with the current certificate; the answer goes to pending/;
 *   3. connect over MQTT with the pending set; only then is it promoted to current (the replaced
 *      set kept in previous/);
 *   4. one status call signed with the new certificate, which proves the new key and lets the
 *      service retire the old certificate.
 *
 * If the new set fails to connect, the current one stays. A start that finds a complete pending
 * set (a crash between 2 and 3) tries it first and discards it if it does not connect.
 * The connection is whatever `connect` makes: MQTT in the device, a stand-in in unit tests.
 */
import type { RenewAnswer } from '../functions/provisioning/wire';
import { DEFAULT_BACKOFF } from './backoff';
import { certificateIdOf, certificateMatchesKey, createKeyAndCsr, keyTypeOf } from './keys';
import {
  LifecycleRefusedError,
  LifecycleUnavailableError,
  requestRenewal,
  requestStatus,
  UNVERIFIED_EXPLANATION,
  type ExchangeTuning,
} from './lifecycle';
import {
  discardPending,
  discardPrevious,
  loadLifecycleState,
  loadPendingCredentials,
  loadPendingRequest,
  loadPreviousCredentials,
  promotePending,
  restoreInterruptedPromotion,
  saveLifecycleState,
  savePendingCredentials,
  savePendingRequest,
  type DeviceCredentials,
} from './store';

export interface RenewalContext<Connection> {
  readonly dataDir: string;
  readonly statusUrl?: string;
  readonly renewUrl?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly tuning?: ExchangeTuning;
  readonly connect: (credentials: DeviceCredentials) => Promise<Connection>;
  /** One line per step, for the person watching. */
  readonly report: (line: string) => void;
  readonly now?: () => Date;
}

export type RenewalOutcome<Connection> =
  /** The renewed set connected and is current now; `connection` is open on it. */
  | {
      readonly kind: 'renewed';
      readonly credentials: DeviceCredentials;
      readonly connection: Connection;
    }
  /** Nothing changed: the current set stays (the reason was reported). */
  | { readonly kind: 'kept'; readonly credentials: DeviceCredentials };

/**
 * Renews `current`. Throws LifecycleRefusedError only for 403 (revoked, disabled): everything
 * else leaves the device with its current credentials, reported.
 */
export async function renewCertificate<Connection>(
  context: RenewalContext<Connection>,
  current: DeviceCredentials,
): Promise<RenewalOutcome<Connection>> {
  const { report, dataDir } = context;
  const kept = { kind: 'kept', credentials: current } as const;
  if (!context.renewUrl) {
    report('renewal skipped: no renewal URL (pass --renew-url)');
    return kept;
  }
  // A request sent before whose answer never arrived: the same CSR gets the same certificate back.
  const leftover = await loadPendingRequest(dataDir);
  const request =
    leftover ?? (await createKeyAndCsr(current.identity.thingName, keyTypeOf(current.privateKeyPem)));
  if (!leftover) await savePendingRequest(dataDir, request);
  report(
    `renewing: ${leftover ? 'the key and CSR of an unanswered renewal' : `a new ${keyTypeOf(request.privateKeyPem).toUpperCase()} key and CSR made on the device`}, ` +
      `signed with the current certificate, to ${context.renewUrl}`,
  );

  let answer: RenewAnswer;
  try {
    answer = await requestRenewal({
      url: context.renewUrl,
      credentials: current,
      csrPem: request.csrPem,
      headers: context.headers,
      tuning: context.tuning,
    });
  } catch (error) {
    if (error instanceof LifecycleRefusedError && error.status === 403) throw error;
    report(`renewal failed, keeping the current certificate: ${renewalFailure(error)}`);
    if (error instanceof LifecycleRefusedError) await discardPending(dataDir);
    return kept;
  }

  const privateKeyPem = answer.PrivateKey ?? request.privateKeyPem;
  if (!certificateMatchesKey(answer.certificatePem, privateKeyPem)) {
    await discardPending(dataDir);
    report('renewal failed, keeping the current certificate: the renewed certificate is not for the new key');
    return kept;
  }
  const now = (context.now ?? (() => new Date()))();
  const renewed: DeviceCredentials = {
    privateKeyPem,
    certificatePem: answer.certificatePem,
    identity: {
      ...current.identity,
      region: answer.region,
      endpointAddress: answer.endpointAddress,
      keySource: answer.PrivateKey ? 'service' : 'device',
      renewedAt: now.toISOString(),
    },
  };
  await savePendingCredentials(dataDir, renewed);
  report(
    `renewed: certificate ${short(answer.certificateId)} valid until ${answer.notAfter}, kept as pending ` +
      `beside the current one` +
      (answer.previousRetiredBy
        ? ` (which stays valid until ${answer.previousRetiredBy} at the latest)`
        : ''),
  );
  await saveLifecycleState(dataDir, {
    ...(await loadLifecycleState(dataDir)),
    lastRenewal: {
      at: now.toISOString(),
      certificateId: answer.certificateId,
      previousCertificateId: certificateIdOf(current.certificatePem),
      previousRetiredBy: answer.previousRetiredBy,
    },
  });

  const promoted = await connectAndPromote(context, renewed);
  if (!promoted) {
    report(`keeping the current certificate ${short(certificateIdOf(current.certificatePem))}`);
    return kept;
  }
  return promoted;
}

/**
 * At start: a complete pending set means a renewal was answered but not promoted. Try it first;
 * if it does not connect, drop it. Then make sure the current set is whole (a promotion cut
 * short puts previous/ back).
 */
export async function resumeInterruptedRenewal<Connection>(
  context: RenewalContext<Connection>,
): Promise<RenewalOutcome<Connection> | undefined> {
  const pending = await loadPendingCredentials(context.dataDir);
  let outcome: RenewalOutcome<Connection> | undefined;
  if (pending) {
    context.report(
      `a renewal was interrupted before its certificate ${short(certificateIdOf(pending.certificatePem))} ` +
        'connected: trying it first',
    );
    outcome = await connectAndPromote(context, pending);
  }
  const restored = await restoreInterruptedPromotion(context.dataDir);
  if (restored) {
    context.report(
      `the current key and certificate did not belong together (a promotion cut short): ` +
        `put back the previous set, certificate ${short(certificateIdOf(restored.certificatePem))}`,
    );
  }
  return outcome;
}

/** Connect with the renewed set; on success make it current and prove its key to the service. */
async function connectAndPromote<Connection>(
  context: RenewalContext<Connection>,
  renewed: DeviceCredentials,
): Promise<RenewalOutcome<Connection> | undefined> {
  const { report, dataDir } = context;
  let connection: Connection;
  try {
    connection = await context.connect(renewed);
  } catch (error) {
    await discardPending(dataDir);
    report(
      `the renewed certificate could not connect to ${renewed.identity.endpointAddress} ` +
        `(${messageOf(error)}): discarded it`,
    );
    return undefined;
  }
  const current = await promotePending(dataDir);
  report(
    `connected to ${current.identity.endpointAddress} with the renewed certificate; it is the current one now`,
  );
  await retirePrevious(context, current);
  return { kind: 'renewed', credentials: current, connection };
}

/**
 * A status call signed with the current certificate retires the one a renewal replaced. When the
 * service cannot take it now, it retires the old certificate by itself at the end of the grace
 * period; previous/ then stays until a later status call confirms it.
 */
export async function retirePrevious<Connection>(
  context: RenewalContext<Connection>,
  current: DeviceCredentials,
): Promise<boolean> {
  const { report, dataDir } = context;
  const previous = await loadPreviousCredentials(dataDir);
  const retiredBy = (await loadLifecycleState(dataDir)).lastRenewal?.previousRetiredBy;
  const byGrace = `the service retires it at the end of the grace period${retiredBy ? ` (${retiredBy})` : ''}`;
  if (!context.statusUrl) {
    report(`previous certificate not retired now (no status URL): ${byGrace}`);
    return false;
  }
  try {
    const answer = await requestStatus({
      url: context.statusUrl,
      credentials: current,
      headers: context.headers,
      // One call, asked again once when the service says when: the check that asked for the
      // renewal was moments ago, and the service takes one status call per few seconds.
      tuning: {
        ...context.tuning,
        backoff: { ...(context.tuning?.backoff ?? DEFAULT_BACKOFF), maxAttempts: 2 },
      },
    });
    await discardPrevious(dataDir);
    const state = await loadLifecycleState(dataDir);
    await saveLifecycleState(dataDir, {
      ...state,
      lastStatusCheck: {
        at: (context.now ?? (() => new Date()))().toISOString(),
        action: answer.action,
        notAfter: answer.notAfter,
        renewAfter: answer.renewAfter,
      },
    });
    report(
      `status signed with the renewed certificate: the previous one` +
        `${previous ? ` (${short(certificateIdOf(previous.certificatePem))})` : ''} is retired`,
    );
    return true;
  } catch (error) {
    if (error instanceof LifecycleUnavailableError && error.status === 429) {
      // Fine: proving the new key only retires the old certificate sooner.
      report(`status call throttled (HTTP 429): ${byGrace}`);
    } else {
      report(`status call with the renewed certificate failed (${renewalFailure(error)}): ${byGrace}`);
    }
    return false;
  }
}

function renewalFailure(error: unknown): string {
  if (error instanceof LifecycleRefusedError) {
    return `HTTP ${error.status}: ${error.message}${error.status === 401 ? ` (${UNVERIFIED_EXPLANATION})` : ''}`;
  }
  return messageOf(error);
}

/** Enough of a certificate id to tell two apart in a log line. */
export function short(certificateId: string): string {
  return certificateId.slice(0, 12);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
