/**
 * The device CA in the synthesized Terraform: the KMS signing key, its registration in every
 * enabled region, who may sign, and the bootstrap stack of a first deploy.
 */
import { parseCaCertificate } from '../../functions/provisioning/certificate-authority';
import { BOOTSTRAP_OUTPUT, loadDeploymentConfig } from '../../infra/config';
import {
  all,
  byId,
  list,
  statements,
  Statement,
  synthesize,
  TerraformJson,
  TEST_CA_CERTIFICATE,
  TEST_DEVICE_CA,
  TEST_PREVIOUS_CA_CERTIFICATE,
} from './synth';

const allStatements = (json: TerraformJson): Statement[] =>
  [...all(json, 'aws_iam_role_policy'), ...all(json, 'aws_iam_policy')].flatMap((policy) =>
    statements(policy.policy),
  );
const providerRegion = (provider: unknown, home: string) =>
  provider === 'aws' ? home : String(provider).replace(/^aws\./, '');
const resourceIds = (json: TerraformJson, type: string) => Object.keys(json.resource[type] ?? {});

const config = loadDeploymentConfig();
const { json } = synthesize();
const caKeyArn = /^\$\{aws_kms_key\.device-ca-key-[0-9a-f]{8}_key_[0-9A-F]+\.arn\}$/;

describe('device CA key', () => {
  const key = byId(json, 'aws_kms_key', 'device-ca-key-');

  it('is an ECC P-256 signing key that waits 30 days before deletion and does not rotate', () => {
    expect(key).toMatchObject({
      customer_master_key_spec: 'ECC_NIST_P256',
      key_usage: 'SIGN_VERIFY',
      deletion_window_in_days: 30,
      enable_key_rotation: false,
    });
  });

  it('is named by the configured alias', () => {
    const alias = byId(json, 'aws_kms_alias', 'device-ca-key-');
    expect(alias.name).toBe(config.caKmsKeyAlias);
    expect(alias.target_key_id).toMatch(/^\$\{aws_kms_key\.device-ca-key-.+\.key_id\}$/);
  });

  it('carries the policy infra/ca-key-policy.ts builds, with no kms:* and no CreateGrant for anyone', () => {
    const keyPolicy = statements(key.policy);
    expect(keyPolicy.map((statement) => statement.Sid)).toEqual([
      'ReadMetadataThroughIam',
      'RootUserKeepsKeyManageable',
      'SignDeviceCertificates',
      'BreakGlassAdministers',
    ]);
    const actions = keyPolicy.flatMap((statement) => list(statement.Action));
    expect(actions).not.toContain('kms:*');
    expect(actions).not.toContain('kms:CreateGrant');
  });

  it('becomes a new key when the alias changes (the first step of a CA rotation)', () => {
    const caKeys = (synthesized: TerraformJson) =>
      resourceIds(synthesized, 'aws_kms_key').filter((id) => id.startsWith('device-ca-key-'));
    const rotated = synthesize({ caKmsKeyAlias: 'alias/global-device-provisioning-device-ca-2' }).json;
    expect(caKeys(rotated)).toHaveLength(1);
    expect(caKeys(rotated)).not.toEqual(caKeys(json));
    // The ipstack key is not touched.
    const others = (synthesized: TerraformJson) =>
      resourceIds(synthesized, 'aws_kms_key').filter((id) => !id.startsWith('device-ca-key-'));
    expect(others(rotated)).toEqual(others(json));
  });
});

