/** The key that seals generated device keys for answer recovery, as synthesized. */
import { loadDeploymentConfig } from '../../infra/config';
import { byId, list, statements, synthesize } from './synth';

const config = loadDeploymentConfig();
const { json } = synthesize();
const sealKey = byId(json, 'aws_kms_key', 'answer-seal-key');
const functionPolicy = statements(byId(json, 'aws_iam_role_policy', 'function').policy);
const REQUIRED_CONTEXT = {
  Null: { 'kms:EncryptionContext:thing_name': 'false', 'kms:EncryptionContext:certificate_id': 'false' },
};

describe('the answer seal key', () => {
  it('is a symmetric key in the home region, rotated, with an alias and a deletion window', () => {
    expect(sealKey).toMatchObject({
      key_usage: 'ENCRYPT_DECRYPT',
      customer_master_key_spec: 'SYMMETRIC_DEFAULT',
      enable_key_rotation: true,
      deletion_window_in_days: 7,
    });
    // The home region's provider, as the registry's and the ipstack key's.
    expect(sealKey.provider).toBe(byId(json, 'aws_kms_key', 'ipstack-key').provider);
    expect(byId(json, 'aws_kms_alias', 'answer-seal-key').name).toBe(`alias/${config.appName}-answer-seal`);
  });

  it('lets the function role encrypt and decrypt with it only with a thing_name context (key policy)', () => {
    const forFunction = statements(sealKey.policy).find((statement) =>
      statement.Principal?.AWS?.includes('aws_iam_role.function-role'),
    );
    expect(list(forFunction!.Action).sort()).toEqual(['kms:Decrypt', 'kms:Encrypt']);
    expect(forFunction!.Condition).toEqual(REQUIRED_CONTEXT);
  });

  it('is the only key the function may encrypt with, and only with the context (role policy)', () => {
    const encrypting = functionPolicy.filter((statement) => list(statement.Action).includes('kms:Encrypt'));
    expect(encrypting).toHaveLength(1);
    expect(encrypting[0]).toMatchObject({
      Sid: 'SealDeviceKeysForAnswerRecovery',
      Resource: expect.stringMatching(/^\$\{aws_kms_key\.answer-seal-key.*\.arn\}$/),
      Condition: REQUIRED_CONTEXT,
    });
    expect(list(encrypting[0]!.Action).sort()).toEqual(['kms:Decrypt', 'kms:Encrypt']);
  });

  it('is given to the function with the recovery window', () => {
    const lambda = byId(json, 'aws_lambda_function', 'function') as {
      environment: { variables: Record<string, string> };
    };
    expect(lambda.environment.variables.ANSWER_SEAL_KEY_ID).toMatch(
      /^\$\{aws_kms_key\.answer-seal-key.*\.arn\}$/,
    );
    expect(lambda.environment.variables.ANSWER_RECOVERY_SECONDS).toBe(
      String(config.certificates.answerRecoverySeconds),
    );
  });
});
