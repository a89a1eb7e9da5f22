/**
 * The part of AWS IoT Core's policy evaluation the local MQTT endpoints need: decide whether
 * a connection may perform an iot:* action on a resource ARN, given the policy documents
 * attached to its certificate. Pure: documents and context in, decision out.
 *
 * Semantics kept from AWS: an explicit Deny wins over any Allow, no matching Allow means
 * implicit deny; Action and Resource take `*` and `?` wildcards (actions case-insensitive,
 * resources case-sensitive); policy variables are substituted as literals, and a statement
 * whose variable cannot be resolved (e.g. no thing attached) does not match.
 * Condition blocks support the operators a device policy uses (String*, Bool, Null, Arn*, with
 * IfExists) over the keys resolvePolicyVariable knows. A statement whose condition uses anything
 * else is treated as an Allow that does not apply and a Deny that does: when the local endpoint
 * cannot tell, it refuses.
 */

export type PolicyEffect = 'Allow' | 'Deny';

export interface PolicyStatement {
  readonly Effect: PolicyEffect;
  readonly Action?: string | readonly string[];
  readonly NotAction?: string | readonly string[];
  readonly Resource?: string | readonly string[];
  readonly NotResource?: string | readonly string[];
  readonly Condition?: unknown;
}

export interface PolicyDocument {
  readonly Version?: string;
  readonly Statement: PolicyStatement | readonly PolicyStatement[];
}

/** What AWS IoT knows about a connection when it substitutes policy variables. */
export interface PolicyContext {
  readonly clientId: string;
  /** Set only when the certificate is attached to a thing whose name is the client id. */
  readonly thingName?: string;
  readonly certificateId?: string;
  readonly region: string;
  readonly accountId: string;
}

export type PolicyDecision = 'allow' | 'explicit-deny' | 'implicit-deny';

export type IotAction = 'iot:Connect' | 'iot:Publish' | 'iot:Subscribe' | 'iot:Receive' | 'iot:RetainPublish';

/** Parses a policy document as returned by GetPolicy; throws on anything that is not one. */
export function parsePolicyDocument(text: string): PolicyDocument {
  const parsed: unknown = JSON.parse(text);
  if (typeof parsed !== 'object' || parsed === null || !('Statement' in parsed)) {
    throw new Error('policy document has no Statement');
  }
  const statements = (parsed as { Statement: unknown }).Statement;
  const list = Array.isArray(statements) ? (statements as unknown[]) : [statements];
  for (const statement of list) {
    if (typeof statement !== 'object' || statement === null)
      throw new Error('policy statement is not an object');
    const effect = (statement as { Effect?: unknown }).Effect;
    if (effect !== 'Allow' && effect !== 'Deny')
      throw new Error(`policy statement has Effect ${String(effect)}`);
  }
  return parsed as PolicyDocument;
}

/** The ARN AWS IoT checks for an action: client/, topic/ or topicfilter/ resources. */
export function iotResourceArn(
  context: Pick<PolicyContext, 'region' | 'accountId'>,
  kind: 'client' | 'topic' | 'topicfilter',
  name: string,
): string {
  return `arn:aws:iot:${context.region}:${context.accountId}:${kind}/${name}`;
}

export function evaluatePolicies(
  documents: readonly PolicyDocument[],
  action: IotAction,
  resourceArn: string,
  context: PolicyContext,
): PolicyDecision {
  let allowed = false;
  for (const document of documents) {
    const statements = Array.isArray(document.Statement)
      ? (document.Statement as readonly PolicyStatement[])
      : [document.Statement as PolicyStatement];
    for (const statement of statements) {
      if (!statementMatches(statement, action, resourceArn, context)) continue;
      const condition = conditionHolds(statement.Condition, context);
      if (statement.Effect === 'Deny' && condition !== false) return 'explicit-deny';
      if (statement.Effect === 'Allow' && condition === true) allowed = true;
    }
  }
  return allowed ? 'allow' : 'implicit-deny';
}

function statementMatches(
  statement: PolicyStatement,
  action: string,
  resourceArn: string,
  context: PolicyContext,
): boolean {
  const actionMatches =
    statement.Action !== undefined
      ? asList(statement.Action).some((pattern) => wildcardMatches(pattern, action, true))
      : statement.NotAction !== undefined &&
        !asList(statement.NotAction).some((pattern) => wildcardMatches(pattern, action, true));
  if (!actionMatches) return false;
  if (statement.Resource !== undefined) {
    return asList(statement.Resource).some(
      (pattern) => resourceMatches(pattern, resourceArn, context) === true,
    );
  }
  if (statement.NotResource !== undefined) {
    // An unresolvable variable makes the NotResource entry unusable; AWS then skips the statement.
    const results = asList(statement.NotResource).map((pattern) =>
      resourceMatches(pattern, resourceArn, context),
    );
    return results.every((result) => result === false);
  }
  return false;
}

function asList(value: string | readonly string[]): readonly string[] {
  return typeof value === 'string' ? [value] : value;
}

const VARIABLE = /\$\{([^}]*)\}/g;