describe('who may sign with the CA key', () => {
  const signing = allStatements(json).filter((statement) => list(statement.Action).includes('kms:Sign'));

  it('grants kms:Sign only on the CA key, only with ECDSA_SHA_256', () => {
    expect(signing.length).toBeGreaterThan(0);
    for (const statement of signing) {
      expect(list(statement.Resource)).toEqual([expect.stringMatching(caKeyArn)]);
      expect(statement.Condition).toEqual({
        StringEquals: { 'kms:SigningAlgorithm': 'ECDSA_SHA_256', 'kms:MessageType': 'RAW' },
      });
    }
  });

  it('gives the provisioning function kms:Sign and not kms:GetPublicKey', () => {
    const fn = statements(byId(json, 'aws_iam_role_policy', 'function').policy);
    const kmsActions = fn.flatMap((statement) => list(statement.Action)).filter((a) => a.startsWith('kms:'));
    // Decrypt: the ipstack key; Encrypt and Decrypt: the answer seal key (answer-seal-key.test.ts).
    expect(kmsActions.sort()).toEqual(['kms:Decrypt', 'kms:Decrypt', 'kms:Encrypt', 'kms:Sign']);
  });

  it('gives make init-ca operators GetPublicKey, DescribeKey and Sign on the CA key only', () => {
    const operator = statements(byId(json, 'aws_iam_policy', 'device-ca-operator-policy').policy);
    expect(operator.flatMap((statement) => list(statement.Action)).sort()).toEqual([
      'kms:DescribeKey',
      'kms:GetPublicKey',
      'kms:Sign',
    ]);
    for (const statement of operator)
      expect(list(statement.Resource)).toEqual([expect.stringMatching(caKeyArn)]);
    expect(json.output.device_ca_operator_policy_arn?.value).toContain(
      'aws_iam_policy.device-ca-operator-policy',
    );
  });

  it('lets no role create certificates with AWS-generated keys any more', () => {
    const actions = allStatements(json).flatMap((statement) => list(statement.Action));
    expect(actions).not.toContain('iot:CreateKeysAndCertificate');
    expect(actions).not.toContain('iot:CreateCertificateFromCsr');
    expect(actions).not.toContain('iot:RegisterCertificateWithoutCA');
    expect(actions).not.toContain('iot:RegisterCACertificate');
  });

  it('lets the function register certificates in the enabled regions only', () => {
    const fn = statements(byId(json, 'aws_iam_role_policy', 'function').policy);
    const register = fn.filter((statement) => list(statement.Action).includes('iot:RegisterCertificate'));
    expect(register).toHaveLength(1);
    expect(register[0]!.Condition).toEqual({ StringEquals: { 'aws:RequestedRegion': config.iotRegions } });
  });
});

