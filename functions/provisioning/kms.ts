/**
 * AWS KMS, one client per region per container: the CA key that signs device certificates
 * (asymmetric, SIGN_VERIFY; its private key never leaves KMS), the decryption of the ipstack
 * key's ciphertext, and the sealing of a generated device key for answer recovery
 * (answer-recovery.ts: Encrypt and Decrypt under a symmetric key).
 *
 * Certificates are signed with MessageType RAW over the TBSCertificate (KMS hashes it; a device
 * certificate's TBS is well under RAW's 4,096-byte limit). DIGEST would send less, but moto
 * ignores MessageType and would hash the digest again, so the local stack could not prove it.
 */
import {
  DecryptCommand,
  EncryptCommand,
  GetPublicKeyCommand,
  KMSClient,
  SignCommand,
} from '@aws-sdk/client-kms';
import { awsClientSettings } from './aws-client-settings';
import { hasName, isThrottling, isTransient } from './aws-errors';
import type { CertificateSigner } from './certificate-authority';
import { ProvisioningError, throttled, unavailable } from './errors';

export interface KmsSigner extends CertificateSigner {
  /** SubjectPublicKeyInfo DER of the key (for the CA certificate). */
  publicKeySpki(signal?: AbortSignal): Promise<Uint8Array>;
}

const clients = new Map<string, KMSClient>();

/** The region a key ARN names, else the fallback (aliases and bare ids carry none). */
export function keyRegion(keyId: string, fallback: string): string {
  return /^arn:aws[\w-]*:kms:([a-z0-9-]+):/.exec(keyId)?.[1] ?? fallback;
}

export function kmsClient(region: string): KMSClient {
  let client = clients.get(region);
  if (!client) {
    client = new KMSClient(awsClientSettings(region));
    clients.set(region, client);
  }
  return client;
}

function translate(error: unknown, what: string): unknown {
  if (error instanceof ProvisioningError) return error;
  if (isThrottling(error)) return throttled(`AWS KMS is throttling ${what}; retry shortly`, 2, error);
  // Aborted by the request's deadline (a sign stuck behind a slow KMS): 503, as for IoT and DynamoDB.
  if (isTransient(error) || hasName(error, 'AbortError'))
    return unavailable(`AWS KMS is unavailable (${what}); retry shortly`, error);
  return error;
}

/** The CA key as a certificate signer (ECDSA P-256 with SHA-256). */
export function kmsSigner(kms: KMSClient, keyId: string): KmsSigner {
  return {
    async sign(message, signal) {
      try {
        const answer = await kms.send(
          new SignCommand({
            KeyId: keyId,
            Message: message,
            MessageType: 'RAW',
            SigningAlgorithm: 'ECDSA_SHA_256',
          }),
          { abortSignal: signal },
        );
        if (!answer.Signature) throw new Error('KMS Sign returned no signature');
        return answer.Signature;
      } catch (error) {
        throw translate(error, 'certificate signing');
      }
    },
    async publicKeySpki(signal) {
      const answer = await kms.send(new GetPublicKeyCommand({ KeyId: keyId }), { abortSignal: signal });
      if (!answer.PublicKey) throw new Error(`KMS GetPublicKey returned no key for ${keyId}`);
      // moto answers CustomerMasterKeySpec only (the older name of KeySpec).
      const spec = answer.KeySpec ?? answer.CustomerMasterKeySpec;
      if (answer.KeyUsage !== 'SIGN_VERIFY' || spec !== 'ECC_NIST_P256') {
        throw new Error(
          `${keyId} is ${spec ?? '?'} for ${answer.KeyUsage ?? '?'}; the CA key must be ECC_NIST_P256 for SIGN_VERIFY`,
        );
      }
      return answer.PublicKey;
    },
  };
}

/** Decrypts a ciphertext made with `context`; undefined when KMS returns no plaintext. */
export async function kmsDecrypt(
  region: string,
  ciphertext: Uint8Array,
  context: Readonly<Record<string, string>>,
  keyId?: string,
  signal?: AbortSignal,
): Promise<Uint8Array | undefined> {
  try {
    const answer = await kmsClient(region).send(
      new DecryptCommand({ CiphertextBlob: ciphertext, EncryptionContext: { ...context }, KeyId: keyId }),
      { abortSignal: signal },
    );
    return answer.Plaintext;
  } catch (error) {
    throw translate(error, 'decryption');
  }
}

/** Encrypts at most 4,096 bytes under a symmetric key, bound to `context`. */
export async function kmsEncrypt(
  region: string,
  keyId: string,
  plaintext: Uint8Array,
  context: Readonly<Record<string, string>>,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  try {
    const answer = await kmsClient(region).send(
      new EncryptCommand({ KeyId: keyId, Plaintext: plaintext, EncryptionContext: { ...context } }),
      { abortSignal: signal },
    );
    if (!answer.CiphertextBlob) throw new Error('KMS Encrypt returned no ciphertext');
    return answer.CiphertextBlob;
  } catch (error) {
    throw translate(error, 'encryption');
  }
}
