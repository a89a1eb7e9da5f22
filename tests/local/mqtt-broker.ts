/**
 * A small MQTT 3.1.1 + MQTT 5 broker for the local AWS IoT endpoints, on mqtt-packet (the codec
 * mqtt.js itself uses). Why hand-written: aedes, the well-kept Node broker the endpoints used
 * before, speaks MQTT 3.1 and 3.1.1 only (1.2.0 still answers "unacceptable protocol version" to
 * a v5 CONNECT); Debian's mosquitto 2.x speaks MQTT 5 but would need a C plugin, compiled on every
 * machine, to check certificates against moto's registry per region; no other maintained Node
 * broker speaks MQTT 5. What an AWS IoT endpoint needs is small: CONNECT with a per-connection
 * authentication hook, QoS 0 and 1, subscriptions with wildcards, retained messages, will messages,
 * keep-alive, session takeover by client id. What AWS IoT does not do, this does not do either
 * (QoS 2); what the local stack doesn't need is left out and documented in docs/local-stack.md
 * (persistent sessions, shared subscriptions, message expiry, enhanced authentication).
 *
 * One broker serves both protocol versions, so a 3.1.1 client and an MQTT 5 client see each
 * other's messages, as on AWS. Refusals carry MQTT 5 reason codes (and a reason string) to v5
 * clients and CONNACK return codes to 3.1.1 clients, who can only be told by a closed connection
 * that a publish was denied.
 */
import type { Socket } from 'node:net';
import mqttPacket, {
  type IConnectPacket,
  type IPublishPacket,
  type ISubscribePacket,
  type IUnsubscribePacket,
  type Packet,
} from 'mqtt-packet';

/** MQTT 5 reason codes the broker sends (OASIS MQTT 5.0, 2.4). */
export const REASON = {
  success: 0x00,
  noSubscriptionExisted: 0x11,
  unspecifiedError: 0x80,
  protocolError: 0x82,
  unsupportedProtocolVersion: 0x84,
  clientIdentifierNotValid: 0x85,
  notAuthorized: 0x87,
  serverUnavailable: 0x88,
  serverShuttingDown: 0x8b,
  keepAliveTimeout: 0x8d,
  sessionTakenOver: 0x8e,
  topicFilterInvalid: 0x8f,
  topicNameInvalid: 0x90,
  topicAliasInvalid: 0x94,
  qosNotSupported: 0x9b,
} as const;

/** MQTT 3.1.1 CONNACK return codes (3.2.2.3). */
const RETURN_CODE = { unacceptableProtocolVersion: 1, serverUnavailable: 3, notAuthorized: 5 } as const;

/** A refused CONNECT: what the client is told under each protocol version. */
export class ConnectRefusal extends Error {
  constructor(
    message: string,
    /** MQTT 5 reason code: 0x87 not authorized, 0x88 server unavailable, ... */
    readonly reasonCode: number = REASON.notAuthorized,
  ) {
    super(message);
  }

  /** The 3.1.1 return code closest to the MQTT 5 reason code. */
  get returnCode(): number {
    return this.reasonCode === REASON.serverUnavailable
      ? RETURN_CODE.serverUnavailable
      : RETURN_CODE.notAuthorized;
  }
}

/** What the broker knows of a connection when it asks its hooks. */
export interface BrokerConnection<Authority> {
  readonly clientId: string;
  readonly protocolVersion: 3 | 4 | 5;
  readonly socket: Socket;
  /** What authenticate() answered; set once the connection is accepted. */
  readonly authority: Authority;
}

