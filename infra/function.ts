/**
 * The provisioning Lambda (its esbuild chunk folder as a TerraformAsset), its log group, its origin secret
 * and its least-privilege role.
 */
import { AssetType, ITerraformDependable, TerraformAsset } from 'cdktf';
import { Construct } from 'constructs';
import type { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { CloudwatchLogGroup } from '@cdktf/provider-aws/lib/cloudwatch-log-group';
import { IamRole } from '@cdktf/provider-aws/lib/iam-role';
import { IamRolePolicy } from '@cdktf/provider-aws/lib/iam-role-policy';
import { LambdaFunction } from '@cdktf/provider-aws/lib/lambda-function';
import type { DeploymentConfig } from './config';
import { functionEnvironment } from './function-environment';
import { ADMISSION_ACTIONS } from './admission';
import { RandomPassword } from './random-password';
import { CA_SIGNING_ALGORITHM, CA_SIGNING_MESSAGE_TYPE, functionRoleName } from './device-ca';
import { encryptionContextCondition } from './secrets';
import { answerSealCondition } from './answer-seal-key';
import { BUNDLE_HANDLER } from '../functions/bundle-layout';

export const FUNCTION_RUNTIME = 'nodejs22.x';
/** `index.handler` runs the package's index.mjs (ESM with code splitting, functions/build.ts). */
export const FUNCTION_HANDLER = BUNDLE_HANDLER;

/** IoT actions scoped to resource ARNs in each enabled region (AWS IoT developer guide, IAM table). */
export const IOT_THING_ACTIONS = [
  'iot:CreateThing',
  'iot:DeleteThing',
  'iot:DescribeThing',
  'iot:ListThingPrincipals',
  'iot:AttachThingPrincipal',
  'iot:DetachThingPrincipal',
] as const;
export const IOT_CERTIFICATE_ACTIONS = [
  'iot:UpdateCertificate',
  'iot:DeleteCertificate',
  'iot:DescribeCertificate',
  // The docs disagree on whether these two are authorized on the thing or the certificate ARN: both are granted.
  'iot:AttachThingPrincipal',
  'iot:DetachThingPrincipal',
  'iot:ListPrincipalThings',
  'iot:AttachPolicy',
  'iot:DetachPolicy',
  'iot:ListAttachedPolicies',
] as const;
// AttachPolicy/DetachPolicy are authorized on the target certificate; granting them on the one
// policy ARN as well covers the service authorization reference's reading. No GetPolicy or
// CreatePolicy, nor DescribeEndpoint below: the stack creates the policy and hands the function
// each region's endpoint (IOT_POLICY_MANAGED, IOT_ENDPOINTS), so it needs neither.
export const IOT_POLICY_ACTIONS = ['iot:AttachPolicy', 'iot:DetachPolicy'] as const;
/**
 * IoT actions that support no resource-level permission (Resource must be "*"): a certificate
 * being registered has no ARN before it exists. Limited to the enabled regions by an
 * aws:RequestedRegion condition instead. Certificates come from our own CA (RegisterCertificate);
 * CreateKeysAndCertificate and CreateCertificateFromCsr are not granted.
 */
export const IOT_UNSCOPABLE_ACTIONS = ['iot:RegisterCertificate'] as const;
export const REGISTRY_ACTIONS = ['dynamodb:GetItem', 'dynamodb:UpdateItem'] as const;

/** The function's execution role, made first: the KMS key policy names it. */
export function functionRole(scope: Construct, config: DeploymentConfig, provider: AwsProvider): IamRole {
  return new IamRole(scope, 'function-role', {
    provider,
    name: functionRoleName(config),
    assumeRolePolicy: JSON.stringify({
      Version: '2012-10-17',
      Statement: [
        { Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' }, Action: 'sts:AssumeRole' },
      ],
    }),
  });
}

export interface ProvisioningFunctionProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  readonly role: IamRole;
  readonly bundleDir: string;
  readonly fleetPublicKeyPem: string;
  readonly accountId: string;
  readonly partition: string;
  readonly tableArn: string;
  /** The admission schedules (infra/admission.ts). */
  readonly admissionTableArn: string;
  readonly kmsKeyArn: string;
  readonly ipstackKeyParameterArn: string;
  /** The device CA: the KMS key that signs device certificates, and the CA certificate's PEM. */
  readonly caKeyArn: string;
  readonly caCertificatePem: string;
  /** The symmetric key that seals generated device keys for answer recovery (answer-seal-key.ts). */
  readonly answerSealKeyArn: string;
  /** The CA's registrations: in place before the function issues under that CA (rotation). */
  readonly caRegistrations: readonly ITerraformDependable[];
  /** Region → its data endpoint (a Terraform reference, shortened to the account's prefix). */
  readonly iotEndpoints: Readonly<Record<string, string>>;
  /** The device policy in every region: in place before the function, which no longer checks it. */
  readonly devicePolicies: readonly ITerraformDependable[];
}

export class ProvisioningFunction extends Construct {
  readonly function: LambdaFunction;
  readonly logGroup: CloudwatchLogGroup;
  /**
   * What CloudFront sends in x-origin-verify; the function refuses requests without it. During a
   * rotation (originSecret.rotation) the function accepts the current and the next secret, and
   * CloudFront sends the next one from send-next on.
   */
  readonly originVerifySecret: string;

  constructor(scope: Construct, id: string, props: ProvisioningFunctionProps) {
    super(scope, id);
    const { config, provider } = props;
    const iotArn = (region: string, resource: string) =>
      `arn:${props.partition}:iot:${region}:${props.accountId}:${resource}`;

    const secrets = originSecrets(this, config);
    this.originVerifySecret = config.originSecret.rotation === 'send-next' ? secrets.next! : secrets.current;

    this.logGroup = new CloudwatchLogGroup(this, 'log-group', {
      provider,
      name: `/aws/lambda/${config.appName}`,
      retentionInDays: config.function.logRetentionDays,
    });

    const statements = [
      {
        Sid: 'WriteOwnLogs',
        Effect: 'Allow',
        Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        Resource: `${this.logGroup.arn}:*`,
      },
      { Sid: 'Registry', Effect: 'Allow', Action: [...REGISTRY_ACTIONS], Resource: props.tableArn },
      {
        Sid: 'Admission',
        Effect: 'Allow',
        Action: [...ADMISSION_ACTIONS],
        Resource: props.admissionTableArn,
      },
      {
        Sid: 'DecryptIpstackKey',
        Effect: 'Allow',
        Action: 'kms:Decrypt',
        Resource: props.kmsKeyArn,
        Condition: encryptionContextCondition(),
      },
      {
        Sid: 'SignDeviceCertificates',
        Effect: 'Allow',
        Action: 'kms:Sign',
        Resource: props.caKeyArn,
        Condition: {
          StringEquals: {
            'kms:SigningAlgorithm': CA_SIGNING_ALGORITHM,
            'kms:MessageType': CA_SIGNING_MESSAGE_TYPE,
          },
        },
      },
      {
        Sid: 'SealDeviceKeysForAnswerRecovery',
        Effect: 'Allow',
        Action: ['kms:Encrypt', 'kms:Decrypt'],
        Resource: props.answerSealKeyArn,
        Condition: answerSealCondition(),
      },
      {
        Sid: 'ReadIpstackKeyCiphertext',
        Effect: 'Allow',
        Action: 'ssm:GetParameter',
        Resource: props.ipstackKeyParameterArn,
      },
      {
        Sid: 'IotThings',
        Effect: 'Allow',
        Action: [...IOT_THING_ACTIONS],
        Resource: config.iotRegions.map((region) => iotArn(region, 'thing/*')),
      },
      {
        Sid: 'IotCertificates',
        Effect: 'Allow',
        Action: [...IOT_CERTIFICATE_ACTIONS],
        Resource: config.iotRegions.map((region) => iotArn(region, 'cert/*')),
      },
      {
        Sid: 'IotDevicePolicy',
        Effect: 'Allow',
        Action: [...IOT_POLICY_ACTIONS],
        Resource: config.iotRegions.map((region) => iotArn(region, `policy/${config.iotPolicyName}`)),
      },
      {
        Sid: 'IotUnscopableActions',
        Effect: 'Allow',
        Action: [...IOT_UNSCOPABLE_ACTIONS],
        Resource: '*',
        Condition: { StringEquals: { 'aws:RequestedRegion': [...config.iotRegions] } },
      },
    ];
    const policy = new IamRolePolicy(this, 'policy', {
      provider,
      name: 'provisioning',
      role: props.role.id,
      policy: JSON.stringify({ Version: '2012-10-17', Statement: statements }),
    });

    const asset = new TerraformAsset(this, 'bundle', { path: props.bundleDir, type: AssetType.ARCHIVE });
    this.function = new LambdaFunction(this, 'function', {
      provider,
      functionName: config.appName,
      description: 'Global device provisioning: one URL, nearest AWS IoT Core region',
      role: props.role.arn,
      runtime: FUNCTION_RUNTIME,
      architectures: ['arm64'],
      handler: FUNCTION_HANDLER,
      filename: asset.path,
      sourceCodeHash: asset.assetHash,
      memorySize: config.function.memoryMb,
      timeout: config.function.timeoutSeconds,
      reservedConcurrentExecutions: config.function.reservedConcurrency ?? -1,
      environment: {
        variables: functionEnvironment(config, {
          fleetPublicKeyPem: props.fleetPublicKeyPem,
          originVerifySecret: secrets.current,
          originVerifySecretNext: secrets.next,
          kmsKeyId: props.kmsKeyArn,
          ca: { kmsKeyId: props.caKeyArn, certificatePem: props.caCertificatePem },
          iot: { endpoints: props.iotEndpoints, policyManaged: true },
          answerSealKeyId: props.answerSealKeyArn,
        }),
      },
      // The log group must exist first or Lambda creates it without retention.
      dependsOn: [this.logGroup, policy, ...props.caRegistrations, ...props.devicePolicies],
    });
  }
}

/**
 * The origin secret of each generation is its own random_password. Generation 1 keeps the id it
 * had before rotations existed, so upgrading changes no secret. During a rotation the next
 * generation exists beside the current one; finishing it (generation + 1) removes the old one.
 */
function originSecrets(scope: Construct, config: DeploymentConfig): { current: string; next?: string } {
  const secret = (generation: number) =>
    new RandomPassword(
      scope,
      generation === 1 ? 'origin-verify-secret' : `origin-verify-secret-${generation}`,
      {
        length: 48,
        special: false,
      },
    ).result;
  const { generation, rotation } = config.originSecret;
  return { current: secret(generation), next: rotation === 'none' ? undefined : secret(generation + 1) };
}
