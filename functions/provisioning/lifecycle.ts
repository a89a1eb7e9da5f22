/**
 * After day one: what a status call answers and what a renewal does, decided from the record and
 * the certificate the device signed with (and whether that signature verifies). Pure: the flows
 * (status.ts, renew.ts) read, write and call AWS; this module says what a record means for them.
 *
 * Who the caller is: the certificate it sent, once its signature verifies with that
 * certificate's key. The registry's current certificate, or a renewal's previous one in its grace
 * period, are recognised by id (the common path: no CA check needed). Any other certificate counts
 * only when this deployment's CA issued it for this thing name: that is how a device whose record
 * was reset, or whose certificates were deleted, still learns what to do. Everyone else gets the
 * same 401, whatever the record says.
 */
import { createHash, KeyObject, X509Certificate } from 'node:crypto';
import type { CaCertificate } from './ca-certificate';
import {
  CertificateRef,
  DeviceRecord,
  IN_FLIGHT_RETRY_AFTER_SECONDS,
  nonceSpent,
  PendingCertificate,
  PreviousCertificate,
  PROV_STATUS,
} from './device-record';
import {
  conflict,
  forbidden,
  malformed,
  ProvisioningError,
  rateLimited,
  throttled,
  unauthenticated,
} from './errors';
import type { LifecycleRequest } from './request';
import { precheckProof, verifyWith } from './signature';
import type { DeviceAction } from './wire';
import { canonicalLifecycleMessage, singlePemBlock } from './wire';

/** The certificate a lifecycle request was signed with, as the device sent it. */
export interface PresentedCertificate {
  /** SHA-256 of the DER: AWS IoT's certificate id. */
  readonly id: string;
  readonly publicKey: KeyObject;
  readonly x509: X509Certificate;
}

/**
 * Parses the `certificate` field; 400 naming the problem when it is not one PEM certificate. A
 * certificate whose key can't be read, or is one nobody can hold (key-soundness.ts), gets the
 * same 401 as any certificate we did not issue: we never issue one, so it proves nothing.
 */
export async function readPresentedCertificate(pem: string): Promise<PresentedCertificate> {
  let der: Buffer;
  let x509: X509Certificate;
  try {
    der = singlePemBlock(pem, 'CERTIFICATE');
    x509 = new X509Certificate(der);
  } catch (error) {
    throw malformed(`certificate: ${(error as Error).message}`);
  }
  // Loaded on the first lifecycle request, not at cold start: it brings the ASN.1 parser.
  const verdict = (await import('./key-soundness')).checkCertificateKey(der);
  if (!verdict.sound) {
    throw unauthenticated(`certificate key refused: ${verdict.problem}; this service never issued it`);
  }
  return { id: createHash('sha256').update(der).digest('hex'), publicKey: verdict.key, x509 };
}

/** Whether this deployment's CA issued the certificate for this thing (CN = thing name). */
export function issuedFor(certificate: PresentedCertificate, ca: CaCertificate, thingName: string): boolean {
  const caX509 = new X509Certificate(ca.der);
  const commonNames = certificate.x509.subject
    .split('\n')
    .filter((line) => line.startsWith('CN='))
    .map((line) => line.slice('CN='.length));
  return (
    commonNames.length === 1 &&
    commonNames[0] === thingName &&
    certificate.x509.checkIssued(caX509) &&
    certificate.x509.verify(caX509.publicKey)
  );
}

/** When a certificate is valid, and from when a device should renew it. */
export interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly renewAfter: Date;
}

/** The renewal point: `renewAtPercent` of the way from notBefore to notAfter. */
export function validityOf(x509: X509Certificate, renewAtPercent: number): Validity {
  // X509Certificate gives times as OpenSSL prints them ("Dec  3 20:17:00 2036 GMT").
  const notBefore = new Date(x509.validFrom);
  const notAfter = new Date(x509.validTo);
  const lifetime = notAfter.getTime() - notBefore.getTime();
  const renewAfter = new Date(notBefore.getTime() + Math.floor((lifetime * renewAtPercent) / 100));
  return { notBefore, notAfter, renewAfter };
}