export interface BrokerHooks<Authority> {
  /** Resolves what the connection may do, or rejects (a ConnectRefusal says how to refuse). */
  authenticate(connect: {
    readonly clientId: string;
    readonly protocolVersion: 3 | 4 | 5;
    readonly socket: Socket;
  }): Promise<Authority>;
  mayPublish(connection: BrokerConnection<Authority>, topic: string, retain: boolean): boolean;
  maySubscribe(connection: BrokerConnection<Authority>, topicFilter: string): boolean;
  mayReceive(connection: BrokerConnection<Authority>, topic: string): boolean;
  onConnected?(connection: BrokerConnection<Authority>): void;
  onRefused?(clientId: string, refusal: ConnectRefusal): void;
  /** Every message a client published and was allowed to (the observer stream). */
  onPublished?(connection: BrokerConnection<Authority>, topic: string, payload: Buffer): void;
  onDenied?(connection: BrokerConnection<Authority>, what: string): void;
}

export interface MqttBroker {
  /** Serve MQTT on an already-secured socket (the TLS listeners call this). */
  handle(socket: Socket): void;
  /** Publish as the service does (a stand-in for the iot-data Publish API): no policy applies. */
  publish(topic: string, payload: Buffer, qos: 0 | 1, retain?: boolean): number;
  close(): Promise<void>;
}

/** AWS IoT's CONNACK properties for MQTT 5 (its documented limits). */
const CONNACK_PROPERTIES = {
  maximumQoS: 1,
  retainAvailable: true,
  wildcardSubscriptionAvailable: true,
  sharedSubscriptionAvailable: false,
  subscriptionIdentifiersAvailable: false,
  topicAliasMaximum: 8,
  receiveMaximum: 100,
  maximumPacketSize: 149_504,
} as const;
/** A client that sends no CONNECT within this is dropped. */
const CONNECT_TIMEOUT_MS = 10_000;

interface Subscription {
  readonly filter: string;
  readonly qos: 0 | 1;
  readonly noLocal: boolean;
}

interface Session<Authority> {
  socket: Socket;
  protocolVersion: 3 | 4 | 5;
  clientId: string;
  connection?: BrokerConnection<Authority>;
  subscriptions: Map<string, Subscription>;
  topicAliases: Map<number, string>;
  nextMessageId: number;
  will?: IConnectPacket['will'];
  keepAliveTimer?: NodeJS.Timeout;
  closed: boolean;
}

