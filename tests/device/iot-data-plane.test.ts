/**
 * The local regional MQTT endpoints against a private moto: devices are registered straight
 * through the SDK here, so these tests pin the endpoint's AWS IoT behaviour on their own.
 */
import type { IoTClient } from '@aws-sdk/client-iot';
import { connectDevice, disconnect, publishTelemetry } from '../../device/mqtt';
import { startRegionalBrokers, type RegionalBrokers } from '../local/iot-data-plane';
import { openWatch, type WatchSubscription } from '../local/watch';
import {
  iotClient,
  registerDevice,
  setCertificateStatus,
  uniqueThingName,
  type RegisteredDevice,
} from './support/iot-fixtures';
import { startOwnMoto, type OwnMoto } from './support/own-moto';

const HOME = 'eu-central-1';
const OTHER = 'ap-northeast-1';

let moto: OwnMoto;
let brokers: RegionalBrokers;
let watch: WatchSubscription;
const clients: Record<string, IoTClient> = {};

beforeAll(async () => {
  moto = await startOwnMoto();
  brokers = await startRegionalBrokers({
    regions: [HOME, OTHER],
    host: '127.0.0.1',
    ports: {},
    awsEndpoint: moto.endpoint,
    caCertPem: moto.ca.certPem,
    caKeyPem: moto.ca.keyPem,
    watchPort: 0,
  });
  watch = await openWatch(brokers.watchUrl);
  for (const region of [HOME, OTHER]) clients[region] = iotClient(region, moto.endpoint);
}, 60_000);

afterAll(async () => {
  watch?.close();
  await brokers?.close();
  await moto?.stop();
});

function connect(device: RegisteredDevice, region: string, clientId = device.thingName) {
  return connectDevice({
    endpointAddress: brokers.endpoints[region] ?? '',
    thingName: clientId,
    privateKeyPem: device.privateKeyPem,
    certificatePem: device.certificatePem,
    caPems: [moto.ca.certPem],
  });
}

function home(): IoTClient {
  return clients[HOME] as IoTClient;
}

describe('local regional MQTT endpoint', () => {
  it('accepts a registered, attached, active certificate and shows its messages on the observer', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const client = await connect(device, HOME);
    await publishTelemetry(client, device.thingName, { count: 2, intervalMs: 10 });
    await disconnect(client);
    const seen = await watch.waitFor((message) => message.topic === `data/${device.thingName}/misc`, 5000);
    expect(seen.region).toBe(HOME);
    expect(JSON.parse(seen.payload)).toMatchObject({
      'thing-name': device.thingName,
      global: 'device provisioning',
    });
  });

  it('closes the connection on a publish outside data/<thing>/ and delivers nothing', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const client = await connect(device, HOME);
    await expect(
      publishTelemetry(client, device.thingName, {
        count: 1,
        intervalMs: 0,
        topic: 'data/someone-else/misc',
      }),
    ).rejects.toThrow();
    await disconnect(client);
    expect(watch.messages.some((message) => message.topic === 'data/someone-else/misc')).toBe(false);
  });

  it('refuses a subscription outside the thing’s own topics', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const client = await connect(device, HOME);
    const own = await client.subscribeAsync(`cmd/${device.thingName}/#`, { qos: 1 });
    expect(own.map((grant) => grant.qos)).toEqual([1]);
    // mqtt.js turns a SUBACK with 0x80 into an error.
    await expect(client.subscribeAsync('cmd/#', { qos: 1 })).rejects.toThrow(/Subscribe error/);
    await disconnect(client);
  });

  it('refuses a certificate made INACTIVE, and one REVOKED', async () => {
    for (const status of ['INACTIVE', 'REVOKED'] as const) {
      const device = await registerDevice(home(), uniqueThingName());
      await disconnect(await connect(device, HOME));
      await setCertificateStatus(home(), device.certificateId, status);
      await expect(connect(device, HOME)).rejects.toThrow(/Not authorized/i);
    }
  });

  it('refuses a certificate registered in another region', async () => {
    const device = await registerDevice(clients[OTHER] as IoTClient, uniqueThingName());
    await expect(connect(device, HOME)).rejects.toThrow(/Not authorized/i);
    await disconnect(await connect(device, OTHER));
  });

  it('refuses a client id other than the attached thing, and a certificate attached to no thing', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    await expect(connect(device, HOME, uniqueThingName())).rejects.toThrow(/Not authorized/i);
    const loose = await registerDevice(home(), uniqueThingName(), { attachThing: false });
    await expect(connect(loose, HOME)).rejects.toThrow(/Not authorized/i);
  });

  it('refuses a certificate whose policy does not allow iot:Connect', async () => {
    const device = await registerDevice(home(), uniqueThingName(), {
      policyName: 'publish-only',
      policyDocument: JSON.stringify({
        Statement: [{ Effect: 'Allow', Action: 'iot:Publish', Resource: '*' }],
      }),
    });
    await expect(connect(device, HOME)).rejects.toThrow(/Not authorized/i);
  });
});
