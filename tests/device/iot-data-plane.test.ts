/**
 * The local regional MQTT endpoints against a private moto: devices are registered straight
 * through the SDK here, so these tests pin the endpoint's AWS IoT behaviour on their own, under
 * MQTT 5 and MQTT 3.1.1 alike.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import type { IoTClient } from '@aws-sdk/client-iot';
import mqtt from 'mqtt';
import {
  connectDevice,
  ConnectionRefusedError,
  disconnect,
  publishTelemetry,
  type DeviceConnectionOptions,
} from '../../device/mqtt';
import { MQTT_ALPN_PROTOCOL, startRegionalBrokers, type RegionalBrokers } from '../local/iot-data-plane';
import { main as localPublish, publishCommand } from '../local/publish';
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

function options(
  device: RegisteredDevice,
  region: string,
  protocolVersion: 4 | 5,
  clientId = device.thingName,
): DeviceConnectionOptions {
  return {
    endpointAddress: brokers.endpoints[region] ?? '',
    thingName: clientId,
    privateKeyPem: device.privateKeyPem,
    certificatePem: device.certificatePem,
    caPems: [moto.ca.certPem],
    protocolVersion,
  };
}

function home(): IoTClient {
  return clients[HOME] as IoTClient;
}

/** The refusal a connection attempt ended with (fails the test if it connected). */
async function refusalOf(attempt: Promise<unknown>): Promise<ConnectionRefusedError> {
  const error = await attempt.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(ConnectionRefusedError);
  return error as ConnectionRefusedError;
}

