/**
 * The AWS IoT policy every provisioned device gets. Terraform creates it in each enabled region;
 * the function's IoT adapter creates the same document in a region that lacks it (a region added
 * later), so both import it from here. Keep this file free of cdktf imports: it is bundled into
 * the Lambda.
 *
 * Region and account are wildcards on purpose: an IoT policy is only ever evaluated in the
 * account and region it lives in, so `*` there grants nothing more, and the document stays
 * identical everywhere (the function need not look up its account id).
 */

/** Devices publish telemetry under data/<thing name>/... */
export const DEVICE_DATA_TOPIC_PREFIX = 'data';
/** Devices receive commands under cmd/<thing name>/... */
export const DEVICE_COMMAND_TOPIC_PREFIX = 'cmd';

const THING_NAME = '${iot:Connection.Thing.ThingName}';
const IOT_ARN = 'arn:aws:iot:*:*';

export interface IotPolicyStatement {
  readonly Effect: 'Allow';
  readonly Action: string | readonly string[];
  readonly Resource: string | readonly string[];
  readonly Condition?: Readonly<Record<string, Readonly<Record<string, string>>>>;
}

export interface IotPolicyDocument {
  readonly Version: '2012-10-17';
  readonly Statement: readonly IotPolicyStatement[];
}

/** The device policy: each device may act only as itself, on its own topics. */
export function devicePolicyDocument(): IotPolicyDocument {
  return {
    Version: '2012-10-17',
    Statement: [
      {
        // Client id must be the thing name, and the certificate must be attached to that thing.
        Effect: 'Allow',
        Action: 'iot:Connect',
        Resource: `${IOT_ARN}:client/${THING_NAME}`,
        Condition: { Bool: { 'iot:Connection.Thing.IsAttached': 'true' } },
      },
      {
        Effect: 'Allow',
        Action: 'iot:Publish',
        Resource: `${IOT_ARN}:topic/${DEVICE_DATA_TOPIC_PREFIX}/${THING_NAME}/*`,
      },
      {
        Effect: 'Allow',
        Action: 'iot:Subscribe',
        Resource: `${IOT_ARN}:topicfilter/${DEVICE_COMMAND_TOPIC_PREFIX}/${THING_NAME}/*`,
      },
      {
        Effect: 'Allow',
        Action: 'iot:Receive',
        Resource: `${IOT_ARN}:topic/${DEVICE_COMMAND_TOPIC_PREFIX}/${THING_NAME}/*`,
      },
    ],
  };
}
