/**
 * The 2018 sample's call pattern as a handler, for `make bench` to run side by side with ours:
 * the same local edge and sandboxes, the same moto behind the same AWS proxy, the same delay.
 * Not a port of the sample (Python, boto3): its AWS calls, in its order, with its habits.
 *
 * Where the order comes from: aws-samples/aws-iot-global-device-provisioning,
 * provisioning/lambda/lambda_function.py — lambda_handler verifies the signature, then
 * device_marked_for_provisioning (GetItem), provision_device (DescribeEndpoint,
 * create_iot_policy_if_missing → GetPolicy, CreateThing, CreateKeysAndCertificate or
 * CreateCertificateFromCsr, AttachPolicy, AttachThingPrincipal), then
 * update_device_provisioning_status (UpdateItem). 8 AWS calls in series; its boto3 clients are
 * created inside those functions, so on every request (here: fresh SDK clients per request).
 * Its ninth call, the ipstack lookup, is left out: the bench's devices are placed by CloudFront
 * headers, for ours as for this. See also docs/facts.md, "The 2018 sample".
 */
import { createPublicKey, verify } from 'node:crypto';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { DynamoDBClient, GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import {
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  CreateKeysAndCertificateCommand,
  CreatePolicyCommand,
  CreateThingCommand,
  DescribeEndpointCommand,
  GetPolicyCommand,
  IoTClient,
} from '@aws-sdk/client-iot';
import { devicePolicyDocument } from '../../infra/device-policy';
import { nearestRegion, enabledRegionSites } from '../../functions/provisioning/regions';

const answer = (body: Record<string, unknown>): APIGatewayProxyStructuredResultV2 => ({
  // The sample answered everything with 200 and a status field.
  statusCode: 200,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(body),
});

function environment(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

export async function handler(event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> {
  const request = JSON.parse(event.body ?? '{}') as Record<string, string | undefined>;
  const thingName = request['thing-name'];
  const signature = request['thing-name-sig'];
  if (!thingName || !signature) return answer({ status: 'error', message: 'no thing name or sig' });
  // The sample reads its public key file on every request.
  const fleetKey = createPublicKey(environment('FLEET_PUBLIC_KEY').replace(/\\n/g, '\n'));
  if (!verify('sha256', Buffer.from(thingName), fleetKey, Buffer.from(signature, 'base64')))
    return answer({ status: 'error', message: 'wrong sig' });

  const tableName = environment('TABLE_NAME');
  const key = { thing_name: { S: thingName } };
  const item = (
    await new DynamoDBClient({ region: environment('REGISTRY_REGION') }).send(
      new GetItemCommand({ TableName: tableName, Key: key }),
    )
  ).Item;
  if (item?.prov_status?.S !== 'unprovisioned') return answer({ status: 'error', message: 'you not' });

  const latitude = Number(event.headers?.['cloudfront-viewer-latitude']);
  const longitude = Number(event.headers?.['cloudfront-viewer-longitude']);
  const region = nearestRegion(
    { latitude, longitude },
    enabledRegionSites(environment('IOT_REGIONS').split(',')),
  ).region;
  const policyName = environment('IOT_POLICY_NAME');

  const iot = new IoTClient({ region });
  const { endpointAddress } = await iot.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }));
  try {
    await iot.send(new GetPolicyCommand({ policyName }));
  } catch (error) {
    if ((error as Error).name !== 'ResourceNotFoundException') throw error;
    await iot.send(
      new CreatePolicyCommand({ policyName, policyDocument: JSON.stringify(devicePolicyDocument()) }),
    );
  }
  await iot.send(new CreateThingCommand({ thingName }));
  const certificate = await iot.send(new CreateKeysAndCertificateCommand({ setAsActive: true }));
  await iot.send(new AttachPolicyCommand({ policyName, target: certificate.certificateArn }));
  await iot.send(new AttachThingPrincipalCommand({ thingName, principal: certificate.certificateArn }));

  await new DynamoDBClient({ region: environment('REGISTRY_REGION') }).send(
    new UpdateItemCommand({
      TableName: tableName,
      Key: key,
      UpdateExpression: 'SET prov_status = :s, prov_datetime = :d, aws_region = :r',
      ExpressionAttributeValues: {
        ':s': { S: 'provisioned' },
        ':d': { S: new Date().toISOString().slice(0, 19) },
        ':r': { S: region },
      },
    }),
  );
  return answer({
    status: 'success',
    region,
    endpointAddress,
    certificatePem: certificate.certificatePem,
    PrivateKey: certificate.keyPair?.PrivateKey,
  });
}
