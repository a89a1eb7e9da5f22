/**
 * Keys and signatures a device needs to provision itself: its own key pair and a CSR (with
 * `--own-key`), and the request signature in the sample's v1 form or the v2 form
 * (functions/provisioning/wire.ts), made with the fleet key or the device's own signing key.
 * After day one the device signs status and renewal requests with its certificate's own key.
 */
// @peculiar/x509 resolves its ASN.1 codecs through tsyringe, which needs this polyfill first.
import 'reflect-metadata';
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  webcrypto,
  X509Certificate,
} from 'node:crypto';
import * as x509 from '@peculiar/x509';
import {
  canonicalLifecycleMessage,
  canonicalV2Message,
  pemToDer,
  type LifecycleOperation,
  type LifecycleRequestBody,
  type V1Request,
  type V2Request,
} from '../functions/provisioning/wire';

/** The Web Crypto type @peculiar/x509 expects; node's implementation satisfies it at runtime. */
type X509Crypto = ReturnType<typeof x509.cryptoProvider.get>;
x509.cryptoProvider.set(webcrypto as unknown as X509Crypto);

export type DeviceKeyType = 'rsa' | 'ec';

export interface DeviceKeyAndCsr {
  /** PKCS#8 PEM; it never leaves the device. */
  readonly privateKeyPem: string;
  readonly csrPem: string;
}

const CSR_ALGORITHMS: Record<DeviceKeyType, webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams> = {
  rsa: {
    name: 'RSASSA-PKCS1-v1_5',
    modulusLength: 2048,
    publicExponent: new Uint8Array([1, 0, 1]),
    hash: 'SHA-256',
  },
  ec: { name: 'ECDSA', namedCurve: 'P-256' },
};

/** Generates the device's key pair (RSA 2048 or EC P-256) and a CSR whose CN is the thing name. */
export async function createKeyAndCsr(thingName: string, keyType: DeviceKeyType): Promise<DeviceKeyAndCsr> {
  const algorithm = CSR_ALGORITHMS[keyType];
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [thingName] }],
    keys,
    signingAlgorithm: keyType === 'ec' ? { name: 'ECDSA', hash: 'SHA-256' } : algorithm,
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return {
    privateKeyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY'),
    csrPem: csr.toString('pem'),
  };
}

/** Signs with SHA-256: RSA PKCS#1 v1.5 for RSA keys, DER-encoded ECDSA for P-256 keys. */
function signSha256(message: Buffer, signingKeyPem: string): string {
  const key = createPrivateKey(signingKeyPem);
  if (key.asymmetricKeyType !== 'rsa' && key.asymmetricKeyType !== 'ec') {
    throw new Error(`signing key must be RSA or EC P-256, not ${String(key.asymmetricKeyType)}`);
  }
  return sign('sha256', message, { key, dsaEncoding: 'der' }).toString('base64');
}

/** A key nobody registered: signatures made with it must fail verification (`--fake-device`). */
export function throwawaySigningKeyPem(): string {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

export interface SignRequestOptions {
  readonly thingName: string;
  readonly signingKeyPem: string;
  readonly csrPem?: string;
  /** Unix seconds, for v2; defaults to now. */
  readonly timestamp?: number;
  readonly nonce?: string;
}

/** The sample's request: the fleet key's signature over the thing name only. */
export function signedV1Request(options: SignRequestOptions): V1Request {
  const signature = signSha256(Buffer.from(options.thingName, 'utf8'), options.signingKeyPem);
  return {
    'thing-name': options.thingName,
    'thing-name-sig': signature,
    ...(options.csrPem ? { CSR: options.csrPem } : {}),
  };
}

/** v2: binds thing name, time, a fresh nonce and the CSR, so a captured request can't be reused. */
export function signedV2Request(options: SignRequestOptions): V2Request {
  const timestamp = options.timestamp ?? Math.floor(Date.now() / 1000);
  const nonce = options.nonce ?? freshNonce();
  const message = canonicalV2Message({
    thingName: options.thingName,
    timestamp,
    nonce,
    csrDer: options.csrPem ? pemToDer(options.csrPem) : undefined,
  });
  return {
    'thing-name': options.thingName,
    'sig-version': 2,
    timestamp,
    nonce,
    signature: signSha256(message, options.signingKeyPem),
    ...(options.csrPem ? { CSR: options.csrPem } : {}),
  };
}

/** 24 random bytes, base64url: 32 characters of the alphabet both protocols accept. */
function freshNonce(): string {
  return randomBytes(24).toString('base64url');
}

export interface LifecycleSignOptions {
  readonly operation: LifecycleOperation;
  readonly thingName: string;
  /** The certificate the service is asked to recognise; its key makes the signature. */
  readonly certificatePem: string;
  readonly privateKeyPem: string;
  /** Renewal: the new key's CSR, whose DER hash the signature covers. */
  readonly csrPem?: string;
  /** Status: where the device connects now (not signed). */
  readonly region?: string;
  /** Unix seconds; defaults to now. */
  readonly timestamp?: number;
  readonly nonce?: string;
}

/**
 * A status or renewal request: proof of holding the current certificate's key, with no fleet
 * secret, over the operation, thing name, time, a fresh nonce and the CSR hash.
 */
export function signedLifecycleRequest(options: LifecycleSignOptions): LifecycleRequestBody {
  const timestamp = options.timestamp ?? Math.floor(Date.now() / 1000);
  const nonce = options.nonce ?? freshNonce();
  const message = canonicalLifecycleMessage({
    operation: options.operation,
    thingName: options.thingName,
    timestamp,
    nonce,
    csrDer: options.csrPem ? pemToDer(options.csrPem) : undefined,
  });
  return {
    'thing-name': options.thingName,
    timestamp,
    nonce,
    certificate: options.certificatePem,
    signature: signSha256(message, options.privateKeyPem),
    ...(options.region ? { region: options.region } : {}),
    ...(options.csrPem ? { CSR: options.csrPem } : {}),
  };
}

/** The kind of key a device holds, so a renewal keeps it (an RSA device stays RSA). */
export function keyTypeOf(privateKeyPem: string): DeviceKeyType {
  const type = createPrivateKey(privateKeyPem).asymmetricKeyType;
  if (type === 'rsa' || type === 'ec') return type;
  throw new Error(`the device key must be RSA or EC P-256, not ${String(type)}`);
}

/** Whether a certificate was issued for this private key: a half-written pair must not be used. */
export function certificateMatchesKey(certificatePem: string, privateKeyPem: string): boolean {
  try {
    const certified = new X509Certificate(certificatePem).publicKey.export({ type: 'spki', format: 'der' });
    const held = createPublicKey(privateKeyPem).export({ type: 'spki', format: 'der' });
    return Buffer.compare(certified, held) === 0;
  } catch {
    return false;
  }
}

/** AWS IoT's certificate id: SHA-256 of the DER, lowercase hex. */
export function certificateIdOf(certificatePem: string): string {
  return new X509Certificate(certificatePem).fingerprint256.replace(/:/g, '').toLowerCase();
}

/** End of the certificate's validity, ISO-8601 UTC. */
export function certificateNotAfter(certificatePem: string): string {
  return new Date(new X509Certificate(certificatePem).validTo).toISOString();
}