/** The record's current certificate's validity; undefined when it has none or it is unreadable. */
export function recordValidity(record: DeviceRecord, renewAtPercent: number): Validity | undefined {
  if (!record.certificatePem) return undefined;
  try {
    return validityOf(new X509Certificate(record.certificatePem), renewAtPercent);
  } catch {
    return undefined;
  }
}

/**
 * What every status or renewal request must pass before the registry is read: the timestamp, the
 * certificate's form, and the signature with that certificate's key. Returns the certificate.
 */
export async function verifyLifecycleProof(
  request: LifecycleRequest,
  maxClockSkewSeconds: number,
  nowSeconds: number,
  csrDer?: Uint8Array,
): Promise<PresentedCertificate> {
  precheckProof({
    proof: { version: 2, signature: request.signature, timestamp: request.timestamp, nonce: request.nonce },
    acceptV1: false,
    nowSeconds,
    maxClockSkewSeconds,
  });
  const certificate = await readPresentedCertificate(request.certificatePem);
  const message = canonicalLifecycleMessage({
    operation: request.operation,
    thingName: request.thingName,
    timestamp: request.timestamp,
    nonce: request.nonce,
    csrDer,
  });
  if (!verifyWith(certificate.publicKey, message, request.signature)) {
    throw unauthenticated('signature does not verify with the certificate sent');
  }
  return certificate;
}

/** Which of the device's certificates signed: the current one, a renewal's previous, or another. */
export type Signer = 'current' | 'previous' | 'other';

export function signerOf(record: DeviceRecord, certificateId: string): Signer {
  if (record.certificateId === certificateId) return 'current';
  if (record.previous?.certificateId === certificateId) return 'previous';
  return 'other';
}

/** The facts of one verified lifecycle request. */
export interface LifecycleFacts {
  readonly thingName: string;
  /** `timestamp.nonce`. */
  readonly nonceEntry: string;
  readonly certificateId: string;
  /** Whether our CA issued the presented certificate for this thing; asked only when needed. */
  readonly issuedByUs: () => boolean;
}

/**
 * The refusals status and renewal share, in order: who the caller is (401 for anyone not proven
 * to be this device), then the record's standing (403). Undefined when the request may go on.
 */
function authenticate(
  record: DeviceRecord | undefined,
  facts: LifecycleFacts,
): ProvisioningError | undefined {
  const { thingName } = facts;
  const known = record !== undefined && signerOf(record, facts.certificateId) !== 'other';
  if (!known && !facts.issuedByUs()) {
    return unauthenticated(`certificate was not issued by this service for ${thingName}`);
  }
  if (!record) return forbidden(`thing ${thingName} is not on the allowlist`);
  if (record.provStatus === PROV_STATUS.disabled) {
    return forbidden(`thing ${thingName} is disabled; an operator must enable it again`);
  }
  if (record.provStatus === PROV_STATUS.revoked) {
    return forbidden(`thing ${thingName} is revoked; it may not connect, renew or provision again`);
  }
  if (record.provStatus !== PROV_STATUS.unprovisioned && record.provStatus !== PROV_STATUS.provisioned) {
    return forbidden(`thing ${thingName} has prov_status "${record.provStatus}"`);
  }
  return undefined;
}

function superseded(facts: LifecycleFacts): ProvisioningError {
  return unauthenticated(
    `certificate ${facts.certificateId.slice(0, 12)}… is no longer ${facts.thingName}'s: a newer one replaced it; ` +
      'sign with the current certificate, or ask an operator to reset the device',
  );
}

export interface StatusRules {
  readonly nowSeconds: number;
  readonly statusMinIntervalSeconds: number;
  /** The current certificate's validity, when the record holds one. */
  readonly currentValidity?: Validity;
}

export type StatusDecision =
  | { readonly kind: 'refuse'; readonly error: ProvisioningError }
  | {
      readonly kind: 'answer';
      readonly action: DeviceAction;
      readonly signer: Signer;
      readonly message: string;
      /** The device proved the key of its renewed certificate: retire the previous one now. */
      readonly retirePrevious?: PreviousCertificate;
    };

