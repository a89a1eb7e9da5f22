/**
 * The device CA key's policy, built here as plain data so it can be tested without a synth.
 *
 * A CA key that anyone with `kms:*` in IAM could use would let every admin, PowerUser or CI role
 * mint device identities. So the key policy, not IAM, decides who may do what, by role ARN
 * (`aws:PrincipalArn`, which for an assumed role is the role's ARN):
 *   - Sign: the provisioning function's role and the CA-operator roles, with the one algorithm
 *     and message type the code uses (RAW: KMS hashes the TBSCertificate itself);
 *   - disable, enable, schedule or cancel deletion, change the policy, aliases, tags: the
 *     break-glass roles only;
 *   - read-only metadata (describe, policy, tags, public key): any principal IAM allows, because
 *     Terraform's refresh and audits need it and none of it signs or changes anything;
 *   - the account's root user keeps PutKeyPolicy and nothing else. That is what AWS needs so the
 *     key never becomes unmanageable (a key whose policy nobody may change can only be recovered
 *     by AWS Support); the root user's credentials are meant to be locked away, and an alarm fires
 *     on any PutKeyPolicy by another principal (infra/device-ca.ts, the CloudTrail rule).
 * The principals are written as the account root with an `aws:PrincipalArn` condition rather
 * than as role ARNs: KMS refuses a policy naming a role that does not exist yet (the function's
 * role is created after the key), and a role re-created under the same name keeps its access.
 *
 * A sandbox deployment without break-glass or operator roles falls back to IAM for those: the
 * account administers and signs through IAM, as before. Production refuses that (infra/config.ts).
 *
 * No cdktf imports: tests/infra/ca-key-policy.test.ts evaluates it directly.
 */

export const CA_SIGNING_ALGORITHM = 'ECDSA_SHA_256';
/** Both the function and `make init-ca` send the TBSCertificate itself (functions/provisioning/kms.ts). */
export const CA_SIGNING_MESSAGE_TYPE = 'RAW';

/** Read-only: Terraform's refresh, audits and `make init-ca`'s public-key check. */
export const CA_KEY_READ_ACTIONS = [
  'kms:DescribeKey',
  'kms:GetKeyPolicy',
  'kms:GetKeyRotationStatus',
  'kms:GetPublicKey',
  'kms:ListResourceTags',
  'kms:ListKeyPolicies',
  'kms:ListGrants',
] as const;

/** Everything that changes the key or who may use it. Never Sign, never CreateGrant. */
export const CA_KEY_BREAK_GLASS_ACTIONS = [
  'kms:PutKeyPolicy',
  'kms:DisableKey',
  'kms:EnableKey',
  'kms:ScheduleKeyDeletion',
  'kms:CancelKeyDeletion',
  'kms:CreateAlias',
  'kms:UpdateAlias',
  'kms:DeleteAlias',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:UpdateKeyDescription',
  'kms:RevokeGrant',
  'kms:RetireGrant',
] as const;

/** The CloudTrail events on the key that an unexpected principal must never cause unnoticed. */
export const CA_KEY_WATCHED_ADMIN_EVENTS = ['ScheduleKeyDeletion', 'DisableKey', 'PutKeyPolicy'] as const;

export interface CaKeyPolicyInputs {
  readonly partition: string;
  readonly accountId: string;
  /** The provisioning function's role ARN. */
  readonly functionRoleArn: string;
  readonly operatorRoleArns: readonly string[];
  readonly breakGlassRoleArns: readonly string[];
}

export interface PolicyStatement {
  readonly Sid: string;
  readonly Effect: 'Allow';
  readonly Principal: { readonly AWS: string };
  readonly Action: string | readonly string[];
  readonly Resource: '*';
  readonly Condition?: Record<string, Record<string, string | readonly string[]>>;
}

export interface PolicyDocument {
  readonly Version: '2012-10-17';
  readonly Statement: readonly PolicyStatement[];
}

/** Who may Sign with the CA key: the function role and the operator roles. */
export function caSignerRoleArns(inputs: CaKeyPolicyInputs): string[] {
  return [inputs.functionRoleArn, ...inputs.operatorRoleArns];
}

export function caKeyPolicy(inputs: CaKeyPolicyInputs): PolicyDocument {
  const root = `arn:${inputs.partition}:iam::${inputs.accountId}:root`;
  const account = { AWS: root };
  const onlyPrincipals = (arns: readonly string[]) => ({ ArnEquals: { 'aws:PrincipalArn': [...arns] } });
  const signing = {
    StringEquals: {
      'kms:SigningAlgorithm': CA_SIGNING_ALGORITHM,
      'kms:MessageType': CA_SIGNING_MESSAGE_TYPE,
    },
  };
  const statements: PolicyStatement[] = [
    {
      Sid: 'ReadMetadataThroughIam',
      Effect: 'Allow',
      Principal: account,
      Action: [...CA_KEY_READ_ACTIONS],
      Resource: '*',
    },
    {
      Sid: 'RootUserKeepsKeyManageable',
      Effect: 'Allow',
      Principal: account,
      Action: 'kms:PutKeyPolicy',
      Resource: '*',
      Condition: onlyPrincipals([root]),
    },
  ];
  const sandboxSigners = inputs.operatorRoleArns.length === 0;
  statements.push({
    Sid: 'SignDeviceCertificates',
    Effect: 'Allow',
    Principal: account,
    Action: 'kms:Sign',
    Resource: '*',
    Condition: sandboxSigners ? signing : { ...signing, ...onlyPrincipals(caSignerRoleArns(inputs)) },
  });
  statements.push({
    Sid: 'BreakGlassAdministers',
    Effect: 'Allow',
    Principal: account,
    Action: [...CA_KEY_BREAK_GLASS_ACTIONS],
    Resource: '*',
    ...(inputs.breakGlassRoleArns.length > 0 ? { Condition: onlyPrincipals(inputs.breakGlassRoleArns) } : {}),
  });
  return { Version: '2012-10-17', Statement: statements };
}
