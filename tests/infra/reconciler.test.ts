/**
 * The reconciler in the synthesized Terraform: the scheduled function, its schedule and the
 * scheduler's role, its least-privilege IAM, its environment (the contract with
 * functions/reconciler/config.ts) and the alarms on what it finds.
 */
import { RECONCILER_ENVIRONMENT } from '../../functions/reconciler/config';
import { loadDeploymentConfig } from '../../infra/config';
import { reconcilerEnvironment, reconcilerServiceName } from '../../infra/reconciler-environment';
import { all, byId, list, only, statements, synthesize, TEST_CA_CERTIFICATE } from './synth';

const config = loadDeploymentConfig();
const { json } = synthesize();
const reconciler = byId(json, 'aws_lambda_function', 'reconciler');
const environment = (reconciler.environment as { variables: Record<string, string> }).variables;
const reconcilerArn = /^\$\{aws_lambda_function\.reconciler_function_[0-9A-F]+\.arn\}$/;

describe('reconciler function', () => {
  it('runs its own bundle on Node.js 22, arm64, with the configured timeout and memory', () => {
    expect(reconciler).toMatchObject({
      function_name: `${config.appName}-reconciler`,
      runtime: 'nodejs22.x',
      architectures: ['arm64'],
      handler: 'index.handler',
      timeout: config.reconciler.timeoutSeconds,
      memory_size: config.reconciler.memoryMb,
    });
    expect(reconciler.filename).toMatch(/^assets\/.+\.zip$/);
    expect(reconciler.role).toMatch(/aws_iam_role\.reconciler_role_/);
  });

  it('keeps its logs for the configured retention', () => {
    const group = all(json, 'aws_cloudwatch_log_group').find(
      (candidate) => candidate.name === `/aws/lambda/${config.appName}-reconciler`,
    );
    expect(group?.retention_in_days).toBe(config.function.logRetentionDays);
  });

  it('is not retried by Lambda after a failed run: the next scheduled run starts over', () => {
    expect(only(json, 'aws_lambda_function_event_invoke_config')).toMatchObject({
      maximum_retry_attempts: 0,
    });
  });
});

describe('reconciler environment', () => {
  it('sets only variables the reconciler reads, and every required one', () => {
    const known = Object.keys(RECONCILER_ENVIRONMENT);
    for (const name of Object.keys(environment)) expect(known).toContain(name);
    for (const [name, need] of Object.entries(RECONCILER_ENVIRONMENT)) {
      if (need === 'required') expect(environment[name]).toBeTruthy();
    }
  });

  it('sets exactly what reconcilerEnvironment() describes (the set make reconcile shares)', () => {
    const expected = reconcilerEnvironment(config, { caCertificatePem: TEST_CA_CERTIFICATE });
    expect(environment).toEqual(expected);
  });

  it('shares the region list, the lease and the CA with the provisioning function', () => {
    const fn = (
      byId(json, 'aws_lambda_function', 'function').environment as { variables: Record<string, string> }
    ).variables;
    expect(environment.IOT_REGIONS).toBe(config.iotRegions.join(','));
    expect(environment.LEASE_SECONDS).toBe(fn.LEASE_SECONDS);
    expect(environment.CA_CERTIFICATE_PEM).toBe(fn.CA_CERTIFICATE_PEM);
    expect(environment.TABLE_NAME).toBe(fn.TABLE_NAME);
    expect(environment.RECONCILE_GRACE_SECONDS).toBe(String(config.reconciler.graceSeconds));
  });
});

describe('reconciler schedule', () => {
  const schedule = only(json, 'aws_scheduler_schedule') as Record<string, unknown> & {
    target: { arn: string; role_arn: string };
  };

  it('invokes the reconciler on the configured schedule with the scheduler role', () => {
    expect(schedule).toMatchObject({
      schedule_expression: config.reconciler.schedule,
      flexible_time_window: { mode: 'OFF' },
    });
    expect(schedule.target.arn).toMatch(reconcilerArn);
    expect(schedule.target.role_arn).toMatch(/aws_iam_role\.reconciler_scheduler-role_.+\.arn/);
  });

  it('gives the scheduler a role only EventBridge Scheduler of this account can assume', () => {
    const trust = statements(byId(json, 'aws_iam_role', 'reconciler_scheduler-role').assume_role_policy);
    expect(trust).toEqual([
      expect.objectContaining({
        Principal: { Service: 'scheduler.amazonaws.com' },
        Action: 'sts:AssumeRole',
        Condition: {
          StringEquals: { 'aws:SourceAccount': expect.stringContaining('data.aws_caller_identity') },
        },
      }),
    ]);
  });

  it('lets that role invoke the reconciler and nothing else', () => {
    const policy = statements(byId(json, 'aws_iam_role_policy', 'reconciler_scheduler-policy').policy);
    expect(policy).toHaveLength(1);
    expect(policy[0]).toMatchObject({ Effect: 'Allow', Action: 'lambda:InvokeFunction' });
    expect(list(policy[0]!.Resource)).toEqual([expect.stringMatching(reconcilerArn)]);
  });
});

