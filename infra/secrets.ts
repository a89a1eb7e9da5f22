/**
 * Where the ipstack access key lives: only as KMS ciphertext (base64 CiphertextBlob) in an SSM
 * String parameter. Terraform creates the parameter holding IPSTACK_KEY_UNSET and never looks at
 * its value again (ignore_changes), so `make rotate-ipstack-key` can overwrite it without drift
 * and the plaintext never reaches Terraform state. (No aws_kms_ciphertext: its plaintext argument
 * is stored in state.)
 */
import { Construct } from 'constructs';
import type { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { IamPolicy } from '@cdktf/provider-aws/lib/iam-policy';
import { KmsAlias } from '@cdktf/provider-aws/lib/kms-alias';
import { KmsKey } from '@cdktf/provider-aws/lib/kms-key';
import { SsmParameter } from '@cdktf/provider-aws/lib/ssm-parameter';
import { IPSTACK_KEY_ENCRYPTION_CONTEXT, IPSTACK_KEY_UNSET } from '../functions/provisioning/config';
import type { DeploymentConfig } from './config';

/** `kms:EncryptionContext:<key>` conditions matching IPSTACK_KEY_ENCRYPTION_CONTEXT exactly. */
export function encryptionContextCondition(): Record<string, Record<string, string>> {
  const values: Record<string, string> = {};
  for (const [key, value] of Object.entries(IPSTACK_KEY_ENCRYPTION_CONTEXT)) {
    values[`kms:EncryptionContext:${key}`] = value;
  }
  return { StringEquals: values };
}

export interface IpstackKeyStoreProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  readonly accountId: string;
  readonly partition: string;
  readonly functionRoleArn: string;
}

export class IpstackKeyStore extends Construct {
  readonly key: KmsKey;
  readonly alias: KmsAlias;
  readonly parameter: SsmParameter;
  /** Managed policy for the security engineers' role: encrypt, verify and store a new key. */
  readonly rotatorPolicy: IamPolicy;

  constructor(scope: Construct, id: string, props: IpstackKeyStoreProps) {
    super(scope, id);
    const { config, provider } = props;
    const accountRoot = `arn:${props.partition}:iam::${props.accountId}:root`;

    this.key = new KmsKey(this, 'key', {
      provider,
      description: `${config.appName}: encrypts the ipstack access key`,
      enableKeyRotation: true,
      deletionWindowInDays: 30,
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            // Delegates to IAM: administrators and the rotate operators get access through IAM
            // policies of the account (see ipstack_key_rotator_policy_arn). In a key policy,
            // Resource "*" means this key.
            Sid: 'AccountAdministersThroughIam',
            Effect: 'Allow',
            Principal: { AWS: accountRoot },
            Action: 'kms:*',
            Resource: '*',
          },
          {
            Sid: 'FunctionDecryptsIpstackKey',
            Effect: 'Allow',
            Principal: { AWS: props.functionRoleArn },
            Action: 'kms:Decrypt',
            Resource: '*',
            Condition: encryptionContextCondition(),
          },
        ],
      }),
    });
    this.alias = new KmsAlias(this, 'alias', {
      provider,
      name: config.kmsKeyAlias,
      targetKeyId: this.key.keyId,
    });

    this.parameter = new SsmParameter(this, 'parameter', {
      provider,
      name: config.ipstackKeyParameter,
      description: 'ipstack access key, KMS ciphertext (base64); set with make rotate-ipstack-key',
      type: 'String',
      value: IPSTACK_KEY_UNSET,
      lifecycle: { ignoreChanges: ['value'] },
    });

    this.rotatorPolicy = new IamPolicy(this, 'rotator-policy', {
      provider,
      name: `${config.appName}-ipstack-key-rotator`,
      description: 'Lets a security engineer run make rotate-ipstack-key',
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            Sid: 'EncryptAndVerifyIpstackKey',
            Effect: 'Allow',
            Action: ['kms:Encrypt', 'kms:Decrypt'],
            Resource: this.key.arn,
            Condition: encryptionContextCondition(),
          },
          { Sid: 'ResolveKeyAlias', Effect: 'Allow', Action: 'kms:DescribeKey', Resource: this.key.arn },
          {
            Sid: 'StoreIpstackKeyCiphertext',
            Effect: 'Allow',
            Action: ['ssm:GetParameter', 'ssm:PutParameter'],
            Resource: this.parameter.arn,
          },
        ],
      }),
    });
  }
}
