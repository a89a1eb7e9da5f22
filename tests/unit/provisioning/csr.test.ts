import { checkCsr } from '../../../functions/provisioning/csr';
import { CsrKeyAlgorithm, EC_P256, makeCsr, rsaAlgorithm } from '../../support/csr';
import { exponentOneCsr } from '../../support/unsound-keys';
import * as x509 from '../../support/x509';

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

  it('accepts an RSA CSR signed with RSA-PSS', async () => {
    const pss = {
      name: 'RSA-PSS',
      modulusLength: 2048,
      publicExponent: new Uint8Array([1, 0, 1]),
      hash: 'SHA-256',
      saltLength: 32,
    } as CsrKeyAlgorithm;
    const checked = await checkCsr(await csrPem('CN=wm101', pss), 'wm101');
    expect(checked.keyDescription).toBe('RSA-2048');
  });

  it('hands back the key the CSR carries', async () => {
    const made = await makeCsr('CN=wm101', ecAlgorithm);
    expect((await checkCsr(made.pem, 'wm101')).publicKeySpki).toEqual(made.publicKeySpki);
  });

  it('rejects a CSR with two CNs, even if one is the thing name', async () => {
    expect(await refusal(await csrPem('CN=wm101, CN=wm102', ecAlgorithm))).toBe(
      'CSR subject CN must be the thing name "wm101"',
    );
  });

  it('rejects a CSR whose CN is not the thing name', async () => {
    expect(await refusal(await csrPem('CN=wm102', ecAlgorithm))).toBe(
      'CSR subject CN must be the thing name "wm101"',
    );
  });

  it('rejects an RSA key under 2048 bits', async () => {
    expect(await refusal(await csrPem('CN=wm101', rsaAlgorithm(1024)))).toBe(
      'CSR key refused: RSA modulus is 1024 bits; at least 2048 are required',
    );
  });

  it('rejects a key nobody holds: RSA with exponent 1, whose self-signature anyone can compute', async () => {
    expect(await refusal(exponentOneCsr('wm101'))).toBe(
      'CSR key refused: RSA public exponent is 1; it must be odd and at least 65537',
    );
  });

  it('rejects an EC P-384 key: P-256 is the one curve accepted', async () => {
    const p384 = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' } as CsrKeyAlgorithm;
    expect(await refusal(await csrPem('CN=wm101', p384))).toBe(
      'CSR key refused: EC key is on P-384; only P-256 is accepted',
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
