/**
 * The ipstack access key: KMS ciphertext in an SSM parameter, decrypted with an encryption
 * context and cached per container. Security teams rotate it with `make rotate-ipstack-key`;
 * running containers pick the new one up within `keyCacheSeconds`. The plaintext stays in
 * memory only and is never logged.
 */
import type { KMSClient } from '@aws-sdk/client-kms';
import type { SSMClient } from '@aws-sdk/client-ssm';
import { awsClientSettings } from './aws-client-settings';
import { IPSTACK_KEY_ENCRYPTION_CONTEXT, IPSTACK_KEY_UNSET } from './config';

export interface SecretSource {
  /** The current ipstack key, or undefined when none has been stored yet. */
  ipstackKey(): Promise<string | undefined>;
}

export interface KmsSecretSettings {
  readonly region: string;
  readonly parameterName: string;
  readonly cacheSeconds: number;
  readonly kmsKeyId?: string;
}

export function kmsSecretSource(settings: KmsSecretSettings, now: () => number = Date.now): SecretSource {
  // Loaded on first use: containers whose devices CloudFront locates never pay for these
  // clients at cold start (they are ~40% of the bundle's init time).
  let sdk: Promise<[typeof import('@aws-sdk/client-ssm'), typeof import('@aws-sdk/client-kms')]> | undefined;
  let clients: { ssm: SSMClient; kms: KMSClient } | undefined;
  let cached: { value: Promise<string | undefined>; expiresAt: number } | undefined;

  async function fetchKey(): Promise<string | undefined> {
    const [{ SSMClient, GetParameterCommand }, { KMSClient, DecryptCommand }] = await (sdk ??= Promise.all([
      import('@aws-sdk/client-ssm'),
      import('@aws-sdk/client-kms'),
    ]));
    clients ??= {
      ssm: new SSMClient(awsClientSettings(settings.region)),
      kms: new KMSClient(awsClientSettings(settings.region)),
    };
    const { ssm, kms } = clients;
    const parameter = await ssm.send(new GetParameterCommand({ Name: settings.parameterName }));
    const ciphertext = parameter.Parameter?.Value?.trim();
    if (!ciphertext || ciphertext === IPSTACK_KEY_UNSET) return undefined;
    const decrypted = await kms.send(
      new DecryptCommand({
        CiphertextBlob: Buffer.from(ciphertext, 'base64'),
        EncryptionContext: { ...IPSTACK_KEY_ENCRYPTION_CONTEXT },
        KeyId: settings.kmsKeyId,
      }),
    );
    if (!decrypted.Plaintext) return undefined;
    return Buffer.from(decrypted.Plaintext).toString('utf8');
  }

  return {
    ipstackKey() {
      const at = now();
      if (!cached || cached.expiresAt <= at) {
        const value = fetchKey();
        cached = { value, expiresAt: at + settings.cacheSeconds * 1000 };
        // A failed fetch must not be cached for the whole period: retry on the next request.
        value.catch(() => {
          if (cached?.value === value) cached = undefined;
        });
      }
      return cached.value;
    },
  };
}
