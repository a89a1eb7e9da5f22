import { createHash, createPublicKey, ECDH, generateKeyPairSync, KeyObject } from 'node:crypto';
import { checkPublicKey, checkPublicKeyPem, KeyVerdict } from '../../../functions/provisioning/key-soundness';
import { toPem } from '../../../functions/provisioning/ca-certificate';
import {
  exponentOneKey,
  explicitParametersP256Spki,
  hybridP256Spki,
  p256Spki,
  rsaModulus,
  rsaSpki,
} from '../../support/unsound-keys';

const spkiOf = (key: KeyObject) => key.export({ type: 'spki', format: 'der' });

/** Deterministic "random" bytes, so a failing case can be found again. */
const bytesFor = (seed: string, length: number) => {
  const chunks: Buffer[] = [];
  for (let counter = 0; chunks.length * 32 < length; counter += 1)
    chunks.push(createHash('sha256').update(`${seed}/${counter}`).digest());
  return Buffer.concat(chunks).subarray(0, length);
};

/** The verdict, failing the test if judging threw. */
function judge(input: KeyObject | Uint8Array): KeyVerdict {
  let verdict: KeyVerdict | undefined;
  expect(() => (verdict = checkPublicKey(input))).not.toThrow();
  return verdict as KeyVerdict;
}

const problemOf = (input: KeyObject | Uint8Array) => {
  const verdict = judge(input);
  return verdict.sound ? `accepted as ${verdict.description}` : verdict.problem;
};

const modulus2048 = rsaModulus(2048);
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

describe('key soundness: keys a device can hold', () => {
  it('accepts RSA-2048 and RSA-3072 with exponent 65537, and P-256 uncompressed or compressed', () => {
    expect(judge(rsa.publicKey)).toMatchObject({ sound: true, kind: 'rsa', description: 'RSA-2048' });
    const rsa3072 = generateKeyPairSync('rsa', { modulusLength: 3072 }).publicKey;
    expect(judge(spkiOf(rsa3072))).toMatchObject({ sound: true, description: 'RSA-3072' });
    expect(judge(ec.publicKey)).toMatchObject({ sound: true, kind: 'ec-p256', description: 'EC-P256' });

    const { spki, pointOffset } = p256Spki();
    const compressed = ECDH.convertKey(
      spki.subarray(pointOffset),
      'prime256v1',
      undefined,
      undefined,
      'compressed',
    ) as Buffer;
    const header = Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex');
    const verdict = judge(Buffer.concat([header, compressed]));
    expect(verdict).toMatchObject({ sound: true, kind: 'ec-p256' });
    // The key OpenSSL loads from the compressed form is the same key.
    const jwkOf = (key: KeyObject) => key.export({ format: 'jwk' });
    if (verdict.sound)
      expect(jwkOf(verdict.key)).toEqual(jwkOf(createPublicKey({ key: spki, format: 'der', type: 'spki' })));
  });

  it('accepts a larger odd exponent', () => {
    expect(judge(rsaSpki(modulus2048, 0x10001n + 2n ** 20n))).toMatchObject({ sound: true });
  });

  it('reads a PEM public key, SubjectPublicKeyInfo or PKCS#1', () => {
    expect(checkPublicKeyPem(ec.publicKey.export({ type: 'spki', format: 'pem' }) as string).sound).toBe(
      true,
    );
    const pkcs1 = rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }) as string;
    const verdict = checkPublicKeyPem(pkcs1);
    expect(verdict.sound && verdict.spki).toEqual(spkiOf(rsa.publicKey));
  });
});