describe('reconciler IAM', () => {
  const policy = statements(byId(json, 'aws_iam_role_policy', 'reconciler_policy').policy);
  const actions = policy.flatMap((statement) => list(statement.Action));

  it('reads and updates the registry table only, and can scan it', () => {
    const dynamo = policy.filter((statement) =>
      list(statement.Action).some((action) => action.startsWith('dynamodb:')),
    );
    expect(dynamo).toHaveLength(1);
    expect(list(dynamo[0]!.Action).sort()).toEqual([
      'dynamodb:GetItem',
      'dynamodb:Scan',
      'dynamodb:UpdateItem',
    ]);
    expect(dynamo[0]!.Resource).toMatch(/^\$\{aws_dynamodb_table\..+\.arn\}$/);
  });

  it('has the IoT actions it needs to find and retire what failed requests left', () => {
    expect(actions).toEqual(
      expect.arrayContaining([
        'iot:ListCertificatesByCA',
        'iot:ListCACertificates',
        'iot:DescribeCertificate',
        'iot:ListPrincipalThings',
        'iot:ListThingPrincipals',
        'iot:DetachThingPrincipal',
        'iot:DetachPolicy',
        'iot:UpdateCertificate',
        'iot:DeleteCertificate',
        'iot:DescribeThing',
        'iot:DeleteThing',
        'iot:ListThings',
      ]),
    );
  });

  it('cannot create, register or sign anything', () => {
    for (const action of actions) {
      expect(action).not.toMatch(/^iot:(Create|Register|Attach)|^kms:|\*/);
    }
  });

  it('scopes IoT resources to things, certificates and the one policy in the enabled regions', () => {
    const iotResources = policy
      .filter((statement) => list(statement.Action).some((action) => action.startsWith('iot:')))
      .flatMap((statement) => list(statement.Resource))
      .filter((resource) => resource !== '*');
    expect(new Set(iotResources.map((arn) => arn.split(':')[3]))).toEqual(new Set(config.iotRegions));
    for (const arn of iotResources) {
      expect(arn).toMatch(new RegExp(`:(thing/\\*|cert/\\*|policy/${config.iotPolicyName})$`));
    }
  });

  it('uses "*" only for the two list actions AWS cannot scope, limited to the enabled regions', () => {
    const unscoped = policy.filter((statement) => list(statement.Resource).includes('*'));
    expect(unscoped).toHaveLength(1);
    expect(list(unscoped[0]!.Action).sort()).toEqual([
      'iot:ListCACertificates',
      'iot:ListCertificatesByCA',
      'iot:ListThings',
    ]);
    expect(unscoped[0]!.Condition).toEqual({ StringEquals: { 'aws:RequestedRegion': config.iotRegions } });
  });
});

describe('alarms on what failed requests left behind', () => {
  const alarms = all(json, 'aws_cloudwatch_metric_alarm');
  const named = (suffix: string) =>
    alarms.find((alarm) => alarm.alarm_name === `${config.appName}-${suffix}`);

  it('alarms on the first repair and the first failure the reconciler reports, per 15 minutes', () => {
    for (const [suffix, metric] of [
      ['reconciler-fixed', 'ReconcilerFixed'],
      ['reconciler-failed', 'ReconcilerFailed'],
    ] as const) {
      expect(named(suffix)).toMatchObject({
        namespace: config.metricsNamespace,
        metric_name: metric,
        dimensions: { service: reconcilerServiceName(config) },
        statistic: 'Sum',
        period: 900,
        comparison_operator: 'GreaterThanThreshold',
        threshold: 0,
        treat_missing_data: 'notBreaching',
      });
    }
    expect(environment.POWERTOOLS_SERVICE_NAME).toBe(reconcilerServiceName(config));
  });

  it('alarms on the first undo the provisioning function could not finish', () => {
    expect(named('rollback-incomplete')).toMatchObject({
      namespace: config.metricsNamespace,
      metric_name: 'RollbackIncomplete',
      dimensions: { service: config.appName },
      comparison_operator: 'GreaterThanThreshold',
      threshold: 0,
    });
  });

  it('alarms when a reconciler run fails', () => {
    const errors = named('reconciler-errors') as { dimensions: { FunctionName: string } };
    expect(errors).toMatchObject({ namespace: 'AWS/Lambda', metric_name: 'Errors', threshold: 0 });
    expect(errors.dimensions.FunctionName).toMatch(
      /aws_lambda_function\.reconciler_function_.+\.function_name/,
    );
  });

  it('notifies the alarm topic like every other alarm', () => {
    const withEmail = synthesize({ alarms: { ...config.alarms, alarmEmail: 'oncall@example.com' } }).json;
    for (const suffix of [
      'reconciler-fixed',
      'reconciler-failed',
      'reconciler-errors',
      'rollback-incomplete',
    ]) {
      const alarm = all(withEmail, 'aws_cloudwatch_metric_alarm').find(
        (candidate) => candidate.alarm_name === `${config.appName}-${suffix}`,
      );
      expect(alarm?.alarm_actions).toEqual([expect.stringContaining('aws_sns_topic.')]);
    }
  });
});
