/**
 * Proof that a request comes from a device of the fleet. Pure: keys and clock are arguments.
 *
 * v1 (the 2018 sample, kept for devices in the field): RSA PKCS#1 v1.5 / SHA-256 over the UTF-8
 * thing name with the fleet's shared key. It binds neither the CSR nor time: replayable forever.
 * v2 (docs/protocol.md): signs thing name, timestamp, nonce and the CSR's hash, with a
 * per-device key when the registry has one, RSA or ECDSA P-256.
 */
import { constants, KeyObject, verify } from 'node:crypto';
import { unauthenticated } from './errors';
import { Proof } from './request';
import { canonicalV2Message } from './wire';

/** Key types a v2 signature may use: RSA ≥ 2048 bits or ECDSA on P-256. */
export function describeSigningKey(key: KeyObject): 'rsa' | 'ec-p256' | undefined {
  const details = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'rsa' && (details?.modulusLength ?? 0) >= 2048) return 'rsa';
  if (key.asymmetricKeyType === 'ec' && details?.namedCurve === 'prime256v1') return 'ec-p256';
  return undefined;
}

/** Whether `signature` over `message` verifies with `key` (RSA PKCS#1 v1.5 or ECDSA, SHA-256). */
export function verifyWith(key: KeyObject, message: Buffer, signature: Buffer): boolean {
  const kind = describeSigningKey(key);
  try {
    if (kind === 'rsa')
      return verify('sha256', message, { key, padding: constants.RSA_PKCS1_PADDING }, signature);
    if (kind === 'ec-p256') {
      // Firmware libraries differ: mbedTLS emits ASN.1 DER, PKCS#11 tokens raw r||s. Accept both.
      const dsaEncoding = signature.length === 64 ? 'ieee-p1363' : 'der';
      return verify('sha256', message, { key, dsaEncoding }, signature);
    }
  } catch {
    return false; // malformed signature bytes: same answer as a wrong signature
  }
  return false;
}

export interface SignatureCheck {
  readonly thingName: string;
  readonly proof: Proof;
  /** DER of the CSR in the request, when there is one (v2 binds its hash). */
  readonly csrDer?: Uint8Array;
  /** The device's own key from the registry, else undefined (then the fleet key applies). */
  readonly deviceKey?: KeyObject;
  readonly fleetKey: KeyObject;
  readonly acceptV1: boolean;
  readonly nowSeconds: number;
  readonly maxClockSkewSeconds: number;
}

/**
 * The checks that need no key: run before touching the registry, so stale or disallowed
 * requests cost no write.
 */
export function precheckProof(
  check: Pick<SignatureCheck, 'proof' | 'acceptV1' | 'nowSeconds' | 'maxClockSkewSeconds'>,
): void {
  const { proof } = check;
  if (proof.version === 1) {
    if (!check.acceptV1)
      throw unauthenticated('v1 signatures are no longer accepted; sign with sig-version 2');
    return;
  }
  const skew = Math.abs(check.nowSeconds - proof.timestamp);
  if (skew > check.maxClockSkewSeconds) {
    throw unauthenticated(
      `timestamp is ${skew} s away from the service clock; the limit is ${check.maxClockSkewSeconds} s`,
    );
  }
}

/**
 * Whether the signature verifies with the device's own key when the record has one, else the
 * fleet key. A record that carries its own key demands it even in v1, so the shared fleet key
 * (extractable from any one device) can't impersonate devices that have moved on.
 * Call precheckProof first; this answers only about the signature.
 */
export function proofVerifies(check: SignatureCheck): boolean {
  const { proof } = check;
  const key = check.deviceKey ?? check.fleetKey;
  if (proof.version === 1) return verifyWith(key, Buffer.from(check.thingName, 'utf8'), proof.signature);
  const message = canonicalV2Message({
    thingName: check.thingName,
    timestamp: proof.timestamp,
    nonce: proof.nonce,
    csrDer: check.csrDer,
  });
  return verifyWith(key, message, proof.signature);
}

/** Throws 401 with the reason unless the proof verifies. */
export function verifyProof(check: SignatureCheck): void {
  precheckProof(check);
  if (check.proof.version === 2 && !describeSigningKey(check.deviceKey ?? check.fleetKey)) {
    throw unauthenticated('the registered key is not RSA ≥ 2048 or EC P-256');
  }
  if (!proofVerifies(check)) {
    throw unauthenticated(
      check.proof.version === 1 ? 'thing-name-sig does not verify' : 'signature does not verify',
    );
  }
}
