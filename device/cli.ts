#!/usr/bin/env -S npx tsx
/**
 * The virtual device: `npm run device -- -t <thing> -a <url> [-k] [-f] [-c] ...`.
 * Flags -t/-a/-k/-f/-c are the 2018 sample device's; the rest are documented in docs/device.md.
 *
 * Exit status: 0 provisioned (or already) and every message published; 1 unexpected error;
 * 2 bad usage; 3 the service refused the device (4xx, its message printed); 4 the service stayed
 * unreachable or busy through every retry; 5 the MQTT endpoint refused or could not be reached;
 * 6 a publish was refused (the endpoint closed the connection) or failed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { AMAZON_ROOT_CAS } from './amazon-root-ca';
import type { DeviceKeyType } from './keys';
import { connectDevice, disconnect, publishTelemetry, telemetryTopic } from './mqtt';
import {
  provisionDevice,
  ProvisioningRejectedError,
  ProvisioningUnavailableError,
  type ProtocolVersion,
} from './provision';
import { defaultDataDir, loadCredentials, saveCredentials, type DeviceCredentials } from './store';

export const EXIT = {
  ok: 0,
  unexpected: 1,
  usage: 2,
  rejected: 3,
  unavailable: 4,
  connectFailed: 5,
  publishFailed: 6,
} as const;

export interface DeviceSettings {
  readonly thingName: string;
  readonly apiUrl?: string;
  readonly ownKey: boolean;
  readonly fakeDevice: boolean;
  readonly continueWithoutPauses: boolean;
  readonly keyType: DeviceKeyType;
  readonly signingKeyPem?: string;
  readonly protocol: ProtocolVersion;
  readonly dataDir: string;
  readonly caPems: readonly string[];
  readonly count: number;
  readonly intervalSeconds: number;
  readonly headers: Readonly<Record<string, string>>;
}

export interface DeviceOutput {
  line(text: string): void;
  error(text: string): void;
}

const consoleOutput: DeviceOutput = {
  line: (text) => process.stdout.write(`${text}\n`),
  error: (text) => process.stderr.write(`${text}\n`),
};

/** Explains the next step; without -c waits for Enter, but only when a person can press it. */
async function step(settings: DeviceSettings, output: DeviceOutput, title: string, explanation: string) {
  output.line(`\n== ${title}\n${explanation}`);
  if (settings.continueWithoutPauses || !process.stdin.isTTY) return;
  const prompt = createInterface({ input: process.stdin, output: process.stdout });
  await prompt.question('Press Enter to continue... ');
  prompt.close();
}

export async function runDevice(
  settings: DeviceSettings,
  output: DeviceOutput = consoleOutput,
): Promise<number> {
  const { thingName } = settings;
  let credentials = await loadCredentials(settings.dataDir);
  if (credentials && credentials.identity.thingName !== thingName) {
    output.error(
      `${settings.dataDir} holds the credentials of ${credentials.identity.thingName}, not ${thingName}`,
    );
    return EXIT.usage;
  }
  if (credentials && !settings.fakeDevice) {
    output.line(
      `${thingName} is already provisioned in ${credentials.identity.region} ` +
        `(credentials in ${settings.dataDir}); going straight to publishing.`,
    );
  } else {
    const provisioned = await provision(settings, output);
    if (typeof provisioned === 'number') return provisioned;
    credentials = provisioned;
  }
  return connectAndPublish(settings, credentials, output);
}

