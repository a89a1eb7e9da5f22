/**
 * Answer recovery in key mode. A device that sends no CSR gets a private key the service made;
 * when that answer is lost (the device timed out, the connection dropped), the device asks again.
 * Without recovery the retry is re-issued: a new key and certificate, a second RegisterCertificate
 * and the retirement of the first, about twice the first try's AWS IoT quota.
 *
 * With it, the mark that makes a key-mode certificate live also stores the generated key sealed
 * by KMS (Encrypt under a symmetric key of the function, encryption context thing_name and
 * certificate_id) with the end of a short window (sealed_key_until). A retry in the window, one the
 * service accepts like any other (signature, nonce, status), gets the same certificate and the
 * unsealed key: no AWS IoT call. Why that is safe (docs/deploy.md, "No amplification"):
 * - whoever can make a request the service accepts in the window would get a working key by
 *   re-issue anyway; a recovery answers nothing a re-issue would not;
 * - the ciphertext is useless without kms:Decrypt on the seal key, which only the function's role
 *   has, and only with the thing_name context; the context binds it to one device and one
 *   certificate, so a sealed key copied to another record does not decrypt;
 * - it lives for the window at most: every other write of ours removes it (registry-table.ts), the
 *   first status call proves the device holds the key and removes it, and the reconciler removes
 *   what expired. Losing the seal key only turns recoveries into re-issues.
 */
import { keyRegion, kmsDecrypt, kmsEncrypt } from './kms';
import { ProvisioningError } from './errors';
import { countMetric, logger } from './telemetry';

/** KMS Encrypt takes at most this many bytes of plaintext (the answer's RSA-2048 key PEM is ~1.7 KB). */
export const KMS_ENCRYPT_PLAINTEXT_LIMIT = 4096;

export interface AnswerRecoverySettings {
  /** How long after the mark a lost answer can be recovered. */
  readonly seconds: number;
  /** The symmetric KMS key (ARN, id or alias) that seals generated keys. */
  readonly sealKeyId: string;
}

/** What binds a sealed key to one device and one certificate (and what IAM conditions on). */
export function sealContext(thingName: string, certificateId: string): Record<string, string> {
  return { thing_name: thingName, certificate_id: certificateId };
}

/** A seal under way beside the AWS IoT stages. */
export interface Sealing {
  readonly seconds: number;
  /**
   * The ciphertext if sealing has finished by now; else undefined (counted and logged): the mark
   * never waits for it, so sealing costs no stage.
   */
  take(): Uint8Array | undefined;
}

/** Starts sealing a generated key; never rejects. */
export function startSealing(
  settings: AnswerRecoverySettings,
  homeRegion: string,
  target: { readonly thingName: string; readonly certificateId: string; readonly privateKeyPem: string },
  signal: AbortSignal,
): Sealing {
  const { thingName, certificateId } = target;
  let ciphertext: Uint8Array | undefined;
  let failure: string | undefined;
  const plaintext = Buffer.from(target.privateKeyPem, 'utf8');
  if (plaintext.length > KMS_ENCRYPT_PLAINTEXT_LIMIT) {
    failure = 'KeyTooLarge';
  } else {
    kmsEncrypt(
      keyRegion(settings.sealKeyId, homeRegion),
      settings.sealKeyId,
      plaintext,
      sealContext(thingName, certificateId),
      signal,
    ).then(
      (sealed) => {
        ciphertext = sealed;
      },
      (error: unknown) => {
        failure = errorClass(error);
      },
    );
  }
  return {
    seconds: settings.seconds,
    take() {
      if (ciphertext) return ciphertext;
      countMetric('AnswerSealFailed');
      // The key itself is never logged: only which device, which certificate and why.
      logger.warn('could not seal the generated key; a lost answer will be re-issued', {
        thingName,
        certificateId,
        errorClass: failure ?? 'NotFinishedByTheMark',
      });
      return undefined;
    },
  };
}

/**
 * The sealed key as PEM, or undefined when KMS refuses it for good (another context, the key
 * disabled or gone): the caller decides as if there were none. A throttled or unavailable KMS is
 * thrown (429/503): the device's retry recovers then, instead of costing a re-issue now.
 */
export async function unsealKey(
  settings: AnswerRecoverySettings,
  homeRegion: string,
  sealed: { readonly thingName: string; readonly certificateId: string; readonly ciphertext: Uint8Array },
  signal: AbortSignal,
): Promise<string | undefined> {
  try {
    const plaintext = await kmsDecrypt(
      keyRegion(settings.sealKeyId, homeRegion),
      sealed.ciphertext,
      sealContext(sealed.thingName, sealed.certificateId),
      settings.sealKeyId,
      signal,
    );
    if (plaintext && plaintext.length > 0) return Buffer.from(plaintext).toString('utf8');
    throw new Error('KMS Decrypt returned no plaintext');
  } catch (error) {
    if (error instanceof ProvisioningError) throw error;
    countMetric('AnswerRecoverFailed');
    logger.warn('could not unseal the generated key; deciding as if none were sealed', {
      thingName: sealed.thingName,
      certificateId: sealed.certificateId,
      errorClass: errorClass(error),
    });
    return undefined;
  }
}

function errorClass(error: unknown): string {
  return error instanceof Error ? error.name : typeof error;
}
