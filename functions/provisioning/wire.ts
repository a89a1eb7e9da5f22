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

/** DER bytes of the first PEM block in `pem` (for hashing the CSR). */
export function pemToDer(pem: string): Buffer {
  const match = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/.exec(pem);
  if (!match) throw new Error('not a PEM block');
  return Buffer.from((match[2] ?? '').replace(/\s+/g, ''), 'base64');
}
