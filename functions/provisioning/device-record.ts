/**
 * The registry record of one device and every decision taken from it. Pure: the DynamoDB
 * adapter (registry.ts) reads and writes records, this module says what a record means.
 *
 * Sample attributes, kept because operators script against them: thing_name, prov_status
 * (unprovisioned → provisioned), aws_region, prov_datetime (YYYY-MM-DDTHH:MM:SS UTC).
 * Added (docs/protocol.md lists them all):
 * - the lease: claim_id, claim_expires;
 * - the intent, written with the claim before AWS IoT sees the certificate: pending_certificate_id,
 *   pending_certificate_pem, pending_region, pending_key_sha256, pending_key_mode, pending_since;
 * - the live certificate: certificate_id, certificate_arn, certificate_pem, certificate_key_sha256,
 *   key_mode, thing_arn, geo_source, prov_epoch, first_prov_epoch, reissue_count;
 * - record_version (every write of ours adds one), recent_nonces (v2), device_public_key (v2);
 * - after day one (lifecycle.ts): endpoint_address (the region's endpoint, so a status call needs no
 *   IoT call); a renewal's previous certificate while its grace period runs (previous_certificate_id,
 *   previous_region, previous_retire_after); status_epoch and status_nonces of the last status calls;
 * - retiring: certificates of ours that are no longer live by intent but may not be retired yet
 *   (`<region>/<certificateId>`, a string set), named until they are gone;
 * - answer recovery (answer-recovery.ts): sealed_key (B, the generated private key as KMS
 *   ciphertext, encryption context thing_name + certificate_id) and sealed_key_until (N, epoch
 *   seconds), written by a key-mode mark, removed by every other write of ours but a nonce spend
 *   and the forgetting of retired certificates, and by the reconciler once expired;
 * - set by the operator tool (functions/admin/): region_pin, the move (move_to_region + move_started while
 *   a move is under way; moved_from_region + moved_at while both regions accept the device), and
 *   history, the bounded audit list.
 *
 * Any shape an operator or an older version may have left is read without throwing: a field of
 * the wrong type counts as missing.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { conflict, forbidden, ProvisioningError, throttled, unauthenticated } from './errors';

export const PROV_STATUS = {
  unprovisioned: 'unprovisioned',
  provisioned: 'provisioned',
  disabled: 'disabled',
  revoked: 'revoked',
} as const;

export type KeyMode = 'csr' | 'server';

/** A certificate the service issued, where it lives. */
export interface CertificateRef {
  readonly certificateId: string;
  readonly region: string;
}

export interface PendingCertificate extends CertificateRef {
  readonly certificatePem: string;
  readonly keySha256: string;
  readonly keyMode: KeyMode;
  readonly since: number;
}

/** A renewed device's previous certificate: ACTIVE until the new key is proven, or retireAfter. */
export interface PreviousCertificate extends CertificateRef {
  /** Epoch seconds: the reconciler retires it from then on. */
  readonly retireAfter: number;
}

