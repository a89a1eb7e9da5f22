/**
 * The deployment's own device CA.
 *   - Its private key is an asymmetric KMS key (ECC_NIST_P256, SIGN_VERIFY) in the home region:
 *     it never leaves KMS, so it is never in Terraform state or on anyone's disk.
 *   - Its certificate is made once by `make init-ca` (signed through KMS, committed as PEM) and
 *     registered here in every enabled IoT region, SNI_ONLY, ACTIVE, without auto-registration:
 *     device certificates are registered one by one by the provisioning function.
 *   - Certificates of a previous CA (rotation) stay registered until every device has moved on.
 */
import { createHash } from 'node:crypto';
import { Construct } from 'constructs';
import type { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { IamPolicy } from '@cdktf/provider-aws/lib/iam-policy';
import { IotCaCertificate } from '@cdktf/provider-aws/lib/iot-ca-certificate';
import { KmsAlias } from '@cdktf/provider-aws/lib/kms-alias';
import { KmsKey } from '@cdktf/provider-aws/lib/kms-key';
import type { DeploymentConfig } from './config';

/** What the CA key signs with; the key policy and IAM allow nothing else. */
export const CA_SIGNING_ALGORITHM = 'ECDSA_SHA_256';
export const CA_KEY_SPEC = 'ECC_NIST_P256';

export interface DeviceCaKeyProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  readonly accountId: string;
  readonly partition: string;
}

/**
 * The CA key and its alias. The construct id comes from the alias: a new `caKmsKeyAlias` is a new
 * key (the first step of a CA rotation), and the old key is scheduled for deletion only when the
 * full stack, whose function signs with the new key, is deployed. Part of both the bootstrap
 * stack and the full one, at the same construct path.
 */
export class DeviceCaKey extends Construct {
  readonly key: KmsKey;
  readonly alias: KmsAlias;

  static constructId(config: DeploymentConfig): string {
    return `device-ca-key-${createHash('sha256').update(config.caKmsKeyAlias).digest('hex').slice(0, 8)}`;
  }

  constructor(scope: Construct, props: DeviceCaKeyProps) {
    super(scope, DeviceCaKey.constructId(props.config));
    const { config, provider } = props;
    this.key = new KmsKey(this, 'key', {
      provider,
      description: `${config.appName}: device CA signing key ${config.caKmsKeyAlias}`,
      customerMasterKeySpec: CA_KEY_SPEC,
      keyUsage: 'SIGN_VERIFY',
      // A deleted CA key can never sign again: 30 days (the maximum) to notice and cancel.
      deletionWindowInDays: 30,
      // KMS cannot rotate asymmetric keys automatically; a CA rotation is a new key and a new
      // CA certificate registered beside the old one (docs/deploy.md, "Rotate the device CA").
      enableKeyRotation: false,
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            // Delegates to IAM, like the ipstack key: the function role's policy grants kms:Sign,
            // the operator policy grants what `make init-ca` needs. The key policy names no role,
            // so the key can be created before the function exists (first deploy, phase 1).
            Sid: 'AccountAdministersThroughIam',
            Effect: 'Allow',
            Principal: { AWS: `arn:${props.partition}:iam::${props.accountId}:root` },
            Action: 'kms:*',
            Resource: '*',
          },
        ],
      }),
    });
    this.alias = new KmsAlias(this, 'alias', {
      provider,
      name: config.caKmsKeyAlias,
      targetKeyId: this.key.keyId,
    });
  }
}

/** Managed policy for the operators who run `make init-ca`: read the public key, sign with it. */
export function caOperatorPolicy(
  scope: Construct,
  config: DeploymentConfig,
  provider: AwsProvider,
  keyArn: string,
): IamPolicy {
  return new IamPolicy(scope, 'device-ca-operator-policy', {
    provider,
    name: `${config.appName}-device-ca-operator`,
    description: 'Lets an operator run make init-ca: read the CA public key, sign the CA certificate',
    policy: JSON.stringify({
      Version: '2012-10-17',
      Statement: [
        {
          Sid: 'ReadCaPublicKey',
          Effect: 'Allow',
          Action: ['kms:DescribeKey', 'kms:GetPublicKey'],
          Resource: keyArn,
        },
        {
          Sid: 'SignCaCertificate',
          Effect: 'Allow',
          Action: 'kms:Sign',
          Resource: keyArn,
          Condition: { StringEquals: { 'kms:SigningAlgorithm': CA_SIGNING_ALGORITHM } },
        },
      ],
    }),
  });
}

export interface CaCertificateToRegister {
  /** SHA-256 of the DER (AWS IoT's caCertificateId): names the resource, so a certificate keeps
   * its Terraform address when it moves from caCertificateFile to caPreviousCertificates. */
  readonly id: string;
  readonly pem: string;
  readonly active: boolean;
}

export interface DeviceCaRegistrationsProps {
  readonly config: DeploymentConfig;
  readonly providers: ReadonlyMap<string, AwsProvider>;
  readonly certificates: readonly CaCertificateToRegister[];
}

/** Every CA certificate in every enabled IoT region. */
export class DeviceCaRegistrations extends Construct {
  readonly registrations: IotCaCertificate[] = [];

  constructor(scope: Construct, id: string, props: DeviceCaRegistrationsProps) {
    super(scope, id);
    for (const region of props.config.iotRegions) {
      for (const certificate of props.certificates) {
        this.registrations.push(
          new IotCaCertificate(this, `${region}-${certificate.id.slice(0, 16)}`, {
            provider: props.providers.get(region),
            caCertificatePem: certificate.pem,
            // No verification certificate (that would need a second signature by the CA key);
            // devices must send SNI, which every current TLS stack does.
            certificateMode: 'SNI_ONLY',
            active: certificate.active,
            allowAutoRegistration: false,
          }),
        );
      }
    }
  }
}
