/**
 * The reconciler: a scheduled Lambda that finishes what a failed or killed provisioning left
 * behind (stale claims, certificates of our CA that no record references, things with two live
 * certificates, records pointing at missing certificates). EventBridge Scheduler invokes it with
 * its own role, allowed to invoke this one function and nothing else.
 *
 * It can delete certificates and things, so its IoT permissions are scoped like the provisioning
 * function's: certificate, thing and policy ARNs of the enabled regions; "*" only for the list
 * actions AWS cannot scope, limited to the enabled regions.
 */
import { AssetType, ITerraformDependable, TerraformAsset } from 'cdktf';
import { Construct } from 'constructs';
import type { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { CloudwatchLogGroup } from '@cdktf/provider-aws/lib/cloudwatch-log-group';
import { IamRole } from '@cdktf/provider-aws/lib/iam-role';
import { IamRolePolicy } from '@cdktf/provider-aws/lib/iam-role-policy';
import { LambdaFunction } from '@cdktf/provider-aws/lib/lambda-function';
import { LambdaFunctionEventInvokeConfig } from '@cdktf/provider-aws/lib/lambda-function-event-invoke-config';
import { SchedulerSchedule } from '@cdktf/provider-aws/lib/scheduler-schedule';
import type { DeploymentConfig } from './config';
import { FUNCTION_HANDLER, FUNCTION_RUNTIME } from './function';
import { reconcilerEnvironment } from './reconciler-environment';

export const RECONCILER_REGISTRY_ACTIONS = [
  'dynamodb:Scan',
  'dynamodb:GetItem',
  'dynamodb:UpdateItem',
] as const;
export const RECONCILER_THING_ACTIONS = [
  'iot:DescribeThing',
  'iot:ListThingPrincipals',
  'iot:DetachThingPrincipal',
  'iot:DeleteThing',
] as const;
export const RECONCILER_CERTIFICATE_ACTIONS = [
  'iot:DescribeCertificate',
  'iot:ListPrincipalThings',
  // Authorized on the thing or the certificate depending on which page of the docs you read.
  'iot:DetachThingPrincipal',
  'iot:DetachPolicy',
  'iot:UpdateCertificate',
  'iot:DeleteCertificate',
] as const;
export const RECONCILER_POLICY_ACTIONS = ['iot:DetachPolicy'] as const;
/** List actions with no resource-level permission: Resource "*", limited to the enabled regions. */
export const RECONCILER_UNSCOPABLE_ACTIONS = [
  'iot:ListCACertificates',
  'iot:ListCertificatesByCA',
  // The sweep of empty things of ours (reconcile.ts, step 5).
  'iot:ListThings',
] as const;

export interface ReconcilerProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  readonly bundleDir: string;
  readonly accountId: string;
  readonly partition: string;
  readonly tableArn: string;
  readonly caCertificatePem: string;
  /** The CA's registrations: in place before the reconciler lists certificates under that CA. */
  readonly caRegistrations: readonly ITerraformDependable[];
}

export class Reconciler extends Construct {
  readonly function: LambdaFunction;
  readonly logGroup: CloudwatchLogGroup;
  readonly schedule: SchedulerSchedule;
  readonly schedulerRole: IamRole;

