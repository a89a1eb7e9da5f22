/**
 * The deployment's CA certificate as configuration reads it at cold start: node:crypto's
 * X509Certificate parses it, so the init loads no ASN.1 library. What signing needs from it
 * beyond this (its subject and key identifier, in DER) certificate-authority.ts reads when it
 * first issues.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { singlePemBlock } from './wire';

export interface CaCertificate {
  readonly pem: string;
  readonly der: Buffer;
  /** SHA-256 of the DER: AWS IoT's caCertificateId once registered. */
  readonly id: string;
  readonly notAfter: Date;
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function toPem(der: Uint8Array, label: string): string {
  const lines =
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Reads the CA certificate the deployment was configured with. Throws naming what is wrong. */
export function parseCaCertificate(pem: string): CaCertificate {
  const der = singlePemBlock(pem, 'CERTIFICATE');
  const certificate = new X509Certificate(der);
  // X509Certificate gives the time as OpenSSL prints it ("Dec  3 20:17:00 2036 GMT").
  const notAfter = new Date(certificate.validTo);
  if (Number.isNaN(notAfter.getTime())) throw new Error(`unreadable notAfter "${certificate.validTo}"`);
  return { pem: toPem(der, 'CERTIFICATE'), der, id: sha256Hex(der), notAfter };
}
