import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_DEPLOYMENT_FILE, loadDeploymentConfig, parseDeploymentConfig } from '../../infra/config';
import { devicePolicyDocument } from '../../infra/device-policy';

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
