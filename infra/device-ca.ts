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
import { CloudwatchEventRule } from '@cdktf/provider-aws/lib/cloudwatch-event-rule';
import { CloudwatchEventTarget } from '@cdktf/provider-aws/lib/cloudwatch-event-target';
import type { DeploymentConfig } from './config';
import {
  CA_KEY_WATCHED_ADMIN_EVENTS,
  CA_SIGNING_ALGORITHM,
  CA_SIGNING_MESSAGE_TYPE,
  caKeyPolicy,
  caSignerRoleArns,
  CaKeyPolicyInputs,
} from './ca-key-policy';

export { CA_SIGNING_ALGORITHM, CA_SIGNING_MESSAGE_TYPE };
export const CA_KEY_SPEC = 'ECC_NIST_P256';

/** The provisioning function's role name (infra/function.ts creates it; the key policy names it). */
export const functionRoleName = (config: DeploymentConfig) => `${config.appName}-function`;

/** The key policy's inputs for this deployment (the ARNs of the roles it names). */
export function caKeyPolicyInputs(
  config: DeploymentConfig,
  accountId: string,
  partition: string,
): CaKeyPolicyInputs {
  return {
    partition,
    accountId,
    functionRoleArn: `arn:${partition}:iam::${accountId}:role/${functionRoleName(config)}`,
    operatorRoleArns: config.caKeyAccess.operatorRoleArns,
    breakGlassRoleArns: config.caKeyAccess.breakGlassRoleArns,
  };
}

export interface DeviceCaKeyProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  readonly accountId: string;
  readonly partition: string;
  /** An earlier CA's key (caRetiredKmsKeyAliases); default: the current one (caKmsKeyAlias). */
  readonly retiredAlias?: string;
  /** Disable a retired key: only once the function signs with the current key (the full stack). */
  readonly disabled?: boolean;
}

/**
 * A CA key and its alias. The construct id comes from the alias: a new `caKmsKeyAlias` is a new
 * key (the first step of a CA rotation), and the old alias moves to `caRetiredKmsKeyAliases`,
 * which keeps the old key at its Terraform address: disabled in the full stack, never deleted
 * (prevent_destroy, and the plan check in infra/ops.ts). Part of both the bootstrap stack and the
 * full one, at the same construct path.
 */
export class DeviceCaKey extends Construct {
  readonly key: KmsKey;
  readonly alias: KmsAlias;

  static constructId(alias: string): string {
    return `device-ca-key-${createHash('sha256').update(alias).digest('hex').slice(0, 8)}`;
  }

  constructor(scope: Construct, props: DeviceCaKeyProps) {
    const aliasName = props.retiredAlias ?? props.config.caKmsKeyAlias;
    super(scope, DeviceCaKey.constructId(aliasName));
    const { config, provider } = props;
    this.key = new KmsKey(this, 'key', {
      provider,
      description: `${config.appName}: device CA signing key ${aliasName}`,
      customerMasterKeySpec: CA_KEY_SPEC,
      keyUsage: 'SIGN_VERIFY',
      // A deleted CA key can never sign again: 30 days (the maximum) to notice and cancel.
      deletionWindowInDays: 30,
      // KMS cannot rotate asymmetric keys automatically; a CA rotation is a new key and a new
      // CA certificate registered beside the old one (docs/deploy.md, "Rotate the device CA").
      enableKeyRotation: false,
      // Named principals only (infra/ca-key-policy.ts). KMS's lockout check stays on: whoever
      // creates the key or changes this policy must still be allowed to change it afterwards.
      policy: JSON.stringify(caKeyPolicy(caKeyPolicyInputs(config, props.accountId, props.partition))),
      // A retired key stays: certificates under its CA may still be valid (docs/deploy.md).
      isEnabled: !props.disabled,
      lifecycle: { preventDestroy: true },
    });
    this.alias = new KmsAlias(this, 'alias', {
      provider,
      name: aliasName,
      targetKeyId: this.key.keyId,
      lifecycle: { preventDestroy: true },
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
          Condition: {
            StringEquals: {
              'kms:SigningAlgorithm': CA_SIGNING_ALGORITHM,
              'kms:MessageType': CA_SIGNING_MESSAGE_TYPE,
            },
          },
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
            // Deleting one deactivates it first: every device under it goes offline in that region.
            lifecycle: { preventDestroy: true },
          }),
        );
      }
    }
  }
}

export interface CaKeyWatchProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  /** Every CA key of the deployment, current and retired. */
  readonly keyArns: readonly string[];
  readonly accountId: string;
  readonly partition: string;
  /** The home region's alarm topic. */
  readonly topicArn: string;
}

/**
 * CloudTrail events on the CA keys from a principal the key policy does not name, sent to the
 * alarm topic: a Sign by anyone but the function and the operators, and ScheduleKeyDeletion,
 * DisableKey or PutKeyPolicy by anyone but the break-glass roles. The key policy already refuses
 * those; this reports the attempt (CloudTrail records refused calls too) and anything the policy
 * lets through by mistake. Needs a CloudTrail trail recording management events, KMS included.
 */
export class CaKeyWatch extends Construct {
  readonly rules: CloudwatchEventRule[] = [];

  constructor(scope: Construct, id: string, props: CaKeyWatchProps) {
    super(scope, id);
    const inputs = caKeyPolicyInputs(props.config, props.accountId, props.partition);
    const watches = [
      {
        id: 'unexpected-signer',
        events: ['Sign'],
        allowed: caSignerRoleArns(inputs),
        what: 'a Sign with the device CA key by a principal other than the function and the CA operators',
      },
      {
        id: 'unexpected-administrator',
        events: [...CA_KEY_WATCHED_ADMIN_EVENTS],
        allowed: inputs.breakGlassRoleArns,
        what: 'a deletion, disabling or policy change of the device CA key by a non-break-glass principal',
      },
    ];
    for (const watch of watches) {
      const rule = new CloudwatchEventRule(this, watch.id, {
        provider: props.provider,
        name: `${props.config.appName}-ca-key-${watch.id}`,
        description: `Alarm: ${watch.what}`,
        eventPattern: JSON.stringify(caKeyEventPattern(props.keyArns, watch.events, watch.allowed)),
        // Sign is a read-only management event: EventBridge only sees those in this state.
        state: 'ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS',
      });
      new CloudwatchEventTarget(this, `${watch.id}-alarm`, {
        provider: props.provider,
        rule: rule.name,
        arn: props.topicArn,
      });
      this.rules.push(rule);
    }
  }
}

/**
 * An EventBridge pattern for CloudTrail events `eventNames` on `keyArns` by any principal that is
 * not one of the `allowed` roles: a role session whose issuer is another role, or anything that
 * is not a role session (the root user, IAM users, AWS services acting for someone). With no
 * allowed role, every such event matches.
 */
export function caKeyEventPattern(
  keyArns: readonly string[],
  eventNames: readonly string[],
  allowed: readonly string[],
): Record<string, unknown> {
  const detail: Record<string, unknown> = {
    eventName: [...eventNames],
    resources: { ARN: [...keyArns] },
  };
  if (allowed.length > 0) {
    detail.$or = [
      { userIdentity: { type: [{ 'anything-but': 'AssumedRole' }] } },
      { userIdentity: { sessionContext: { sessionIssuer: { arn: [{ 'anything-but': [...allowed] }] } } } },
    ];
  }
  return { source: ['aws.kms'], 'detail-type': ['AWS API Call via CloudTrail'], detail };
}