describe('CA registration', () => {
  const registrations = all(json, 'aws_iot_ca_certificate');

  it('registers the CA certificate in every enabled region: SNI_ONLY, active, no auto-registration', () => {
    expect(registrations.map((ca) => providerRegion(ca.provider, config.homeRegion)).sort()).toEqual(
      [...config.iotRegions].sort(),
    );
    for (const ca of registrations) {
      expect(ca).toMatchObject({
        certificate_mode: 'SNI_ONLY',
        active: true,
        allow_auto_registration: false,
        ca_certificate_pem: parseCaCertificate(TEST_CA_CERTIFICATE).pem,
      });
      expect(ca.verification_certificate_pem).toBeUndefined();
    }
  });

  it('follows the one region list', () => {
    const fewer = synthesize({ iotRegions: ['us-east-2', 'eu-central-1'], countryRegionOverrides: {} }).json;
    expect(
      all(fewer, 'aws_iot_ca_certificate')
        .map((ca) => providerRegion(ca.provider, config.homeRegion))
        .sort(),
    ).toEqual(['eu-central-1', 'us-east-2']);
  });

  it('keeps a previous CA registered, and its Terraform address, when a new CA takes over', () => {
    const previousId = parseCaCertificate(TEST_CA_CERTIFICATE).id.slice(0, 16);
    const rotated = synthesize(
      { caPreviousCertificates: [{ file: 'infra/device-ca-old.pem', active: true }] },
      {
        certificatePem: TEST_PREVIOUS_CA_CERTIFICATE,
        source: 'new.pem',
        previous: [{ pem: TEST_CA_CERTIFICATE, active: true, source: 'infra/device-ca-old.pem' }],
      },
    ).json;
    const before = resourceIds(json, 'aws_iot_ca_certificate');
    const after = resourceIds(rotated, 'aws_iot_ca_certificate');
    expect(after).toHaveLength(2 * config.iotRegions.length);
    // Same addresses for the old CA: Terraform changes nothing about it.
    expect(after).toEqual(expect.arrayContaining(before));
    expect(before.every((id) => id.includes(previousId))).toBe(true);
    // The function and reconciler switch to the new CA.
    const fn = byId(rotated, 'aws_lambda_function', 'function') as {
      environment: { variables: Record<string, string> };
    };
    expect(fn.environment.variables.CA_CERTIFICATE_PEM).toBe(
      TEST_PREVIOUS_CA_CERTIFICATE.trim().replace(/\n/g, '\\n'),
    );
  });

  it('can keep a previous CA registered but inactive', () => {
    const rotated = synthesize(
      {},
      {
        ...TEST_DEVICE_CA,
        previous: [{ pem: TEST_PREVIOUS_CA_CERTIFICATE, active: false, source: 'old.pem' }],
      },
    ).json;
    const inactive = all(rotated, 'aws_iot_ca_certificate').filter((ca) => ca.active === false);
    expect(inactive).toHaveLength(config.iotRegions.length);
  });

  it('refuses a CA file that is not exactly one certificate, naming the file', () => {
    const withKey = `${TEST_CA_CERTIFICATE}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n`;
    expect(() => synthesize({}, { certificatePem: withKey, source: 'infra/device-ca.pem' })).toThrow(
      /infra\/device-ca\.pem is not one PEM certificate/,
    );
    expect(() =>
      synthesize(
        {},
        { ...TEST_DEVICE_CA, previous: [{ pem: TEST_CA_CERTIFICATE, active: true, source: 'x' }] },
      ),
    ).toThrow(/listed twice/);
  });

  it('is registered everywhere before either function uses it (a rotation switches them after)', () => {
    const registrationIds = resourceIds(json, 'aws_iot_ca_certificate').map(
      (id) => `aws_iot_ca_certificate.${id}`,
    );
    for (const prefix of ['function', 'reconciler']) {
      const lambda = byId(json, 'aws_lambda_function', prefix) as { depends_on: string[] };
      expect(lambda.depends_on).toEqual(expect.arrayContaining(registrationIds));
    }
  });

  it('outputs the CA certificate id (SHA-256 of the DER)', () => {
    expect(json.output.device_ca_certificate_id?.value).toBe(parseCaCertificate(TEST_CA_CERTIFICATE).id);
  });
});

describe('bootstrap stack (no CA certificate yet)', () => {
  const bootstrap = synthesize({}, null).json;

  it('holds only the CA key, its alias and the operator policy', () => {
    expect(Object.keys(bootstrap.resource).sort()).toEqual([
      'aws_iam_policy',
      'aws_kms_alias',
      'aws_kms_key',
    ]);
    expect(resourceIds(bootstrap, 'aws_iam_policy')).toEqual(['device-ca-operator-policy']);
    expect(bootstrap.output[BOOTSTRAP_OUTPUT]?.value).toContain('make init-ca');
    expect(json.output[BOOTSTRAP_OUTPUT]).toBeUndefined();
  });

  it('creates the key at the address the full stack uses, so phase 2 keeps it', () => {
    for (const type of ['aws_kms_alias', 'aws_iam_policy']) {
      expect(resourceIds(json, type)).toEqual(expect.arrayContaining(resourceIds(bootstrap, type)));
    }
    expect(resourceIds(json, 'aws_kms_key')).toEqual(
      expect.arrayContaining(resourceIds(bootstrap, 'aws_kms_key')),
    );
    const id = resourceIds(bootstrap, 'aws_kms_key')[0]!;
    expect(bootstrap.resource.aws_kms_key![id]).toEqual(json.resource.aws_kms_key![id]);
  });
});
