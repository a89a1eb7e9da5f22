import { createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { verifyProof, SignatureCheck } from '../../../functions/provisioning/signature';
import { canonicalV2Message, pemToDer } from '../../../functions/provisioning/wire';
import { ProvisioningError } from '../../../functions/provisioning/errors';
import vector from '../fixtures/v2-test-vector.json';

const fleet = generateKeyPairSync('rsa', { modulusLength: 2048 });
const now = 1795497600;

function check(overrides: Partial<SignatureCheck>): SignatureCheck {
  return {
    thingName: 'wm101',
    proof: { version: 1, signature: sign('sha256', Buffer.from('wm101'), fleet.privateKey) },
    fleetKey: fleet.publicKey,
    acceptV1: true,
    nowSeconds: now,
    maxClockSkewSeconds: 300,
    ...overrides,
  };
}

function refusal(overrides: Partial<SignatureCheck>): string {
  try {
    verifyProof(check(overrides));
  } catch (error) {
    expect((error as ProvisioningError).status).toBe(401);
    return (error as Error).message;
  }
  throw new Error('expected 401');
}

describe('v1 signatures (the sample)', () => {
  it('verifies the fleet signature over the thing name', () => {
    expect(() => verifyProof(check({}))).not.toThrow();
  });

  it('refuses a signature made for another thing name', () => {
    const signature = sign('sha256', Buffer.from('wm102'), fleet.privateKey);
    expect(refusal({ proof: { version: 1, signature } })).toBe('thing-name-sig does not verify');
  });

  it('refuses a signature from another key (the fake device)', () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const signature = sign('sha256', Buffer.from('wm101'), other.privateKey);
    expect(refusal({ proof: { version: 1, signature } })).toBe('thing-name-sig does not verify');
  });

  it('is refused altogether when v1 is switched off', () => {
    expect(refusal({ acceptV1: false })).toContain('v1 signatures are no longer accepted');
  });

  it('refuses garbage signature bytes as a bad signature, not a crash', () => {
    expect(refusal({ proof: { version: 1, signature: Buffer.from('abc') } })).toBe(
      'thing-name-sig does not verify',
    );
  });
});

describe('v2 signatures', () => {
  const nonce = 'q2Xr8JkTz0vW4mNa';
  const v2 = (key: Parameters<typeof sign>[2], parts: { timestamp?: number; csrDer?: Buffer } = {}) => {
    const timestamp = parts.timestamp ?? now;
    const signature = sign(
      'sha256',
      canonicalV2Message({ thingName: 'wm101', timestamp, nonce, csrDer: parts.csrDer }),
      key,
    );
    return { version: 2 as const, signature, timestamp, nonce };
  };

  it('reproduces the documented test vector byte for byte (RSA)', () => {
    const csrDer = pemToDer(vector.inputs.csrPem);
    const message = canonicalV2Message({ ...vector.inputs, csrDer });
    expect(message.toString('utf8')).toBe(vector.canonicalMessage);
    expect(message.toString('hex')).toBe(vector.canonicalMessageHex);
    expect(sign('sha256', message, vector.rsaPrivateKeyPem).toString('base64')).toBe(vector.rsaSignature);
    const noCsr = canonicalV2Message({
      thingName: 'wm101',
      timestamp: vector.inputs.timestamp,
      nonce: vector.inputs.nonce,
    });
    expect(noCsr.toString('utf8')).toBe(vector.withoutCsr.canonicalMessage);
  });

  it("accepts the test vector's ECDSA P-256 signature with the device key", () => {
    const proof = {
      version: 2 as const,
      signature: Buffer.from(vector.ecdsaSignature, 'base64'),
      timestamp: vector.inputs.timestamp,
      nonce: vector.inputs.nonce,
    };
    const csrDer = pemToDer(vector.inputs.csrPem);
    expect(() =>
      verifyProof(
        check({
          proof,
          csrDer,
          deviceKey: createPublicKey(vector.ecPublicKeyPem),
          nowSeconds: vector.inputs.timestamp,
        }),
      ),
    ).not.toThrow();
  });

  it('accepts an ECDSA signature in raw r||s form too', () => {
    const device = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const message = canonicalV2Message({ thingName: 'wm101', timestamp: now, nonce });
    const signature = sign('sha256', message, { key: device.privateKey, dsaEncoding: 'ieee-p1363' });
    expect(signature).toHaveLength(64);
    expect(() =>
      verifyProof(
        check({ proof: { version: 2, signature, timestamp: now, nonce }, deviceKey: device.publicKey }),
      ),
    ).not.toThrow();
  });

  it('uses the fleet key when the registry has no device key', () => {
    expect(() => verifyProof(check({ proof: v2(fleet.privateKey) }))).not.toThrow();
  });

  it('refuses the fleet key once the device has its own key', () => {
    const device = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    expect(refusal({ proof: v2(fleet.privateKey), deviceKey: device.publicKey })).toBe(
      'signature does not verify',
    );
  });

  it('refuses a request replayed with another CSR', () => {
    const proof = v2(fleet.privateKey, { csrDer: Buffer.from('original csr') });
    expect(refusal({ proof, csrDer: Buffer.from('attacker csr') })).toBe('signature does not verify');
    expect(refusal({ proof })).toBe('signature does not verify');
  });

  it('refuses a timestamp outside the allowed skew', () => {
    expect(refusal({ proof: v2(fleet.privateKey, { timestamp: now - 301 }) })).toContain('301 s away');
    expect(refusal({ proof: v2(fleet.privateKey, { timestamp: now + 600 }) })).toContain('600 s away');
  });

  it('accepts v2 even when v1 is switched off', () => {
    expect(() => verifyProof(check({ proof: v2(fleet.privateKey), acceptV1: false }))).not.toThrow();
  });

  it('refuses keys weaker than RSA-2048 or not on P-256', () => {
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
    expect(refusal({ proof: v2(weak.privateKey), deviceKey: weak.publicKey })).toContain(
      'not RSA ≥ 2048 or EC P-256',
    );
    const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    expect(refusal({ proof: v2(p384.privateKey), deviceKey: p384.publicKey })).toContain(
      'not RSA ≥ 2048 or EC P-256',
    );
  });
});
