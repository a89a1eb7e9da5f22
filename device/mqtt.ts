/**
 * The device's data-plane session: MQTT 3.1.1 over mutual TLS to its region's endpoint, client id
 * = thing name (the device policy only lets a thing connect under its own name), telemetry to
 * data/<thing>/misc. AWS IoT closes the connection on a publish the policy denies; the local
 * endpoints do the same, so a refused publish surfaces here as an error.
 */
import { isIP } from 'node:net';
import mqtt, { type MqttClient } from 'mqtt';

export const DEFAULT_MQTT_PORT = 8883;

export interface Endpoint {
  readonly host: string;
  readonly port: number;
}

/**
 * AWS answers a bare hostname (port 8883); the local stack answers "127.0.0.1:PORT". Both are
 * plain endpoint forms, as is a bracketed IPv6 literal with or without a port.
 */
export function parseEndpointAddress(address: string): Endpoint {
  const trimmed = address.trim();
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(trimmed);
  if (bracketed) return { host: bracketed[1] ?? '', port: portOrDefault(bracketed[2], address) };
  if (isIP(trimmed) === 6) return { host: trimmed, port: DEFAULT_MQTT_PORT };
  const hostAndPort = /^([^:\s]+)(?::(\d+))?$/.exec(trimmed);
  if (!hostAndPort) throw new Error(`not an endpoint address: ${address}`);
  return { host: hostAndPort[1] ?? '', port: portOrDefault(hostAndPort[2], address) };
}

function portOrDefault(port: string | undefined, address: string): number {
  if (port === undefined) return DEFAULT_MQTT_PORT;
  const value = Number(port);
  if (!Number.isInteger(value) || value < 1 || value > 65535) throw new Error(`bad port in ${address}`);
  return value;
}

export interface DeviceConnectionOptions {
  readonly endpointAddress: string;
  readonly thingName: string;
  readonly privateKeyPem: string;
  readonly certificatePem: string;
  /** Roots the endpoint's server certificate must chain to. */
  readonly caPems: readonly string[];
  readonly connectTimeoutMs?: number;
}

/** Connects once, without reconnecting: a refusal is an answer the caller must see. */
export async function connectDevice(options: DeviceConnectionOptions): Promise<MqttClient> {
  const { host, port } = parseEndpointAddress(options.endpointAddress);
  return mqtt.connectAsync({
    protocol: 'mqtts',
    host,
    port,
    clientId: options.thingName,
    protocolVersion: 4,
    clean: true,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: options.connectTimeoutMs ?? 10_000,
    key: options.privateKeyPem,
    cert: options.certificatePem,
    ca: [...options.caPems],
    rejectUnauthorized: true,
  });
}

/** Whether the endpoint accepts these credentials now: connects once and leaves at once. */
export async function canConnect(options: DeviceConnectionOptions): Promise<boolean> {
  try {
    await disconnect(await connectDevice(options));
    return true;
  } catch {
    return false;
  }
}

export function telemetryTopic(thingName: string): string {
  return `data/${thingName}/misc`;
}

/** The sample device's message. */
export function telemetryMessage(thingName: string, now: Date = new Date()): string {
  return JSON.stringify({
    'thing-name': thingName,
    global: 'device provisioning',
    datetime: now.toISOString(),
  });
}

export interface PublishOptions {
  readonly count: number;
  readonly intervalMs: number;
  readonly topic?: string;
  readonly onPublished?: (index: number, topic: string, payload: string) => void;
}

/** Publishes `count` messages at QoS 1 (each acknowledged by the broker); returns how many were. */
export async function publishTelemetry(
  client: MqttClient,
  thingName: string,
  options: PublishOptions,
): Promise<number> {
  const topic = options.topic ?? telemetryTopic(thingName);
  let delivered = 0;
  for (let index = 1; index <= options.count; index++) {
    const payload = telemetryMessage(thingName);
    await publishAcknowledged(client, topic, payload);
    delivered++;
    options.onPublished?.(index, topic, payload);
    if (index < options.count) await new Promise((done) => setTimeout(done, options.intervalMs));
  }
  return delivered;
}

/** A QoS 1 publish that also fails when the broker closes the connection instead of acknowledging. */
function publishAcknowledged(client: MqttClient, topic: string, payload: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onClose = (): void =>
      reject(new Error(`connection closed by the endpoint; publish to ${topic} refused`));
    client.once('close', onClose);
    client.publish(topic, payload, { qos: 1 }, (error) => {
      client.removeListener('close', onClose);
      if (error) reject(error);
      else resolve();
    });
  });
}

export async function disconnect(client: MqttClient): Promise<void> {
  if (client.connected) await client.endAsync();
  else client.end(true);
}