/** Resolves a policy variable, or undefined when the connection has no value for it. */
export function resolvePolicyVariable(name: string, context: PolicyContext): string | undefined {
  switch (name) {
    case 'iot:ClientId':
      return context.clientId;
    case 'iot:Connection.Thing.ThingName':
      return context.thingName;
    case 'iot:Connection.Thing.IsAttached':
      return context.thingName !== undefined ? 'true' : 'false';
    case 'iot:CertificateId':
      return context.certificateId;
    case 'aws:region':
      return context.region;
    case 'aws:account':
    case 'aws:PrincipalAccount':
      return context.accountId;
    // IAM's escapes for literal characters inside a policy.
    case '*':
    case '?':
    case '$':
      return name;
    default:
      return undefined;
  }
}

/** true/false, or undefined when a variable in the pattern cannot be resolved. */
function resourceMatches(pattern: string, resourceArn: string, context: PolicyContext): boolean | undefined {
  let regex = '^';
  let last = 0;
  for (const match of pattern.matchAll(VARIABLE)) {
    regex += wildcardRegex(pattern.slice(last, match.index));
    const value = resolvePolicyVariable(match[1] ?? '', context);
    if (value === undefined) return undefined;
    regex += escapeRegex(value);
    last = match.index + match[0].length;
  }
  regex += wildcardRegex(pattern.slice(last)) + '$';
  return new RegExp(regex, 's').test(resourceArn);
}

function wildcardMatches(pattern: string, value: string, ignoreCase: boolean): boolean {
  return new RegExp(`^${wildcardRegex(pattern)}$`, ignoreCase ? 'is' : 's').test(value);
}

function wildcardRegex(literal: string): string {
  return literal
    .split('')
    .map((char) => (char === '*' ? '.*' : char === '?' ? '.' : escapeRegex(char)))
    .join('');
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

type ConditionValues = string | boolean | number | readonly (string | boolean | number)[];

/** true/false, or undefined when the condition uses an operator or key this evaluator lacks. */
export function conditionHolds(condition: unknown, context: PolicyContext): boolean | undefined {
  if (condition === undefined) return true;
  if (typeof condition !== 'object' || condition === null) return undefined;
  let holds: boolean | undefined = true;
  for (const [operatorName, keys] of Object.entries(condition as Record<string, unknown>)) {
    if (typeof keys !== 'object' || keys === null) return undefined;
    const ifExists = operatorName.endsWith('IfExists');
    const operator = ifExists ? operatorName.slice(0, -'IfExists'.length) : operatorName;
    for (const [key, expected] of Object.entries(keys as Record<string, ConditionValues>)) {
      const actual = resolvePolicyVariable(key, context);
      const values = (Array.isArray(expected) ? expected : [expected]).map((value) =>
        substituteVariables(String(value), context),
      );
      const result = operatorHolds(operator, actual, values, ifExists);
      if (result === undefined) holds = undefined;
      else if (!result && holds !== undefined) holds = false;
    }
  }
  return holds;
}

const SUPPORTED_OPERATORS = new Set([
  'StringEquals',
  'StringNotEquals',
  'StringEqualsIgnoreCase',
  'StringNotEqualsIgnoreCase',
  'StringLike',
  'StringNotLike',
  'ArnEquals',
  'ArnNotEquals',
  'ArnLike',
  'ArnNotLike',
  'Bool',
]);

function operatorHolds(
  operator: string,
  actual: string | undefined,
  expected: readonly (string | undefined)[],
  ifExists: boolean,
): boolean | undefined {
  if (operator === 'Null') {
    // Null: "true" means the key must be absent.
    return expected.some((value) => value === String(actual === undefined));
  }
  if (!SUPPORTED_OPERATORS.has(operator)) return undefined;
  if (actual === undefined) return ifExists;
  const defined = expected.filter((value): value is string => value !== undefined);
  switch (operator) {
    case 'StringEquals':
    case 'ArnEquals':
      return defined.includes(actual);
    case 'StringNotEquals':
    case 'ArnNotEquals':
      return !defined.includes(actual);
    case 'StringEqualsIgnoreCase':
      return defined.some((value) => value.toLowerCase() === actual.toLowerCase());
    case 'StringNotEqualsIgnoreCase':
      return !defined.some((value) => value.toLowerCase() === actual.toLowerCase());
    case 'StringLike':
    case 'ArnLike':
      return defined.some((value) => wildcardMatches(value, actual, false));
    case 'StringNotLike':
    case 'ArnNotLike':
      return !defined.some((value) => wildcardMatches(value, actual, false));
    case 'Bool':
      return defined.some((value) => value.toLowerCase() === actual.toLowerCase());
    default:
      return undefined;
  }
}

/** A condition value with its policy variables replaced; undefined if one cannot be resolved. */
function substituteVariables(value: string, context: PolicyContext): string | undefined {
  let unresolved = false;
  const substituted = value.replace(VARIABLE, (_whole, name: string) => {
    const resolved = resolvePolicyVariable(name, context);
    if (resolved === undefined) unresolved = true;
    return resolved ?? '';
  });
  return unresolved ? undefined : substituted;
}
