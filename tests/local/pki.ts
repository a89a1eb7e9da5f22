/**
 * The local stack's PKI. One local CA stands in for Amazon's: moto's patched launcher signs
 * device certificates with it and the regional MQTT brokers trust it (and present server
 * certificates issued from it), so a device provisioned locally can really connect.
 */
// @peculiar/x509 (through tsyringe) needs the Reflect metadata polyfill loaded first.
import 'reflect-metadata';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { webcrypto } from 'node:crypto';
import path from 'node:path';
import * as x509 from '@peculiar/x509';

// x509 uses Node's global webcrypto (globalThis.crypto) by default.

export const LOCAL_CA_COMMON_NAME = 'Global Device Provisioning Local CA';

export interface LocalCa {
  readonly certPem: string;
  readonly keyPem: string;
  readonly certPath: string;
  readonly keyPath: string;
}

const CA_ALGORITHM: webcrypto.EcKeyGenParams & webcrypto.EcdsaParams = {
  name: 'ECDSA',
  namedCurve: 'P-256',
  hash: 'SHA-256',
};

function toPem(label: string, der: ArrayBuffer): string {
  const base64 = Buffer.from(der).toString('base64');
  const lines = base64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/**
 * Creates the local CA in `dir` (ca.pem, ca-key.pem with mode 0600), or returns the existing
 * one so certificates issued by an earlier run keep chaining to it.
 */
export async function createLocalCa(dir: string): Promise<LocalCa> {
  const certPath = path.resolve(dir, 'ca.pem');
  const keyPath = path.resolve(dir, 'ca-key.pem');
  if (existsSync(certPath) && existsSync(keyPath)) {
    return {
      certPem: readFileSync(certPath, 'utf8'),
      keyPem: readFileSync(keyPath, 'utf8'),
      certPath,
      keyPath,
    };
  }
  mkdirSync(dir, { recursive: true });
  const keys = (await webcrypto.subtle.generateKey(CA_ALGORITHM, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const notBefore = new Date(Date.now() - 24 * 3600 * 1000);
  const notAfter = new Date(Date.now() + 10 * 365 * 24 * 3600 * 1000);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
      .toString('hex')
      .replace(/^[89a-f]/, '1'),
    name: `CN=${LOCAL_CA_COMMON_NAME}, O=Global Device Provisioning (local)`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: CA_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const certPem = certificate.toString('pem') + '\n';
  const keyPem = toPem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  writeFileSync(keyPath, keyPem, { mode: 0o600 });
  writeFileSync(certPath, certPem);
  return { certPem, keyPem, certPath, keyPath };
}

// issueServerCertificate: added for the regional MQTT endpoints (tests/local/iot-data-plane.ts).
import { createPrivateKey } from 'node:crypto';

/** Web Crypto import parameters for a CA private key in PEM (RSA or EC P-256/P-384). */
function signingAlgorithmOf(keyPem: string): webcrypto.RsaHashedImportParams | webcrypto.EcKeyImportParams {
  const key = createPrivateKey(keyPem);
  if (key.asymmetricKeyType === 'rsa') return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (key.asymmetricKeyType === 'ec' && (curve === 'prime256v1' || curve === 'secp384r1')) {
    return { name: 'ECDSA', namedCurve: curve === 'prime256v1' ? 'P-256' : 'P-384' };
  }
  throw new Error(`unsupported CA key type ${String(key.asymmetricKeyType)} ${String(curve)}`);
}

export interface ServerCertificate {
  readonly certPem: string;
  readonly keyPem: string;
}

/**
 * A TLS server certificate for the local MQTT endpoints, issued by the local CA, valid for the
 * given DNS names and IP addresses (SAN), so a device verifies the endpoint the way it verifies
 * `<prefix>-ats.iot.<region>.amazonaws.com` against Amazon's roots. Not persisted: each start
 * issues a fresh one (EC P-256).
 */
export async function issueServerCertificate(
  ca: { readonly certPem: string; readonly keyPem: string },
  names: { readonly dns: readonly string[]; readonly ips: readonly string[] },
): Promise<ServerCertificate> {
  const caCertificate = new x509.X509Certificate(ca.certPem);
  const caAlgorithm = signingAlgorithmOf(ca.keyPem);
  const caKey = await webcrypto.subtle.importKey(
    'pkcs8',
    createPrivateKey(ca.keyPem).export({ type: 'pkcs8', format: 'der' }),
    caAlgorithm,
    false,
    ['sign'],
  );
  const serverAlgorithm = { name: 'ECDSA', namedCurve: 'P-256' };
  const keys = (await webcrypto.subtle.generateKey(serverAlgorithm, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const commonName = names.dns[0] ?? names.ips[0] ?? 'localhost';
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
      .toString('hex')
      .replace(/^[89a-f]/, '1'),
    subject: `CN=${commonName}, O=Global Device Provisioning (local MQTT endpoint)`,
    issuer: caCertificate.subject,
    notBefore: new Date(Date.now() - 3600 * 1000),
    notAfter: new Date(Date.now() + 30 * 24 * 3600 * 1000),
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: caAlgorithm.name === 'ECDSA' ? { name: 'ECDSA', hash: 'SHA-256' } : caAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
        true,
      ),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...names.dns.map((value) => ({ type: 'dns' as const, value })),
        ...names.ips.map((value) => ({ type: 'ip' as const, value })),
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(caCertificate),
    ],
  });
  const keyPem = createPrivateKey({
    key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
    format: 'der',
    type: 'pkcs8',
  }).export({ type: 'pkcs8', format: 'pem' });
  return { certPem: certificate.toString('pem') + '\n', keyPem: keyPem.toString() };
}
