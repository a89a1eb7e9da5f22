import { generateKeyPairSync } from 'node:crypto';
import { loadConfig } from '../../../functions/provisioning/config';
import { testCa } from '../../support/ca';

const fleetKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({
  type: 'spki',
  format: 'pem',
}) as string;
let valid: Record<string, string | undefined>;

beforeAll(async () => {
  const ca = await testCa();
  valid = {
    TABLE_NAME: 'registry',
    REGISTRY_REGION: 'us-east-2',
    IOT_REGIONS: 'us-east-2, eu-central-1',
    DEFAULT_REGION: 'us-east-2',
    IOT_POLICY_NAME: 'device-policy',
    FLEET_PUBLIC_KEY: fleetKey,
    ORIGIN_VERIFY_SECRET: 'a-long-enough-secret',
    CA_KMS_KEY_ID: 'arn:aws:kms:us-east-2:123456789012:key/00000000-0000-0000-0000-000000000000',
    CA_CERTIFICATE_PEM: ca.certificate.pem.trim().replace(/\n/g, '\\n'),
    ADMISSION_TABLE_NAME: 'admission',
  };
});

describe('admission configuration', () => {
  it('gives every enabled region AWS defaults, overridden per API and per region', () => {
    const config = loadConfig({
      ...valid,
      ADMISSION_RATES: '{"CreateThing":100}',
      ADMISSION_REGION_RATES: '{"eu-central-1":{"RegisterCertificate":50}}',
    });
    expect(config.admission).toMatchObject({
      tableName: 'admission',
      maxWaitMs: 2000,
      whenUnavailable: 'open',
    });
    expect(config.admission?.rates['us-east-2']).toMatchObject({ RegisterCertificate: 10, CreateThing: 100 });
    expect(config.admission?.rates['eu-central-1']).toMatchObject({
      RegisterCertificate: 50,
      CreateThing: 100,
    });
  });

  it('spills over only when ADMISSION_SPILL_OVER says so', () => {
    expect(loadConfig(valid).admission?.spillOver).toBeUndefined();
    expect(loadConfig({ ...valid, ADMISSION_SPILL_OVER: 'null' }).admission?.spillOver).toBeUndefined();
    expect(
      loadConfig({ ...valid, ADMISSION_SPILL_OVER: '{"afterWaitSeconds":60,"maxExtraKm":1500}' }).admission
        ?.spillOver,
    ).toEqual({ afterWaitMs: 60_000, maxExtraKm: 1500 });
  });

  it('is off without ADMISSION_TABLE_NAME', () => {
    expect(loadConfig({ ...valid, ADMISSION_TABLE_NAME: undefined }).admission).toBeUndefined();
  });

  it.each([
    [
      { ADMISSION_RATES: '{"RegisterCertificate":-5}' },
      'ADMISSION_RATES.RegisterCertificate: expected a positive number',
    ],
    [{ ADMISSION_RATES: '{"RegisterCertificates":5}' }, 'ADMISSION_RATES.RegisterCertificates: unknown API'],
    [
      { ADMISSION_REGION_RATES: '{"ap-south-1":{"CreateThing":100}}' },
      'ADMISSION_REGION_RATES.ap-south-1: not an enabled region',
    ],
    [{ ADMISSION_REGION_RATES: 'fast' }, 'ADMISSION_REGION_RATES: not valid JSON'],
    [{ ADMISSION_WHEN_UNAVAILABLE: 'ajar' }, 'ADMISSION_WHEN_UNAVAILABLE'],
    [{ ADMISSION_MAX_WAIT_MS: '-1' }, 'ADMISSION_MAX_WAIT_MS: expected at least 0'],
    [{ ADMISSION_SPILL_OVER: 'soon' }, 'ADMISSION_SPILL_OVER: not valid JSON'],
    [
      { ADMISSION_SPILL_OVER: '{"afterWaitSeconds":0,"maxExtraKm":1500}' },
      'ADMISSION_SPILL_OVER.afterWaitSeconds: expected a positive number',
    ],
    [
      { ADMISSION_SPILL_OVER: '{"afterWaitSeconds":60,"maxExtraKm":1500,"regions":[]}' },
      'ADMISSION_SPILL_OVER.regions: unknown field',
    ],
  ])('fails the cold start naming the setting: %j', (change, message) => {
    expect(() => loadConfig({ ...valid, ...change })).toThrow(message);
  });
});
