/**
 * The symmetric KMS key that seals a generated device key for answer recovery
 * (functions/provisioning/answer-recovery.ts). Only the provisioning function encrypts and
 * decrypts with it, and only with an encryption context naming the device and the certificate.
 * Losing it (deleted, disabled) costs nothing but recoveries: a retry is re-issued as without it.
 */
import { Construct } from 'constructs';
import type { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { KmsAlias } from '@cdktf/provider-aws/lib/kms-alias';
import { KmsKey } from '@cdktf/provider-aws/lib/kms-key';
import type { DeploymentConfig } from './config';

/** The encryption context keys a seal must carry (sealContext in answer-recovery.ts). */
export const ANSWER_SEAL_CONTEXT_KEYS = ['thing_name', 'certificate_id'] as const;

/** Encrypt and Decrypt only with both context keys present. */
export function answerSealCondition(): Record<string, Record<string, string>> {
  return {
    Null: Object.fromEntries(
      ANSWER_SEAL_CONTEXT_KEYS.map((key) => [`kms:EncryptionContext:${key}`, 'false']),
    ),
  };
}

export interface AnswerSealKeyProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  readonly accountId: string;
  readonly partition: string;
  readonly functionRoleArn: string;
}

export class AnswerSealKey extends Construct {
  readonly key: KmsKey;
  readonly alias: KmsAlias;

  constructor(scope: Construct, id: string, props: AnswerSealKeyProps) {
    super(scope, id);
    const { config, provider } = props;
    this.key = new KmsKey(this, 'key', {
      provider,
      description: `${config.appName}: seals generated device keys for answer recovery (minutes at most)`,
      keyUsage: 'ENCRYPT_DECRYPT',
      customerMasterKeySpec: 'SYMMETRIC_DEFAULT',
      enableKeyRotation: true,
      // A sealed key lives for minutes: a short deletion window loses nothing but recoveries.
      deletionWindowInDays: 7,
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            // Administration through IAM policies of the account; in a key policy "*" means this key.
            Sid: 'AccountAdministersThroughIam',
            Effect: 'Allow',
            Principal: { AWS: `arn:${props.partition}:iam::${props.accountId}:root` },
            Action: 'kms:*',
            Resource: '*',
          },
          {
            Sid: 'FunctionSealsAndUnsealsDeviceKeys',
            Effect: 'Allow',
            Principal: { AWS: props.functionRoleArn },
            Action: ['kms:Encrypt', 'kms:Decrypt'],
            Resource: '*',
            Condition: answerSealCondition(),
          },
        ],
      }),
    });
    this.alias = new KmsAlias(this, 'alias', {
      provider,
      name: `alias/${config.appName}-answer-seal`,
      targetKeyId: this.key.keyId,
    });
  }
}
