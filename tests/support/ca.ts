/**
 * An in-process stand-in for the KMS CA key, for unit tests that need a CA but no AWS: the same
 * CertificateSigner contract (DER ECDSA over SHA-256 of the message) with a node:crypto key.
 */
import { generateKeyPairSync, KeyObject, sign } from 'node:crypto';
import {
  CertificateSigner,
  createCaCertificate,
  parseCaCertificate,
  type CaCertificate,
} from '../../functions/provisioning/certificate-authority';

export interface TestCa {
  readonly signer: CertificateSigner;
  readonly publicKey: KeyObject;
  readonly certificate: CaCertificate;
}

export async function testCa(commonName = 'test device CA'): Promise<TestCa> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const signer: CertificateSigner = {
    sign: async (message) => sign('sha256', message, { key: privateKey, dsaEncoding: 'der' }),
  };
  const pem = await createCaCertificate(signer, {
    commonName,
    validityDays: 3650,
    publicKeySpki: publicKey.export({ type: 'spki', format: 'der' }),
  });
  return { signer, publicKey, certificate: parseCaCertificate(pem) };
}