describe.each([
  { protocolVersion: 5, name: 'MQTT 5' },
  { protocolVersion: 4, name: 'MQTT 3.1.1' },
] as const)('local regional MQTT endpoint, $name', ({ protocolVersion }) => {
  const connect = (device: RegisteredDevice, region: string, clientId?: string) =>
    connectDevice(options(device, region, protocolVersion, clientId));

  it('accepts a registered, attached, active certificate and shows its messages on the observer', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const client = await connect(device, HOME);
    expect(client.options.protocolVersion).toBe(protocolVersion);
    await publishTelemetry(client, device.thingName, { count: 2, intervalMs: 10 });
    await disconnect(client);
    const seen = await watch.waitFor((message) => message.topic === `data/${device.thingName}/misc`, 5000);
    expect(seen.region).toBe(HOME);
    expect(JSON.parse(seen.payload)).toMatchObject({
      'thing-name': device.thingName,
      global: 'device provisioning',
    });
  });

  it('refuses a publish outside data/<thing>/ and delivers nothing', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const client = await connect(device, HOME);
    const refused = publishTelemetry(client, device.thingName, {
      count: 1,
      intervalMs: 0,
      topic: 'data/someone-else/misc',
    });
    if (protocolVersion === 5) {
      // PUBACK 0x87: this message is refused, the connection stays.
      await expect(refused).rejects.toThrow(/publish to data\/someone-else\/misc refused: .*Not authorized/);
      await publishTelemetry(client, device.thingName, { count: 1, intervalMs: 0 });
    } else {
      await expect(refused).rejects.toThrow(/connection closed by the endpoint/);
    }
    await disconnect(client);
    expect(watch.messages.some((message) => message.topic === 'data/someone-else/misc')).toBe(false);
  });

  it('refuses a subscription outside the thing’s own topics', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const client = await connect(device, HOME);
    const own = await client.subscribeAsync(`cmd/${device.thingName}/#`, { qos: 1 });
    expect(own.map((grant) => grant.qos)).toEqual([1]);
    // mqtt.js turns a SUBACK with 0x80 (3.1.1) or 0x87 (MQTT 5) into an error.
    await expect(client.subscribeAsync('cmd/#', { qos: 1 })).rejects.toThrow(
      protocolVersion === 5 ? /Subscribe error: Not authorized/ : /Subscribe error/,
    );
    await disconnect(client);
  });

  it('delivers a command sent as the service (make local-publish) to the thing’s subscription', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const client = await connect(device, HOME);
    await client.subscribeAsync(`cmd/${device.thingName}/#`, { qos: 1 });
    const received = new Promise<{ topic: string; payload: string }>((done) =>
      client.once('message', (topic, payload) => done({ topic, payload: payload.toString('utf8') })),
    );
    const receivers = await publishCommand(brokers.watchUrl, {
      topic: `cmd/${device.thingName}/reboot`,
      payload: '{"delay":5}',
    });
    expect(receivers).toEqual({ [HOME]: 1, [OTHER]: 0 });
    await expect(received).resolves.toEqual({
      topic: `cmd/${device.thingName}/reboot`,
      payload: '{"delay":5}',
    });
    await disconnect(client);
  });

  it('refuses a certificate made INACTIVE, and one REVOKED, saying so', async () => {
    for (const status of ['INACTIVE', 'REVOKED'] as const) {
      const device = await registerDevice(home(), uniqueThingName());
      await disconnect(await connect(device, HOME));
      await setCertificateStatus(home(), device.certificateId, status);
      const refusal = await refusalOf(connect(device, HOME));
      expect(refusal.notAuthorized).toBe(true);
      expect(refusal.message).toMatch(/refused the connection as .*: Not authorized/);
      if (protocolVersion === 5) {
        expect(refusal.code).toBe(0x87);
        expect(refusal.reason).toBe(`certificate ${device.certificateId} is ${status}`);
      } else {
        expect(refusal.code).toBe(5);
        expect(refusal.message).toMatch(/MQTT 3.1.1 carries no reason/);
      }
    }
  });

  it('refuses a certificate registered in another region', async () => {
    const device = await registerDevice(clients[OTHER] as IoTClient, uniqueThingName());
    const refusal = await refusalOf(connect(device, HOME));
    expect(refusal.notAuthorized).toBe(true);
    if (protocolVersion === 5) expect(refusal.reason).toMatch(`is not registered in ${HOME}`);
    await disconnect(await connect(device, OTHER));
  });

  it('refuses a client id other than the attached thing, and a certificate attached to no thing', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const otherName = uniqueThingName();
    const wrongId = await refusalOf(connect(device, HOME, otherName));
    expect(wrongId.notAuthorized).toBe(true);
    if (protocolVersion === 5)
      expect(wrongId.reason).toBe(
        `certificate ${device.certificateId} is not attached to thing ${otherName}`,
      );
    const loose = await registerDevice(home(), uniqueThingName(), { attachThing: false });
    expect((await refusalOf(connect(loose, HOME))).notAuthorized).toBe(true);
  });

  it('refuses a certificate whose policy does not allow iot:Connect', async () => {
    const device = await registerDevice(home(), uniqueThingName(), {
      policyName: 'publish-only',
      policyDocument: JSON.stringify({
        Statement: [{ Effect: 'Allow', Action: 'iot:Publish', Resource: '*' }],
      }),
    });
    const refusal = await refusalOf(connect(device, HOME));
    expect(refusal.notAuthorized).toBe(true);
    if (protocolVersion === 5) expect(refusal.reason).toMatch(/policy does not allow iot:Connect/);
  });
});

describe('one broker for both protocol versions', () => {
  it('lets an MQTT 5 connection take over a 3.1.1 one with the same client id, as AWS IoT does', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const older = await connectDevice(options(device, HOME, 4));
    const closed = new Promise<void>((done) => older.once('close', () => done()));
    const newer = await connectDevice(options(device, HOME, 5));
    await closed;
    await publishTelemetry(newer, device.thingName, { count: 1, intervalMs: 0 });
    await disconnect(newer);
    older.end(true);
  });

  it('answers a CONNECT of an unknown protocol version with "unacceptable protocol version"', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const [host, port] = [
      brokers.endpoints[HOME]?.split(':')[0],
      Number(brokers.endpoints[HOME]?.split(':')[1]),
    ];
    const socket = tlsConnect({
      host,
      port,
      key: device.privateKeyPem,
      cert: device.certificatePem,
      ca: [moto.ca.certPem],
    });
    await new Promise<void>((done) => socket.once('secureConnect', () => done()));
    // CONNECT, protocol name "MQTT", level 6, clean session, keep-alive 30, client id "x".
    socket.write(Buffer.from([0x10, 13, 0, 4, 0x4d, 0x51, 0x54, 0x54, 6, 2, 0, 30, 0, 1, 0x78]));
    const answer = await new Promise<Buffer>((done) => socket.once('data', (chunk: Buffer) => done(chunk)));
    // CONNACK, remaining length 2, no session, return code 1.
    expect([...answer]).toEqual([0x20, 2, 0, 1]);
    socket.destroy();
  });
});

