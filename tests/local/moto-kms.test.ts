/**
 * What moto 5.2.1 does with a symmetric key's encryption context (docs/facts.md): answer recovery
 * (functions/provisioning/answer-recovery.ts) relies on Decrypt refusing a ciphertext presented
 * with another context, as AWS KMS does. A disabled key is where moto and AWS differ.
 */
import {
  CreateKeyCommand,
  DecryptCommand,
  DisableKeyCommand,
  EncryptCommand,
  KMSClient,
} from '@aws-sdk/client-kms';
import { stack } from '../integration/requests';

const kms = new KMSClient({
  region: stack.homeRegion,
  endpoint: stack.awsEndpoint,
  credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
});
const CONTEXT = { thing_name: 'moto-kms', certificate_id: 'a'.repeat(64) };

async function decrypts(ciphertext: Uint8Array, context?: Record<string, string>): Promise<string> {
  try {
    const answer = await kms.send(
      new DecryptCommand({ CiphertextBlob: ciphertext, EncryptionContext: context }),
    );
    return Buffer.from(answer.Plaintext ?? []).toString('utf8');
  } catch (error) {
    return (error as Error).name;
  }
}

describe('moto KMS and encryption contexts', () => {
  let keyId: string;
  let ciphertext: Uint8Array;

  beforeAll(async () => {
    keyId = (await kms.send(new CreateKeyCommand({ KeyUsage: 'ENCRYPT_DECRYPT' }))).KeyMetadata!.KeyId!;
    const sealed = await kms.send(
      new EncryptCommand({ KeyId: keyId, Plaintext: Buffer.from('sealed'), EncryptionContext: CONTEXT }),
    );
    ciphertext = sealed.CiphertextBlob!;
  });

  it('decrypts with the same context', async () => {
    expect(await decrypts(ciphertext, CONTEXT)).toBe('sealed');
  });

  it('refuses another context, a part of it, or none, as AWS KMS does', async () => {
    expect(await decrypts(ciphertext, { ...CONTEXT, certificate_id: 'b'.repeat(64) })).toBe(
      'InvalidCiphertextException',
    );
    expect(await decrypts(ciphertext, { thing_name: CONTEXT.thing_name })).toBe('InvalidCiphertextException');
    expect(await decrypts(ciphertext)).toBe('InvalidCiphertextException');
  });

  it('still decrypts under a disabled key, where AWS KMS answers DisabledException', async () => {
    // So the local stack proves the refused-key fallback with a ciphertext KMS refuses, not a
    // disabled key (tests/integration/answer-recovery.test.ts).
    await kms.send(new DisableKeyCommand({ KeyId: keyId }));
    expect(await decrypts(ciphertext, CONTEXT)).toBe('sealed');
  });
});