export interface DeviceRecord {
  readonly thingName: string;
  readonly provStatus: string;
  readonly region?: string;
  readonly provisionedAtEpoch?: number;
  /** When the device was first provisioned: anchors the re-issue window. */
  readonly firstProvisionedAtEpoch?: number;
  readonly reissueCount: number;
  readonly certificateId?: string;
  readonly certificateArn?: string;
  readonly certificatePem?: string;
  readonly certificateKeySha256?: string;
  readonly thingArn?: string;
  readonly devicePublicKeyPem?: string;
  readonly claimId?: string;
  readonly claimExpires?: number;
  readonly pending?: PendingCertificate;
  /** The region an operator pinned the device to (import); wins over its location. */
  readonly regionPin?: string;
  /** A move under way: the live certificate is being registered in this region too. */
  readonly moveTo?: { readonly region: string; readonly since: number };
  /** A finished move whose old copy is still live: both regions accept the device. */
  readonly movedFrom?: { readonly region: string; readonly at: number };
  /** The endpoint of `region`, recorded with the certificate (older records lack it). */
  readonly endpointAddress?: string;
  /** The certificate a renewal replaced, during its grace period. */
  readonly previous?: PreviousCertificate;
  /**
   * Certificates to retire that may still be live: what a re-issue or renewal replaced (named in
   * its mark), what a failed request's undo could not finish (named when it gives its lease back).
   * The next request for the device, a status call or the reconciler retires them, then forgets.
   */
  readonly retiring: readonly CertificateRef[];
  /** When the last status call was answered (epoch seconds), and `timestamp.nonce` of recent ones. */
  readonly statusEpoch?: number;
  readonly statusNonces: readonly string[];
  /** The operator's audit trail, oldest first, at most MAX_HISTORY entries. */
  readonly history: readonly AuditEntry[];
  /** `timestamp.nonce` of recent v2 requests. */
  readonly recentNonces: readonly string[];
  /** The generated private key of the live certificate, sealed by KMS (answer-recovery.ts). */
  readonly sealedKey?: Uint8Array;
  /** Epoch seconds: the sealed key answers retries until then. */
  readonly sealedKeyUntil?: number;
  readonly version: number;
  /** The item as read: conditional writes compare against these exact values. */
  readonly raw: Readonly<Record<string, AttributeValue>>;
}