describe('key soundness: keys nobody holds, refused by name', () => {
  it('refuses RSA exponents 1, 3 and even ones, an even modulus and a 1024-bit modulus', () => {
    expect(problemOf(exponentOneKey().spki)).toBe(
      'RSA public exponent is 1; it must be odd and at least 65537',
    );
    expect(problemOf(rsaSpki(modulus2048, 3n))).toBe(
      'RSA public exponent is 3; it must be odd and at least 65537',
    );
    expect(problemOf(rsaSpki(modulus2048, 65538n))).toContain('RSA public exponent is 65538');
    expect(problemOf(rsaSpki(modulus2048 + 1n, 65537n))).toBe(
      'RSA modulus is even, so it is not a product of two primes',
    );
    expect(problemOf(rsaSpki(rsaModulus(1024), 65537n))).toBe(
      'RSA modulus is 1024 bits; at least 2048 are required',
    );
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey;
    expect(problemOf(small)).toContain('1024 bits');
  });

  it('refuses a hybrid point, an off-curve point and explicit curve parameters', () => {
    expect(problemOf(hybridP256Spki())).toContain('hybrid form');
    const { spki } = p256Spki();
    const offCurve = Buffer.from(spki);
    offCurve.writeUInt8((offCurve.at(-1) ?? 0) ^ 0x01, offCurve.length - 1);
    expect(problemOf(offCurve)).toBe('EC point is not on the P-256 curve');
    expect(problemOf(explicitParametersP256Spki())).toContain('explicit curve parameters');
  });

  it('refuses P-384, Ed25519 and private keys', () => {
    expect(problemOf(generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey)).toBe(
      'EC key is on P-384; only P-256 is accepted',
    );
    expect(problemOf(generateKeyPairSync('ed25519').publicKey)).toContain('Ed25519');
    expect(problemOf(ec.privateKey)).toBe('this is a private key, not a public key');
  });

  it('refuses private keys, encrypted keys and certificates in PEM, saying what to export', () => {
    const privatePems = [
      ec.privateKey.export({ type: 'pkcs8', format: 'pem' }),
      ec.privateKey.export({ type: 'sec1', format: 'pem' }),
      rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }),
      rsa.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'x' }),
    ] as string[];
    expect(privatePems.map((pem) => pem.split('\n')[0])).toEqual([
      '-----BEGIN PRIVATE KEY-----',
      '-----BEGIN EC PRIVATE KEY-----',
      '-----BEGIN RSA PRIVATE KEY-----',
      '-----BEGIN ENCRYPTED PRIVATE KEY-----',
    ]);
    for (const pem of privatePems) {
      expect(checkPublicKeyPem(pem)).toEqual({
        sound: false,
        problem: expect.stringContaining('export the public half'),
      });
      // Even behind a public key in the same text.
      const publicPem = ec.publicKey.export({ type: 'spki', format: 'pem' }) as string;
      expect(checkPublicKeyPem(`${publicPem}${pem}`).sound).toBe(false);
    }
    expect(checkPublicKeyPem(toPem(Buffer.from('3000', 'hex'), 'CERTIFICATE'))).toEqual({
      sound: false,
      problem: expect.stringContaining('is a certificate'),
    });
    expect(checkPublicKeyPem('not a key').sound).toBe(false);
  });
});

describe('key soundness fuzzing: malformed keys are refused, never thrown on', () => {
  it('refuses random bytes, with and without a SEQUENCE header', () => {
    for (let index = 0; index < 300; index += 1) {
      const random = bytesFor(`random-${index}`, 1 + (index % 200));
      expect(judge(random).sound).toBe(false);
      const length = random.length > 127 ? [0x81, random.length] : [random.length];
      const framed = Buffer.concat([Buffer.from([0x30, ...length]), random]);
      expect(judge(framed).sound).toBe(false);
    }
  });

  it('refuses every truncation of a sound RSA and EC key', () => {
    for (const spki of [spkiOf(rsa.publicKey), spkiOf(ec.publicKey)]) {
      for (let length = 0; length < spki.length; length += 1) {
        expect(judge(spki.subarray(0, length)).sound).toBe(false);
      }
      expect(judge(Buffer.concat([spki, Buffer.from([0])])).sound).toBe(false);
    }
  });

  it('refuses every single-bit flip of a P-256 key', () => {
    const spki = spkiOf(ec.publicKey);
    for (let bit = 0; bit < spki.length * 8; bit += 1) {
      const flipped = Buffer.from(spki);
      flipped.writeUInt8((flipped.at(bit >> 3) ?? 0) ^ (1 << (bit & 7)), bit >> 3);
      expect(judge(flipped).sound).toBe(false);
    }
  });

  it('never throws on bit flips of an RSA key, and refuses those in its structure', () => {
    const spki = spkiOf(rsa.publicKey);
    // The SEQUENCE, algorithm, BIT STRING, RSAPublicKey and modulus headers, up to the modulus's
    // leading zero byte.
    const structureEnd = 32;
    for (let bit = 0; bit < spki.length * 8; bit += 3) {
      const flipped = Buffer.from(spki);
      flipped.writeUInt8((flipped.at(bit >> 3) ?? 0) ^ (1 << (bit & 7)), bit >> 3);
      const verdict = judge(flipped);
      // A flip inside the modulus or the exponent can leave a well-formed key (odd, large enough)
      // that nobody can tell from a real one.
      if (bit >> 3 < structureEnd) expect(verdict.sound).toBe(false);
    }
  });
});