export function decideStatus(
  record: DeviceRecord | undefined,
  facts: LifecycleFacts & { readonly reportedRegion?: string },
  rules: StatusRules,
): StatusDecision {
  const refuse = (error: ProvisioningError): StatusDecision => ({ kind: 'refuse', error });
  const denied = authenticate(record, facts);
  if (denied) return refuse(denied);
  const device = record as DeviceRecord;
  if (nonceSpent(device.statusNonces, facts.nonceEntry)) {
    return refuse(unauthenticated('nonce was already used; sign a new request'));
  }
  const since = rules.nowSeconds - (device.statusEpoch ?? Number.NEGATIVE_INFINITY);
  if (since < rules.statusMinIntervalSeconds) {
    const wait = Math.max(1, rules.statusMinIntervalSeconds - since);
    return refuse(
      rateLimited(
        `status of ${facts.thingName} was checked ${since} s ago; at most one check every ${rules.statusMinIntervalSeconds} s`,
        wait,
      ),
    );
  }

  const signer = signerOf(device, facts.certificateId);
  if (device.provStatus === PROV_STATUS.unprovisioned || !device.certificateId || !device.region) {
    return {
      kind: 'answer',
      action: 'reprovision',
      signer,
      message: `the registry record of ${facts.thingName} was reset; provision again at /device-provisioning`,
    };
  }
  if (signer === 'other') return refuse(superseded(facts));
  if (signer === 'previous') {
    return {
      kind: 'answer',
      action: 'renew',
      signer,
      message:
        'this certificate was replaced by a renewal whose answer the device did not keep; ' +
        'POST /device-renew again (same CSR: the same certificate; otherwise a new one)',
    };
  }
  const retirePrevious = device.previous;
  const reported = facts.reportedRegion;
  if (
    (reported !== undefined && reported !== device.region) ||
    (reported === undefined && device.movedFrom)
  ) {
    return {
      kind: 'answer',
      action: 'move',
      signer,
      retirePrevious,
      message: `an operator moved ${facts.thingName} to ${device.region}; reconnect to its endpoint with the same certificate`,
    };
  }
  const validity = rules.currentValidity;
  if (validity && rules.nowSeconds * 1000 >= validity.renewAfter.getTime()) {
    return {
      kind: 'answer',
      action: 'renew',
      signer,
      retirePrevious,
      message: `the certificate passed its renewal point (${validity.renewAfter.toISOString()}); POST /device-renew`,
    };
  }
  return { kind: 'answer', action: 'none', signer, retirePrevious, message: 'nothing to do' };
}

export interface RenewalRules {
  readonly nowSeconds: number;
  readonly renewMinIntervalSeconds: number;
  readonly renewGraceSeconds: number;
}

/**
 * Least time between two certificates issued for one renewal, for retries signed with the previous
 * certificate. Paced, not counted: a count would run out, and at the end of the grace period the
 * only certificate such a device holds (the previous one) is retired, cutting it off. A retry with
 * the same CSR gets its certificate back at once.
 */
export const RENEWAL_RETRY_INTERVAL_SECONDS = 30;

export type RenewalDecision =
  | { readonly kind: 'refuse'; readonly error: ProvisioningError }
  /** A retry with the CSR of the certificate the renewal already issued: answer with it. */
  | { readonly kind: 'same-certificate' }
  | {
      readonly kind: 'renew';
      /** The certificate that stays ACTIVE through the grace period. */
      readonly previous: PreviousCertificate;
      /** Certificates of ours to retire once the new one is recorded. */
      readonly retire: readonly CertificateRef[];
      readonly reissueCount: number;
      /** A dead renewal's intent for this CSR key: finish it rather than issue another. */
      readonly resume?: PendingCertificate;
    };

/** How long a device is told to wait when a move is under way. */
export const MOVE_RETRY_AFTER_SECONDS = 60;

/**
 * What a verified renewal request does. Signed with the current certificate, it starts a renewal:
 * the current certificate becomes the previous one. Signed with the previous certificate, it is a
 * retry after a lost answer: the unproven certificate is replaced (or sent again for the same CSR)
 * and the previous one stays, so no more than two are ever live. Such retries are paced
 * (RENEWAL_RETRY_INTERVAL_SECONDS), never refused for good.
 */
