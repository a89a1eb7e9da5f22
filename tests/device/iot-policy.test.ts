import {
  evaluatePolicies,
  iotResourceArn,
  parsePolicyDocument,
  type PolicyContext,
  type PolicyDocument,
} from '../local/iot-policy';
import { devicePolicyDocument } from '../../infra/device-policy';

const context: PolicyContext = {
  clientId: 'wm101',
  thingName: 'wm101',
  certificateId: 'abc',
  region: 'eu-central-1',
  accountId: '123456789012',
};
const topic = (name: string): string => iotResourceArn(context, 'topic', name);
const client = (name: string): string => iotResourceArn(context, 'client', name);

/** The shape of the device policy the product attaches (infra/device-policy.ts). */
const devicePolicy: PolicyDocument = parsePolicyDocument(
  JSON.stringify({
    Version: '2012-10-17',
    Statement: [
      {
        Effect: 'Allow',
        Action: 'iot:Connect',
        Resource: 'arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}',
      },
      {
        Effect: 'Allow',
        Action: ['iot:Publish', 'iot:Receive'],
        Resource: 'arn:aws:iot:*:*:topic/data/${iot:Connection.Thing.ThingName}/*',
      },
      {
        Effect: 'Allow',
        Action: 'iot:Subscribe',
        Resource: 'arn:aws:iot:*:*:topicfilter/data/${iot:Connection.Thing.ThingName}/*',
      },
    ],
  }),
);

