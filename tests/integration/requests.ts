/**
 * What a device sends, built the way firmware would, for integration tests that talk to the
 * local stack (moto as AWS, the local edge as CloudFront + API Gateway).
 */
import { createPrivateKey, generateKeyPairSync, KeyObject, randomBytes, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { DescribeCertificateCommand, DescribeThingCommand, IoTClient } from '@aws-sdk/client-iot';
import { KMSClient } from '@aws-sdk/client-kms';
import {
  DeviceCertificate,
  issueDeviceCertificate,
  parseCaCertificate,
} from '../../functions/provisioning/certificate-authority';
import { kmsSigner } from '../../functions/provisioning/kms';
import { loadReconcilerConfig } from '../../functions/reconciler/config';
import { reconcile, ReconcileDependencies } from '../../functions/reconciler/reconcile';
import { reconcilerDependencies } from '../../functions/reconciler/wiring';
import { DynamoDBClient, GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import {
  canonicalLifecycleMessage,
  canonicalV2Message,
  LifecycleOperation,
  pemToDer,
} from '../../functions/provisioning/wire';
import { makeCsr as makeCsrFor } from '../support/csr';
import { LocalStack, readStack } from '../local/stack';
import { useLocalStack } from '../local/stack-state';

export const stack: LocalStack = readStack();
export const fleetKey: KeyObject = createPrivateKey(readFileSync(stack.fleetSigningKey));

const credentials = { accessKeyId: 'testing', secretAccessKey: 'testing' };
export const iotIn = (region: string) => new IoTClient({ region, endpoint: stack.awsEndpoint, credentials });
export const registryClient = () =>
  new DynamoDBClient({ region: stack.homeRegion, endpoint: stack.awsEndpoint, credentials });

let counter = 0;
/** A thing name no other test uses. */
export function uniqueThingName(prefix: string): string {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${counter}`;
}

export function v1Body(thingName: string, extra: Record<string, unknown> = {}, key: KeyObject = fleetKey) {
  return {
    'thing-name': thingName,
    'thing-name-sig': sign('sha256', Buffer.from(thingName), key).toString('base64'),
    ...extra,
  };
}

export function v2Body(
  thingName: string,
  options: { key?: KeyObject; csrPem?: string; timestamp?: number; nonce?: string } = {},
) {
  const timestamp = options.timestamp ?? Math.floor(Date.now() / 1000);
  const nonce = options.nonce ?? randomBytes(16).toString('base64url');
  const csrDer = options.csrPem ? pemToDer(options.csrPem) : undefined;
  const signature = sign(
    'sha256',
    canonicalV2Message({ thingName, timestamp, nonce, csrDer }),
    options.key ?? fleetKey,
  );
  return {
    'thing-name': thingName,
    'sig-version': 2,
    timestamp,
    nonce,
    signature: signature.toString('base64'),
    ...(options.csrPem ? { CSR: options.csrPem } : {}),
  };
}

/** A CSR whose CN is `commonName`, with a fresh EC P-256 key, as a device with its own key sends. */
export function makeCsr(
  commonName: string,
): Promise<{ pem: string; publicKeySpki: Buffer; privateKeyPem: string }> {
  return makeCsrFor(`CN=${commonName}`);
}

export async function registryRecord(thingName: string) {
  const answer = await registryClient().send(
    new GetItemCommand({
      TableName: stack.tableName,
      Key: { thing_name: { S: thingName } },
      ConsistentRead: true,
    }),
  );
  return answer.Item;
}

export async function thingExists(region: string, thingName: string): Promise<boolean> {
  try {
    await iotIn(region).send(new DescribeThingCommand({ thingName }));
    return true;
  } catch (error) {
    if ((error as Error).name === 'ResourceNotFoundException') return false;
    throw error;
  }
}

/** Simulated places, as the local edge's X-Local-Viewer-* headers. */
export const PLACES = {
  tokyo: {
    'X-Local-Viewer-Latitude': '35.6895',
    'X-Local-Viewer-Longitude': '139.6917',
    'X-Local-Viewer-Country': 'JP',
  },
  sydney: {
    'X-Local-Viewer-Latitude': '-33.8688',
    'X-Local-Viewer-Longitude': '151.2093',
    'X-Local-Viewer-Country': 'AU',
  },
  saoPaulo: {
    'X-Local-Viewer-Latitude': '-23.5505',
    'X-Local-Viewer-Longitude': '-46.6333',
    'X-Local-Viewer-Country': 'BR',
  },
  mumbai: {
    'X-Local-Viewer-Latitude': '19.0760',
    'X-Local-Viewer-Longitude': '72.8777',
    'X-Local-Viewer-Country': 'IN',
  },
  detroit: {
    'X-Local-Viewer-Latitude': '42.3314',
    'X-Local-Viewer-Longitude': '-83.0458',
    'X-Local-Viewer-Country': 'US',
  },
} as const;

export interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Record<string, unknown>;
}

/** What a provisioned device holds: its certificate and the private key that goes with it. */
export interface DeviceCredentials {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

/** A status or renewal body signed with the key of `credentials`' certificate, as firmware builds it. */
export function lifecycleBody(
  operation: LifecycleOperation,
  thingName: string,
  credentials: DeviceCredentials,
  options: {
    csrPem?: string;
    region?: string;
    timestamp?: number;
    nonce?: string;
    signingKeyPem?: string;
  } = {},
) {
  const timestamp = options.timestamp ?? Math.floor(Date.now() / 1000);
  const nonce = options.nonce ?? randomBytes(16).toString('base64url');
  const csrDer = options.csrPem ? pemToDer(options.csrPem) : undefined;
  const signature = sign(
    'sha256',
    canonicalLifecycleMessage({ operation, thingName, timestamp, nonce, csrDer }),
    createPrivateKey(options.signingKeyPem ?? credentials.privateKeyPem),
  );
  return {
    'thing-name': thingName,
    timestamp,
    nonce,
    certificate: credentials.certificatePem,
    signature: signature.toString('base64'),
    ...(options.region ? { region: options.region } : {}),
    ...(options.csrPem ? { CSR: options.csrPem } : {}),
  };
}

/** POST /device-status. */
export const postStatus = (body: unknown) => post(body, {}, stack.statusUrl);
/** POST /device-renew. */
export const postRenew = (body: unknown) => post(body, {}, stack.renewUrl);

export async function post(
  body: unknown,
  headers: Record<string, string> = {},
  url: string = stack.provisioningUrl,
): Promise<Answer> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return {
    status: response.status,
    headers: response.headers,
    body: (await response.json()) as Record<string, unknown>,
  };
}

export async function setFaults(spec: unknown): Promise<void> {
  const response = await fetch(stack.faultsUrl, {
    method: 'POST',
    body: JSON.stringify(spec),
    headers: { 'content-type': 'application/json' },
  });
  if (!response.ok) throw new Error(`fault proxy refused ${JSON.stringify(spec)}: ${await response.text()}`);
}

export async function clearFaults(): Promise<void> {
  await fetch(stack.faultsUrl, { method: 'DELETE' });
}

/** Points SDK clients made in this process (the function's own adapters) at the local stack. */
export function useLocalAws(): void {
  useLocalStack(stack);
}

/**
 * Moves one of a record's clocks (an epoch-seconds attribute) as time passing would, instead of
 * waiting: to `at`, or `earlierBy` seconds back. A record without the attribute is left alone.
 */
export async function moveRecordClock(
  thingName: string,
  attribute: string,
  to: { readonly at: number } | { readonly earlierBy: number },
): Promise<void> {
  const earlier = 'earlierBy' in to;
  await registryClient()
    .send(
      new UpdateItemCommand({
        TableName: stack.tableName,
        Key: { thing_name: { S: thingName } },
        ConditionExpression: 'attribute_exists(#clock)',
        UpdateExpression: earlier ? 'SET #clock = #clock - :value' : 'SET #clock = :value',
        ExpressionAttributeNames: { '#clock': attribute },
        ExpressionAttributeValues: { ':value': { N: String(earlier ? to.earlierBy : to.at) } },
      }),
    )
    .catch((error: Error) => {
      if (error.name !== 'ConditionalCheckFailedException') throw error;
    });
}

/** A certificate of the local stack's device CA, signed through its KMS key, for a fresh EC key. */
export async function issueFromLocalCa(thingName: string): Promise<DeviceCertificate> {
  const kms = new KMSClient({ region: stack.homeRegion, endpoint: stack.awsEndpoint, credentials });
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return issueDeviceCertificate(
    parseCaCertificate(readFileSync(stack.deviceCaCertificate, 'utf8')),
    kmsSigner(kms, stack.deviceCaKmsKeyId),
    { thingName, publicKeySpki: publicKey.export({ type: 'spki', format: 'der' }), validityDays: 30 },
  );
}

/** The reconciler with the function's own adapters, pointed at the local stack. */
export function localReconcile(options: Partial<ReconcileDependencies> = {}) {
  useLocalAws();
  const config = loadReconcilerConfig({ ...process.env, ...stack.functionEnvironment });
  return reconcile({
    ...reconcilerDependencies(config),
    graceSeconds: options.graceSeconds ?? 0,
    ...options,
  });
}

/** Status of a certificate in a region, or undefined when it does not exist. */
export async function certificateStatus(region: string, certificateId: string): Promise<string | undefined> {
  try {
    const answer = await iotIn(region).send(new DescribeCertificateCommand({ certificateId }));
    return answer.certificateDescription?.status;
  } catch (error) {
    if ((error as Error).name === 'ResourceNotFoundException') return undefined;
    throw error;
  }
}
