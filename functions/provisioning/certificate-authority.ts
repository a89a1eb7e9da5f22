/**
 * Device certificates from the deployment's own CA. The CA's private key is an asymmetric KMS key
 * and never leaves KMS: we build the TBSCertificate here, KMS signs it, and we assemble the
 * certificate. Everything but the signature is pure, so the certificate id (SHA-256 of the DER)
 * is known before AWS IoT ever sees the certificate.
 *
 * Written on the ASN.1 classes of @peculiar/asn1-x509 rather than @peculiar/x509's generator:
 * the generator wants a WebCrypto CryptoKey to sign with, and ours lives in KMS. The function
 * loads this module when it first issues (provision.ts imports it on demand); configuration
 * reads the CA certificate with node:crypto (ca-certificate.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  AuthorityKeyIdentifier,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  Extension,
  Extensions,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectKeyIdentifier,
  id_kp_clientAuth,
  KeyIdentifier,
  KeyUsage,
  KeyUsageFlags,
  Name,
  RelativeDistinguishedName,
  SubjectKeyIdentifier,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
} from '@peculiar/asn1-x509';
import { CaCertificate, sha256Hex, toPem } from './ca-certificate';

export { parseCaCertificate, sha256Hex, toPem, type CaCertificate } from './ca-certificate';

/** Signs with the CA key: a DER ECDSA-Sig-Value over SHA-256 of `message`. */
export interface CertificateSigner {
  sign(message: Uint8Array, signal?: AbortSignal): Promise<Uint8Array>;
}

const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';
const COMMON_NAME = '2.5.4.3';
const ORGANIZATION = '2.5.4.10';
/** Certificates start this long before they are issued, for devices whose clock runs slow. */
const BACKDATE_MS = 5 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface DeviceCertificate {
  readonly pem: string;
  readonly der: Buffer;
  /** SHA-256 of the DER, as AWS IoT computes certificateId. */
  readonly id: string;
  readonly serialNumber: string;
  readonly notAfter: Date;
}

function name(commonName: string, organization?: string): Name {
  const attribute = (type: string, value: string) =>
    new RelativeDistinguishedName([
      new AttributeTypeAndValue({ type, value: new AttributeValue({ utf8String: value }) }),
    ]);
  return new Name([
    ...(organization ? [attribute(ORGANIZATION, organization)] : []),
    attribute(COMMON_NAME, commonName),
  ]);
}

function arrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

/** A positive 128-bit serial with no leading zero byte (RFC 5280 allows up to 20 octets). */
function randomSerial(): Buffer {
  const serial = randomBytes(16);
  serial[0] = ((serial[0] ?? 0) & 0x7f) | 0x40;
  return serial;
}

/** RFC 5280 method 1: SHA-1 of the subjectPublicKey bits. */
function keyIdentifier(spki: SubjectPublicKeyInfo): Buffer {
  return createHash('sha1').update(Buffer.from(spki.subjectPublicKey)).digest();
}

function extension(extnID: string, critical: boolean, value: unknown): Extension {
  return new Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

async function signCertificate(
  tbs: TBSCertificate,
  signer: CertificateSigner,
  signal?: AbortSignal,
): Promise<Buffer> {
  const tbsDer = AsnConvert.serialize(tbs);
  const signature = await signer.sign(new Uint8Array(tbsDer), signal);
  const certificate = new Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: new AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA256 }),
    signatureValue: arrayBuffer(signature),
  });
  return Buffer.from(AsnConvert.serialize(certificate));
}

export interface CaCertificateOptions {
  readonly commonName: string;
  readonly organization?: string;
  readonly validityDays: number;
  /** SubjectPublicKeyInfo DER of the KMS key (kms:GetPublicKey). */
  readonly publicKeySpki: Uint8Array;
  readonly now?: Date;
}

