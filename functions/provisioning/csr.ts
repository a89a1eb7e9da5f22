/**
 * Checks a device's CSR before anything is created. The certificate is then built from what was
 * checked here (its public key; CN = thing name), never from the text the device sent, so a decoy
 * block or a second request inside the PEM can't get anything certified. Pure apart from WebCrypto.
 */
import { createPublicKey } from 'node:crypto';
import { Pkcs10CertificateRequest } from './x509';
import { malformed } from './errors';
import { pemToDer } from './wire';

export interface CheckedCsr {
  readonly pem: string;
  readonly der: Buffer;
  /** SubjectPublicKeyInfo DER of the CSR's key (to compare with an issued certificate). */
  readonly publicKeySpki: Buffer;
  readonly keyDescription: string;
}

function describeCsrKey(spki: Buffer): string | undefined {
  const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  const details = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'rsa') {
    const bits = details?.modulusLength ?? 0;
    return bits >= 2048 ? `RSA-${bits}` : undefined;
  }
  if (key.asymmetricKeyType === 'ec') {
    if (details?.namedCurve === 'prime256v1') return 'EC-P256';
    if (details?.namedCurve === 'secp384r1') return 'EC-P384';
  }
  return undefined;
}

/** Parses and checks the CSR; throws 400 naming the first problem. */
export async function checkCsr(pem: string, thingName: string): Promise<CheckedCsr> {
  let der: Buffer;
  try {
    der = pemToDer(pem);
  } catch (error) {
    throw malformed(`CSR: ${(error as Error).message}`);
  }
  let csr: Pkcs10CertificateRequest;
  try {
    csr = new Pkcs10CertificateRequest(der);
  } catch {
    throw malformed('CSR is not a parseable PKCS#10 certificate request');
  }
  const publicKeySpki = Buffer.from(csr.publicKey.rawData);
  let keyDescription: string | undefined;
  try {
    keyDescription = describeCsrKey(publicKeySpki);
  } catch {
    keyDescription = undefined;
  }
  if (!keyDescription) throw malformed('CSR key must be RSA of at least 2048 bits, or EC P-256 or P-384');
  const selfSigned = await csr.verify().catch(() => false);
  if (!selfSigned) throw malformed('CSR signature does not verify with its own key');
  const commonNames = csr.subjectName.getField('CN');
  if (commonNames.length !== 1 || commonNames[0] !== thingName) {
    throw malformed(`CSR subject CN must be the thing name "${thingName}"`);
  }
  return { pem, der, publicKeySpki, keyDescription };
}
