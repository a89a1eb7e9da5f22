/**
 * Key pairs the service generates for devices that send no CSR (the sample's key mode). RSA-2048
 * by default because the sample's devices expect an RSA key; EC P-256 where the fleet allows it.
 * Generated on libuv's thread pool, so it overlaps the registry read.
 */
import { generateKeyPair } from 'node:crypto';
import { promisify } from 'node:util';
import type { GeneratedKeyType } from './config';

const generate = promisify(generateKeyPair);

export interface GeneratedKey {
  /** SubjectPublicKeyInfo DER. */
  readonly publicKeySpki: Buffer;
  /** PKCS#1 (RSA) or SEC1 (EC) PEM, as AWS IoT's CreateKeysAndCertificate returned it. */
  readonly privateKeyPem: string;
}

export async function generateDeviceKey(type: GeneratedKeyType): Promise<GeneratedKey> {
  if (type === 'ec-p256') {
    const { publicKey, privateKey } = await generate('ec', {
      namedCurve: 'prime256v1',
      publicKeyEncoding: { type: 'spki', format: 'der' },
      privateKeyEncoding: { type: 'sec1', format: 'pem' },
    });
    return { publicKeySpki: publicKey, privateKeyPem: privateKey };
  }
  const { publicKey, privateKey } = await generate('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
  });
  return { publicKeySpki: publicKey, privateKeyPem: privateKey };
}

/**
 * Keeps one key pair ready per container, so a key-mode request takes a key instead of waiting
 * for one (RSA-2048 generation takes 50–300 ms of CPU). The next one is generated while the
 * request that took it waits on AWS. Keys live in memory only and each is handed out once.
 */
export function deviceKeyPool(type: GeneratedKeyType): () => Promise<GeneratedKey> {
  let next: Promise<GeneratedKey> | undefined;
  const refill = () => {
    next = generateDeviceKey(type);
    next.catch(() => (next = undefined));
  };
  return () => {
    const taken = next ?? generateDeviceKey(type);
    refill();
    return taken;
  };
}
