/**
 * Registers things and certificates in moto directly through the SDK, for tests of the MQTT
 * endpoints that don't go through the provisioning service.
 */
import { randomBytes } from 'node:crypto';
import {
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  CreateKeysAndCertificateCommand,
  CreatePolicyCommand,
  CreateThingCommand,
  IoTClient,
  UpdateCertificateCommand,
  type CertificateStatus,
} from '@aws-sdk/client-iot';
import { devicePolicyDocument } from '../../../infra/device-policy';

/** The product's device policy, as Terraform and the function create it. */
export const DEVICE_POLICY_DOCUMENT = JSON.stringify(devicePolicyDocument());

export function uniqueThingName(prefix = 'dev'): string {
  return `${prefix}-${randomBytes(5).toString('hex')}`;
}

export function iotClient(region: string, endpoint: string): IoTClient {
  return new IoTClient({ region, endpoint, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
}

export interface RegisteredDevice {
  readonly thingName: string;
  readonly certificateId: string;
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

/** Creates the policy if missing, then a thing with an ACTIVE certificate carrying it. */
export async function registerDevice(
  iot: IoTClient,
  thingName: string,
  options: { policyName?: string; policyDocument?: string; attachThing?: boolean } = {},
): Promise<RegisteredDevice> {
  const policyName = options.policyName ?? 'test-device-policy';
  try {
    await iot.send(
      new CreatePolicyCommand({
        policyName,
        policyDocument: options.policyDocument ?? DEVICE_POLICY_DOCUMENT,
      }),
    );
  } catch (error) {
    if ((error as Error).name !== 'ResourceAlreadyExistsException') throw error;
  }
  await iot.send(new CreateThingCommand({ thingName }));
  const created = await iot.send(new CreateKeysAndCertificateCommand({ setAsActive: true }));
  const certificateArn = created.certificateArn ?? '';
  await iot.send(new AttachPolicyCommand({ policyName, target: certificateArn }));
  if (options.attachThing !== false) {
    await iot.send(new AttachThingPrincipalCommand({ thingName, principal: certificateArn }));
  }
  return {
    thingName,
    certificateId: created.certificateId ?? '',
    certificatePem: created.certificatePem ?? '',
    privateKeyPem: created.keyPair?.PrivateKey ?? '',
  };
}

export async function setCertificateStatus(
  iot: IoTClient,
  certificateId: string,
  newStatus: CertificateStatus,
): Promise<void> {
  await iot.send(new UpdateCertificateCommand({ certificateId, newStatus }));
}
