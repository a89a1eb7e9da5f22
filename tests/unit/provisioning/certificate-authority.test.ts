import { createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { issueDeviceCertificate, sha256Hex } from '../../../functions/provisioning/certificate-authority';
import { testCa, TestCa } from '../../support/ca';

let ca: TestCa;
beforeAll(async () => {
  ca = await testCa();
});

const spkiOf = (type: 'rsa' | 'ec') =>
  (type === 'rsa'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  ).publicKey.export({ type: 'spki', format: 'der' });

describe('device certificates from our CA', () => {
  it.each(['rsa', 'ec'] as const)(
    'issues a %s certificate for the given key, CN = thing name, signed by the CA',
    async (type) => {
      const spki = spkiOf(type);
      const now = new Date('2026-12-03T12:00:00Z');
      const issued = await issueDeviceCertificate(ca.certificate, ca.signer, {
        thingName: 'wm101:line_2',
        publicKeySpki: spki,
        validityDays: 365,
        now,
      });
      const certificate = new X509Certificate(issued.pem);
      expect(certificate.subject).toBe('CN=wm101:line_2');
      expect(certificate.verify(ca.publicKey)).toBe(true);
      expect(certificate.checkIssued(new X509Certificate(ca.certificate.pem))).toBe(true);
      expect(certificate.ca).toBe(false);
      expect(certificate.publicKey.export({ type: 'spki', format: 'der' })).toEqual(spki);
      expect(new Date(certificate.validTo).getTime()).toBe(now.getTime() + 365 * 86_400_000);
      expect(certificate.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    },
  );

  it('knows the certificate id before AWS does: SHA-256 of the DER', async () => {
    const issued = await issueDeviceCertificate(ca.certificate, ca.signer, {
      thingName: 'wm101',
      publicKeySpki: spkiOf('ec'),
      validityDays: 30,
    });
    expect(issued.id).toBe(sha256Hex(new X509Certificate(issued.pem).raw));
    expect(issued.id).toMatch(/^[0-9a-f]{64}$/);
  });

  it('never lets a certificate outlive its CA', async () => {
    const issued = await issueDeviceCertificate(ca.certificate, ca.signer, {
      thingName: 'wm101',
      publicKeySpki: spkiOf('ec'),
      validityDays: 100 * 365,
    });
    expect(issued.notAfter.getTime()).toBe(ca.certificate.notAfter.getTime());
  });

  it('gives every certificate its own serial, so the same key twice is two certificates', async () => {
    const spki = spkiOf('ec');
    const request = { thingName: 'wm101', publicKeySpki: spki, validityDays: 30 };
    const [first, second] = await Promise.all([
      issueDeviceCertificate(ca.certificate, ca.signer, request),
      issueDeviceCertificate(ca.certificate, ca.signer, request),
    ]);
    expect(first?.serialNumber).not.toBe(second?.serialNumber);
    expect(createPublicKey(first?.pem ?? '').equals(createPublicKey(second?.pem ?? ''))).toBe(true);
  });
});