/** A self-signed CA certificate for the KMS key: CA, no intermediates below it (pathLen 0). */
export async function createCaCertificate(
  signer: CertificateSigner,
  options: CaCertificateOptions,
): Promise<string> {
  const now = options.now ?? new Date();
  const spki = AsnConvert.parse(options.publicKeySpki, SubjectPublicKeyInfo);
  const subject = name(options.commonName, options.organization);
  const ski = keyIdentifier(spki);
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: arrayBuffer(randomSerial()),
    signature: new AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA256 }),
    issuer: subject,
    validity: new Validity({
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter: new Date(now.getTime() + options.validityDays * DAY_MS),
    }),
    subject,
    subjectPublicKeyInfo: spki,
    extensions: new Extensions([
      extension(id_ce_basicConstraints, true, new BasicConstraints({ cA: true, pathLenConstraint: 0 })),
      extension(id_ce_keyUsage, true, new KeyUsage(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign)),
      extension(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(ski)),
      extension(
        id_ce_authorityKeyIdentifier,
        false,
        new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(ski) }),
      ),
    ]),
  });
  return toPem(await signCertificate(tbs, signer), 'CERTIFICATE');
}

/** What a device certificate takes from its CA: the subject (its issuer) and key identifier. */
interface CaSigningFacts {
  readonly subject: Name;
  readonly keyIdentifier: Buffer;
}

const caFacts = new Map<string, CaSigningFacts>();

function signingFacts(ca: CaCertificate): CaSigningFacts {
  let facts = caFacts.get(ca.id);
  if (!facts) {
    const tbs = AsnConvert.parse(ca.der, Certificate).tbsCertificate;
    const skiExtension = tbs.extensions?.find((item) => item.extnID === id_ce_subjectKeyIdentifier);
    facts = {
      subject: tbs.subject,
      keyIdentifier: skiExtension
        ? Buffer.from(AsnConvert.parse(skiExtension.extnValue.buffer, SubjectKeyIdentifier).buffer)
        : keyIdentifier(tbs.subjectPublicKeyInfo),
    };
    caFacts.set(ca.id, facts);
  }
  return facts;
}

export interface DeviceCertificateRequest {
  readonly thingName: string;
  /** SubjectPublicKeyInfo DER of the device's key (from its checked CSR, or generated by us). */
  readonly publicKeySpki: Uint8Array;
  readonly validityDays: number;
  readonly now?: Date;
}

/** Builds and signs a device certificate: CN = thing name, TLS client use only. */
export async function issueDeviceCertificate(
  ca: CaCertificate,
  signer: CertificateSigner,
  request: DeviceCertificateRequest,
  signal?: AbortSignal,
): Promise<DeviceCertificate> {
  const now = request.now ?? new Date();
  const issuer = signingFacts(ca);
  const spki = AsnConvert.parse(request.publicKeySpki, SubjectPublicKeyInfo);
  const serial = randomSerial();
  const wanted = now.getTime() + request.validityDays * DAY_MS;
  // A certificate must not outlive its CA.
  const notAfter = new Date(Math.min(wanted, ca.notAfter.getTime()));
  const isRsa = spki.algorithm.algorithm === '1.2.840.113549.1.1.1';
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: arrayBuffer(serial),
    signature: new AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA256 }),
    issuer: issuer.subject,
    validity: new Validity({ notBefore: new Date(now.getTime() - BACKDATE_MS), notAfter }),
    subject: name(request.thingName),
    subjectPublicKeyInfo: spki,
    extensions: new Extensions([
      extension(id_ce_basicConstraints, true, new BasicConstraints({ cA: false })),
      extension(
        id_ce_keyUsage,
        true,
        new KeyUsage(KeyUsageFlags.digitalSignature | (isRsa ? KeyUsageFlags.keyEncipherment : 0)),
      ),
      extension(id_ce_extKeyUsage, false, new ExtendedKeyUsage([id_kp_clientAuth])),
      extension(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(keyIdentifier(spki))),
      extension(
        id_ce_authorityKeyIdentifier,
        false,
        new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(issuer.keyIdentifier) }),
      ),
    ]),
  });
  const der = await signCertificate(tbs, signer, signal);
  return {
    pem: toPem(der, 'CERTIFICATE'),
    der,
    id: sha256Hex(der),
    serialNumber: serial.toString('hex'),
    notAfter,
  };
}
