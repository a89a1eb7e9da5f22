/** CSRs as a device makes them (WebCrypto + @peculiar/x509), for tests. */
import { webcrypto } from 'node:crypto';
import * as x509 from './x509';
import { toPem } from '../../functions/provisioning/ca-certificate';

export type CsrKeyAlgorithm = webcrypto.EcKeyGenParams | webcrypto.RsaHashedKeyGenParams;

export const EC_P256: CsrKeyAlgorithm & { hash: string } = {
  name: 'ECDSA',
  namedCurve: 'P-256',
  hash: 'SHA-256',
};

export function rsaAlgorithm(modulusLength: number): CsrKeyAlgorithm {
  return {
    name: 'RSASSA-PKCS1-v1_5',
    modulusLength,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: 'SHA-256',
  };
}

/** A fresh key pair and a CSR for `subject` (e.g. "CN=wm101"); the key's SPKI DER alongside. */
export async function makeCsr(
  subject: string,
  algorithm: CsrKeyAlgorithm = EC_P256,
): Promise<{ pem: string; publicKeySpki: Buffer; privateKeyPem: string }> {
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: subject,
    keys,
    signingAlgorithm: algorithm,
  });
  return {
    pem: csr.toString('pem'),
    publicKeySpki: Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey)),
    privateKeyPem: toPem(
      Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
      'PRIVATE KEY',
    ),
  };
}
