/**
 * The broker under the local MQTT endpoints, on its own: plain TCP and a permissive stand-in for
 * the AWS IoT checks (anything but `denied/...`), so these pin the MQTT behaviour the endpoints
 * promise (docs/local-stack.md) without moto. The AWS checks themselves: iot-data-plane.test.ts.
 */
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import mqtt, { type MqttClient } from 'mqtt';
import { createMqttBroker, topicMatches, type MqttBroker } from './mqtt-broker';

let broker: MqttBroker;
let server: Server;
let port: number;
const clients: MqttClient[] = [];

beforeAll(async () => {
  const allowed = (name: string) => !name.startsWith('denied/');
  broker = createMqttBroker<null>({
    authenticate: async () => null,
    mayPublish: (_connection, topic) => allowed(topic),
    maySubscribe: (_connection, filter) => allowed(filter),
    mayReceive: (_connection, topic) => allowed(topic),
  });
  server = createServer((socket) => broker.handle(socket));
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', () => done()));
  port = (server.address() as { port: number }).port;
});

afterEach(() => {
  for (const client of clients.splice(0)) client.end(true);
});

afterAll(async () => {
  await broker.close();
  await new Promise<void>((done) => server.close(() => done()));
});

async function client(protocolVersion: 4 | 5, extra: Partial<mqtt.IClientOptions> = {}): Promise<MqttClient> {
  const connected = await mqtt.connectAsync({
    host: '127.0.0.1',
    port,
    protocolVersion,
    reconnectPeriod: 0,
    clientId: `c-${Math.random().toString(16).slice(2)}`,
    ...extra,
  });
  clients.push(connected);
  return connected;
}

function nextMessage(subscriber: MqttClient): Promise<{ topic: string; payload: string; retain: boolean }> {
  return new Promise((done) =>
    subscriber.once('message', (topic, payload, packet) =>
      done({ topic, payload: payload.toString('utf8'), retain: packet.retain }),
    ),
  );
}

describe('topic filters', () => {
  it.each([
    ['cmd/a/#', 'cmd/a/reboot', true],
    ['cmd/a/#', 'cmd/a', true],
    ['cmd/+/reboot', 'cmd/a/reboot', true],
    ['cmd/+', 'cmd/a/reboot', false],
    ['cmd/a/reboot', 'cmd/a/reboot', true],
    ['cmd/a/reboot', 'cmd/a/rebooted', false],
    ['#', '$aws/things/a/shadow', false],
    ['+/things/a/shadow', '$aws/things/a/shadow', false],
  ])('%s matches %s: %s', (filter, topic, expected) => {
    expect(topicMatches(filter, topic)).toBe(expected);
  });
});

describe('local MQTT broker', () => {
  it('carries messages between MQTT 5 and MQTT 3.1.1 clients, both ways', async () => {
    const v5 = await client(5);
    const v311 = await client(4);
    await v5.subscribeAsync('to/v5', { qos: 1 });
    await v311.subscribeAsync('to/v311', { qos: 1 });
    const atV5 = nextMessage(v5);
    const atV311 = nextMessage(v311);
    await v311.publishAsync('to/v5', 'from 3.1.1', { qos: 1 });
    await v5.publishAsync('to/v311', 'from 5', { qos: 1 });
    await expect(atV5).resolves.toMatchObject({ topic: 'to/v5', payload: 'from 3.1.1' });
    await expect(atV311).resolves.toMatchObject({ topic: 'to/v311', payload: 'from 5' });
  });

  it('keeps a retained message for later subscribers until an empty one clears it', async () => {
    const publisher = await client(5);
    await publisher.publishAsync('state/lamp', 'on', { qos: 1, retain: true });
    const late = await client(4);
    const retained = nextMessage(late);
    await late.subscribeAsync('state/#', { qos: 1 });
    await expect(retained).resolves.toEqual({ topic: 'state/lamp', payload: 'on', retain: true });
    await publisher.publishAsync('state/lamp', '', { qos: 1, retain: true });
    const later = await client(5);
    const anything = jest.fn();
    later.on('message', anything);
    await later.subscribeAsync('state/#', { qos: 1 });
    await later.publishAsync('probe', 'x', { qos: 1 }); // a round trip after the SUBACK
    expect(anything).not.toHaveBeenCalled();
  });

  it('publishes the will of a connection that drops, not of one that disconnects', async () => {
    const watcher = await client(5);
    await watcher.subscribeAsync('wills/#', { qos: 1 });
    const will = (topic: string) => ({
      will: { topic, payload: Buffer.from('gone'), qos: 1 as const, retain: false },
    });
    const polite = await client(5, will('wills/polite'));
    await polite.endAsync();
    const dropped = await client(4, will('wills/dropped'));
    const seen = nextMessage(watcher);
    dropped.stream.destroy();
    await expect(seen).resolves.toMatchObject({ topic: 'wills/dropped', payload: 'gone' });
  });

  it('refuses QoS 2 (AWS IoT has none): an MQTT 5 client is told so in a DISCONNECT', async () => {
    const sender = await client(5);
    const disconnect = new Promise<number | undefined>((done) =>
      sender.once('disconnect', (packet) => done(packet.reasonCode)),
    );
    sender.publish('any/topic', 'x', { qos: 2 });
    await expect(disconnect).resolves.toBe(0x9b);
  });

  it('answers a publish the hooks deny with PUBACK 0x87 under MQTT 5, and delivers nothing', async () => {
    const sender = await client(5);
    await expect(sender.publishAsync('denied/topic', 'x', { qos: 1 })).rejects.toThrow(/Not authorized/);
    await sender.publishAsync('allowed/topic', 'x', { qos: 1 });
  });

  it('ends a connection silent for one and a half keep-alive periods', async () => {
    const socket: Socket = tcpConnect(port, '127.0.0.1');
    await new Promise<void>((done) => socket.once('connect', () => done()));
    // CONNECT, "MQTT" level 4, clean session, keep-alive 1 s, client id "k"; then silence.
    socket.write(Buffer.from([0x10, 13, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 2, 0, 1, 0, 1, 0x6b]));
    socket.resume(); // read the CONNACK, so the end of the stream is seen
    const closed = new Promise<void>((done) => socket.once('close', () => done()));
    await closed;
    socket.destroy();
  });
});
