/**
 * The ipstack access key: KMS ciphertext in an SSM parameter, decrypted with an encryption
 * context and cached per container. Security teams rotate it with `make rotate-ipstack-key`;
 * running containers pick the new one up within `keyCacheSeconds`. The plaintext stays in
 * memory only and is never logged.
 */
import type { SSMClient } from '@aws-sdk/client-ssm';
import { awsClientSettings } from './aws-client-settings';
import { IPSTACK_KEY_ENCRYPTION_CONTEXT, IPSTACK_KEY_UNSET } from './config';
import { kmsDecrypt } from './kms';

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
  // Loaded on first use: containers whose devices CloudFront locates never pay for the SSM
  // client at cold start.
  let sdk: Promise<typeof import('@aws-sdk/client-ssm')> | undefined;
  let ssm: SSMClient | undefined;
  let cached: { value: Promise<string | undefined>; expiresAt: number } | undefined;

  async function fetchKey(): Promise<string | undefined> {
    const { SSMClient, GetParameterCommand } = await (sdk ??= import('@aws-sdk/client-ssm'));
    ssm ??= new SSMClient(awsClientSettings(settings.region));
    const parameter = await ssm.send(new GetParameterCommand({ Name: settings.parameterName }));
    const ciphertext = parameter.Parameter?.Value?.trim();
    if (!ciphertext || ciphertext === IPSTACK_KEY_UNSET) return undefined;
    const plaintext = await kmsDecrypt(
      settings.region,
      Buffer.from(ciphertext, 'base64'),
      IPSTACK_KEY_ENCRYPTION_CONTEXT,
      settings.kmsKeyId,
    );
    return plaintext ? Buffer.from(plaintext).toString('utf8') : undefined;
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
