import { generateKeyPairSync } from 'node:crypto';
import { loadConfig } from '../../../functions/provisioning/config';
import { formatIotEndpoints, parseIotEndpoints } from '../../../functions/provisioning/iot-endpoints';
import { testCa } from '../../support/ca';

const fleetKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({
  type: 'spki',
  format: 'pem',
}) as string;
let valid: Record<string, string | undefined>;
const base = {
  TABLE_NAME: 'registry',
  REGISTRY_REGION: 'us-east-2',
  IOT_REGIONS: 'us-east-2, eu-central-1',
  DEFAULT_REGION: 'us-east-2',
  IOT_POLICY_NAME: 'device-policy',
  FLEET_PUBLIC_KEY: fleetKey,
  ORIGIN_VERIFY_SECRET: 'a-long-enough-secret',
  CA_KMS_KEY_ID: 'arn:aws:kms:us-east-2:123456789012:key/00000000-0000-0000-0000-000000000000',
};

beforeAll(async () => {
  const ca = await testCa();
  valid = { ...base, CA_CERTIFICATE_PEM: ca.certificate.pem.trim().replace(/\n/g, '\\n') };
});

describe('function configuration', () => {
  it('reads the endpoints the deployment learned: a prefix in AWS form, or an address whole', () => {
    const config = loadConfig({
      ...valid,
      IOT_ENDPOINTS: 'us-east-2=a1b2c3d4e5f6g7-ats, eu-central-1=127.67.248.8',
      IOT_POLICY_MANAGED: 'true',
    });
    expect(config.iotEndpoints).toEqual({
      'us-east-2': 'a1b2c3d4e5f6g7-ats.iot.us-east-2.amazonaws.com',
      'eu-central-1': '127.67.248.8',
    });
    expect(config.iotPolicyManaged).toBe(true);
    const endpoints = {
      'us-east-2': 'a1b2-ats.iot.us-east-2.amazonaws.com',
      'eu-central-1': '127.0.0.1:17411',
    };
    expect(formatIotEndpoints(endpoints)).toBe('us-east-2=a1b2-ats,eu-central-1=127.0.0.1:17411');
    expect(parseIotEndpoints(formatIotEndpoints(endpoints))).toEqual(endpoints);
    // Unset (an older deployment): every region is asked once, and the policy checked.
    expect(loadConfig(valid)).toMatchObject({ iotEndpoints: {}, iotPolicyManaged: false });
  });

  it('reads a valid environment with defaults', () => {
    const config = loadConfig(valid);
    expect(config.regions.map((site) => site.region)).toEqual(['us-east-2', 'eu-central-1']);
    expect(config).toMatchObject({
      acceptV1Signatures: true,
      leaseSeconds: 60,
      ipstack: undefined,
      certificateValidityDays: 3650,
      generatedKeyType: 'rsa-2048',
      reissueLimit: 3,
    });
  });

  it('recovers lost key-mode answers only with a seal key and a window', () => {
    const sealKeyId = 'arn:aws:kms:us-east-2:123456789012:key/11111111-1111-1111-1111-111111111111';
    expect(loadConfig(valid).answerRecovery).toBeUndefined();
    expect(loadConfig({ ...valid, ANSWER_SEAL_KEY_ID: sealKeyId }).answerRecovery).toEqual({
      seconds: 300,
      sealKeyId,
    });
    expect(
      loadConfig({ ...valid, ANSWER_SEAL_KEY_ID: sealKeyId, ANSWER_RECOVERY_SECONDS: '0' }).answerRecovery,
    ).toBeUndefined();
    expect(() => loadConfig({ ...valid, ANSWER_RECOVERY_SECONDS: 'soon' })).toThrow(
      /ANSWER_RECOVERY_SECONDS/,
    );
  });

  it.each([
    [{ TABLE_NAME: undefined }, 'TABLE_NAME'],
    [{ IOT_REGIONS: 'us-east-2,moon-1' }, 'IOT_REGIONS'],
    [{ IOT_REGIONS: 'us-east-2,cn-north-1' }, 'unknown AWS IoT region(s): cn-north-1'],
    [{ DEFAULT_REGION: 'ap-northeast-1' }, 'DEFAULT_REGION: ap-northeast-1 is not in IOT_REGIONS'],
    [
      { COUNTRY_REGION_OVERRIDES: '{"DE":"eu-west-1"}' },
      'COUNTRY_REGION_OVERRIDES: DE → eu-west-1 is not in IOT_REGIONS',
    ],
    [{ COUNTRY_REGION_OVERRIDES: 'DE=eu-central-1' }, 'COUNTRY_REGION_OVERRIDES: not valid JSON'],
    [{ FLEET_PUBLIC_KEY: 'not a key' }, 'FLEET_PUBLIC_KEY: not a PEM public key'],
    [{ ACCEPT_V1_SIGNATURES: 'yes' }, 'ACCEPT_V1_SIGNATURES'],
    [{ IPSTACK_URL: 'https://api.ipstack.com' }, 'IPSTACK_KEY_PARAMETER: required when IPSTACK_URL is set'],
    [{ CA_KMS_KEY_ID: undefined }, 'CA_KMS_KEY_ID'],
    [{ CA_CERTIFICATE_PEM: 'not a certificate' }, 'CA_CERTIFICATE_PEM: not a PEM certificate'],
    [{ GENERATED_KEY_TYPE: 'dsa-1024' }, 'GENERATED_KEY_TYPE'],
    [{ REISSUE_LIMIT: '-1' }, 'REISSUE_LIMIT: expected at least 0'],
    [{ CERTIFICATE_VALIDITY_DAYS: '1.5' }, 'CERTIFICATE_VALIDITY_DAYS: expected a whole number'],
    [{ IOT_ENDPOINTS: 'us-east-2' }, 'IOT_ENDPOINTS: "us-east-2" is not region=address'],
    [{ IOT_ENDPOINTS: 'ap-northeast-1=a1b2-ats' }, 'IOT_ENDPOINTS: ap-northeast-1 is not in IOT_REGIONS'],
    [{ IOT_ENDPOINTS: 'us-east-2=a,us-east-2=b' }, 'IOT_ENDPOINTS: us-east-2 is named twice'],
    [{ IOT_POLICY_MANAGED: 'yes' }, 'IOT_POLICY_MANAGED'],
  ])('fails the cold start naming the variable: %j', (change, message) => {
    expect(() => loadConfig({ ...valid, ...change })).toThrow(message);
  });
});
