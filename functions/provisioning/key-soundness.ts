/**
 * Whether a public key is one a device can really hold: the one check every key that enters the
 * service goes through (a CSR's key, `gdp-admin import`'s device_public_key, a record's key when
 * it verifies a v2 signature, and the key of the certificate a device presents on status and
 * renewal). Pure: bytes in, a verdict out; it never throws.
 *
 * node:crypto (OpenSSL) imports keys nobody can hold: an RSA key with public exponent 1, whose
 * "signature" is the padded hash anyone can compute; an even modulus; EC points in hybrid form
 * (0x06/0x07), which RFC 5480 forbids; curves given by explicit parameters instead of by name. So
 * the SubjectPublicKeyInfo is read with @peculiar/asn1-x509 and judged here, field by field, and
 * only then handed to createPublicKey.
 *
 * Accepted (docs/protocol.md, "Keys the service accepts"):
 * - RSA (rsaEncryption): modulus of at least 2048 bits, odd; public exponent odd and ≥ 65537.
 * - EC (id-ecPublicKey) on the named curve P-256 only, the point on the curve, uncompressed (0x04)
 *   or compressed (0x02/0x03).
 */
import { createPublicKey, KeyObject } from 'node:crypto';
import { id_rsaEncryption, RSAPublicKey } from '@peculiar/asn1-rsa';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate, SubjectPublicKeyInfo } from '@peculiar/asn1-x509';

export type KeyVerdict =
  | {
      readonly sound: true;
      readonly key: KeyObject;
      /** SubjectPublicKeyInfo DER, as checked. */
      readonly spki: Buffer;
      readonly kind: 'rsa' | 'ec-p256';
      /** 'RSA-2048', 'EC-P256', ... for logs and answers. */
      readonly description: string;
    }
  | {
      readonly sound: false;
      /** What is wrong with the key, e.g. "RSA public exponent is 1; it must be odd and at least 65537". */
      readonly problem: string;
    };

const MIN_RSA_BITS = 2048;
const MIN_RSA_EXPONENT = 65537n;

const ID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
/** DER of the namedCurve OID prime256v1 (1.2.840.10045.3.1.7), the only curve accepted. */
const P256_PARAMETERS = Buffer.from('06082a8648ce3d030107', 'hex');
/** Other named curves, only to name them in the refusal. */
const OTHER_CURVES: Readonly<Record<string, string>> = {
  '06052b81040022': 'P-384',
  '06052b81040023': 'P-521',
  '06052b8104000a': 'secp256k1',
};
const OTHER_ALGORITHMS: Readonly<Record<string, string>> = {
  '1.3.101.112': 'Ed25519',
  '1.3.101.113': 'Ed448',
  '1.3.101.110': 'X25519',
  '1.3.101.111': 'X448',
  '1.2.840.113549.1.1.10': 'RSASSA-PSS (only rsaEncryption keys are accepted)',
  '1.2.840.10040.4.1': 'DSA',
};

/**
 * P-256 (SEC 2, section 2.4.2): y² = x³ − 3x + b over GF(p). Hand-written because no dependency
 * of ours exposes a point check, and OpenSSL's is the very code this module does not take on
 * trust; the arithmetic is a few lines of BigInt.
 */
const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
const B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;

function modPow(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  let square = base % modulus;
  for (let rest = exponent; rest > 0n; rest >>= 1n) {
    if (rest & 1n) result = (result * square) % modulus;
    square = (square * square) % modulus;
  }
  return result;
}

const curveRightSide = (x: bigint) => (((x * x * x - 3n * x + B) % P) + P) % P;

const unsigned = (bytes: Uint8Array) =>
  bytes.length === 0 ? 0n : BigInt(`0x${Buffer.from(bytes).toString('hex')}`);

const refuse = (problem: string): KeyVerdict => ({ sound: false, problem });

