/**
 * The local stand-in for AWS IoT Core's data plane: one MQTT-over-TLS endpoint per enabled region,
 * each answering for that region's registry in moto, plus an observer stream of every message
 * (like the console's MQTT test client).
 *
 * Authentication follows AWS IoT, not the TLS chain: the client certificate's id (SHA-256 of its
 * DER) must be registered and ACTIVE in *this* region, attached to the thing named by the client
 * id, and the certificate's policies must allow iot:Connect for that client. Chain checks are left
 * out on purpose (`rejectUnauthorized: false`): certificates from CreateKeysAndCertificate are
 * self-signed by moto, and AWS itself accepts registered certificates from any CA.
 * Authorization of publish/subscribe/receive uses the attached policies, fetched once per
 * connection (AWS caches them per connection too). MQTT 3.1.1 and MQTT 5 both work, on one broker
 * per region (tests/local/mqtt-broker.ts): a denied publish closes a 3.1.1 connection and gets a
 * PUBACK 0x87 under MQTT 5 (QoS 1); a denied subscription is answered with 0x80 (3.1.1) or 0x87
 * (MQTT 5), as AWS IoT answers.
 *
 * Each region also listens where AWS IoT takes MQTT on port 443: TLS with ALPN `x-amzn-mqtt-ca`.
 * A client there that offers no ALPN or another protocol is refused, as AWS would route it to HTTPS.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import {
  createServer as createTlsServer,
  TLSSocket,
  type Server as TlsServer,
  type TlsOptions,
} from 'node:tls';
import type { Socket } from 'node:net';
import {
  DescribeCertificateCommand,
  GetPolicyCommand,
  IoTClient,
  ListAttachedPoliciesCommand,
  ListPrincipalThingsCommand,
} from '@aws-sdk/client-iot';
import {
  evaluatePolicies,
  iotResourceArn,
  parsePolicyDocument,
  type IotAction,
  type PolicyContext,
} from './iot-policy';
import type { PolicyDocument } from './iot-policy';
import {
  ConnectRefusal,
  createMqttBroker,
  REASON,
  type BrokerConnection,
  type MqttBroker,
} from './mqtt-broker';
import { issueServerCertificate } from './pki';
import { endpointAddress, MQTT_ALPN_STAND_IN_PORT } from './stack-state';

/** The ALPN protocol id AWS IoT expects for MQTT with a client certificate on port 443. */
export const MQTT_ALPN_PROTOCOL = 'x-amzn-mqtt-ca';

export interface RegionalBrokersOptions {
  readonly regions: readonly string[];
  /** Where the observer listens, and each broker unless `hosts` names another address. */
  readonly host: string;
  /** Port per region; 0 picks a free one (the answer's `endpoints` says which). */
  readonly ports: Readonly<Record<string, number>>;
  /**
   * Port per region of the listener for ALPN `x-amzn-mqtt-ca` (443 as AWS; 0 picks a free one;
   * absent: 0). When 443 can't be bound (EACCES: not root), the stand-in 8443 is used instead.
   */
  readonly alpnPorts?: Readonly<Record<string, number>>;
  /** Address per region (the local stack gives each region a loopback address of its own). */
  readonly hosts?: Readonly<Record<string, string>>;
  /** Where the SDK reaches moto (the same endpoint the provisioning function uses locally). */
  readonly awsEndpoint: string;
  readonly caCertPem: string;
  readonly caKeyPem: string;
  /** Port of the observer stream; 0 picks a free one. */
  readonly watchPort: number;
  readonly logger?: (line: string) => void;
}

export interface RegionalBrokers {
  /** Region → bare host (port 8883) or "host:PORT", what the local DescribeEndpoint answers. */
  readonly endpoints: Record<string, string>;
  /** Region → "host:port" of the listener for ALPN `x-amzn-mqtt-ca`. */
  readonly alpnEndpoints: Record<string, string>;
  /**
   * GET it for NDJSON lines {"region","topic","payload"}, one per published message;
   * POST `publish?topic=T[&region=R][&qos=0|1]` with the payload as body to send a message as the
   * service does (`make local-publish`), in R or in every region: answers {"receivers":{region: n}}.
   */
  readonly watchUrl: string;
  close(): Promise<void>;
}

/** One observed message, as the observer stream carries it. */
export interface WatchedMessage {
  readonly region: string;
  readonly topic: string;
  readonly payload: string;
}

