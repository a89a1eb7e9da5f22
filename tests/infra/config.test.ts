import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_DEPLOYMENT_FILE, loadDeploymentConfig, parseDeploymentConfig } from '../../infra/config';
import { devicePolicyDocument } from '../../infra/device-policy';
import { environmentSchema } from '../../functions/provisioning/config';

const REPO_ROOT = join(__dirname, '..', '..');
const deployment = JSON.parse(readFileSync(DEFAULT_DEPLOYMENT_FILE, 'utf8')) as Record<string, unknown>;
const withChanges = (changes: Record<string, unknown>) =>
  parseDeploymentConfig({ ...deployment, ...changes }, 'test');

describe('deployment config', () => {
  it('accepts the committed infra/deployment.json', () => {
    expect(loadDeploymentConfig().iotRegions).toContain(loadDeploymentConfig().homeRegion);
  });

  it('rejects a region the catalogue does not know, naming it', () => {
    expect(() => withChanges({ iotRegions: ['us-east-2', 'zz-north-1'] })).toThrow(
      /unknown AWS IoT region.*zz-north-1/,
    );
    expect(() => withChanges({ homeRegion: 'xx-nowhere-9' })).toThrow(/xx-nowhere-9/);
  });

  it('rejects a default region or country override outside the enabled regions', () => {
    expect(() => withChanges({ defaultRegion: 'us-west-1' })).toThrow(
      /defaultRegion us-west-1 is not in iotRegions/,
    );
    expect(() => withChanges({ countryRegionOverrides: { FR: 'eu-west-3' } })).toThrow(/FR: eu-west-3/);
  });

  it('rejects a region listed twice and unknown fields', () => {
    expect(() => withChanges({ iotRegions: ['us-east-2', 'us-east-2'] })).toThrow(/twice/);
    expect(() => withChanges({ ipstackKey: 'abc' })).toThrow(/ipstackKey/);
  });

  it('refuses a Lambda timeout API Gateway cannot wait for', () => {
    expect(() =>
      withChanges({
        function: { memoryMb: 512, timeoutSeconds: 60, reservedConcurrency: null, logRetentionDays: 30 },
      }),
    ).toThrow(/function.timeoutSeconds/);
  });
});

describe('deployment config: CA, certificates and reconciler', () => {
  const certificates = deployment.certificates as Record<string, unknown>;
  const reconciler = deployment.reconciler as Record<string, unknown>;

  it('refuses a device certificate that would outlive its CA', () => {
    expect(() => withChanges({ certificates: { ...certificates, validityDays: 10000 } })).toThrow(
      /certificates.validityDays \(10000\) exceeds caValidityDays/,
    );
  });

  it('accepts only the key types the function can generate', () => {
    expect(() => withChanges({ certificates: { ...certificates, generatedKeyType: 'rsa-1024' } })).toThrow(
      /certificates.generatedKeyType/,
    );
    expect(
      withChanges({ certificates: { ...certificates, generatedKeyType: 'ec-p256' } }).certificates,
    ).toMatchObject({ generatedKeyType: 'ec-p256' });
  });

  it('refuses a lease shorter than the function timeout, and a grace period shorter than the lease', () => {
    expect(() => withChanges({ leaseSeconds: 20 })).toThrow(
      /leaseSeconds \(20\) must exceed function.timeoutSeconds/,
    );
    expect(() => withChanges({ reconciler: { ...reconciler, graceSeconds: 30 } })).toThrow(
      /reconciler.graceSeconds \(30\) must be at least leaseSeconds/,
    );
  });

  it('refuses a schedule EventBridge Scheduler would not repeat', () => {
    expect(() => withChanges({ reconciler: { ...reconciler, schedule: 'at(2030-01-01T00:00:00)' } })).toThrow(
      /reconciler.schedule: expected rate\(15 minutes\) or cron/,
    );
    expect(
      withChanges({ reconciler: { ...reconciler, schedule: 'cron(0/10 * * * ? *)' } }).reconciler.schedule,
    ).toBe('cron(0/10 * * * ? *)');
  });

  it('keeps the CA key apart from the ipstack key and each CA file listed once', () => {
    expect(() => withChanges({ caKmsKeyAlias: deployment.kmsKeyAlias })).toThrow(/caKmsKeyAlias must differ/);
    expect(() =>
      withChanges({ caPreviousCertificates: [{ file: deployment.caCertificateFile, active: true }] }),
    ).toThrow(/same file twice/);
  });
});

