import { readFileSync } from 'node:fs';
import {
  apiThrottle,
  DEFAULT_DEPLOYMENT_FILE,
  loadDeploymentConfig,
  parseDeploymentConfig,
} from '../../infra/config';
import { functionEnvironment } from '../../infra/function-environment';
import { checkPlan } from '../../infra/plan-check';
import { loadConfig } from '../../functions/provisioning/config';
import { AWS_DEFAULT_RATES } from '../../functions/provisioning/admission-budget';
import { all, byId, statements, synthesize, TEST_CA_CERTIFICATE, TEST_FLEET_PUBLIC_KEY } from './synth';

const deployment = JSON.parse(readFileSync(DEFAULT_DEPLOYMENT_FILE, 'utf8')) as Record<string, unknown>;
const config = loadDeploymentConfig();
const admissionWith = (changes: Record<string, unknown>) =>
  parseDeploymentConfig(
    { ...deployment, admission: { ...(deployment.admission as object), ...changes } },
    'test',
  );

describe('admission budgets in deployment.json', () => {
  it('start from AWS defaults', () => {
    expect(config.admission.rates).toEqual(AWS_DEFAULT_RATES);
  });

  it.each([
    [
      { rates: { RegisterCertificate: -10 } },
      'admission.rates.RegisterCertificate: expected a positive number',
    ],
    [{ rates: { RegisterCert: 10 } }, 'admission.rates.RegisterCert: unknown API'],
    [
      { regionRates: { 'us-west-1': { CreateThing: 100 } } },
      'admission.regionRates.us-west-1: not an enabled region',
    ],
    [{ whenUnavailable: 'maybe' }, 'admission.whenUnavailable'],
    [
      { spillOver: { afterWaitSeconds: -60, maxExtraKm: 1500 } },
      'admission.spillOver.afterWaitSeconds: expected a positive number',
    ],
    [{ spillOver: { afterWaitSeconds: 60, maxExtraKm: 'far' } }, 'admission.spillOver.maxExtraKm'],
    [
      { spillOver: { afterWaitSeconds: 60, maxExtraKm: 1500, to: 'x' } },
      'admission.spillOver.to: unknown field',
    ],
  ])('fail synth naming the setting: %j', (change, message) => {
    expect(() => admissionWith(change)).toThrow(message);
  });

  it('reach the function, which reads them back per region', () => {
    const raised = admissionWith({ regionRates: { 'eu-central-1': { RegisterCertificate: 40 } } });
    const environment = functionEnvironment(raised, {
      fleetPublicKeyPem: TEST_FLEET_PUBLIC_KEY,
      originVerifySecret: 'a-long-enough-secret',
      kmsKeyId: 'key',
      ca: { kmsKeyId: 'arn:aws:kms:us-east-2:123456789012:key/ca', certificatePem: TEST_CA_CERTIFICATE },
    });
    const function_ = loadConfig(environment as NodeJS.ProcessEnv);
    expect(function_.admission?.tableName).toBe(config.admission.tableName);
    expect(function_.admission?.rates['eu-central-1']?.RegisterCertificate).toBe(40);
    expect(function_.admission?.rates['us-east-2']?.RegisterCertificate).toBe(10);
  });

  it('keep spill-over off by default, and hand it to the function when set', () => {
    expect(config.admission.spillOver).toBeNull();
    const inputs = {
      fleetPublicKeyPem: TEST_FLEET_PUBLIC_KEY,
      originVerifySecret: 'a-long-enough-secret',
      kmsKeyId: 'key',
      ca: { kmsKeyId: 'arn:aws:kms:us-east-2:123456789012:key/ca', certificatePem: TEST_CA_CERTIFICATE },
    };
    const off = loadConfig(functionEnvironment(config, inputs) as NodeJS.ProcessEnv);
    expect(off.admission?.spillOver).toBeUndefined();
    const on = admissionWith({ spillOver: { afterWaitSeconds: 60, maxExtraKm: 1500 } });
    expect(loadConfig(functionEnvironment(on, inputs) as NodeJS.ProcessEnv).admission?.spillOver).toEqual({
      afterWaitMs: 60_000,
      maxExtraKm: 1500,
    });
  });

  it('size API Gateway above what every region can serve, with headroom', () => {
    // 14 regions at 10 requests/s, times 3.
    expect(apiThrottle(config).ratePerSecond).toBe(
      config.iotRegions.length * 10 * config.admission.apiHeadroom,
    );
    const raised = admissionWith({
      regionRates: {
        'eu-central-1': { RegisterCertificate: 100, UpdateCertificate: 100, DeleteCertificate: 100 },
      },
    });
    expect(apiThrottle(raised).ratePerSecond).toBeGreaterThan(apiThrottle(config).ratePerSecond);
  });
});

