/**
 * The device's data-plane session: MQTT 5 (or 3.1.1) over mutual TLS to its region's endpoint,
 * client id = thing name (the device policy only lets a thing connect under its own name),
 * telemetry to data/<thing>/misc. AWS IoT answers a publish the policy denies with PUBACK 0x87
 * under MQTT 5 and by closing the connection under 3.1.1; the local endpoints do the same, so a
 * refused publish surfaces here as an error either way.
 *
 * A refused CONNECT becomes a ConnectionRefusedError that says what was refused and why, as far as
 * the endpoint said: MQTT 5 carries a reason code and may carry a reason string (the local
 * endpoints say which check failed; AWS IoT may say less), MQTT 3.1.1 only a return code.
 */
import { isIP } from 'node:net';
import mqtt, { ReasonCodes, type IConnackPacket, type MqttClient, type Packet } from 'mqtt';

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
  /** 5 (MQTT 5, the default) or 4 (MQTT 3.1.1); AWS IoT takes both. */
  readonly protocolVersion?: 4 | 5;
}

/**
 * A CONNACK code in words, as mqtt.js names them ("Not authorized"); 1–5 are also MQTT 3.1.1's
 * return codes, with the same meaning.
 */
function reasonInWords(code: number): string {
  return (ReasonCodes as Readonly<Record<number, string>>)[code] ?? `unknown code ${code}`;
}

/** The endpoint answered CONNECT with a refusal: what it refused and, where it said, why. */
export class ConnectionRefusedError extends Error {
  override readonly name = 'ConnectionRefusedError';
  constructor(
    /** CONNACK return code (3.1.1) or reason code (MQTT 5): 5 / 0x87 is "not authorized". */
    readonly code: number,
    readonly protocolVersion: 4 | 5,
    /** The code in words: "Not authorized", "Client Identifier not valid", ... */
    readonly refusal: string,
    /** The endpoint's reason string (MQTT 5 only, when it sent one). */
    readonly reason: string | undefined,
    clientId: string,
  ) {
    super(
      `the endpoint refused the connection as ${clientId}: ${refusal} ` +
        (protocolVersion === 5
          ? `(MQTT 5 reason code 0x${code.toString(16)})` + (reason ? `: ${reason}` : '; it gave no reason')
          : `(MQTT 3.1.1 return code ${code}; MQTT 3.1.1 carries no reason)`),
    );
  }

  /** Not authorized: the certificate is unknown, inactive or revoked, or not allowed this client id. */
  get notAuthorized(): boolean {
    return this.protocolVersion === 5 ? this.code === 0x87 : this.code === 5;
  }
}

/** Connects once, without reconnecting: a refusal is an answer the caller must see. */
export async function connectDevice(options: DeviceConnectionOptions): Promise<MqttClient> {
  const { host, port } = parseEndpointAddress(options.endpointAddress);
  const protocolVersion = options.protocolVersion ?? 5;
  const client = mqtt.connect({
    protocol: 'mqtts',
    host,
    port,
    clientId: options.thingName,
    protocolVersion,
    clean: true,
    keepalive: 30,
    reconnectPeriod: 0,
    connectTimeout: options.connectTimeoutMs ?? 10_000,
    key: options.privateKeyPem,
    cert: options.certificatePem,
    ca: [...options.caPems],
    rejectUnauthorized: true,
  });
  return new Promise<MqttClient>((resolve, reject) => {
    let connack: IConnackPacket | undefined;
    const onPacket = (packet: Packet): void => {
      if (packet.cmd === 'connack') connack = packet;
    };
    const settle = (outcome: () => void): void => {
      client.removeListener('packetreceive', onPacket);
      client.removeListener('connect', onConnect);
      client.removeListener('error', onError);
      client.removeListener('close', onClose);
      outcome();
    };
    const onConnect = (): void => settle(() => resolve(client));
    const onError = (error: Error): void =>
      settle(() => {
        client.end(true);
        reject(refusalOf(connack, protocolVersion, options.thingName) ?? error);
      });
    const onClose = (): void =>
      settle(() => {
        client.end(true);
        reject(
          refusalOf(connack, protocolVersion, options.thingName) ??
            new Error(
              `the endpoint closed the connection before it answered CONNECT as ${options.thingName}`,
            ),
        );
      });
    client.on('packetreceive', onPacket);
    client.once('connect', onConnect);
    client.once('error', onError);
    client.once('close', onClose);
  });
}

function refusalOf(
  connack: IConnackPacket | undefined,
  protocolVersion: 4 | 5,
  clientId: string,
): ConnectionRefusedError | undefined {
  const code = protocolVersion === 5 ? connack?.reasonCode : connack?.returnCode;
  if (!connack || code === undefined || code === 0) return undefined;
  return new ConnectionRefusedError(
    code,
    protocolVersion,
    reasonInWords(code),
    connack.properties?.reasonString,
    clientId,
  );
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

/**
 * A QoS 1 publish that fails when the endpoint refuses it: PUBACK with a reason code (MQTT 5),
 * DISCONNECT with one (MQTT 5), or a closed connection (3.1.1).
 */
function publishAcknowledged(client: MqttClient, topic: string, payload: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let disconnectReason = '';
    const onDisconnect = (packet: Packet): void => {
      if (packet.cmd !== 'disconnect') return;
      const code = packet.reasonCode ?? 0;
      const words = reasonInWords(code);
      const reason = packet.properties?.reasonString;
      disconnectReason = `: ${words} (MQTT 5 reason code 0x${code.toString(16)})${reason ? `: ${reason}` : ''}`;
    };
    const onClose = (): void =>
      reject(new Error(`connection closed by the endpoint; publish to ${topic} refused${disconnectReason}`));
    client.on('disconnect', onDisconnect);
    client.once('close', onClose);
    client.publish(topic, payload, { qos: 1 }, (error, packet) => {
      client.removeListener('close', onClose);
      client.removeListener('disconnect', onDisconnect);
      if (!error) return resolve();
      const reason = (packet as { properties?: { reasonString?: string } } | undefined)?.properties
        ?.reasonString;
      reject(new Error(`publish to ${topic} refused: ${error.message}${reason ? ` (${reason})` : ''}`));
    });
  });
}

export async function disconnect(client: MqttClient): Promise<void> {
  if (client.connected) await client.endAsync();
  else client.end(true);
}