export function decideRenewal(
  record: DeviceRecord | undefined,
  facts: LifecycleFacts & { readonly csrKeySha256?: string },
  rules: RenewalRules,
): RenewalDecision {
  const refuse = (error: ProvisioningError): RenewalDecision => ({ kind: 'refuse', error });
  const denied = authenticate(record, facts);
  if (denied) return refuse(denied);
  const device = record as DeviceRecord;
  const { thingName } = facts;
  if (nonceSpent(device.recentNonces, facts.nonceEntry)) {
    return refuse(unauthenticated('nonce was already used; sign a new request'));
  }
  if (device.claimId && (device.claimExpires ?? 0) > rules.nowSeconds) {
    return refuse(
      throttled(
        `another request for ${thingName} is in progress; retry shortly`,
        IN_FLIGHT_RETRY_AFTER_SECONDS,
      ),
    );
  }
  if (device.provStatus !== PROV_STATUS.provisioned || !device.certificateId || !device.region) {
    return refuse(
      conflict(`the registry record of ${thingName} was reset; provision again at /device-provisioning`),
    );
  }
  const signer = signerOf(device, facts.certificateId);
  if (signer === 'other') return refuse(superseded(facts));
  if (device.moveTo) {
    return refuse(
      conflict(
        `an operator is moving ${thingName} to ${device.moveTo.region}; renew after the move`,
        MOVE_RETRY_AFTER_SECONDS,
      ),
    );
  }

  // The current certificate in every region it is registered in: the mark forgets a finished
  // move's old copy, so that copy is retired with whatever else this renewal replaces.
  const current: CertificateRef = { certificateId: device.certificateId, region: device.region };
  const oldMoveCopy: CertificateRef[] = device.movedFrom
    ? [{ certificateId: device.certificateId, region: device.movedFrom.region }]
    : [];
  // Past the in-flight check any intent is a dead request's.
  const stale = device.pending;
  const resume =
    stale && stale.keyMode === 'csr' && facts.csrKeySha256 && stale.keySha256 === facts.csrKeySha256
      ? stale
      : undefined;
  const staleToRetire = stale && !resume ? [stale] : [];

  if (signer === 'current') {
    const age = rules.nowSeconds - (device.provisionedAtEpoch ?? 0);
    if (!resume && age < rules.renewMinIntervalSeconds) {
      const wait = rules.renewMinIntervalSeconds - age;
      return refuse(
        rateLimited(
          `${thingName}'s certificate was issued ${age} s ago; renewals are at least ${rules.renewMinIntervalSeconds} s apart`,
          wait,
        ),
      );
    }
    return {
      kind: 'renew',
      previous: { ...current, retireAfter: rules.nowSeconds + rules.renewGraceSeconds },
      // Signing with the current certificate proves its renewal was received: its predecessor goes.
      retire: [...(device.previous ? [device.previous] : []), ...oldMoveCopy, ...staleToRetire],
      reissueCount: 0,
      resume,
    };
  }

  // Signed with the previous certificate: the device never got (or never kept) the current one.
  const previous = device.previous as PreviousCertificate;
  if (facts.csrKeySha256 && facts.csrKeySha256 === device.certificateKeySha256 && device.certificatePem) {
    return { kind: 'same-certificate' };
  }
  const sinceIssued = rules.nowSeconds - (device.provisionedAtEpoch ?? 0);
  if (!resume && sinceIssued < RENEWAL_RETRY_INTERVAL_SECONDS) {
    return refuse(
      rateLimited(
        `a certificate was issued for ${thingName}'s renewal ${sinceIssued} s ago; ` +
          `send the same CSR again to get it back, or retry in ${RENEWAL_RETRY_INTERVAL_SECONDS - sinceIssued} s for a new one`,
        RENEWAL_RETRY_INTERVAL_SECONDS - sinceIssued,
      ),
    );
  }
  return {
    kind: 'renew',
    previous,
    retire: [current, ...oldMoveCopy, ...staleToRetire],
    reissueCount: device.reissueCount + 1,
    resume,
  };
}