describe('AWS IoT policy evaluation (local MQTT endpoints)', () => {
  it('lets a thing connect with its own name as client id', () => {
    expect(evaluatePolicies([devicePolicy], 'iot:Connect', client('wm101'), context)).toBe('allow');
  });

  it('refuses a client id that is not the attached thing', () => {
    expect(evaluatePolicies([devicePolicy], 'iot:Connect', client('wm102'), context)).toBe('implicit-deny');
  });

  it('refuses everything when no thing is attached (the variable cannot be resolved)', () => {
    const unattached: PolicyContext = { ...context, thingName: undefined };
    expect(evaluatePolicies([devicePolicy], 'iot:Connect', client('wm101'), unattached)).toBe(
      'implicit-deny',
    );
  });

  it('allows publishing under data/<thing>/ and nowhere else', () => {
    expect(evaluatePolicies([devicePolicy], 'iot:Publish', topic('data/wm101/misc'), context)).toBe('allow');
    expect(evaluatePolicies([devicePolicy], 'iot:Publish', topic('data/wm102/misc'), context)).toBe(
      'implicit-deny',
    );
    expect(evaluatePolicies([devicePolicy], 'iot:Publish', topic('cmd/wm101'), context)).toBe(
      'implicit-deny',
    );
  });

  it('treats a substituted thing name as a literal, not a pattern', () => {
    const dotted: PolicyContext = { ...context, clientId: 'a.b', thingName: 'a.b' };
    expect(evaluatePolicies([devicePolicy], 'iot:Publish', topic('data/a.b/x'), dotted)).toBe('allow');
    expect(evaluatePolicies([devicePolicy], 'iot:Publish', topic('data/aXb/x'), dotted)).toBe(
      'implicit-deny',
    );
  });

  it('matches actions case-insensitively and with wildcards', () => {
    const wide = parsePolicyDocument(
      JSON.stringify({ Statement: { Effect: 'Allow', Action: 'IOT:*', Resource: '*' } }),
    );
    expect(evaluatePolicies([wide], 'iot:Subscribe', topic('anything'), context)).toBe('allow');
  });

  it('matches resources with ? as exactly one character', () => {
    const single = parsePolicyDocument(
      JSON.stringify({ Statement: { Effect: 'Allow', Action: 'iot:Publish', Resource: '*:topic/room?' } }),
    );
    expect(evaluatePolicies([single], 'iot:Publish', topic('room1'), context)).toBe('allow');
    expect(evaluatePolicies([single], 'iot:Publish', topic('room12'), context)).toBe('implicit-deny');
  });

  it('lets an explicit Deny in any attached policy win over an Allow', () => {
    const deny = parsePolicyDocument(
      JSON.stringify({
        Statement: [
          { Effect: 'Deny', Action: 'iot:Publish', Resource: '*:topic/data/${iot:ClientId}/secret' },
        ],
      }),
    );
    expect(evaluatePolicies([devicePolicy, deny], 'iot:Publish', topic('data/wm101/secret'), context)).toBe(
      'explicit-deny',
    );
    expect(evaluatePolicies([devicePolicy, deny], 'iot:Publish', topic('data/wm101/misc'), context)).toBe(
      'allow',
    );
  });

  it('honours NotAction and NotResource', () => {
    const inverted = parsePolicyDocument(
      JSON.stringify({
        Statement: [
          { Effect: 'Allow', NotAction: 'iot:Connect', Resource: '*' },
          { Effect: 'Deny', Action: 'iot:*', NotResource: '*:topic/public/*' },
        ],
      }),
    );
    expect(evaluatePolicies([inverted], 'iot:Publish', topic('public/x'), context)).toBe('allow');
    expect(evaluatePolicies([inverted], 'iot:Publish', topic('private/x'), context)).toBe('explicit-deny');
  });

  it('evaluates the IsAttached condition of the product policy', () => {
    const attachedOnly = parsePolicyDocument(
      JSON.stringify({
        Statement: {
          Effect: 'Allow',
          Action: 'iot:Connect',
          Resource: 'arn:aws:iot:*:*:client/${iot:ClientId}',
          Condition: { Bool: { 'iot:Connection.Thing.IsAttached': 'true' } },
        },
      }),
    );
    expect(evaluatePolicies([attachedOnly], 'iot:Connect', client('wm101'), context)).toBe('allow');
    const unattached: PolicyContext = { ...context, thingName: undefined };
    expect(evaluatePolicies([attachedOnly], 'iot:Connect', client('wm101'), unattached)).toBe(
      'implicit-deny',
    );
  });

  it('evaluates string conditions, with IfExists and policy variables in values', () => {
    const conditional = (condition: unknown) =>
      parsePolicyDocument(
        JSON.stringify({
          Statement: { Effect: 'Allow', Action: 'iot:Publish', Resource: '*', Condition: condition },
        }),
      );
    const target = topic('data/wm101/misc');
    const check = (condition: unknown, ctx: PolicyContext = context) =>
      evaluatePolicies([conditional(condition)], 'iot:Publish', target, ctx);
    expect(check({ StringEquals: { 'iot:ClientId': '${iot:Connection.Thing.ThingName}' } })).toBe('allow');
    expect(check({ StringLike: { 'iot:ClientId': ['wm1*', 'x'] } })).toBe('allow');
    expect(check({ StringNotLike: { 'iot:ClientId': 'wm1*' } })).toBe('implicit-deny');
    expect(
      check(
        { StringEquals: { 'iot:Connection.Thing.ThingName': 'wm101' } },
        { ...context, thingName: undefined },
      ),
    ).toBe('implicit-deny');
    expect(
      check(
        { StringEqualsIfExists: { 'iot:Connection.Thing.ThingName': 'wm101' } },
        { ...context, thingName: undefined },
      ),
    ).toBe('allow');
  });

  it('refuses when a condition uses what it cannot evaluate: the Allow lapses, the Deny holds', () => {
    const unknown = { DateGreaterThan: { 'aws:CurrentTime': '2020-01-01T00:00:00Z' } };
    const allow = parsePolicyDocument(
      JSON.stringify({
        Statement: { Effect: 'Allow', Action: 'iot:Connect', Resource: '*', Condition: unknown },
      }),
    );
    const deny = parsePolicyDocument(
      JSON.stringify({
        Statement: { Effect: 'Deny', Action: 'iot:Connect', Resource: '*', Condition: unknown },
      }),
    );
    expect(evaluatePolicies([allow], 'iot:Connect', client('wm101'), context)).toBe('implicit-deny');
    expect(evaluatePolicies([devicePolicy, deny], 'iot:Connect', client('wm101'), context)).toBe(
      'explicit-deny',
    );
  });

  it('applies the product device policy (infra/device-policy.ts) as AWS would', () => {
    const product = parsePolicyDocument(JSON.stringify(devicePolicyDocument()));
    const unattached: PolicyContext = { ...context, thingName: undefined };
    expect(evaluatePolicies([product], 'iot:Connect', client('wm101'), context)).toBe('allow');
    expect(evaluatePolicies([product], 'iot:Connect', client('wm101'), unattached)).toBe('implicit-deny');
    expect(evaluatePolicies([product], 'iot:Publish', topic('data/wm101/misc'), context)).toBe('allow');
    expect(evaluatePolicies([product], 'iot:Publish', topic('cmd/wm101/x'), context)).toBe('implicit-deny');
    expect(
      evaluatePolicies(
        [product],
        'iot:Subscribe',
        iotResourceArn(context, 'topicfilter', 'cmd/wm101/#'),
        context,
      ),
    ).toBe('allow');
  });

  it('gives a thing its own cmd/<thing>/ topics to receive commands on, and no one else’s', () => {
    const product = parsePolicyDocument(JSON.stringify(devicePolicyDocument()));
    const filter = (name: string): string => iotResourceArn(context, 'topicfilter', name);
    const decide = (action: 'iot:Subscribe' | 'iot:Receive' | 'iot:Publish', resource: string) =>
      evaluatePolicies([product], action, resource, context);
    expect(decide('iot:Subscribe', filter('cmd/wm101/#'))).toBe('allow');
    expect(decide('iot:Subscribe', filter('cmd/wm101/reboot'))).toBe('allow');
    expect(decide('iot:Receive', topic('cmd/wm101/reboot'))).toBe('allow');
    expect(decide('iot:Subscribe', filter('cmd/#'))).toBe('implicit-deny');
    expect(decide('iot:Subscribe', filter('cmd/+/reboot'))).toBe('implicit-deny');
    expect(decide('iot:Subscribe', filter('cmd/wm102/#'))).toBe('implicit-deny');
    expect(decide('iot:Receive', topic('cmd/wm102/reboot'))).toBe('implicit-deny');
    // Commands come from the backend (the iot-data Publish API), never from a device.
    expect(decide('iot:Publish', topic('cmd/wm101/reboot'))).toBe('implicit-deny');
    expect(decide('iot:Receive', topic('data/wm101/misc'))).toBe('implicit-deny');
  });

  it('allows nothing without policies', () => {
    expect(evaluatePolicies([], 'iot:Connect', client('wm101'), context)).toBe('implicit-deny');
  });

  it('rejects a document without statements or with a bad effect', () => {
    expect(() => parsePolicyDocument('{}')).toThrow(/Statement/);
    expect(() => parsePolicyDocument(JSON.stringify({ Statement: [{ Effect: 'Maybe' }] }))).toThrow(/Effect/);
  });
});
