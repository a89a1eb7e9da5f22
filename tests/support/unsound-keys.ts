/**
 * Keys nobody holds, and the "signatures" anyone can make for them, as an attacker builds them:
 * for the key-soundness unit test and the integration tests that send them to the service.
 */
import { createHash, generateKeyPairSync, KeyObject } from 'node:crypto';
import { CertificationRequest, CertificationRequestInfo } from '@peculiar/asn1-csr';
import { id_rsaEncryption, id_sha256WithRSAEncryption, RSAPublicKey } from '@peculiar/asn1-rsa';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  Name,
  RelativeDistinguishedName,
  SubjectPublicKeyInfo,
} from '@peculiar/asn1-x509';
import { toPem } from '../../functions/provisioning/ca-certificate';

const spkiOf = (key: KeyObject) => key.export({ type: 'spki', format: 'der' });

const bigIntBytes = (value: bigint): ArrayBuffer => {
  let hex = value.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  // DER INTEGER: a leading 0x00 keeps a number whose top bit is set positive.
  if (parseInt(hex.slice(0, 2), 16) & 0x80) hex = `00${hex}`;
  return new Uint8Array(Buffer.from(hex, 'hex')).buffer;
};

/** An RSA SubjectPublicKeyInfo with the given modulus and exponent. */
export function rsaSpki(modulus: bigint, exponent: bigint): Buffer {
  const info = new SubjectPublicKeyInfo({
    algorithm: new AlgorithmIdentifier({ algorithm: id_rsaEncryption, parameters: null }),
    subjectPublicKey: AsnConvert.serialize(
      new RSAPublicKey({ modulus: bigIntBytes(modulus), publicExponent: bigIntBytes(exponent) }),
    ),
  });
  return Buffer.from(AsnConvert.serialize(info));
}

/** The modulus of a freshly generated RSA key of `bits` bits. */
export function rsaModulus(bits = 2048): bigint {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  const rsa = AsnConvert.parse(
    AsnConvert.parse(spkiOf(publicKey), SubjectPublicKeyInfo).subjectPublicKey,
    RSAPublicKey,
  );
  return BigInt(`0x${Buffer.from(rsa.modulus).toString('hex')}`);
}

/**
 * An RSA-2048 key with public exponent 1: s¹ mod n = s, so the PKCS#1 v1.5 "signature" of any
 * message is its padded hash, which anyone can compute without a private key.
 */
export function exponentOneKey(): { spki: Buffer; sign: (message: Buffer) => Buffer } {
  const modulus = rsaModulus(2048);
  const sizeBytes = 256;
  const sha256DigestInfo = Buffer.from('3031300d060960864801650304020105000420', 'hex');
  return {
    spki: rsaSpki(modulus, 1n),
    sign: (message) => {
      const digestInfo = Buffer.concat([sha256DigestInfo, createHash('sha256').update(message).digest()]);
      const padding = Buffer.alloc(sizeBytes - digestInfo.length - 3, 0xff);
      return Buffer.concat([Buffer.from([0x00, 0x01]), padding, Buffer.from([0x00]), digestInfo]);
    },
  };
}

/** A PKCS#10 request for CN=`thingName` whose "self-signature" was made without any private key. */
export function exponentOneCsr(thingName: string): string {
  const key = exponentOneKey();
  const info = new CertificationRequestInfo({
    subject: new Name([
      new RelativeDistinguishedName([
        new AttributeTypeAndValue({ type: '2.5.4.3', value: new AttributeValue({ utf8String: thingName }) }),
      ]),
    ]),
    subjectPKInfo: AsnConvert.parse(key.spki, SubjectPublicKeyInfo),
  });
  const signed = Buffer.from(AsnConvert.serialize(info));
  const csr = new CertificationRequest({
    certificationRequestInfo: info,
    signatureAlgorithm: new AlgorithmIdentifier({ algorithm: id_sha256WithRSAEncryption, parameters: null }),
    signature: new Uint8Array(key.sign(signed)).buffer,
  });
  return toPem(Buffer.from(AsnConvert.serialize(csr)), 'CERTIFICATE REQUEST');
}

/** A fresh P-256 key's SubjectPublicKeyInfo, and where its point starts in it. */
export function p256Spki(): { spki: Buffer; pointOffset: number } {
  const spki = spkiOf(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey);
  return { spki, pointOffset: spki.length - 65 };
}

/** The same P-256 key with its point in hybrid form (0x06/0x07 + x + y), which RFC 5480 forbids. */
export function hybridP256Spki(): Buffer {
  const { spki, pointOffset } = p256Spki();
  const hybrid = Buffer.from(spki);
  hybrid[pointOffset] = 0x06 | ((spki[spki.length - 1] ?? 0) & 1);
  return hybrid;
}

/**
 * The P-256 curve given by explicit parameters instead of its name (as `openssl ec -param_enc
 * explicit` writes it), around a fresh point.
 */
export function explicitParametersP256Spki(): Buffer {
  const explicitP256 = Buffer.from(
    '3081f7020101302c06072a8648ce3d0101022100ffffffff00000001000000000000000000000000ffffffffffffffffffffffff' +
      '305b0420ffffffff00000001000000000000000000000000fffffffffffffffffffffffc04205ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b' +
      '031500c49d360886e704936a6678e1139d26b7819f7e900441046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5' +
      '022100ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551020101',
    'hex',
  );
  const { spki, pointOffset } = p256Spki();
  const info = new SubjectPublicKeyInfo({
    algorithm: new AlgorithmIdentifier({
      algorithm: '1.2.840.10045.2.1',
      parameters: new Uint8Array(explicitP256).buffer,
    }),
    subjectPublicKey: new Uint8Array(spki.subarray(pointOffset)).buffer,
  });
  return Buffer.from(AsnConvert.serialize(info));
}