/** What a connection proved when it connected; its policies are re-used for every packet. */
interface ConnectionAuthority {
  readonly context: PolicyContext;
  readonly policies: readonly PolicyDocument[];
}

/** AWS IoT accepts client ids up to 128 characters. */
const MAX_CLIENT_ID_LENGTH = 128;

export async function startRegionalBrokers(options: RegionalBrokersOptions): Promise<RegionalBrokers> {
  const log = options.logger ?? (() => undefined);
  const hostOf = (region: string) => options.hosts?.[region] ?? options.host;
  // One certificate for every regional address: a device checks the IP it was given, as it checks
  // <prefix>-ats.iot.<region>.amazonaws.com against Amazon's roots.
  const serverCertificate = await issueServerCertificate(
    { certPem: options.caCertPem, keyPem: options.caKeyPem },
    { dns: ['localhost'], ips: [...new Set([options.host, ...options.regions.map(hostOf)])] },
  );
  const started: RegionalBroker[] = [];
  const watch = await startWatchServer(options.host, options.watchPort, (region, topic, payload, qos) => {
    const receivers: Record<string, number> = {};
    for (const broker of started) {
      if (region === undefined || broker.region === region)
        receivers[broker.region] = broker.publish(topic, payload, qos);
    }
    return receivers;
  });
  try {
    for (const region of options.regions) {
      started.push(
        await startRegionalBroker({
          region,
          host: hostOf(region),
          port: options.ports[region] ?? 0,
          alpnPort: options.alpnPorts?.[region] ?? 0,
          awsEndpoint: options.awsEndpoint,
          serverCertificate,
          caCertPem: options.caCertPem,
          onMessage: (message) => watch.broadcast(message),
          log,
        }),
      );
    }
  } catch (error) {
    await Promise.all(started.map((broker) => broker.close()));
    await watch.close();
    throw error;
  }
  const endpoints: Record<string, string> = {};
  const alpnEndpoints: Record<string, string> = {};
  for (const broker of started) {
    endpoints[broker.region] = endpointAddress(hostOf(broker.region), broker.port);
    alpnEndpoints[broker.region] = `${hostOf(broker.region)}:${broker.alpnPort}`;
  }
  log(
    `[mqtt] endpoints ${JSON.stringify(endpoints)}; ALPN ${MQTT_ALPN_PROTOCOL} ` +
      `${JSON.stringify(alpnEndpoints)}; observer ${watch.url}`,
  );
  return {
    endpoints,
    alpnEndpoints,
    watchUrl: watch.url,
    async close() {
      await Promise.all(started.map((broker) => broker.close()));
      await watch.close();
    },
  };
}

interface RegionalBroker {
  readonly region: string;
  readonly port: number;
  readonly alpnPort: number;
  publish(topic: string, payload: Buffer, qos: 0 | 1): number;
  close(): Promise<void>;
}

interface RegionalBrokerOptions {
  readonly region: string;
  readonly host: string;
  readonly port: number;
  readonly alpnPort: number;
  readonly awsEndpoint: string;
  readonly serverCertificate: { readonly certPem: string; readonly keyPem: string };
  readonly caCertPem: string;
  readonly onMessage: (message: WatchedMessage) => void;
  readonly log: (line: string) => void;
}