/** Why an EC point is not a P-256 point we accept, or undefined when it is. */
function p256PointProblem(point: Buffer): string | undefined {
  const form = point[0];
  if (form === 0x06 || form === 0x07) return 'EC point is in hybrid form (0x06/0x07), which RFC 5480 forbids';
  if (form === 0x04) {
    if (point.length !== 65) return `uncompressed P-256 point has ${point.length} bytes, not 65`;
    const x = unsigned(point.subarray(1, 33));
    const y = unsigned(point.subarray(33));
    if (x >= P || y >= P) return 'EC point coordinates are not below the P-256 field prime';
    if ((y * y) % P !== curveRightSide(x)) return 'EC point is not on the P-256 curve';
    return undefined;
  }
  if (form === 0x02 || form === 0x03) {
    if (point.length !== 33) return `compressed P-256 point has ${point.length} bytes, not 33`;
    const x = unsigned(point.subarray(1));
    if (x >= P) return 'EC point x coordinate is not below the P-256 field prime';
    const right = curveRightSide(x);
    // p ≡ 3 (mod 4): the square root, if there is one, is right^((p+1)/4).
    const y = modPow(right, (P + 1n) / 4n, P);
    if ((y * y) % P !== right) return 'EC point is not on the P-256 curve (no y for its x)';
    return undefined;
  }
  return form === 0x00
    ? 'EC point is the point at infinity'
    : `EC point has an unknown encoding (first byte 0x${(form ?? 0).toString(16).padStart(2, '0')})`;
}

/** Why an RSAPublicKey is not one we accept, or undefined when it is; also its size in bits. */
function rsaProblem(subjectPublicKey: ArrayBuffer): { problem?: string; bits: number } {
  let rsa: RSAPublicKey;
  try {
    rsa = AsnConvert.parse(subjectPublicKey, RSAPublicKey);
  } catch {
    return { problem: 'RSA key is not a DER RSAPublicKey', bits: 0 };
  }
  const modulusBytes = Buffer.from(rsa.modulus);
  const exponentBytes = Buffer.from(rsa.publicExponent);
  // DER INTEGERs are two's complement: a first byte ≥ 0x80 is a negative number.
  if ((modulusBytes[0] ?? 0) & 0x80) return { problem: 'RSA modulus is negative', bits: 0 };
  if ((exponentBytes[0] ?? 0) & 0x80) return { problem: 'RSA public exponent is negative', bits: 0 };
  const modulus = unsigned(modulusBytes);
  const exponent = unsigned(exponentBytes);
  const bits = modulus.toString(2).length;
  if (modulus === 0n || bits < MIN_RSA_BITS)
    return {
      problem: `RSA modulus is ${modulus === 0n ? 0 : bits} bits; at least ${MIN_RSA_BITS} are required`,
      bits,
    };
  if (modulus % 2n === 0n)
    return { problem: 'RSA modulus is even, so it is not a product of two primes', bits };
  if (exponent % 2n === 0n || exponent < MIN_RSA_EXPONENT) {
    const shown = exponent < 1_000_000n ? exponent.toString() : `${exponent.toString(2).length} bits long`;
    return { problem: `RSA public exponent is ${shown}; it must be odd and at least 65537`, bits };
  }
  return { bits };
}

/** Judges a SubjectPublicKeyInfo (DER) or a public KeyObject. Never throws. */
export function checkPublicKey(input: KeyObject | Uint8Array): KeyVerdict {
  let spki: Buffer;
  if (input instanceof KeyObject) {
    if (input.type !== 'public') return refuse(`this is a ${input.type} key, not a public key`);
    try {
      spki = input.export({ type: 'spki', format: 'der' });
    } catch {
      return refuse('the key cannot be exported as a SubjectPublicKeyInfo');
    }
  } else spki = Buffer.from(input);

  let info: SubjectPublicKeyInfo;
  try {
    info = AsnConvert.parse(spki, SubjectPublicKeyInfo);
  } catch {
    return refuse('the key is not a DER SubjectPublicKeyInfo');
  }
  // Trailing bytes or a non-canonical encoding would let two readers see different keys.
  let canonical: boolean;
  try {
    canonical = Buffer.from(AsnConvert.serialize(info)).equals(spki);
  } catch {
    canonical = false;
  }
  if (!canonical)
    return refuse('the key is not a canonical DER SubjectPublicKeyInfo (extra or re-encoded bytes)');

  const { algorithm, parameters } = info.algorithm;
  const parameterBytes = parameters ? Buffer.from(parameters) : undefined;
  let kind: 'rsa' | 'ec-p256';
  let description: string;
  if (algorithm === id_rsaEncryption) {
    // RFC 3279: the parameters are NULL; some encoders leave them out.
    if (parameterBytes && !parameterBytes.equals(Buffer.from([0x05, 0x00])))
      return refuse('RSA key algorithm parameters are not NULL');
    const { problem, bits } = rsaProblem(info.subjectPublicKey);
    if (problem) return refuse(problem);
    kind = 'rsa';
    description = `RSA-${bits}`;
  } else if (algorithm === ID_EC_PUBLIC_KEY) {
    if (!parameterBytes) return refuse('EC key names no curve');
    if (!parameterBytes.equals(P256_PARAMETERS)) {
      const hex = parameterBytes.toString('hex');
      if (parameterBytes[0] === 0x30)
        return refuse(
          'EC key gives explicit curve parameters, which RFC 5480 forbids; only the named curve P-256 is accepted',
        );
      return refuse(
        `EC key is on ${OTHER_CURVES[hex] ?? 'a curve other than P-256'}; only P-256 is accepted`,
      );
    }
    const pointProblem = p256PointProblem(Buffer.from(info.subjectPublicKey));
    if (pointProblem) return refuse(pointProblem);
    kind = 'ec-p256';
    description = 'EC-P256';
  } else {
    const name = OTHER_ALGORITHMS[algorithm] ?? `algorithm ${algorithm}`;
    return refuse(`the key is ${name}; only RSA (at least 2048 bits) and EC P-256 are accepted`);
  }

  let key: KeyObject;
  try {
    key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  } catch {
    return refuse('the key passed every check but OpenSSL cannot load it');
  }
  const loaded =
    key.asymmetricKeyType === 'rsa' ? 'rsa' : key.asymmetricKeyType === 'ec' ? 'ec-p256' : undefined;
  if (loaded !== kind)
    return refuse('OpenSSL reads the key as another type than its SubjectPublicKeyInfo says');
  return { sound: true, key, spki, kind, description };
}

