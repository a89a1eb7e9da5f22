/**
 * The wire protocol devices speak (docs/protocol.md). v1 is the 2018 sample's and must keep
 * working for devices already in the field; v2 closes its replay holes.
 */
import { createHash } from 'node:crypto';

export const PROVISIONING_PATH = '/device-provisioning';

/** Largest request body accepted (bytes); a CSR is ~1–2 KiB, so this is generous. */
export const MAX_BODY_BYTES = 64 * 1024;

/** v1 (the sample): signature over the UTF-8 thing name with the fleet key. */
export interface V1Request {
  readonly 'thing-name': string;
  readonly 'thing-name-sig': string;
  readonly CSR?: string;
}

/** v2: signature over canonicalV2Message(...), per-device or fleet key, RSA or ECDSA P-256. */
export interface V2Request {
  readonly 'thing-name': string;
  readonly 'sig-version': 2;
  readonly timestamp: number;
  readonly nonce: string;
  readonly signature: string;
  readonly CSR?: string;
}

export interface SuccessAnswer {
  readonly status: 'success';
  readonly region: string;
  readonly distance: number;
  readonly endpointAddress: string;
  readonly certificatePem: string;
  readonly PrivateKey?: string;
  /**
   * Spill-over: the nearest region, which was backlogged; `region` and `distance` are where the
   * device was placed instead. Absent otherwise (the sample's devices ignore fields they don't know).
   */
  readonly spilledFrom?: string;
}

export interface ErrorAnswer {
  readonly status: 'error';
  readonly message: string;
}

export const V2_MESSAGE_TAG = 'GDP-PROVISION-V2';
export const V2_NONCE_PATTERN = /^[A-Za-z0-9_-]{16,64}$/;

export interface V2MessageParts {
  readonly thingName: string;
  /** Unix time in whole seconds. */
  readonly timestamp: number;
  readonly nonce: string;
  /** DER bytes of the CSR sent in the same request, if any. */
  readonly csrDer?: Uint8Array;
}

/**
 * The exact bytes a v2 signature covers: five lines joined by "\n" (no trailing newline):
 * tag, thing name, timestamp in decimal, nonce, lowercase hex SHA-256 of the CSR's DER or "-".
 */
export function canonicalV2Message(parts: V2MessageParts): Buffer {
  const csrHash = parts.csrDer ? createHash('sha256').update(parts.csrDer).digest('hex') : '-';
  const lines = [V2_MESSAGE_TAG, parts.thingName, String(parts.timestamp), parts.nonce, csrHash];
  return Buffer.from(lines.join('\n'), 'utf8');
}

/**
 * DER of the single PEM block in `text` with this label. Strict: exactly one block, nothing but
 * whitespace around it, canonical base64 — what is hashed, checked and certified is what was sent.
 */
export function singlePemBlock(text: string, label: string): Buffer {
  const pattern = new RegExp(`^\\s*-----BEGIN ${label}-----\\r?\\n([^-]+)-----END ${label}-----\\s*$`);
  const match = pattern.exec(text);
  if (!match) throw new Error(`expected exactly one PEM block labelled ${label}`);
  const body = (match[1] ?? '').replace(/\r?\n/g, '');
  if (body.length === 0 || !/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(body)) {
    throw new Error(`the ${label} block is not valid base64`);
  }
  return Buffer.from(body, 'base64');
}

/** DER of a CSR: exactly one CERTIFICATE REQUEST block (v2 signs its hash). */
export function pemToDer(pem: string): Buffer {
  return singlePemBlock(pem, 'CERTIFICATE REQUEST');
}

/**
 * After day one (docs/protocol.md, "Status and renewal"): a provisioned device proves who it is
 * with the key of its current certificate, and sends that certificate along. No fleet secret.
 */
export const STATUS_PATH = '/device-status';
export const RENEW_PATH = '/device-renew';

export type LifecycleOperation = 'status' | 'renew';

/** The first line of each signed message: a status signature can't be replayed as a renewal. */
export const LIFECYCLE_MESSAGE_TAG: Readonly<Record<LifecycleOperation, string>> = {
  status: 'GDP-STATUS-V1',
  renew: 'GDP-RENEW-V1',
};

/** The body of POST /device-status and POST /device-renew. */
export interface LifecycleRequestBody {
  readonly 'thing-name': string;
  /** Unix time in whole seconds. */
  readonly timestamp: number;
  /** 16–64 of A-Z a-z 0-9 _ - ; never reused. */
  readonly nonce: string;
  /** PEM of the certificate whose private key made the signature. */
  readonly certificate: string;
  /** Base64 signature over canonicalLifecycleMessage(...) with that certificate's key. */
  readonly signature: string;
  /** Status only, optional, not signed: the region the device connects to now. */
  readonly region?: string;
  /** Renew only, optional: a new key's CSR. Without it the service generates the key. */
  readonly CSR?: string;
}

export interface LifecycleMessageParts {
  readonly operation: LifecycleOperation;
  readonly thingName: string;
  readonly timestamp: number;
  readonly nonce: string;
  /** DER bytes of the CSR sent with a renewal, if any. */
  readonly csrDer?: Uint8Array;
}

/**
 * The exact bytes a status or renewal signature covers, in the style of v2: five lines joined by
 * "\n" (no trailing newline): tag, thing name, timestamp in decimal, nonce, lowercase hex
 * SHA-256 of the CSR's DER or "-".
 */
export function canonicalLifecycleMessage(parts: LifecycleMessageParts): Buffer {
  const csrHash = parts.csrDer ? createHash('sha256').update(parts.csrDer).digest('hex') : '-';
  const lines = [
    LIFECYCLE_MESSAGE_TAG[parts.operation],
    parts.thingName,
    String(parts.timestamp),
    parts.nonce,
    csrHash,
  ];
  return Buffer.from(lines.join('\n'), 'utf8');
}

/** What a device should do next, as /device-status tells it. */
export type DeviceAction = 'none' | 'renew' | 'move' | 'reprovision';

/** 200 answer of POST /device-status. */
export interface StatusAnswer {
  readonly status: 'success';
  readonly action: DeviceAction;
  /** The registry's prov_status: provisioned, or unprovisioned when the record was reset. */
  readonly provStatus: string;
  /** Where the device lives now, and its endpoint (absent when it must re-provision). */
  readonly region?: string;
  readonly endpointAddress?: string;
  /** The device's current certificate, as the registry holds it. */
  readonly certificateId?: string;
  /** ACTIVE for the current certificate; RETIRING for the one a renewal replaced. */
  readonly certificateStatus?: 'ACTIVE' | 'RETIRING';
  /** ISO-8601 UTC, of the current certificate. */
  readonly notAfter?: string;
  /** ISO-8601 UTC: from then on the action is `renew`. */
  readonly renewAfter?: string;
  /** With action `move`: the region the device is leaving. */
  readonly movedFrom?: string;
  /** Human-readable: why this action. */
  readonly message: string;
}

/** 200 answer of POST /device-renew: the provisioning answer's fields, and the new certificate's facts. */
export interface RenewAnswer {
  readonly status: 'success';
  readonly region: string;
  readonly endpointAddress: string;
  readonly certificatePem: string;
  readonly PrivateKey?: string;
  readonly certificateId: string;
  readonly notAfter: string;
  /** ISO-8601 UTC: the previous certificate is retired then at the latest. */
  readonly previousRetiredBy?: string;
}