async function startRegionalBroker(options: RegionalBrokerOptions): Promise<RegionalBroker> {
  const { region, log } = options;
  const iot = new IoTClient({
    region,
    endpoint: options.awsEndpoint,
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });

  const allowed = (
    connection: BrokerConnection<ConnectionAuthority>,
    action: IotAction,
    kind: 'client' | 'topic' | 'topicfilter',
    name: string,
  ) => {
    const { context, policies } = connection.authority;
    const resource = iotResourceArn(context, kind, name);
    return evaluatePolicies(policies, action, resource, context) === 'allow';
  };

  const broker: MqttBroker = createMqttBroker<ConnectionAuthority>({
    authenticate: ({ clientId, socket }) => authenticateConnection(iot, region, clientId, socket),
    mayPublish: (connection, topic, retain) =>
      allowed(connection, 'iot:Publish', 'topic', topic) &&
      (!retain || allowed(connection, 'iot:RetainPublish', 'topic', topic)),
    maySubscribe: (connection, filter) => allowed(connection, 'iot:Subscribe', 'topicfilter', filter),
    mayReceive: (connection, topic) => allowed(connection, 'iot:Receive', 'topic', topic),
    onConnected: (connection) =>
      log(
        `[mqtt ${region}] ${connection.clientId} connected, MQTT ${versionName(connection.protocolVersion)} ` +
          `(certificate ${connection.authority.context.certificateId})`,
      ),
    onRefused: (clientId, refusal) =>
      log(
        `[mqtt ${region}] refused ${clientId} (reason 0x${refusal.reasonCode.toString(16)}): ${refusal.message}`,
      ),
    onDenied: (connection, what) => log(`[mqtt ${region}] ${connection.clientId} may not ${what}`),
    onPublished: (_connection, topic, payload) =>
      options.onMessage({ region, topic, payload: payload.toString('utf8') }),
  });

  const sockets = new Set<Socket>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const tlsOptions: TlsOptions = {
    key: options.serverCertificate.keyPem,
    cert: options.serverCertificate.certPem,
    ca: [options.caCertPem],
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: 'TLSv1.2',
  };
  const server: TlsServer = createTlsServer(tlsOptions, (socket) => {
    track(socket);
    broker.handle(socket);
  });
  server.on('tlsClientError', (error) => log(`[mqtt ${region}] TLS handshake failed: ${error.message}`));
  // AWS IoT's port 443 serves HTTPS and MQTT; the ALPN id tells which. Only MQTT is modelled here.
  const alpnServer: TlsServer = createTlsServer(
    { ...tlsOptions, ALPNProtocols: [MQTT_ALPN_PROTOCOL] },
    (socket) => {
      track(socket);
      if (socket.alpnProtocol !== MQTT_ALPN_PROTOCOL) {
        log(`[mqtt ${region}] refused a connection on the ALPN port without ALPN ${MQTT_ALPN_PROTOCOL}`);
        socket.destroy();
        return;
      }
      broker.handle(socket);
    },
  );
  alpnServer.on('tlsClientError', (error) =>
    log(`[mqtt ${region}] TLS handshake failed on the ALPN port: ${error.message}`),
  );
  const port = await listen(server, options.host, options.port);
  let alpnPort: number;
  try {
    alpnPort = await listen(alpnServer, options.host, options.alpnPort);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EACCES') {
      await new Promise<void>((done) => server.close(() => done()));
      throw error;
    }
    log(
      `[mqtt ${region}] may not bind port ${options.alpnPort}: ALPN listener on ${MQTT_ALPN_STAND_IN_PORT}`,
    );
    alpnPort = await listen(alpnServer, options.host, MQTT_ALPN_STAND_IN_PORT);
  }
  return {
    region,
    port,
    alpnPort,
    publish: (topic, payload, qos) => broker.publish(topic, payload, qos),
    async close() {
      await broker.close();
      for (const socket of sockets) socket.destroy();
      await Promise.all(
        [server, alpnServer].map((listener) => new Promise<void>((done) => listener.close(() => done()))),
      );
      iot.destroy();
    },
  };
}

function versionName(protocolVersion: 3 | 4 | 5): string {
  return protocolVersion === 5 ? '5' : protocolVersion === 4 ? '3.1.1' : '3.1';
}

/** The AWS IoT checks a CONNECT goes through, against the region's registry. */
async function authenticateConnection(
  iot: IoTClient,
  region: string,
  clientId: string,
  socket: Socket,
): Promise<ConnectionAuthority> {
  if (!(socket instanceof TLSSocket)) throw new ConnectRefusal('not a TLS connection');
  if (clientId.length === 0 || clientId.length > MAX_CLIENT_ID_LENGTH) {
    throw new ConnectRefusal(
      `client id must be 1 to ${MAX_CLIENT_ID_LENGTH} characters (the thing name)`,
      REASON.clientIdentifierNotValid,
    );
  }
  const peer = socket.getPeerCertificate(false);
  if (!peer || !peer.raw) throw new ConnectRefusal('no client certificate');
  const certificateId = createHash('sha256').update(peer.raw).digest('hex');

  let description;
  try {
    description = (await iot.send(new DescribeCertificateCommand({ certificateId }))).certificateDescription;
  } catch (error) {
    if (errorName(error) === 'ResourceNotFoundException') {
      throw new ConnectRefusal(`certificate ${certificateId} is not registered in ${region}`);
    }
    throw error;
  }
  if (description?.status !== 'ACTIVE') {
    throw new ConnectRefusal(`certificate ${certificateId} is ${description?.status ?? 'unknown'}`);
  }
  const certificateArn = description.certificateArn ?? '';
  const accountId = certificateArn.split(':')[4] ?? '';

  const [things, attached] = await Promise.all([
    iot.send(new ListPrincipalThingsCommand({ principal: certificateArn })),
    iot.send(new ListAttachedPoliciesCommand({ target: certificateArn })),
  ]);
  if (!(things.things ?? []).includes(clientId)) {
    throw new ConnectRefusal(`certificate ${certificateId} is not attached to thing ${clientId}`);
  }
  const policies = await Promise.all(
    (attached.policies ?? []).map(async (policy) => {
      const answer = await iot.send(new GetPolicyCommand({ policyName: policy.policyName }));
      return parsePolicyDocument(answer.policyDocument ?? '{}');
    }),
  );
  const context: PolicyContext = {
    clientId,
    thingName: clientId,
    certificateId,
    region,
    accountId,
  };
  const decision = evaluatePolicies(
    policies,
    'iot:Connect',
    iotResourceArn(context, 'client', clientId),
    context,
  );
  if (decision !== 'allow') {
    throw new ConnectRefusal(`policy does not allow iot:Connect for ${clientId} (${decision})`);
  }
  return { context, policies };
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : String(error);
}