describe('admission infrastructure', () => {
  const { json } = synthesize();

  it('is a plain on-demand table in the home region, keyed by region, not global', () => {
    const table = byId(json, 'aws_dynamodb_table', 'admission');
    expect(table).toMatchObject({
      name: config.admission.tableName,
      hash_key: 'region',
      billing_mode: 'PAY_PER_REQUEST',
      provider: 'aws',
    });
    expect(table.replica).toBeUndefined();
  });

  it('lets the function read and update its items only', () => {
    const policies = all(json, 'aws_iam_role_policy').flatMap((policy) => statements(policy.policy));
    const admission = policies.filter((statement) => statement.Sid === 'Admission');
    expect(admission).toHaveLength(1);
    expect(admission[0]!.Resource).toMatch(/^\$\{aws_dynamodb_table\.admission.+\.arn\}$/);
    expect([admission[0]!.Action].flat().sort()).toEqual(['dynamodb:GetItem', 'dynamodb:UpdateItem']);
  });

  it('alarms on a sustained backlog in each region, and shows admission on the dashboard', () => {
    const alarms = all(json, 'aws_cloudwatch_metric_alarm').filter(
      (alarm) => alarm.metric_name === 'AdmissionBacklogSeconds',
    );
    expect(alarms.map((alarm) => (alarm.dimensions as Record<string, string>).Region).sort()).toEqual(
      [...config.iotRegions].sort(),
    );
    expect(alarms[0]).toMatchObject({ statistic: 'Maximum', evaluation_periods: 3 });
    // The throttle alarm counts 429s that are not admission's (a storm's refusals are by design).
    const throttled = all(json, 'aws_cloudwatch_metric_alarm').find((alarm) =>
      String(alarm.alarm_name).endsWith('-throttled'),
    ) as { metric_query: { id: string; expression?: string }[] };
    expect(throttled.metric_query.find((query) => query.id === 'total')?.expression).toContain(
      '- FILL(admissionRefused, 0)',
    );
    const body = String(all(json, 'aws_cloudwatch_dashboard')[0]!.dashboard_body);
    for (const metric of ['Admitted', 'AdmissionRefused', 'AdmissionBacklogSeconds', 'IotThrottled'])
      expect(body).toContain(`MetricName=\\"${metric}\\"`);
  });
});

describe('a deploy that replaces the admission table', () => {
  it('is not stopped as the registry table would be: it holds seconds of schedule', () => {
    const change = (address: string) => ({
      address,
      type: 'aws_dynamodb_table',
      actions: ['delete', 'create'],
      before: { arn: 'arn:aws:dynamodb:us-east-2:123456789012:table/x' },
    });
    const verdict = checkPlan([
      change('aws_dynamodb_table.admission_table_2E269F82'),
      change('aws_dynamodb_table.registry_table_CBC8F9E0'),
    ]);
    expect(verdict.refused.map((refused) => refused.address)).toEqual([
      'aws_dynamodb_table.registry_table_CBC8F9E0',
    ]);
  });
});
