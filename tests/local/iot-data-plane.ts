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
 * connection (AWS caches them per connection too); a denied publish closes the connection, a
 * denied subscription is answered with 0x80, as AWS IoT does for MQTT 3.1.1.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createTlsServer, TLSSocket, type Server as TlsServer } from 'node:tls';
import type { Socket } from 'node:net';
import Aedes, { type AuthenticateError, type Client } from 'aedes';
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
import { issueServerCertificate } from './pki';
import { endpointAddress } from './stack-state';

export interface RegionalBrokersOptions {
  readonly regions: readonly string[];
  /** Where the observer listens, and each broker unless `hosts` names another address. */
  readonly host: string;
  /** Port per region; 0 picks a free one (the answer's `endpoints` says which). */
  readonly ports: Readonly<Record<string, number>>;
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
  /** GET it for NDJSON lines {"region","topic","payload"}, one per published message. */
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

/** The MQTT CONNACK codes AWS-style refusals map to. */
const NOT_AUTHORIZED = 5;
const SERVER_UNAVAILABLE = 3;
/** AWS IoT accepts client ids up to 128 characters; aedes defaults to MQTT 3.1's 23. */
const MAX_CLIENT_ID_LENGTH = 128;

class ConnectionRefused extends Error {
  constructor(
    message: string,
    readonly returnCode: number = NOT_AUTHORIZED,
  ) {
    super(message);
  }
}

export async function startRegionalBrokers(options: RegionalBrokersOptions): Promise<RegionalBrokers> {
  const log = options.logger ?? (() => undefined);
  const hostOf = (region: string) => options.hosts?.[region] ?? options.host;
  // One certificate for every regional address: a device checks the IP it was given, as it checks
  // <prefix>-ats.iot.<region>.amazonaws.com against Amazon's roots.
  const serverCertificate = await issueServerCertificate(
    { certPem: options.caCertPem, keyPem: options.caKeyPem },
    { dns: ['localhost'], ips: [...new Set([options.host, ...options.regions.map(hostOf)])] },
  );
  const watch = await startWatchServer(options.host, options.watchPort);
  const started: RegionalBroker[] = [];
  try {
    for (const region of options.regions) {
      started.push(
        await startRegionalBroker({
          region,
          host: hostOf(region),
          port: options.ports[region] ?? 0,
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
  for (const broker of started)
    endpoints[broker.region] = endpointAddress(hostOf(broker.region), broker.port);
  log(`[mqtt] endpoints ${JSON.stringify(endpoints)}; observer ${watch.url}`);
  return {
    endpoints,
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
  close(): Promise<void>;
}

interface RegionalBrokerOptions {
  readonly region: string;
  readonly host: string;
  readonly port: number;
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
  const authorities = new WeakMap<Client, ConnectionAuthority>();

  const allowed = (
    client: Client,
    action: IotAction,
    kind: 'client' | 'topic' | 'topicfilter',
    name: string,
  ) => {
    const authority = authorities.get(client);
    if (!authority) return false;
    const resource = iotResourceArn(authority.context, kind, name);
    return evaluatePolicies(authority.policies, action, resource, authority.context) === 'allow';
  };

  const broker = new Aedes({
    id: `local-iot-${region}`,
    maxClientsIdLength: MAX_CLIENT_ID_LENGTH,
    authenticate(client, _username, _password, done) {
      authenticateConnection(iot, region, client)
        .then((authority) => {
          authorities.set(client, authority);
          log(`[mqtt ${region}] ${client.id} connected (certificate ${authority.context.certificateId})`);
          done(null, true);
        })
        .catch((error: unknown) => {
          const refusal =
            error instanceof ConnectionRefused
              ? error
              : new ConnectionRefused(`registry lookup failed: ${errorName(error)}`, SERVER_UNAVAILABLE);
          log(`[mqtt ${region}] refused ${client.id}: ${refusal.message}`);
          const authError = Object.assign(new Error(refusal.message), {
            returnCode: refusal.returnCode,
          }) as AuthenticateError;
          done(authError, false);
        });
    },
    authorizePublish(client, packet, done) {
      if (!client) return done(null);
      const topicAllowed =
        !packet.topic.startsWith('$') &&
        allowed(client, 'iot:Publish', 'topic', packet.topic) &&
        (!packet.retain || allowed(client, 'iot:RetainPublish', 'topic', packet.topic));
      if (topicAllowed) return done(null);
      log(`[mqtt ${region}] ${client.id} may not publish to ${packet.topic}; disconnecting`);
      done(new Error(`not authorized to publish to ${packet.topic}`));
    },
    authorizeSubscribe(client, subscription, done) {
      if (
        !subscription.topic.startsWith('$') &&
        allowed(client, 'iot:Subscribe', 'topicfilter', subscription.topic)
      ) {
        return done(null, subscription);
      }
      log(`[mqtt ${region}] ${client.id} may not subscribe to ${subscription.topic}`);
      done(null, null);
    },
    authorizeForward(client, packet) {
      return allowed(client, 'iot:Receive', 'topic', packet.topic) ? packet : null;
    },
  });
  broker.on('publish', (packet, client) => {
    if (client && !packet.topic.startsWith('$SYS')) {
      options.onMessage({
        region,
        topic: packet.topic,
        payload: Buffer.from(packet.payload).toString('utf8'),
      });
    }
  });
  broker.on('clientError', (client, error) => log(`[mqtt ${region}] ${client.id}: ${error.message}`));

  const sockets = new Set<Socket>();
  const server: TlsServer = createTlsServer(
    {
      key: options.serverCertificate.keyPem,
      cert: options.serverCertificate.certPem,
      ca: [options.caCertPem],
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    },
    (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      broker.handle(socket);
    },
  );
  server.on('tlsClientError', (error) => log(`[mqtt ${region}] TLS handshake failed: ${error.message}`));
  const port = await listen(server, options.host, options.port);
  return {
    region,
    port,
    async close() {
      for (const socket of sockets) socket.destroy();
      await Promise.all([
        new Promise<void>((done) => server.close(() => done())),
        new Promise<void>((done) => broker.close(() => done())),
      ]);
      iot.destroy();
    },
  };
}

/** The AWS IoT checks a CONNECT goes through, against the region's registry. */
async function authenticateConnection(
  iot: IoTClient,
  region: string,
  client: Client,
): Promise<ConnectionAuthority> {
  const socket = client.conn;
  if (!(socket instanceof TLSSocket)) throw new ConnectionRefused('not a TLS connection');
  const peer = socket.getPeerCertificate(false);
  if (!peer || !peer.raw) throw new ConnectionRefused('no client certificate');
  const certificateId = createHash('sha256').update(peer.raw).digest('hex');

  let description;
  try {
    description = (await iot.send(new DescribeCertificateCommand({ certificateId }))).certificateDescription;
  } catch (error) {
    if (errorName(error) === 'ResourceNotFoundException') {
      throw new ConnectionRefused(`certificate ${certificateId} is not registered in ${region}`);
    }
    throw error;
  }
  if (description?.status !== 'ACTIVE') {
    throw new ConnectionRefused(`certificate ${certificateId} is ${description?.status ?? 'unknown'}`);
  }
  const certificateArn = description.certificateArn ?? '';
  const accountId = certificateArn.split(':')[4] ?? '';

  const [things, attached] = await Promise.all([
    iot.send(new ListPrincipalThingsCommand({ principal: certificateArn })),
    iot.send(new ListAttachedPoliciesCommand({ target: certificateArn })),
  ]);
  if (!(things.things ?? []).includes(client.id)) {
    throw new ConnectionRefused(`certificate ${certificateId} is not attached to thing ${client.id}`);
  }
  const policies = await Promise.all(
    (attached.policies ?? []).map(async (policy) => {
      const answer = await iot.send(new GetPolicyCommand({ policyName: policy.policyName }));
      return parsePolicyDocument(answer.policyDocument ?? '{}');
    }),
  );
  const context: PolicyContext = {
    clientId: client.id,
    thingName: client.id,
    certificateId,
    region,
    accountId,
  };
  const decision = evaluatePolicies(
    policies,
    'iot:Connect',
    iotResourceArn(context, 'client', client.id),
    context,
  );
  if (decision !== 'allow') {
    throw new ConnectionRefused(`policy does not allow iot:Connect for ${client.id} (${decision})`);
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

/** Streams every observed message as one NDJSON line to every connected GET client. */
async function startWatchServer(host: string, port: number): Promise<WatchServer> {
  const listeners = new Set<ServerResponse>();
  const server: Server = createServer((request: IncomingMessage, response: ServerResponse) => {
    if (request.method !== 'GET') {
      response.writeHead(405, { allow: 'GET' }).end();
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
    broadcast(message) {
      const line = JSON.stringify(message) + '\n';
      for (const listener of listeners) listener.write(line);
    },
    async close() {
      for (const listener of listeners) listener.end();
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    },
  };
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
