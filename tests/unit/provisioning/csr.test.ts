import { checkCsr } from '../../../functions/provisioning/csr';
import { CsrKeyAlgorithm, EC_P256, makeCsr, rsaAlgorithm } from '../../support/csr';
import * as x509 from '../../../functions/provisioning/x509';

const ecAlgorithm = EC_P256;

async function csrPem(name: string, algorithm: CsrKeyAlgorithm): Promise<string> {
  return (await makeCsr(name, algorithm)).pem;
}

async function refusal(pem: string, thingName = 'wm101'): Promise<string> {
  try {
    await checkCsr(pem, thingName);
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('expected a refusal');
}

describe('CSR checks (before anything is created in AWS)', () => {
  it('accepts an EC P-256 CSR whose CN is the thing name', async () => {
    const checked = await checkCsr(await csrPem('CN=wm101', ecAlgorithm), 'wm101');
    expect(checked.keyDescription).toBe('EC-P256');
  });

  it('accepts an RSA-2048 CSR', async () => {
    const checked = await checkCsr(await csrPem('CN=wm101, O=Factory', rsaAlgorithm(2048)), 'wm101');
    expect(checked.keyDescription).toBe('RSA-2048');
  });

  it('rejects a CSR whose CN is not the thing name', async () => {
    expect(await refusal(await csrPem('CN=wm102', ecAlgorithm))).toBe(
      'CSR subject CN must be the thing name "wm101"',
    );
  });

  it('rejects an RSA key under 2048 bits', async () => {
    expect(await refusal(await csrPem('CN=wm101', rsaAlgorithm(1024)))).toContain(
      'RSA of at least 2048 bits',
    );
  });

  it('rejects a CSR whose self-signature does not verify', async () => {
    const der = Buffer.from(
      x509.PemConverter.decode(await csrPem('CN=wm101', ecAlgorithm))[0] as ArrayBuffer,
    );
    der.writeUInt8(der.readUInt8(der.length - 3) ^ 0x01, der.length - 3); // flip a bit inside the signature
    const tampered = x509.PemConverter.encode(der, 'CERTIFICATE REQUEST');
    expect(await refusal(tampered)).toBe('CSR signature does not verify with its own key');
  });

  it('rejects PEM that is not a certificate request', async () => {
    const garbage = '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----';
    expect(await refusal(garbage)).toBe('CSR is not a parseable PKCS#10 certificate request');
  });
});