async function provision(
  settings: DeviceSettings,
  output: DeviceOutput,
): Promise<DeviceCredentials | number> {
  const { thingName } = settings;
  if (!settings.apiUrl) {
    output.error('no provisioning URL: pass -a/--api-url (or start the local stack: make local-up)');
    return EXIT.usage;
  }
  if (!settings.signingKeyPem && !settings.fakeDevice) {
    output.error(
      'no signing key: pass --signing-key <pem> (the fleet key, or this device’s own signing key)',
    );
    return EXIT.usage;
  }
  await step(
    settings,
    output,
    `Step 1: ask ${settings.apiUrl} for credentials`,
    [
      settings.fakeDevice
        ? `The request for ${thingName} is signed with a key nobody registered: the service must refuse it.`
        : `The request proves ${thingName} is on the allowlist with a ${settings.protocol} signature ` +
          (settings.protocol === 'v2' ? '(thing name, time, nonce and CSR hash).' : '(over the thing name).'),
      settings.ownKey
        ? `The device generates its own ${settings.keyType === 'ec' ? 'EC P-256' : 'RSA 2048'} key and sends ` +
          'a CSR; the private key never leaves the device.'
        : 'The service creates the key pair and returns the private key with the certificate.',
      'The service picks the AWS IoT region nearest to the device and registers the certificate there.',
    ].join('\n'),
  );
  try {
    const result = await provisionDevice({
      thingName,
      apiUrl: settings.apiUrl,
      signingKeyPem: settings.signingKeyPem,
      ownKey: settings.ownKey,
      keyType: settings.keyType,
      protocol: settings.protocol,
      fakeSignature: settings.fakeDevice,
      headers: settings.headers,
      onRetry: (retry) =>
        output.line(
          `attempt ${retry.attempt}/${retry.maxAttempts} failed (${retry.reason}); ` +
            `retrying in ${(retry.delayMs / 1000).toFixed(1)} s`,
        ),
    });
    const { identity } = result.credentials;
    output.line(
      `provisioned ${thingName}: region ${identity.region}, ${identity.distance} km away, ` +
        `endpoint ${identity.endpointAddress} (${result.attempts} attempt(s), ${result.latencyMs} ms)`,
    );
    await saveCredentials(settings.dataDir, result.credentials);
    output.line(`credentials stored in ${settings.dataDir} (private key mode 0600)`);
    return result.credentials;
  } catch (error) {
    if (error instanceof ProvisioningRejectedError) {
      output.error(`the service refused ${thingName} (HTTP ${error.status}): ${error.message}`);
      return EXIT.rejected;
    }
    if (error instanceof ProvisioningUnavailableError) {
      output.error(`provisioning failed: ${error.message}`);
      return EXIT.unavailable;
    }
    throw error;
  }
}

async function connectAndPublish(
  settings: DeviceSettings,
  credentials: DeviceCredentials,
  output: DeviceOutput,
): Promise<number> {
  const { identity } = credentials;
  await step(
    settings,
    output,
    `Step 2: connect to AWS IoT in ${identity.region}`,
    `MQTT over mutual TLS to ${identity.endpointAddress}, client id ${identity.thingName}, ` +
      `authenticated by the certificate the service registered in ${identity.region}.`,
  );
  let client;
  try {
    client = await connectDevice({
      endpointAddress: identity.endpointAddress,
      thingName: identity.thingName,
      privateKeyPem: credentials.privateKeyPem,
      certificatePem: credentials.certificatePem,
      caPems: settings.caPems,
    });
  } catch (error) {
    output.error(`cannot connect to ${identity.endpointAddress}: ${messageOf(error)}`);
    return EXIT.connectFailed;
  }
  output.line(`connected to ${identity.endpointAddress}`);
  await step(
    settings,
    output,
    `Step 3: publish ${settings.count} message(s) to ${telemetryTopic(identity.thingName)}`,
    'The device policy allows publishing under data/<thing name>/ only.',
  );
  try {
    await publishTelemetry(client, identity.thingName, {
      count: settings.count,
      intervalMs: settings.intervalSeconds * 1000,
      onPublished: (index, topic, payload) =>
        output.line(`published ${index}/${settings.count} to ${topic}: ${payload}`),
    });
  } catch (error) {
    output.error(`publish failed: ${messageOf(error)}`);
    return EXIT.publishFailed;
  } finally {
    await disconnect(client);
  }
  return EXIT.ok;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

interface LocalStackDefaults {
  readonly provisioningUrl?: string;
  readonly fleetSigningKey?: string;
  readonly caCertificate?: string;
}

/**
 * With a local stack running in this directory (make local-up), its URL, fleet key and CA are
 * the defaults, so `npm run device -- -t mydevice1` works out of the box. Flags always win.
 */
function localStackDefaults(): LocalStackDefaults {
  const file = resolve('.local', 'stack.json');
  if (!existsSync(file)) return {};
  return JSON.parse(readFileSync(file, 'utf8')) as LocalStackDefaults;
}

function positiveInteger(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) throw new InvalidArgumentError('must be a positive integer');
  return parsed;
}

function nonNegativeNumber(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0)
    throw new InvalidArgumentError('must be a number of seconds ≥ 0');
  return parsed;
}