describe('device policy module', () => {
  it('has no cdktf imports, so the Lambda bundle can include it', () => {
    const source = readFileSync(join(__dirname, '../../infra/device-policy.ts'), 'utf8');
    expect(source).not.toMatch(/from ['"](cdktf|constructs|@cdktf\/)/);
  });

  it('lets a device connect and publish only as its own thing', () => {
    const resources = devicePolicyDocument().Statement.flatMap((statement) => statement.Resource);
    for (const resource of resources) expect(resource).toContain('${iot:Connection.Thing.ThingName}');
  });
});

describe('deployment config: after day one', () => {
  const certificates = deployment.certificates as Record<string, unknown>;
  const api = deployment.api as Record<string, unknown>;
  const without = (object: Record<string, unknown>, keys: readonly string[]) =>
    Object.fromEntries(Object.entries(object).filter(([key]) => !keys.includes(key)));

  it('defaults the lifecycle settings to what the function assumes when they are unset', () => {
    const lifecycleKeys = [
      'renewAtPercent',
      'renewGraceSeconds',
      'renewMinIntervalSeconds',
      'statusMinIntervalSeconds',
    ];
    const older = withChanges({ certificates: without(certificates, lifecycleKeys) });
    // What the function reads when a variable is unset.
    const unset = environmentSchema.shape;
    expect(older.certificates).toMatchObject({
      renewAtPercent: unset.RENEW_AT_PERCENT.parse(undefined),
      renewGraceSeconds: unset.RENEW_GRACE_SECONDS.parse(undefined),
      renewMinIntervalSeconds: unset.RENEW_MIN_INTERVAL_SECONDS.parse(undefined),
      statusMinIntervalSeconds: unset.STATUS_MIN_INTERVAL_SECONDS.parse(undefined),
    });
  });

  it('refuses a renewal point outside 1–99 % and a grace period under a minute', () => {
    expect(() => withChanges({ certificates: { ...certificates, renewAtPercent: 100 } })).toThrow(
      /certificates.renewAtPercent/,
    );
    expect(() => withChanges({ certificates: { ...certificates, renewGraceSeconds: 30 } })).toThrow(
      /certificates.renewGraceSeconds/,
    );
  });

  it("defaults answer recovery to the function's 300 s, and refuses a window over an hour", () => {
    const older = withChanges({ certificates: without(certificates, ['answerRecoverySeconds']) });
    expect(older.certificates.answerRecoverySeconds).toBe(
      environmentSchema.shape.ANSWER_RECOVERY_SECONDS.parse(undefined),
    );
    expect(withChanges({ certificates: { ...certificates, answerRecoverySeconds: 0 } })).toBeDefined();
    expect(() => withChanges({ certificates: { ...certificates, answerRecoverySeconds: 3601 } })).toThrow(
      /certificates.answerRecoverySeconds/,
    );
  });

  it('gives /device-status its own throttling, with defaults for deployment files made before it', () => {
    expect(
      withChanges({ api: without(api, ['statusThrottleRatePerSecond', 'statusThrottleBurst']) }).api,
    ).toMatchObject({ statusThrottleRatePerSecond: 100, statusThrottleBurst: 200 });
    expect(() => withChanges({ api: { ...api, statusThrottleBurst: 0 } })).toThrow(/api.statusThrottleBurst/);
  });
});

describe('deployment config: production needs state, an alarm destination, CA roles and its account', () => {
  const ACCOUNT = '123456789012';
  const production = {
    sandbox: false,
    expectedAccountId: ACCOUNT,
    terraformState: { bucket: 'acme-terraform-state', key: 'gdp.tfstate', region: 'us-east-2' },
    caKeyAccess: {
      operatorRoleArns: [`arn:aws:iam::${ACCOUNT}:role/ca-operator`],
      breakGlassRoleArns: [`arn:aws:iam::${ACCOUNT}:role/ca-break-glass`],
    },
    alarms: { ...(deployment.alarms as Record<string, unknown>), alarmEmails: ['oncall@example.com'] },
  };

  it('keeps the committed file a sandbox, and accepts a complete production config', () => {
    expect(loadDeploymentConfig().sandbox).toBe(true);
    expect(withChanges(production).sandbox).toBe(false);
  });

  it('refuses production without terraformState, naming the field and showing an example', () => {
    expect(() => withChanges({ ...production, terraformState: null })).toThrow(
      /terraformState is required for a production deployment.*"bucket": "acme-terraform-state"/,
    );
  });

  it('refuses production without an alarm destination', () => {
    const alarms = { ...production.alarms, alarmEmails: [], alarmEmail: null, alarmTopicArns: [] };
    expect(() => withChanges({ ...production, alarms })).toThrow(
      /alarms.alarmEmails \(or alarms.alarmTopicArns\) is required.*"alarmEmails": \["oncall@example.com"\]/,
    );
    expect(
      withChanges({
        ...production,
        alarms: { ...alarms, alarmTopicArns: [`arn:aws:sns:us-east-2:${ACCOUNT}:oncall`] },
      }).alarms.alarmTopicArns,
    ).toHaveLength(1);
  });

  it('refuses production without CA-operator or break-glass roles, or with roles of another account', () => {
    expect(() =>
      withChanges({ ...production, caKeyAccess: { ...production.caKeyAccess, operatorRoleArns: [] } }),
    ).toThrow(/caKeyAccess.operatorRoleArns is required.*arn:aws:iam::123456789012:role\/ca-operator/);
    expect(() =>
      withChanges({ ...production, caKeyAccess: { ...production.caKeyAccess, breakGlassRoleArns: [] } }),
    ).toThrow(/caKeyAccess.breakGlassRoleArns is required/);
    expect(() =>
      withChanges({
        ...production,
        caKeyAccess: { ...production.caKeyAccess, operatorRoleArns: ['arn:aws:iam::999999999999:role/x'] },
      }),
    ).toThrow(/outside expectedAccountId 123456789012/);
  });

  it('refuses production without expectedAccountId, and lists every missing field at once', () => {
    expect(() => withChanges({ ...production, expectedAccountId: null })).toThrow(
      /expectedAccountId is required/,
    );
    expect(() => withChanges({ sandbox: false })).toThrow(
      /terraformState is required.*alarms.alarmEmails.*operatorRoleArns.*breakGlassRoleArns.*expectedAccountId/,
    );
  });

  it('refuses a reconciler schedule the hourly heartbeat alarm would always fire on', () => {
    const reconciler = deployment.reconciler as Record<string, unknown>;
    expect(() => withChanges({ reconciler: { ...reconciler, schedule: 'rate(2 hours)' } })).toThrow(
      /heartbeat/,
    );
  });
});

describe('make synth with a production config that names no state', () => {
  it('fails before synthesizing, naming the field', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'synth-config-')), 'deployment.json');
    writeFileSync(file, JSON.stringify({ ...deployment, sandbox: false }));
    const run = spawnSync(
      join(REPO_ROOT, 'node_modules', '.bin', 'tsx'),
      [join(REPO_ROOT, 'infra', 'main.ts')],
      {
        env: { ...process.env, DEPLOYMENT_CONFIG: file },
        encoding: 'utf8',
      },
    );
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/synth failed: .*terraformState is required for a production deployment/);
  });
});