/**
 * Judges the key of an X.509 certificate (DER) as the certificate carries it: OpenSSL re-encodes
 * what it loads (a hybrid point comes out uncompressed, explicit parameters as the curve's name),
 * so the key of node's X509Certificate can't be judged.
 */
export function checkCertificateKey(certificateDer: Uint8Array): KeyVerdict {
  let spki: Buffer;
  try {
    const info = AsnConvert.parse(certificateDer, Certificate).tbsCertificate.subjectPublicKeyInfo;
    spki = Buffer.from(AsnConvert.serialize(info));
  } catch {
    return refuse("the certificate's key cannot be decoded");
  }
  return checkPublicKey(spki);
}

/** PEM labels that hold a key or certificate someone must not put where a public key goes. */
const NOT_PUBLIC: readonly { readonly label: RegExp; readonly problem: string }[] = [
  {
    label: /PRIVATE KEY$/,
    problem:
      'this is a private key; export the public half (openssl pkey -in key.pem -pubout) and keep the private key on the device',
  },
  {
    label: /^(X509 |TRUSTED )?CERTIFICATE$/,
    problem:
      'this is a certificate, not a public key; export its public key (openssl x509 -in cert.pem -pubkey -noout)',
  },
];

/**
 * Judges a public key in PEM: exactly one `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY`
 * (PKCS#1) block, nothing else. A private key, an encrypted key or a certificate is refused with
 * what to do instead, whatever else the text holds.
 */
export function checkPublicKeyPem(text: string): KeyVerdict {
  const labels = [...text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----/g)].map((match) => match[1] ?? '');
  for (const label of labels) {
    const known = NOT_PUBLIC.find((entry) => entry.label.test(label));
    if (known) return refuse(known.problem);
  }
  if (labels.length !== 1) {
    return refuse(
      labels.length === 0 ? 'this is not a PEM public key' : `expected one PEM block, found ${labels.length}`,
    );
  }
  const label = labels[0] as string;
  if (label !== 'PUBLIC KEY' && label !== 'RSA PUBLIC KEY')
    return refuse(`this is a PEM "${label}", not a public key`);
  const match = new RegExp(
    `^\\s*-----BEGIN ${label}-----\\r?\\n([A-Za-z0-9+/=\\r\\n]+)-----END ${label}-----\\s*$`,
  ).exec(text);
  if (!match) return refuse(`the ${label} block is not well-formed PEM`);
  const der = Buffer.from((match[1] ?? '').replace(/\r?\n/g, ''), 'base64');
  if (label === 'PUBLIC KEY') return checkPublicKey(der);
  // PKCS#1: wrap it in a SubjectPublicKeyInfo, then judge the same fields.
  let rsa: RSAPublicKey;
  try {
    rsa = AsnConvert.parse(der, RSAPublicKey);
  } catch {
    return refuse('the RSA PUBLIC KEY block is not a DER RSAPublicKey');
  }
  const info = new SubjectPublicKeyInfo();
  info.algorithm.algorithm = id_rsaEncryption;
  info.algorithm.parameters = null;
  info.subjectPublicKey = AsnConvert.serialize(rsa);
  return checkPublicKey(Buffer.from(AsnConvert.serialize(info)));
}
