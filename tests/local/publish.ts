/**
 * `make local-publish`: sends a command to a device through the local MQTT endpoints, as a
 * backend does on AWS with the iot-data Publish API (`aws iot-data publish`): the message goes to
 * every connection subscribed to the topic, under the device policy's receive rule. The device
 * policy lets a thing subscribe to and receive `cmd/<thing name>/*` only, so the topic must be
 * under the device's own `cmd/<thing>/`.
 */
import { request } from 'node:http';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { DEVICE_COMMAND_TOPIC_PREFIX } from '../../infra/device-policy';

export interface CommandMessage {
  readonly topic: string;
  readonly payload: string;
  /** One region, or every local region when absent. */
  readonly region?: string;
  readonly qos?: 0 | 1;
}

/** region → how many connections the message was delivered to. */
export type Receivers = Readonly<Record<string, number>>;

/** The topic prefix a thing receives commands under: cmd/<thing>/. */
export function commandTopicPrefix(thingName: string): string {
  return `${DEVICE_COMMAND_TOPIC_PREFIX}/${thingName}/`;
}

/** Publishes as the service does, through the stack's observer endpoint (POST {watchUrl}publish). */
export function publishCommand(watchUrl: string, message: CommandMessage): Promise<Receivers> {
  const url = new URL('publish', watchUrl);
  url.searchParams.set('topic', message.topic);
  url.searchParams.set('qos', String(message.qos ?? 1));
  if (message.region) url.searchParams.set('region', message.region);
  return new Promise((done, fail) => {
    const outgoing = request(url, { method: 'POST' }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        const answer = JSON.parse(body || '{}') as { receivers?: Receivers; message?: string };
        if (response.statusCode === 200 && answer.receivers) done(answer.receivers);
        else fail(new Error(answer.message ?? `HTTP ${String(response.statusCode)}`));
      });
    });
    outgoing.on('error', fail);
    outgoing.end(message.payload);
  });
}

function readWatchUrl(stackFile: string): string {
  let stack: { watchUrl?: unknown; mqttRunning?: unknown };
  try {
    stack = JSON.parse(readFileSync(stackFile, 'utf8')) as typeof stack;
  } catch {
    throw new Error(`local stack not running (${stackFile} missing): run \`make local-up\``);
  }
  if (typeof stack.watchUrl !== 'string' || stack.mqttRunning !== true)
    throw new Error(`${stackFile}: the local MQTT endpoints are not running`);
  return stack.watchUrl;
}

function qosOption(value: string): 0 | 1 {
  if (value === '0' || value === '1') return Number(value) as 0 | 1;
  throw new InvalidArgumentError('must be 0 or 1 (AWS IoT has no QoS 2)');
}

interface PublishOptions {
  readonly thing: string;
  readonly topic?: string;
  readonly message: string;
  readonly region?: string;
  readonly qos: 0 | 1;
  readonly stack: string;
}

export async function main(
  argv: readonly string[],
  out: (line: string) => void = (line) => process.stdout.write(`${line}\n`),
  err: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): Promise<number> {
  const program = new Command()
    .name('local-publish')
    .description(
      'Send a command to a device through the local MQTT endpoints, as a backend does with the ' +
        'iot-data Publish API. The device receives it if it is connected and subscribed to its ' +
        'cmd/<thing>/ topics (the device policy allows cmd/<thing>/* and nothing else).',
    )
    .requiredOption('--thing <name>', 'the device (thing name)')
    .option('--topic <topic>', 'a topic under cmd/<thing>/ (default: cmd/<thing>/command)')
    .option('--message <text>', 'the payload, e.g. a JSON document', '{}')
    .option('--region <region>', 'publish in this region only (default: every local region)')
    .addOption(new Option('--qos <0|1>', 'MQTT QoS').default(1).argParser(qosOption))
    .option('--stack <file>', 'the local stack description', '.local/stack.json')
    .addHelpText(
      'after',
      '\nExample:\n' +
        `  make local-publish ARGS="--thing mydevice1 --topic cmd/mydevice1/reboot --message '{\\"delay\\":5}'"\n` +
        '\nExit status: 0 sent (a note on stderr when no connection received it), 1 the local stack\n' +
        'is not running or refused the message, 2 a usage error (bad option, topic outside cmd/<thing>/).',
    )
    .exitOverride()
    .configureOutput({ writeOut: (text) => out(text.trimEnd()), writeErr: (text) => err(text.trimEnd()) });
  try {
    program.parse([...argv]);
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2;
    throw error;
  }
  const options = program.opts<PublishOptions>();
  const prefix = commandTopicPrefix(options.thing);
  const topic = options.topic ?? `${prefix}command`;
  if (!topic.startsWith(prefix) || topic.length === prefix.length || /[+#]/.test(topic)) {
    err(
      `--topic ${topic}: a command to ${options.thing} goes under ${prefix} (a topic name, no wildcards): ` +
        `the device policy lets ${options.thing} receive ${prefix}* only`,
    );
    return 2;
  }
  let receivers: Receivers;
  try {
    receivers = await publishCommand(readWatchUrl(resolve(options.stack)), {
      topic,
      payload: options.message,
      region: options.region,
      qos: options.qos,
    });
  } catch (error) {
    err(`cannot publish to ${topic}: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }
  const reached = Object.entries(receivers).filter(([, count]) => count > 0);
  out(
    `published to ${topic} (QoS ${options.qos}) in ${options.region ?? 'every local region'}: ` +
      (reached.length > 0
        ? `received by ${reached.map(([region, count]) => `${count} in ${region}`).join(', ')}`
        : 'received by none'),
  );
  if (reached.length === 0) {
    err(
      `no connection is subscribed to ${topic}: ${options.thing} is not connected, or not subscribed ` +
        `to ${prefix}# (MQTT keeps no message for it, as on AWS without a persistent session)`,
    );
  }
  return 0;
}

if (require.main === module) {
  main(process.argv).then(
    (status) => process.exit(status),
    (error: unknown) => {
      process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    },
  );
}