function text(item: Record<string, AttributeValue>, name: string): string | undefined {
  const value = item[name]?.S;
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

function number(item: Record<string, AttributeValue>, name: string): number | undefined {
  const value = item[name]?.N;
  if (value === undefined) return undefined;
  const parsed = Number(value);
  return Number.isFinite(parsed) ? parsed : undefined;
}

/** One operator action on a record: when, who (STS caller ARN), what, and the fields it changed. */
export interface AuditEntry {
  readonly at: string;
  readonly by: string;
  readonly what: string;
  readonly before: Readonly<Record<string, string>>;
  readonly after: Readonly<Record<string, string>>;
}

/** The audit trail keeps the newest this many entries: a record stays far below 400 KB. */
export const MAX_HISTORY = 20;

function stringMap(value: AttributeValue | undefined): Record<string, string> {
  const entries = Object.entries(value?.M ?? {}).filter(([, field]) => typeof field.S === 'string');
  return Object.fromEntries(entries.map(([name, field]) => [name, field.S as string]));
}

function auditEntries(value: AttributeValue | undefined): AuditEntry[] {
  if (!Array.isArray(value?.L)) return [];
  return value.L.flatMap((entry) => {
    const fields = entry.M;
    if (!fields || typeof fields.at?.S !== 'string' || typeof fields.what?.S !== 'string') return [];
    return [
      {
        at: fields.at.S,
        by: fields.by?.S ?? '',
        what: fields.what.S,
        before: stringMap(fields.before),
        after: stringMap(fields.after),
      },
    ];
  });
}

/** The history list after adding `entry`: the newest MAX_HISTORY entries, as DynamoDB stores them. */
export function historyWith(record: DeviceRecord | undefined, entry: AuditEntry): AttributeValue {
  const toMap = (fields: Readonly<Record<string, string>>): AttributeValue => ({
    M: Object.fromEntries(Object.entries(fields).map(([name, value]) => [name, { S: value }])),
  });
  const kept = [...(record?.history ?? []), entry].slice(-MAX_HISTORY);
  return {
    L: kept.map((kept) => ({
      M: {
        at: { S: kept.at },
        by: { S: kept.by },
        what: { S: kept.what },
        before: toMap(kept.before),
        after: toMap(kept.after),
      },
    })),
  };
}

/**
 * Every certificate copy the record keeps alive: the live one, a pending intent, during and
 * after a move the copy in the other region, and those still retiring. The reconciler retires
 * every certificate of our CA that no record references, so anything live must be listed here;
 * a retiring one is listed so that only the path that also forgets it retires it.
 */
export function referencedCertificates(record: DeviceRecord): CertificateRef[] {
  const refs: CertificateRef[] = [];
  const { certificateId } = record;
  if (certificateId && record.region) refs.push({ certificateId, region: record.region });
  if (certificateId && record.movedFrom) refs.push({ certificateId, region: record.movedFrom.region });
  if (certificateId && record.moveTo) refs.push({ certificateId, region: record.moveTo.region });
  if (record.pending)
    refs.push({ certificateId: record.pending.certificateId, region: record.pending.region });
  if (record.previous)
    refs.push({ certificateId: record.previous.certificateId, region: record.previous.region });
  refs.push(...record.retiring);
  return refs;
}

export function toDeviceRecord(item: Record<string, AttributeValue>): DeviceRecord {
  const pendingId = text(item, 'pending_certificate_id');
  const pendingRegion = text(item, 'pending_region');
  const pendingPem = text(item, 'pending_certificate_pem');
  const pendingKey = text(item, 'pending_key_sha256');
  const pendingMode = text(item, 'pending_key_mode');
  const nonces = item.recent_nonces?.SS;
  const statusNonces = item.status_nonces?.SS;
  const previousId = text(item, 'previous_certificate_id');
  const previousRegion = text(item, 'previous_region');
  const retiring = item.retiring?.SS;
  return {
    thingName: text(item, 'thing_name') ?? '',
    provStatus: text(item, 'prov_status') ?? '',
    region: text(item, 'aws_region'),
    provisionedAtEpoch: number(item, 'prov_epoch'),
    firstProvisionedAtEpoch: number(item, 'first_prov_epoch'),
    reissueCount: number(item, 'reissue_count') ?? 0,
    certificateId: text(item, 'certificate_id'),
    certificateArn: text(item, 'certificate_arn'),
    certificatePem: text(item, 'certificate_pem'),
    certificateKeySha256: text(item, 'certificate_key_sha256'),
    thingArn: text(item, 'thing_arn'),
    devicePublicKeyPem: text(item, 'device_public_key'),
    claimId: text(item, 'claim_id'),
    claimExpires: number(item, 'claim_expires'),
    pending:
      pendingId &&
      pendingRegion &&
      pendingPem &&
      pendingKey &&
      (pendingMode === 'csr' || pendingMode === 'server')
        ? {
            certificateId: pendingId,
            region: pendingRegion,
            certificatePem: pendingPem,
            keySha256: pendingKey,
            keyMode: pendingMode,
            since: number(item, 'pending_since') ?? 0,
          }
        : undefined,
    regionPin: text(item, 'region_pin'),
    moveTo: text(item, 'move_to_region')
      ? { region: text(item, 'move_to_region') as string, since: number(item, 'move_started') ?? 0 }
      : undefined,
    movedFrom: text(item, 'moved_from_region')
      ? { region: text(item, 'moved_from_region') as string, at: number(item, 'moved_at') ?? 0 }
      : undefined,
    endpointAddress: text(item, 'endpoint_address'),
    previous:
      previousId && previousRegion
        ? {
            certificateId: previousId,
            region: previousRegion,
            retireAfter: number(item, 'previous_retire_after') ?? 0,
          }
        : undefined,
    retiring: Array.isArray(retiring) ? retiring.flatMap(retiringRef) : [],
    statusEpoch: number(item, 'status_epoch'),
    statusNonces: Array.isArray(statusNonces)
      ? statusNonces.filter((entry) => typeof entry === 'string')
      : [],
    history: auditEntries(item.history),
    recentNonces: Array.isArray(nonces) ? nonces.filter((entry) => typeof entry === 'string') : [],
    sealedKey:
      item.sealed_key?.B instanceof Uint8Array && item.sealed_key.B.length > 0
        ? item.sealed_key.B
        : undefined,
    sealedKeyUntil: number(item, 'sealed_key_until'),
    version: number(item, 'record_version') ?? 0,
    raw: item,
  };
}

/** How a retiring certificate is named in the record's `retiring` string set. */
export const retiringEntry = (ref: CertificateRef): string => `${ref.region}/${ref.certificateId}`;

function retiringRef(entry: unknown): CertificateRef[] {
  if (typeof entry !== 'string') return [];
  const slash = entry.indexOf('/');
  if (slash <= 0 || slash === entry.length - 1) return [];
  return [{ region: entry.slice(0, slash), certificateId: entry.slice(slash + 1) }];
}

/** The sample's prov_datetime format: `YYYY-MM-DDTHH:MM:SS` in UTC. */
export function provDatetime(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().slice(0, 19);
}

/** How long "another request is in flight" asks the device to wait: a request takes ~1 s. */
export const IN_FLIGHT_RETRY_AFTER_SECONDS = 2;
/** At most this many v2 nonces are remembered per device (newest kept). */
export const MAX_RECENT_NONCES = 32;

export interface DecisionRules {
  readonly nowSeconds: number;
  /** How long after the first provisioning a lost answer may be re-issued (0 = never). */
  readonly reprovisionWindowSeconds: number;
  /** How many re-issues that window allows. */
  readonly reissueLimit: number;
}

export interface RequestFacts {
  readonly thingName: string;
  /** `timestamp.nonce` of a v2 request. */
  readonly nonceEntry?: string;
  /** SHA-256 of the SubjectPublicKeyInfo of the CSR, when the device sent one. */
  readonly csrKeySha256?: string;
}

export type Decision =
  | { readonly kind: 'refuse'; readonly error: ProvisioningError }
  /** The device sent the CSR of its current certificate again: answer with that certificate. */
  | { readonly kind: 'same-certificate'; readonly region: string; readonly certificatePem: string }
  /**
   * A key-mode device whose answer was lost asks again while its generated key is sealed in the
   * record: unseal it and answer with the same certificate and key (answer-recovery.ts).
   */
  | {
      readonly kind: 'recover';
      readonly region: string;
      readonly certificateId: string;
      readonly certificatePem: string;
      readonly sealedKey: Uint8Array;
    }
  /** A dead request's intent for this CSR key: finish it and answer with its certificate. */
  | { readonly kind: 'resume'; readonly pending: PendingCertificate }
  | {
      readonly kind: 'issue';
      /** Re-issue for a provisioned device (lost answer): keep its region, retire its certificate. */
      readonly reissue: boolean;
      /** Certificates of ours to retire once the new one is recorded. */
      readonly retire: readonly CertificateRef[];
    };

export function withinReissueWindow(record: DeviceRecord, rules: DecisionRules): boolean {
  const anchor = record.firstProvisionedAtEpoch ?? record.provisionedAtEpoch;
  return (
    rules.reprovisionWindowSeconds > 0 &&
    anchor !== undefined &&
    rules.nowSeconds - anchor <= rules.reprovisionWindowSeconds
  );
}

/**
 * What to do for a request whose signature has been verified. The order matters: a device that
 * can sign learns why it is refused; nobody else gets this far (401 before any of it).
 */
export function decide(
  record: DeviceRecord | undefined,
  request: RequestFacts,
  rules: DecisionRules,
): Decision {
  const refuse = (error: ProvisioningError): Decision => ({ kind: 'refuse', error });
  const { thingName } = request;
  if (!record) return refuse(forbidden(`thing ${thingName} is not on the allowlist`));
  const status = record.provStatus;
  if (status === PROV_STATUS.disabled) {
    return refuse(
      forbidden(`thing ${thingName} is disabled; \`gdp-admin enable ${thingName}\` allows it again`),
    );
  }
  if (status === PROV_STATUS.revoked) {
    return refuse(
      forbidden(`thing ${thingName} is revoked; use \`gdp-admin reset ${thingName}\` to allow it again`),
    );
  }
  if (status !== PROV_STATUS.unprovisioned && status !== PROV_STATUS.provisioned) {
    return refuse(forbidden(`thing ${thingName} has prov_status "${status}" and cannot be provisioned`));
  }
  if (request.nonceEntry && nonceSpent(record.recentNonces, request.nonceEntry)) {
    return refuse(unauthenticated('nonce was already used; sign a new request'));
  }
  if (record.claimId && (record.claimExpires ?? 0) > rules.nowSeconds) {
    return refuse(
      throttled(
        `another request for ${thingName} is in progress; retry shortly`,
        IN_FLIGHT_RETRY_AFTER_SECONDS,
      ),
    );
  }
  // Past here any claim is stale: its function is dead (the lease outlives the function timeout).
  const stale = record.pending;
  if (status === PROV_STATUS.unprovisioned) {
    if (
      stale &&
      request.csrKeySha256 &&
      stale.keyMode === 'csr' &&
      stale.keySha256 === request.csrKeySha256
    ) {
      return { kind: 'resume', pending: stale };
    }
    return { kind: 'issue', reissue: false, retire: stale ? [stale] : [] };
  }

  // Provisioned.
  if (
    !request.csrKeySha256 &&
    record.sealedKey &&
    (record.sealedKeyUntil ?? 0) > rules.nowSeconds &&
    record.certificateId &&
    record.certificatePem &&
    record.region
  ) {
    return {
      kind: 'recover',
      region: record.region,
      certificateId: record.certificateId,
      certificatePem: record.certificatePem,
      sealedKey: record.sealedKey,
    };
  }
  const inWindow = withinReissueWindow(record, rules);
  if (
    inWindow &&
    request.csrKeySha256 &&
    record.certificateKeySha256 === request.csrKeySha256 &&
    record.certificatePem &&
    record.region
  ) {
    return { kind: 'same-certificate', region: record.region, certificatePem: record.certificatePem };
  }
  if (inWindow && record.reissueCount < rules.reissueLimit) {
    // As for renewals (lifecycle.ts): a re-issue would race the operator's move of this certificate.
    if (record.moveTo) {
      return refuse(
        conflict(`an operator is moving ${thingName} to ${record.moveTo.region}; retry after the move`, 60),
      );
    }
    // The live certificate in every region it is registered in (a move's copies too), and a dead
    // request's intent.
    const retire = referencedCertificates({ ...record, pending: undefined });
    if (stale && stale.certificateId !== record.certificateId) retire.push(stale);
    return { kind: 'issue', reissue: true, retire };
  }
  const since = record.raw.prov_datetime?.S;
  return refuse(
    new ProvisioningError(
      'already-provisioned',
      `thing ${thingName} is already provisioned${record.region ? ` in ${record.region}` : ''}` +
        `${since ? ` since ${since}Z` : ''}; use \`gdp-admin reset ${thingName}\` to allow it again`,
    ),
  );
}

function entryTimestamp(entry: string): number {
  return Number(entry.slice(0, entry.indexOf('.')));
}

/**
 * Whether `timestamp.nonce` may not be used: it was, or the list is full and the entry is older
 * than everything it kept (a nonce dropped to make room could otherwise be replayed while its
 * timestamp is still inside the clock-skew limit).
 */
export function nonceSpent(kept: readonly string[], entry: string): boolean {
  if (kept.includes(entry)) return true;
  if (kept.length < MAX_RECENT_NONCES) return false;
  const oldest = Math.min(...kept.map(entryTimestamp).filter(Number.isFinite));
  return entryTimestamp(entry) < oldest;
}

/** The nonces to keep after this request: recent ones only, the newest MAX_RECENT_NONCES. */
export function nextRecentNonces(
  record: DeviceRecord | undefined,
  entry: string,
  nowSeconds: number,
  maxClockSkewSeconds: number,
  kept: readonly string[] = record?.recentNonces ?? [],
): string[] {
  const fresh = kept.filter((existing) => {
    const timestamp = entryTimestamp(existing);
    // Older than the clock-skew limit: the timestamp check refuses a replay of it anyway.
    return Number.isFinite(timestamp) && Math.abs(nowSeconds - timestamp) <= maxClockSkewSeconds;
  });
  return [...fresh.sort(), entry].slice(-MAX_RECENT_NONCES);
}