  constructor(scope: Construct, id: string, props: ReconcilerProps) {
    super(scope, id);
    const { config, provider } = props;
    const name = `${config.appName}-reconciler`;
    const iotArn = (region: string, resource: string) =>
      `arn:${props.partition}:iot:${region}:${props.accountId}:${resource}`;
    const inEnabledRegions = (resource: string) =>
      config.iotRegions.map((region) => iotArn(region, resource));

    this.logGroup = new CloudwatchLogGroup(this, 'log-group', {
      provider,
      name: `/aws/lambda/${name}`,
      retentionInDays: config.function.logRetentionDays,
    });

    const role = new IamRole(this, 'role', {
      provider,
      name,
      assumeRolePolicy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          { Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' }, Action: 'sts:AssumeRole' },
        ],
      }),
    });
    const statements = [
      {
        Sid: 'WriteOwnLogs',
        Effect: 'Allow',
        Action: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        Resource: `${this.logGroup.arn}:*`,
      },
      {
        Sid: 'Registry',
        Effect: 'Allow',
        Action: [...RECONCILER_REGISTRY_ACTIONS],
        Resource: props.tableArn,
      },
      {
        Sid: 'IotThings',
        Effect: 'Allow',
        Action: [...RECONCILER_THING_ACTIONS],
        Resource: inEnabledRegions('thing/*'),
      },
      {
        Sid: 'IotCertificates',
        Effect: 'Allow',
        Action: [...RECONCILER_CERTIFICATE_ACTIONS],
        Resource: inEnabledRegions('cert/*'),
      },
      {
        Sid: 'IotDevicePolicy',
        Effect: 'Allow',
        Action: [...RECONCILER_POLICY_ACTIONS],
        Resource: inEnabledRegions(`policy/${config.iotPolicyName}`),
      },
      {
        Sid: 'IotUnscopableActions',
        Effect: 'Allow',
        Action: [...RECONCILER_UNSCOPABLE_ACTIONS],
        Resource: '*',
        Condition: { StringEquals: { 'aws:RequestedRegion': [...config.iotRegions] } },
      },
    ];
    const policy = new IamRolePolicy(this, 'policy', {
      provider,
      name: 'reconciler',
      role: role.id,
      policy: JSON.stringify({ Version: '2012-10-17', Statement: statements }),
    });

    const asset = new TerraformAsset(this, 'bundle', { path: props.bundleDir, type: AssetType.ARCHIVE });
    this.function = new LambdaFunction(this, 'function', {
      provider,
      functionName: name,
      description: 'Global device provisioning: finishes what failed or killed requests left behind',
      role: role.arn,
      runtime: FUNCTION_RUNTIME,
      architectures: ['arm64'],
      handler: FUNCTION_HANDLER,
      filename: asset.path,
      sourceCodeHash: asset.assetHash,
      memorySize: config.reconciler.memoryMb,
      timeout: config.reconciler.timeoutSeconds,
      environment: {
        variables: reconcilerEnvironment(config, { caCertificatePem: props.caCertificatePem }),
      },
      // The log group must exist first or Lambda creates it without retention.
      dependsOn: [this.logGroup, policy, ...props.caRegistrations],
    });
    // A failed run is not retried: the next scheduled run starts over, and the errors alarm
    // tells the operator. Runs may overlap when one is slow; every fix is a conditional write.
    new LambdaFunctionEventInvokeConfig(this, 'invoke-config', {
      provider,
      functionName: this.function.functionName,
      maximumRetryAttempts: 0,
    });

    this.schedulerRole = new IamRole(this, 'scheduler-role', {
      provider,
      name: `${name}-scheduler`,
      assumeRolePolicy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            Effect: 'Allow',
            Principal: { Service: 'scheduler.amazonaws.com' },
            Action: 'sts:AssumeRole',
            // Only schedules of this account may use the role (confused deputy).
            Condition: { StringEquals: { 'aws:SourceAccount': props.accountId } },
          },
        ],
      }),
    });
    new IamRolePolicy(this, 'scheduler-policy', {
      provider,
      name: 'invoke-reconciler',
      role: this.schedulerRole.id,
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            Sid: 'InvokeReconciler',
            Effect: 'Allow',
            Action: 'lambda:InvokeFunction',
            Resource: this.function.arn,
          },
        ],
      }),
    });
    this.schedule = new SchedulerSchedule(this, 'schedule', {
      provider,
      name,
      description: 'Runs the provisioning reconciler',
      scheduleExpression: config.reconciler.schedule,
      flexibleTimeWindow: { mode: 'OFF' },
      target: {
        arn: this.function.arn,
        roleArn: this.schedulerRole.arn,
        // Delivery retries only (Lambda throttled or unavailable); a late run is still useful
        // within one schedule period.
        retryPolicy: { maximumRetryAttempts: 3, maximumEventAgeInSeconds: 600 },
      },
    });
  }
}
