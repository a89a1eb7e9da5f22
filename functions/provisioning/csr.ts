/**
 * Checks a device's CSR before anything is created. The certificate is then built from what was
 * checked here (its public key; CN = thing name), never from the text the device sent, so a decoy
 * block or a second request inside the PEM can't get anything certified. Pure apart from
 * node:crypto.
 *
 * The PKCS#10 structure is parsed with @peculiar/asn1-csr and the self-signature is verified with
 * node:crypto: the checks @peculiar/x509 made, without its WebCrypto layer and the dependency
 * injection container (tsyringe + reflect-metadata) it needs. Loaded only when a device sends a
 * CSR (provision.ts imports it on demand). The key itself is judged by key-soundness.ts before its
 * self-signature means anything: with an RSA exponent of 1 anyone can "sign" for a key nobody holds.
 */
import { constants, KeyObject, verify } from 'node:crypto';
import { CertificationRequest } from '@peculiar/asn1-csr';
import { id_mgf1, id_RSASSA_PSS, RsaSaPssParams } from '@peculiar/asn1-rsa';
import { AsnConvert } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import { malformed } from './errors';
import { checkPublicKey } from './key-soundness';
import { pemToDer } from './wire';

export interface CheckedCsr {
  readonly pem: string;
  readonly der: Buffer;
  /** SubjectPublicKeyInfo DER of the CSR's key (to compare with an issued certificate). */
  readonly publicKeySpki: Buffer;
  readonly keyDescription: string;
}

const COMMON_NAME = '2.5.4.3';

const HASHES: Readonly<Record<string, string>> = {
  '1.3.14.3.2.26': 'sha1',
  '2.16.840.1.101.3.4.2.1': 'sha256',
  '2.16.840.1.101.3.4.2.2': 'sha384',
  '2.16.840.1.101.3.4.2.3': 'sha512',
};

/** Signature algorithms a CSR may use (those @peculiar/x509 verified), RSA-PSS aside. */
const SIGNATURES: Readonly<Record<string, { keyType: 'rsa' | 'ec'; hash: string }>> = {
  '1.2.840.113549.1.1.5': { keyType: 'rsa', hash: 'sha1' },
  '1.2.840.113549.1.1.11': { keyType: 'rsa', hash: 'sha256' },
  '1.2.840.113549.1.1.12': { keyType: 'rsa', hash: 'sha384' },
  '1.2.840.113549.1.1.13': { keyType: 'rsa', hash: 'sha512' },
  '1.2.840.10045.4.1': { keyType: 'ec', hash: 'sha1' },
  '1.2.840.10045.4.3.2': { keyType: 'ec', hash: 'sha256' },
  '1.2.840.10045.4.3.3': { keyType: 'ec', hash: 'sha384' },
  '1.2.840.10045.4.3.4': { keyType: 'ec', hash: 'sha512' },
};

/** Whether the CSR's signature verifies with its own key; false for algorithms we don't know. */
function selfSignatureVerifies(csr: CertificationRequest, key: KeyObject): boolean {
  // The bytes as the device signed them (a re-encoding could differ from non-canonical input).
  const signed = Buffer.from(
    csr.certificationRequestInfoRaw ?? AsnConvert.serialize(csr.certificationRequestInfo),
  );
  const signature = Buffer.from(csr.signature);
  const { algorithm, parameters } = csr.signatureAlgorithm;
  if (algorithm === id_RSASSA_PSS) {
    if (key.asymmetricKeyType !== 'rsa' || !parameters) return false;
    const pss = AsnConvert.parse(parameters, RsaSaPssParams);
    const hash = HASHES[pss.hashAlgorithm.algorithm];
    const mask = pss.maskGenAlgorithm;
    const maskHash = mask.parameters
      ? HASHES[AsnConvert.parse(mask.parameters, AlgorithmIdentifier).algorithm]
      : undefined;
    // node:crypto masks with MGF1 over the message's hash: anything else cannot be checked here.
    if (!hash || mask.algorithm !== id_mgf1 || maskHash !== hash) return false;
    return verify(
      hash,
      signed,
      { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pss.saltLength },
      signature,
    );
  }
  const known = SIGNATURES[algorithm];
  if (!known || key.asymmetricKeyType !== known.keyType) return false;
  return verify(known.hash, signed, key, signature);
}

/** Parses and checks the CSR; throws 400 naming the first problem. */
export async function checkCsr(pem: string, thingName: string): Promise<CheckedCsr> {
  let der: Buffer;
  try {
    der = pemToDer(pem);
  } catch (error) {
    throw malformed(`CSR: ${(error as Error).message}`);
  }
  let csr: CertificationRequest;
  try {
    csr = AsnConvert.parse(der, CertificationRequest);
  } catch {
    throw malformed('CSR is not a parseable PKCS#10 certificate request');
  }
  const publicKeySpki = Buffer.from(AsnConvert.serialize(csr.certificationRequestInfo.subjectPKInfo));
  const verdict = checkPublicKey(publicKeySpki);
  if (!verdict.sound) throw malformed(`CSR key refused: ${verdict.problem}`);
  const { key, description: keyDescription } = verdict;
  let selfSigned: boolean;
  try {
    selfSigned = selfSignatureVerifies(csr, key);
  } catch {
    selfSigned = false;
  }
  if (!selfSigned) throw malformed('CSR signature does not verify with its own key');
  const commonNames = csr.certificationRequestInfo.subject
    .flatMap((rdn) => rdn.filter((attribute) => attribute.type === COMMON_NAME))
    .map((attribute) => attribute.value.toString());
  if (commonNames.length !== 1 || commonNames[0] !== thingName) {
    throw malformed(`CSR subject CN must be the thing name "${thingName}"`);
  }
  return { pem, der, publicKeySpki, keyDescription };
}