export function createMqttBroker<Authority>(hooks: BrokerHooks<Authority>): MqttBroker {
  const sessions = new Set<Session<Authority>>();
  const byClientId = new Map<string, Session<Authority>>();
  const retained = new Map<string, { payload: Buffer; qos: 0 | 1 }>();

  const send = (session: Session<Authority>, packet: Packet): void => {
    if (session.closed || session.socket.destroyed) return;
    session.socket.write(mqttPacket.generate(packet, { protocolVersion: session.protocolVersion }));
  };

  /** Ends the connection; an MQTT 5 client is told why first, a 3.1.1 client just sees it close. */
  const drop = (session: Session<Authority>, reasonCode?: number, reasonString?: string): void => {
    if (session.closed) return;
    if (reasonCode !== undefined && session.protocolVersion === 5 && session.connection) {
      send(session, {
        cmd: 'disconnect',
        reasonCode,
        ...(reasonString ? { properties: { reasonString } } : {}),
      });
    }
    endSession(session, true);
    session.socket.end();
    setTimeout(() => session.socket.destroy(), 1_000).unref();
  };

  const endSession = (session: Session<Authority>, publishWill: boolean): void => {
    if (session.closed) return;
    session.closed = true;
    clearTimeout(session.keepAliveTimer);
    sessions.delete(session);
    if (byClientId.get(session.clientId) === session) byClientId.delete(session.clientId);
    const will = session.will;
    session.will = undefined;
    if (publishWill && will && session.connection) {
      const payload = Buffer.from(will.payload);
      if (hooks.mayPublish(session.connection, will.topic, will.retain ?? false)) {
        route(session, will.topic, payload, will.qos === 1 ? 1 : 0, will.retain ?? false);
      }
    }
  };

  const deliver = (
    session: Session<Authority>,
    topic: string,
    payload: Buffer,
    qos: 0 | 1,
    retain: boolean,
  ) => {
    const packet: IPublishPacket = { cmd: 'publish', topic, payload, qos, retain, dup: false };
    if (qos === 1) {
      session.nextMessageId = (session.nextMessageId % 0xffff) + 1;
      packet.messageId = session.nextMessageId;
    }
    send(session, packet);
  };

  /** Sends a message to every connection subscribed to its topic that may receive it. */
  const route = (
    from: Session<Authority> | undefined,
    topic: string,
    payload: Buffer,
    qos: 0 | 1,
    retain: boolean,
  ): number => {
    if (retain) {
      if (payload.length === 0) retained.delete(topic);
      else retained.set(topic, { payload, qos });
    }
    let receivers = 0;
    for (const session of sessions) {
      if (!session.connection) continue;
      let best: Subscription | undefined;
      for (const subscription of session.subscriptions.values()) {
        if (subscription.noLocal && session === from) continue;
        if (topicMatches(subscription.filter, topic) && (!best || subscription.qos > best.qos))
          best = subscription;
      }
      if (!best || !hooks.mayReceive(session.connection, topic)) continue;
      // Retain-as-published is not offered: forwarded messages carry retain 0, as MQTT 3.1.1 requires.
      deliver(session, topic, payload, Math.min(qos, best.qos) as 0 | 1, false);
      receivers++;
    }
    return receivers;
  };

  const onConnect = async (session: Session<Authority>, packet: IConnectPacket): Promise<void> => {
    const protocolVersion = packet.protocolVersion ?? 4;
    session.protocolVersion = protocolVersion;
    session.clientId = packet.clientId;
    const refuse = (refusal: ConnectRefusal): void => {
      hooks.onRefused?.(packet.clientId, refusal);
      send(
        session,
        protocolVersion === 5
          ? {
              cmd: 'connack',
              sessionPresent: false,
              reasonCode: refusal.reasonCode,
              properties: { reasonString: refusal.message },
            }
          : { cmd: 'connack', sessionPresent: false, returnCode: refusal.returnCode },
      );
      session.closed = true;
      sessions.delete(session);
      session.socket.end();
    };
    let authority: Authority;
    try {
      authority = await hooks.authenticate({
        clientId: packet.clientId,
        protocolVersion,
        socket: session.socket,
      });
    } catch (error) {
      refuse(
        error instanceof ConnectRefusal
          ? error
          : new ConnectRefusal(`registry lookup failed: ${errorName(error)}`, REASON.serverUnavailable),
      );
      return;
    }
    if (session.closed || session.socket.destroyed) return;
    if (packet.will && (packet.will.qos ?? 0) > 1) {
      refuse(new ConnectRefusal('will QoS 2 is not supported', REASON.qosNotSupported));
      return;
    }
    // AWS IoT allows one connection per client id: the newer one takes over.
    const previous = byClientId.get(packet.clientId);
    if (previous) drop(previous, REASON.sessionTakenOver, 'another connection with this client id');
    session.connection = { clientId: packet.clientId, protocolVersion, socket: session.socket, authority };
    session.will = packet.will;
    byClientId.set(packet.clientId, session);
    send(
      session,
      protocolVersion === 5
        ? {
            cmd: 'connack',
            sessionPresent: false,
            reasonCode: REASON.success,
            properties: CONNACK_PROPERTIES,
          }
        : { cmd: 'connack', sessionPresent: false, returnCode: 0 },
    );
    hooks.onConnected?.(session.connection);
  };

  const onPublish = (
    session: Session<Authority>,
    connection: BrokerConnection<Authority>,
    packet: IPublishPacket,
  ) => {
    if (packet.qos === 2) return drop(session, REASON.qosNotSupported, 'QoS 2 is not supported');
    let topic = packet.topic;
    const alias = packet.properties?.topicAlias;
    if (alias !== undefined) {
      if (alias < 1 || alias > CONNACK_PROPERTIES.topicAliasMaximum)
        return drop(session, REASON.topicAliasInvalid, `topic alias ${alias}`);
      if (topic) session.topicAliases.set(alias, topic);
      else topic = session.topicAliases.get(alias) ?? '';
      if (!topic) return drop(session, REASON.protocolError, `unknown topic alias ${alias}`);
    }
    if (!validTopicName(topic)) return drop(session, REASON.topicNameInvalid, `topic name "${topic}"`);
    const payload = Buffer.from(packet.payload);
    if (topic.startsWith('$') || !hooks.mayPublish(connection, topic, packet.retain)) {
      hooks.onDenied?.(connection, `publish to ${topic}`);
      // MQTT 5 can say no to one QoS 1 message; 3.1.1 (and QoS 0) has only the closed connection.
      if (packet.qos === 1 && session.protocolVersion === 5) {
        send(session, {
          cmd: 'puback',
          messageId: packet.messageId,
          reasonCode: REASON.notAuthorized,
          properties: { reasonString: `not authorized to publish to ${topic}` },
        });
        return;
      }
      return drop(session, REASON.notAuthorized, `not authorized to publish to ${topic}`);
    }
    hooks.onPublished?.(connection, topic, payload);
    route(session, topic, payload, packet.qos, packet.retain);
    if (packet.qos === 1) {
      send(session, {
        cmd: 'puback',
        messageId: packet.messageId,
        // 0x10 "no matching subscribers" is what MQTT 5 allows; AWS IoT answers success regardless.
        ...(session.protocolVersion === 5 ? { reasonCode: REASON.success } : {}),
      });
    }
  };

  const onSubscribe = (
    session: Session<Authority>,
    connection: BrokerConnection<Authority>,
    packet: ISubscribePacket,
  ) => {
    const v5 = session.protocolVersion === 5;
    const granted = packet.subscriptions.map((subscription) => {
      const filter = subscription.topic;
      if (!validTopicFilter(filter)) return v5 ? REASON.topicFilterInvalid : 0x80;
      if (filter.startsWith('$') || !hooks.maySubscribe(connection, filter)) {
        hooks.onDenied?.(connection, `subscribe to ${filter}`);
        return v5 ? REASON.notAuthorized : 0x80;
      }
      const qos: 0 | 1 = subscription.qos >= 1 ? 1 : 0;
      session.subscriptions.set(filter, { filter, qos, noLocal: subscription.nl ?? false });
      return qos;
    });
    send(session, { cmd: 'suback', messageId: packet.messageId, granted });
    // Retained messages follow the SUBACK, for the filters just granted.
    packet.subscriptions.forEach((subscription, index) => {
      const qos = granted[index];
      if (qos === undefined || qos > 1 || subscription.rh === 2) return;
      for (const [topic, message] of retained) {
        if (topicMatches(subscription.topic, topic) && hooks.mayReceive(connection, topic))
          deliver(session, topic, message.payload, Math.min(qos, message.qos) as 0 | 1, true);
      }
    });
  };

  const onUnsubscribe = (session: Session<Authority>, packet: IUnsubscribePacket) => {
    const granted = packet.unsubscriptions.map((filter) =>
      session.subscriptions.delete(filter) ? REASON.success : REASON.noSubscriptionExisted,
    );
    send(
      session,
      session.protocolVersion === 5
        ? { cmd: 'unsuback', messageId: packet.messageId, granted }
        : { cmd: 'unsuback', messageId: packet.messageId, granted: [] },
    );
  };

  const armKeepAlive = (session: Session<Authority>, keepaliveSeconds: number): void => {
    if (keepaliveSeconds <= 0 || session.closed) return;
    if (session.keepAliveTimer) {
      session.keepAliveTimer.refresh();
      return;
    }
    // MQTT: one and a half times the keep-alive without a packet ends the connection.
    session.keepAliveTimer = setTimeout(
      () => drop(session, REASON.keepAliveTimeout, 'keep-alive timeout'),
      keepaliveSeconds * 1500,
    );
    session.keepAliveTimer.unref();
  };

  const handle = (socket: Socket): void => {
    const session: Session<Authority> = {
      socket,
      protocolVersion: 4,
      clientId: '',
      subscriptions: new Map(),
      topicAliases: new Map(),
      nextMessageId: 0,
      closed: false,
    };
    sessions.add(session);
    const parser = mqttPacket.parser();
    let keepalive = 0;
    let connectSeen = false;
    const connectTimer = setTimeout(() => {
      if (!session.connection) drop(session);
    }, CONNECT_TIMEOUT_MS);
    connectTimer.unref();

    // Packets that arrive while CONNECT is being checked wait for the answer.
    let waiting: Packet[] | undefined;
    const dispatch = (packet: Packet): void => {
      const connection = session.connection;
      if (session.closed || !connection) return;
      switch (packet.cmd) {
        case 'publish':
          return onPublish(session, connection, packet);
        case 'subscribe':
          return onSubscribe(session, connection, packet);
        case 'unsubscribe':
          return onUnsubscribe(session, packet);
        case 'pingreq':
          return send(session, { cmd: 'pingresp' });
        case 'puback':
          return;
        case 'disconnect':
          // 0x04: "disconnect with will message".
          endSession(session, packet.reasonCode === 0x04);
          socket.end();
          return;
        default:
          return drop(session, REASON.protocolError, `unexpected ${packet.cmd}`);
      }
    };

    parser.on('packet', (packet: Packet) => {
      if (session.closed) return;
      armKeepAlive(session, keepalive);
      if (waiting) {
        waiting.push(packet);
        return;
      }
      if (connectSeen) return dispatch(packet);
      if (packet.cmd !== 'connect') return drop(session);
      connectSeen = true;
      clearTimeout(connectTimer);
      keepalive = packet.keepalive ?? 0;
      armKeepAlive(session, keepalive);
      const queue: Packet[] = [];
      waiting = queue;
      void onConnect(session, packet).finally(() => {
        waiting = undefined;
        for (const queued of queue) dispatch(queued);
      });
    });
    parser.on('error', (error: Error) => {
      if (!connectSeen && /protocol version/i.test(error.message)) {
        // Answered in 3.1.1's encoding, which every client version can read.
        socket.end(
          mqttPacket.generate({
            cmd: 'connack',
            sessionPresent: false,
            returnCode: RETURN_CODE.unacceptableProtocolVersion,
          }),
        );
        session.closed = true;
        sessions.delete(session);
        return;
      }
      drop(session, REASON.protocolError, error.message);
    });
    socket.on('data', (chunk: Buffer) => parser.parse(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(connectTimer);
      endSession(session, true);
    });
  };

  return {
    handle,
    publish(topic, payload, qos, retain = false) {
      if (!validTopicName(topic)) throw new Error(`not a topic name: ${topic}`);
      return route(undefined, topic, payload, qos, retain);
    },
    async close() {
      for (const session of [...sessions]) drop(session, REASON.serverShuttingDown);
      for (const session of [...sessions]) session.socket.destroy();
    },
  };
}

/** MQTT topic filter matching: `+` one level, `#` the rest; `$` topics only by explicit filters. */
export function topicMatches(filter: string, topic: string): boolean {
  const filterLevels = filter.split('/');
  const topicLevels = topic.split('/');
  if (topic.startsWith('$') && (filterLevels[0] === '+' || filterLevels[0] === '#')) return false;
  for (let index = 0; index < filterLevels.length; index++) {
    const level = filterLevels[index];
    if (level === '#') return true;
    if (index >= topicLevels.length) return false;
    if (level !== '+' && level !== topicLevels[index]) return false;
  }
  return filterLevels.length === topicLevels.length;
}

function validTopicName(topic: string): boolean {
  return topic.length > 0 && !/[+#]/.test(topic) && !topic.includes('\u0000');
}

function validTopicFilter(filter: string): boolean {
  if (filter.length === 0 || filter.includes('\u0000')) return false;
  const levels = filter.split('/');
  return levels.every(
    (level, index) =>
      (level === '#' ? index === levels.length - 1 : !level.includes('#')) &&
      (level === '+' || !level.includes('+')),
  );
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name : String(error);
}