function header(value: string, previous: Record<string, string>): Record<string, string> {
  const colon = value.indexOf(':');
  if (colon <= 0) throw new InvalidArgumentError(`expected 'Name: value', got '${value}'`);
  return { ...previous, [value.slice(0, colon).trim()]: value.slice(colon + 1).trim() };
}

function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new InvalidArgumentError(`cannot read ${what} ${path}: ${messageOf(error)}`);
  }
}

interface ParsedFlags {
  thingName: string;
  apiUrl?: string;
  ownKey: boolean;
  fakeDevice: boolean;
  continue: boolean;
  keyType: DeviceKeyType;
  signingKey?: string;
  protocol: ProtocolVersion;
  dataDir?: string;
  ca?: string;
  count: number;
  interval: number;
  header: Record<string, string>;
}

export function parseDeviceArguments(argv: readonly string[]): DeviceSettings {
  const program = new Command()
    .name('device')
    .description(
      'Virtual IoT device: provisions itself through the global URL, then publishes to its region.',
    )
    .requiredOption('-t, --thing-name <name>', 'thing name (must be on the allowlist)')
    .option('-a, --api-url <url>', 'provisioning URL (default: the local stack’s, when one runs here)')
    .option('-k, --own-key', 'generate the key on the device and send a CSR (CN = thing name)', false)
    .option('-f, --fake-device', 'sign with an unregistered key, to see the service refuse the device', false)
    .option('-c, --continue', 'run without pausing between steps', false)
    .addOption(
      new Option('--key-type <type>', 'key type for --own-key').choices(['rsa', 'ec']).default('rsa'),
    )
    .option(
      '--signing-key <pem>',
      'PEM private key the request is signed with (fleet key or device signing key)',
    )
    .addOption(
      new Option('--protocol <version>', 'request signature scheme').choices(['v1', 'v2']).default('v1'),
    )
    .option('--data-dir <dir>', 'where credentials are kept (default: ./device-data/<thing name>)')
    .option(
      '--ca <pem>',
      'CA certificate(s) the MQTT endpoint must chain to (default: Amazon Root CA 1 and 3)',
    )
    .option('--count <n>', 'messages to publish', positiveInteger, 3)
    .option('--interval <seconds>', 'seconds between messages', nonNegativeNumber, 1)
    .option('--header <header>', "extra request header 'Name: value' (repeatable)", header, {})
    .addHelpText(
      'after',
      '\nExit status: 0 ok, 1 unexpected error, 2 bad usage, 3 refused by the service (4xx),\n' +
        '4 service unavailable after retries, 5 MQTT connection refused or failed, 6 publish refused or failed.',
    )
    .exitOverride()
    .parse([...argv]);
  const flags = program.opts<ParsedFlags>();
  const local = localStackDefaults();
  const apiUrl = flags.apiUrl ?? local.provisioningUrl;
  const signingKeyPath = flags.signingKey ?? local.fleetSigningKey;
  const caPath = flags.ca ?? (flags.apiUrl === undefined ? local.caCertificate : undefined);
  return {
    thingName: flags.thingName,
    apiUrl,
    ownKey: flags.ownKey,
    fakeDevice: flags.fakeDevice,
    continueWithoutPauses: flags.continue,
    keyType: flags.keyType,
    signingKeyPem: signingKeyPath ? readPem(signingKeyPath, 'signing key') : undefined,
    protocol: flags.protocol,
    dataDir: flags.dataDir ? resolve(flags.dataDir) : defaultDataDir(flags.thingName),
    caPems: caPath ? [readPem(caPath, 'CA certificate')] : AMAZON_ROOT_CAS,
    count: flags.count,
    intervalSeconds: flags.interval,
    headers: flags.header,
  };
}

async function main(): Promise<number> {
  let settings: DeviceSettings;
  try {
    settings = parseDeviceArguments(process.argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      return error.code === 'commander.helpDisplayed' || error.code === 'commander.version'
        ? EXIT.ok
        : EXIT.usage;
    }
    if (error instanceof InvalidArgumentError) {
      process.stderr.write(`error: ${error.message}\n`);
      return EXIT.usage;
    }
    throw error;
  }
  return runDevice(settings);
}

if (require.main === module) {
  main().then(
    (status) => process.exit(status),
    (error: unknown) => {
      process.stderr.write(`unexpected error: ${messageOf(error)}\n`);
      process.exit(EXIT.unexpected);
    },
  );
}