interface WatchServer {
  readonly url: string;
  broadcast(message: WatchedMessage): void;
  close(): Promise<void>;
}

/** Sends a message as the service, in one region or all; answers how many connections got it per region. */
type ServicePublish = (
  region: string | undefined,
  topic: string,
  payload: Buffer,
  qos: 0 | 1,
) => Record<string, number>;

/** Largest payload AWS IoT takes in one message (128 KiB). */
const MAX_PAYLOAD_BYTES = 128 * 1024;

/**
 * Streams every observed message as one NDJSON line to every connected GET client, and takes
 * POST /publish: the local stand-in for the iot-data Publish API (no IAM check here).
 */
async function startWatchServer(host: string, port: number, publish: ServicePublish): Promise<WatchServer> {
  const listeners = new Set<ServerResponse>();
  const broadcast = (message: WatchedMessage): void => {
    const line = JSON.stringify(message) + '\n';
    for (const listener of listeners) listener.write(line);
  };
  const server: Server = createServer((request: IncomingMessage, response: ServerResponse) => {
    if (request.method === 'POST') {
      void servicePublish(request, response, publish, broadcast);
      return;
    }
    if (request.method !== 'GET') {
      response.writeHead(405, { allow: 'GET, POST' }).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    response.flushHeaders();
    listeners.add(response);
    response.once('close', () => listeners.delete(response));
  });
  const actualPort = await listen(server, host, port);
  return {
    url: `http://${host}:${actualPort}/`,
    broadcast,
    async close() {
      for (const listener of listeners) listener.end();
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    },
  };
}

async function servicePublish(
  request: IncomingMessage,
  response: ServerResponse,
  publish: ServicePublish,
  broadcast: (message: WatchedMessage) => void,
): Promise<void> {
  const answer = (status: number, body: unknown): void => {
    response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };
  const url = new URL(request.url ?? '/', 'http://local');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size <= MAX_PAYLOAD_BYTES) chunks.push(chunk);
  }
  if (url.pathname !== '/publish') return answer(404, { message: 'POST /publish?topic=...' });
  const topic = url.searchParams.get('topic') ?? '';
  const region = url.searchParams.get('region') ?? undefined;
  const qos = url.searchParams.get('qos') ?? '1';
  if (!topic || /[+#]/.test(topic) || topic.startsWith('$'))
    return answer(400, { message: `not a topic to publish to: "${topic}"` });
  if (qos !== '0' && qos !== '1') return answer(400, { message: `qos must be 0 or 1 (got ${qos})` });
  if (size > MAX_PAYLOAD_BYTES)
    return answer(413, { message: `payload of ${size} bytes is over AWS IoT's ${MAX_PAYLOAD_BYTES}` });
  const payload = Buffer.concat(chunks);
  const receivers = publish(region, topic, payload, qos === '1' ? 1 : 0);
  if (Object.keys(receivers).length === 0) return answer(404, { message: `no local region ${region}` });
  for (const name of Object.keys(receivers))
    broadcast({ region: name, topic, payload: payload.toString('utf8') });
  answer(200, { topic, receivers });
}

function listen(server: Server | TlsServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.removeListener('error', reject);
      const address = server.address();
      resolve(typeof address === 'object' && address !== null ? address.port : port);
    });
  });
}
