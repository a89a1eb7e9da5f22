/**
 * The device CA key's policy (infra/ca-key-policy.ts) evaluated for the principals of a real
 * account: the function, a CA operator, a break-glass role, an administrator with `kms:*` in IAM,
 * a CI role, the root user. The evaluation is KMS's for this shape of policy: a statement applies
 * when it lists the action and every condition holds; principals are of this account (the policy
 * names only the account root), and IAM is assumed to allow them everything.
 */
import { caKeyPolicy, CaKeyPolicyInputs, PolicyDocument } from '../../infra/ca-key-policy';
import { caKeyEventPattern } from '../../infra/device-ca';

const ACCOUNT = '123456789012';
const role = (name: string) => `arn:aws:iam::${ACCOUNT}:role/${name}`;
const FUNCTION = role('gdp-function');
const OPERATOR = role('ca-operator');
const BREAK_GLASS = role('ca-break-glass');
const ADMIN = role('AdministratorAccess');
const CI = role('ci-deployer');
const ROOT = `arn:aws:iam::${ACCOUNT}:root`;

const inputs: CaKeyPolicyInputs = {
  partition: 'aws',
  accountId: ACCOUNT,
  functionRoleArn: FUNCTION,
  operatorRoleArns: [OPERATOR],
  breakGlassRoleArns: [BREAK_GLASS],
};
const SIGN_CONTEXT = { 'kms:SigningAlgorithm': 'ECDSA_SHA_256', 'kms:MessageType': 'RAW' };

function allows(
  policy: PolicyDocument,
  principalArn: string,
  action: string,
  context: Record<string, string> = {},
): boolean {
  const request: Record<string, string> = { ...context, 'aws:PrincipalArn': principalArn };
  return policy.Statement.some((statement) => {
    const actions = typeof statement.Action === 'string' ? [statement.Action] : statement.Action;
    if (!actions.includes(action)) return false;
    return Object.entries(statement.Condition ?? {}).every(([operator, conditions]) =>
      Object.entries(conditions).every(([key, expected]) => {
        if (operator !== 'StringEquals' && operator !== 'ArnEquals')
          throw new Error(`unexpected ${operator}`);
        const values = typeof expected === 'string' ? [expected] : expected;
        return request[key] !== undefined && values.includes(request[key]);
      }),
    );
  });
}

describe('device CA key policy', () => {
  const policy = caKeyPolicy(inputs);

  it('lets the function and the CA operators sign, with ECDSA_SHA_256 over a RAW message only', () => {
    for (const signer of [FUNCTION, OPERATOR]) {
      expect(allows(policy, signer, 'kms:Sign', SIGN_CONTEXT)).toBe(true);
      expect(allows(policy, signer, 'kms:Sign', { ...SIGN_CONTEXT, 'kms:MessageType': 'DIGEST' })).toBe(
        false,
      );
      expect(
        allows(policy, signer, 'kms:Sign', { ...SIGN_CONTEXT, 'kms:SigningAlgorithm': 'ECDSA_SHA_384' }),
      ).toBe(false);
    }
  });

  it('lets no administrator, CI role, break-glass role or the root user sign', () => {
    for (const other of [ADMIN, CI, BREAK_GLASS, ROOT]) {
      expect({ other, sign: allows(policy, other, 'kms:Sign', SIGN_CONTEXT) }).toEqual({
        other,
        sign: false,
      });
    }
  });

  it('keeps deletion, disabling and policy changes for the break-glass role', () => {
    for (const action of ['kms:ScheduleKeyDeletion', 'kms:DisableKey', 'kms:PutKeyPolicy', 'kms:EnableKey']) {
      expect(allows(policy, BREAK_GLASS, action)).toBe(true);
      for (const other of [ADMIN, CI, FUNCTION, OPERATOR]) {
        expect({ other, action, allowed: allows(policy, other, action) }).toEqual({
          other,
          action,
          allowed: false,
        });
      }
    }
  });

  it('leaves the root user PutKeyPolicy only, so the key can never become unmanageable', () => {
    expect(allows(policy, ROOT, 'kms:PutKeyPolicy')).toBe(true);
    for (const action of ['kms:ScheduleKeyDeletion', 'kms:DisableKey', 'kms:Sign', 'kms:CreateGrant']) {
      expect(allows(policy, ROOT, action, SIGN_CONTEXT)).toBe(false);
    }
  });

  it('grants nobody CreateGrant (a grant would bypass this policy) and nobody kms:*', () => {
    for (const principal of [FUNCTION, OPERATOR, BREAK_GLASS, ADMIN, ROOT]) {
      expect(allows(policy, principal, 'kms:CreateGrant')).toBe(false);
      expect(allows(policy, principal, 'kms:*')).toBe(false);
    }
  });

  it('lets anyone IAM allows read the key (Terraform refresh, audits, the public key)', () => {
    for (const principal of [CI, ADMIN]) {
      expect(allows(policy, principal, 'kms:DescribeKey')).toBe(true);
      expect(allows(policy, principal, 'kms:GetPublicKey')).toBe(true);
    }
  });

  it('in a sandbox without named roles, falls back to IAM for signing and administration', () => {
    const sandbox = caKeyPolicy({ ...inputs, operatorRoleArns: [], breakGlassRoleArns: [] });
    expect(allows(sandbox, ADMIN, 'kms:Sign', SIGN_CONTEXT)).toBe(true);
    expect(allows(sandbox, ADMIN, 'kms:Sign', { ...SIGN_CONTEXT, 'kms:MessageType': 'DIGEST' })).toBe(false);
    expect(allows(sandbox, ADMIN, 'kms:DisableKey')).toBe(true);
  });
});

describe('CloudTrail watch on the CA key', () => {
  const pattern = caKeyEventPattern(
    ['arn:aws:kms:us-east-2:123456789012:key/k'],
    ['Sign'],
    [FUNCTION, OPERATOR],
  );

  it('matches Sign on the key by any role session but the allowed ones, and by anything not a role', () => {
    expect(pattern).toEqual({
      source: ['aws.kms'],
      'detail-type': ['AWS API Call via CloudTrail'],
      detail: {
        eventName: ['Sign'],
        resources: { ARN: ['arn:aws:kms:us-east-2:123456789012:key/k'] },
        $or: [
          { userIdentity: { type: [{ 'anything-but': 'AssumedRole' }] } },
          {
            userIdentity: {
              sessionContext: { sessionIssuer: { arn: [{ 'anything-but': [FUNCTION, OPERATOR] }] } },
            },
          },
        ],
      },
    });
  });

  it('matches every such event when no principal is allowed', () => {
    const anyone = caKeyEventPattern(['k'], ['DisableKey'], []);
    expect((anyone.detail as Record<string, unknown>).$or).toBeUndefined();
  });
});