describe('the ALPN listener (AWS IoT’s MQTT on port 443)', () => {
  const alpnEndpoint = () => {
    const [host, port] = (brokers.alpnEndpoints[HOME] ?? '').split(':');
    return { host: host ?? '', port: Number(port) };
  };

  it(`takes MQTT 5 from a client that offers ALPN ${MQTT_ALPN_PROTOCOL}`, async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const client = await mqtt.connectAsync({
      protocol: 'mqtts',
      ...alpnEndpoint(),
      clientId: device.thingName,
      protocolVersion: 5,
      reconnectPeriod: 0,
      key: device.privateKeyPem,
      cert: device.certificatePem,
      ca: [moto.ca.certPem],
      ALPNProtocols: [MQTT_ALPN_PROTOCOL],
    });
    await publishTelemetry(client, device.thingName, { count: 1, intervalMs: 0 });
    await disconnect(client);
    await watch.waitFor((message) => message.topic === `data/${device.thingName}/misc`, 5000);
  });

  it('refuses a client that offers no ALPN there', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    await expect(
      connectDevice({ ...options(device, HOME, 5), endpointAddress: brokers.alpnEndpoints[HOME] ?? '' }),
    ).rejects.toThrow(/closed the connection before it answered CONNECT/);
  });
});

describe('make local-publish', () => {
  it('sends to the thing’s command topic and says who received it', async () => {
    const device = await registerDevice(home(), uniqueThingName());
    const client = await connectDevice(options(device, HOME, 5));
    await client.subscribeAsync(`cmd/${device.thingName}/#`, { qos: 1 });
    const received = new Promise<string>((done) => client.once('message', (topic) => done(topic)));
    const stackFile = stackFileFor(brokers.watchUrl);
    const out: string[] = [];
    const err: string[] = [];
    const status = await localPublish(
      [
        'node',
        'publish',
        '--stack',
        stackFile,
        '--thing',
        device.thingName,
        '--topic',
        `cmd/${device.thingName}/reboot`,
        '--message',
        '{"delay":5}',
      ],
      (line) => out.push(line),
      (line) => err.push(line),
    );
    expect({ status, err }).toEqual({ status: 0, err: [] });
    expect(out.join('\n')).toMatch(
      `published to cmd/${device.thingName}/reboot (QoS 1) in every local region: received by 1 in ${HOME}`,
    );
    await expect(received).resolves.toBe(`cmd/${device.thingName}/reboot`);
    await disconnect(client);
  });

  it('refuses a topic outside cmd/<thing>/ with a usage error, and says when nobody received it', async () => {
    const stackFile = stackFileFor(brokers.watchUrl);
    const err: string[] = [];
    const args = (...rest: string[]) => [
      'node',
      'publish',
      '--stack',
      stackFile,
      '--thing',
      'wm101',
      ...rest,
    ];
    expect(
      await localPublish(
        args('--topic', 'cmd/wm102/reboot'),
        () => undefined,
        (line) => err.push(line),
      ),
    ).toBe(2);
    expect(err.join('\n')).toMatch(/goes under cmd\/wm101\/.*receive cmd\/wm101\/\* only/);
    err.length = 0;
    expect(
      await localPublish(
        args('--region', HOME),
        () => undefined,
        (line) => err.push(line),
      ),
    ).toBe(0);
    expect(err.join('\n')).toMatch(/no connection is subscribed to cmd\/wm101\/command/);
  });
});

/** A stack.json naming only what local-publish reads. */
function stackFileFor(watchUrl: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'local-publish-')), 'stack.json');
  writeFileSync(file, JSON.stringify({ watchUrl, mqttRunning: true }));
  return file;
}
