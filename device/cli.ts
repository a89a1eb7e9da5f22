/**
 * The virtual device, `gdp-device`: `npm run device -- -t <thing> -a <url> [-k] [-f] [-c] ...`.
 * Flags -t/-a/-k/-f/-c are the 2018 sample device's; the rest are documented in docs/device.md.
 *
 * A device that already holds credentials first asks the service whether anything changed
 * (device/lifecycle.ts): renew its certificate (device/renewal.ts), follow an operator's move,
 * provision again after a reset, or stop because it was revoked.
 *
 * Exit status: 0 provisioned (or already) and every message published; 1 unexpected error;
 * 2 bad usage; 3 the service refused the device (4xx, its message printed); 4 the service stayed
 * unreachable or busy through every retry; 5 the MQTT endpoint refused or could not be reached;
 * 6 a publish was refused (PUBACK 0x87, or the endpoint closed the connection) or failed; 7 the status check or
 * renewal was refused with 403: revoked, disabled or no longer on the allowlist.
 */
import '../functions/cli-runtime';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { MqttClient } from 'mqtt';
import { RENEW_PATH, STATUS_PATH, type StatusAnswer } from '../functions/provisioning/wire';
import { version } from '../package.json';
import { AMAZON_ROOT_CAS } from './amazon-root-ca';
import type { DeviceKeyType } from './keys';
import {
  DEFAULT_STATUS_INTERVAL_SECONDS,
  LifecycleRefusedError,
  lifecycleUrl,
  requestStatus,
  statusCheckDue,
  UNVERIFIED_EXPLANATION,
  type ExchangeTuning,
  type StatusCheckMode,
} from './lifecycle';
import {
  connectDevice,
  disconnect,
  publishTelemetry,
  telemetryTopic,
  type DeviceConnectionOptions,
} from './mqtt';
import {
  provisionDevice,
  ProvisioningRejectedError,
  ProvisioningUnavailableError,
  type ProtocolVersion,
} from './provision';
import { renewCertificate, resumeInterruptedRenewal, short, type RenewalContext } from './renewal';
import { collectFacts, deviceReport, type DeviceFacts, type DeviceReport } from './run-report';
import {
  defaultDataDir,
  discardPending,
  discardPrevious,
  loadCredentials,
  loadLifecycleState,
  loadPreviousCredentials,
  saveCredentials,
  saveIdentity,
  saveLifecycleState,
  type DeviceCredentials,
} from './store';

export const EXIT = {
  ok: 0,
  unexpected: 1,
  usage: 2,
  rejected: 3,
  unavailable: 4,
  connectFailed: 5,
  publishFailed: 6,
  /** 403 to a status or renewal request: revoked, disabled, or no longer on the allowlist. */
  revoked: 7,
} as const;

/** After day one: where and how often the device asks the service (docs/device.md). */
export interface DeviceLifecycleSettings {
  /** POST /device-status; default: beside the provisioning URL. */
  readonly statusUrl?: string;
  /** POST /device-renew; default: beside the status URL. */
  readonly renewUrl?: string;
  readonly statusCheck: StatusCheckMode;
  /** A device told "nothing to do" asks again after this long. */
  readonly statusIntervalSeconds: number;
}

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
  /** Provision again, replacing the stored credentials once new ones arrive (`--reset`). */
  readonly reset?: boolean;
  /** Print one JSON report on stdout at the end, the lines on stderr (`--json`). */
  readonly json?: boolean;
  /** The local stack whose defaults were used (from .local/stack.json), for better advice. */
  readonly localStack?: LocalStackDefaults;
  /** Absent: URLs beside apiUrl, checked when due (the defaults of the command line). */
  readonly lifecycle?: DeviceLifecycleSettings;
}

/** What runDevice reaches the outside with; tests replace parts of it. */
export interface DeviceDependencies {
  readonly connect: typeof connectDevice;
  /** Retries and waits of status and renewal calls. */
  readonly lifecycleTuning?: ExchangeTuning;
  readonly now: () => Date;
}

const realDependencies: DeviceDependencies = { connect: connectDevice, now: () => new Date() };

export interface DeviceOutput {
  line(text: string): void;
  error(text: string): void;
  /** What happened, for `--json` (docs/device.md, "For scripts"); people get the lines. */
  note?(facts: DeviceFacts): void;
}

/** The outcome of a run, one per exit status. */
export const OUTCOME = {
  [EXIT.ok]: 'ok',
  [EXIT.unexpected]: 'unexpected-error',
  [EXIT.usage]: 'usage-error',
  [EXIT.rejected]: 'refused',
  [EXIT.unavailable]: 'unavailable',
  [EXIT.connectFailed]: 'connect-failed',
  [EXIT.publishFailed]: 'publish-failed',
  [EXIT.revoked]: 'revoked',
} as const;

/**
 * Runs the device and collects what `--json` prints: human lines go to `humans` (stderr), so
 * stdout holds only the report. Region, endpoint and certificate are what is stored at the end,
 * after any renewal, move or re-provisioning.
 */
export async function runDeviceForScripts(
  settings: DeviceSettings,
  humans: Pick<DeviceOutput, 'error'> = consoleOutput,
  dependencies: Partial<DeviceDependencies> = {},
): Promise<DeviceReport> {
  const facts = collectFacts();
  const output: DeviceOutput = {
    line: (text) => humans.error(text),
    error: (text) => humans.error(text),
    note: facts.note,
  };
  let exitCode: number;
  try {
    exitCode = await runDevice({ ...settings, continueWithoutPauses: true }, output, dependencies);
  } catch (error) {
    humans.error(`unexpected error: ${messageOf(error)}`);
    exitCode = EXIT.unexpected;
    facts.note({ error: messageOf(error) });
  }
  return deviceReport({
    outcome: OUTCOME[exitCode as keyof typeof OUTCOME] ?? OUTCOME[EXIT.unexpected],
    exitCode,
    thingName: settings.thingName,
    dataDir: settings.dataDir,
    stored: await loadCredentials(settings.dataDir).catch(() => undefined),
    facts: facts.collected(),
  });
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
  dependencies: Partial<DeviceDependencies> = {},
): Promise<number> {
  const { thingName } = settings;
  const device = { ...realDependencies, ...dependencies };
  const credentials = await loadCredentials(settings.dataDir);
  if (settings.reset) return provisionAgain(settings, credentials, output, device);
  if (credentials && credentials.identity.thingName !== thingName) {
    output.error(
      `${settings.dataDir} holds the credentials of ${credentials.identity.thingName}, not ${thingName}`,
    );
    return EXIT.usage;
  }
  if (credentials && !settings.fakeDevice) {
    output.line(
      `${thingName} is already provisioned in ${credentials.identity.region} ` +
        `(credentials in ${settings.dataDir}).`,
    );
    const kept = await keepCurrent(settings, credentials, output, device);
    if (typeof kept === 'number') return kept;
    output.note?.({ provisioned: kept.fromEarlierRun ? 'earlier' : 'now' });
    return connectAndPublish(
      settings,
      kept.credentials,
      output,
      kept.fromEarlierRun,
      device,
      kept.connection,
    );
  }
  const provisioned = await provision(settings, output);
  if (typeof provisioned === 'number') return provisioned;
  return connectAndPublish(settings, provisioned, output, false, device);
}

/**
 * `--reset`: provision again, keeping the stored credentials until new ones are in hand. A
 * service that is down, a missing URL or a refusal leaves the device exactly as it was; only an
 * accepted answer replaces the set (and what day two kept for the old certificate).
 */
async function provisionAgain(
  settings: DeviceSettings,
  stored: DeviceCredentials | undefined,
  output: DeviceOutput,
  device: DeviceDependencies,
): Promise<number> {
  if (stored) {
    output.line(
      `--reset: provisioning ${settings.thingName} again; the credentials stored in ${settings.dataDir} ` +
        'stay until new ones arrive',
    );
  }
  const provisioned = await provision(settings, output);
  if (typeof provisioned === 'number') {
    if (stored) output.error(`--reset: kept the credentials stored in ${settings.dataDir}`);
    return provisioned;
  }
  // What the old certificate's renewals and checks left no longer applies.
  await Promise.all([discardPending(settings.dataDir), discardPrevious(settings.dataDir)]);
  await saveLifecycleState(settings.dataDir, {});
  if (stored) output.line(`--reset: replaced the credentials stored in ${settings.dataDir}`);
  return connectAndPublish(settings, provisioned, output, false, device);
}

/** What the device goes on with after its start-up check. */
interface KeptCurrent {
  readonly credentials: DeviceCredentials;
  /** Open already when a renewal or a move proved the credentials by connecting. */
  readonly connection?: MqttClient;
  /** Stored by an earlier run, as opposed to issued in this one. */
  readonly fromEarlierRun: boolean;
}

/**
 * Day two: finish an interrupted renewal, then ask the service (when due) and do what it says.
 * Returns an exit status when the device must stop.
 */
async function keepCurrent(
  settings: DeviceSettings,
  stored: DeviceCredentials,
  output: DeviceOutput,
  device: DeviceDependencies,
): Promise<KeptCurrent | number> {
  const lifecycle = lifecycleSettings(settings);
  const renewal = renewalContext(settings, lifecycle, output, device);
  const resumed = await resumeInterruptedRenewal(renewal);
  if (resumed) output.note?.({ dayTwo: { resumedRenewal: resumed.kind } });
  let connection = resumed?.kind === 'renewed' ? resumed.connection : undefined;
  // A resumed renewal, or a promotion put back, changed what is current.
  let credentials = (await loadCredentials(settings.dataDir)) ?? stored;
  const done = (more: Partial<KeptCurrent> = {}): KeptCurrent => ({
    credentials,
    connection,
    fromEarlierRun: true,
    ...more,
  });

  const previousAwaitingRetirement = (await loadPreviousCredentials(settings.dataDir)) !== undefined;
  const decision = statusCheckDue({
    mode: lifecycle.statusCheck,
    intervalSeconds: lifecycle.statusIntervalSeconds,
    state: await loadLifecycleState(settings.dataDir),
    previousAwaitingRetirement,
    now: device.now(),
  });
  if (!decision.due) {
    output.line(`status check skipped: ${decision.reason}`);
    output.note?.({ dayTwo: { statusCheck: 'skipped', reason: decision.reason } });
    return done();
  }
  if (!lifecycle.statusUrl) {
    output.note?.({ dayTwo: { statusCheck: 'skipped', reason: 'no status URL' } });
    output.line(
      'status check skipped: no status URL (the provisioning URL does not end in /device-provisioning; ' +
        'pass --status-url)',
    );
    return done();
  }
  await step(
    settings,
    output,
    `Check status at ${lifecycle.statusUrl}`,
    [
      `Signed with the key of ${thingOf(credentials)}’s current certificate, which is sent along (no fleet key).`,
      'The service answers what to do: nothing, renew the certificate, follow a move to another region, ' +
        'or provision again.',
    ].join('\n'),
  );

  let answer: StatusAnswer;
  try {
    answer = await requestStatus({
      url: lifecycle.statusUrl,
      credentials,
      headers: settings.headers,
      tuning: lifecycleTuning(settings, output, device),
    });
  } catch (error) {
    if (error instanceof LifecycleRefusedError) {
      output.note?.({
        httpStatus: error.status,
        dayTwo: { statusCheck: 'refused', reason: error.message },
      });
    } else output.note?.({ dayTwo: { statusCheck: 'failed', reason: messageOf(error) } });
    if (error instanceof LifecycleRefusedError && error.status === 403) {
      output.error(`the service refused ${thingOf(credentials)} (HTTP 403): ${error.message}`);
      output.error(
        'not connecting. An operator can let it back: `gdp-admin enable` (disabled), or `gdp-admin reset` ' +
          '(revoked), after which its next start provisions it again.',
      );
      if (connection) await disconnect(connection);
      return EXIT.revoked;
    }
    if (error instanceof LifecycleRefusedError) {
      output.error(`status check refused (HTTP ${error.status}): ${error.message}`);
      if (error.status === 401) output.error(`${UNVERIFIED_EXPLANATION}.`);
    } else {
      output.error(`status check failed: ${messageOf(error)}`);
    }
    output.error(
      'carrying on with the stored credentials: the MQTT endpoint decides whether they still work',
    );
    return done();
  }

  await saveLifecycleState(settings.dataDir, {
    ...(await loadLifecycleState(settings.dataDir)),
    lastStatusCheck: {
      at: device.now().toISOString(),
      action: answer.action,
      notAfter: answer.notAfter,
      renewAfter: answer.renewAfter,
    },
  });
  output.line(`status: ${answer.action}${answer.message ? ` (${answer.message})` : ''}${validity(answer)}`);
  output.note?.({ dayTwo: { statusCheck: 'answered', action: answer.action } });
  if (previousAwaitingRetirement) {
    // Signed with the current certificate: the service has retired the one a renewal replaced.
    await discardPrevious(settings.dataDir);
    output.line('the certificate replaced by the last renewal is retired now');
  }

  switch (answer.action) {
    case 'none':
      return done();
    case 'renew': {
      if (connection) await disconnect(connection);
      connection = undefined;
      try {
        const renewed = await renewCertificate(renewal, credentials);
        output.note?.({ dayTwo: { renewed: renewed.kind === 'renewed' } });
        if (renewed.kind === 'renewed') {
          credentials = renewed.credentials;
          connection = renewed.connection;
        }
      } catch (error) {
        if (error instanceof LifecycleRefusedError && error.status === 403) {
          output.error(`the service refused to renew ${thingOf(credentials)} (HTTP 403): ${error.message}`);
          return EXIT.revoked;
        }
        throw error;
      }
      return done();
    }
    case 'move': {
      if (connection) await disconnect(connection);
      const moved = await followMove(settings, credentials, answer, output, device);
      if (moved.credentials) output.note?.({ dayTwo: { movedTo: moved.credentials.identity.region } });
      return done(moved);
    }
    case 'reprovision': {
      if (connection) await disconnect(connection);
      output.line(`provisioning ${thingOf(credentials)} again, as on first boot`);
      const provisioned = await provision(settings, output);
      if (typeof provisioned === 'number') return provisioned;
      // What the old certificate's renewals and checks left no longer applies.
      await Promise.all([discardPending(settings.dataDir), discardPrevious(settings.dataDir)]);
      await saveLifecycleState(settings.dataDir, {});
      output.note?.({ dayTwo: { reprovisioned: true } });
      return { credentials: provisioned, fromEarlierRun: false };
    }
  }
}

/**
 * An operator re-homed the device (same certificate, registered in the new region too). Connect
 * there first and store the new endpoint only once that worked: until the operator finishes the
 * move, the old region still accepts the device.
 */
async function followMove(
  settings: DeviceSettings,
  credentials: DeviceCredentials,
  answer: StatusAnswer,
  output: DeviceOutput,
  device: DeviceDependencies,
): Promise<Partial<KeptCurrent>> {
  const { identity } = credentials;
  if (!answer.region || !answer.endpointAddress) {
    output.error(`the service said move without a region and endpoint: staying in ${identity.region}`);
    return {};
  }
  const moved: DeviceCredentials = {
    ...credentials,
    identity: {
      ...identity,
      region: answer.region,
      endpointAddress: answer.endpointAddress,
      movedFrom: answer.movedFrom ?? identity.region,
      movedAt: device.now().toISOString(),
    },
  };
  let connection: MqttClient;
  try {
    connection = await device.connect(connectionOptions(moved, settings.caPems));
  } catch (error) {
    output.error(
      `cannot connect to ${answer.endpointAddress} in ${answer.region} (${messageOf(error)}): ` +
        `staying with ${identity.endpointAddress} in ${identity.region}, which accepts the device until the move is finished`,
    );
    return {};
  }
  await saveIdentity(settings.dataDir, moved.identity);
  output.line(
    `moved: connected to ${answer.endpointAddress} in ${answer.region} (was ${moved.identity.movedFrom}); ` +
      'stored the new endpoint',
  );
  return { credentials: moved, connection };
}

function lifecycleSettings(settings: DeviceSettings): DeviceLifecycleSettings {
  if (settings.lifecycle) return settings.lifecycle;
  return {
    statusUrl: lifecycleUrl(settings.apiUrl, STATUS_PATH),
    renewUrl: lifecycleUrl(settings.apiUrl, RENEW_PATH),
    statusCheck: 'when-due',
    statusIntervalSeconds: DEFAULT_STATUS_INTERVAL_SECONDS,
  };
}

function lifecycleTuning(
  settings: DeviceSettings,
  output: DeviceOutput,
  device: DeviceDependencies,
): ExchangeTuning {
  return {
    giveUpWhenRefused: isLoopbackUrl(settings.apiUrl),
    onRetry: (retry) =>
      output.line(
        `attempt ${retry.attempt}/${retry.maxAttempts} failed (${retry.reason}); ` +
          `retrying in ${(retry.delayMs / 1000).toFixed(1)} s`,
      ),
    ...device.lifecycleTuning,
  };
}

function renewalContext(
  settings: DeviceSettings,
  lifecycle: DeviceLifecycleSettings,
  output: DeviceOutput,
  device: DeviceDependencies,
): RenewalContext<MqttClient> {
  return {
    dataDir: settings.dataDir,
    statusUrl: lifecycle.statusUrl,
    renewUrl: lifecycle.renewUrl,
    headers: settings.headers,
    tuning: lifecycleTuning(settings, output, device),
    connect: (credentials) => device.connect(connectionOptions(credentials, settings.caPems)),
    report: (line) => output.line(line),
    now: device.now,
  };
}

/** How stored credentials connect: to their endpoint, as their thing, trusting `caPems`. */
export function connectionOptions(
  credentials: DeviceCredentials,
  caPems: readonly string[],
): DeviceConnectionOptions {
  return {
    endpointAddress: credentials.identity.endpointAddress,
    thingName: credentials.identity.thingName,
    privateKeyPem: credentials.privateKeyPem,
    certificatePem: credentials.certificatePem,
    caPems,
  };
}

function thingOf(credentials: DeviceCredentials): string {
  return credentials.identity.thingName;
}

/** "; certificate 1a2b… valid until …, renewal from …" when the answer says. */
function validity(answer: StatusAnswer): string {
  const parts = [
    answer.certificateId ? `certificate ${short(answer.certificateId)}` : undefined,
    answer.notAfter ? `valid until ${answer.notAfter}` : undefined,
    answer.renewAfter ? `renewal from ${answer.renewAfter}` : undefined,
  ].filter((part): part is string => part !== undefined);
  return parts.length > 0 ? `; ${parts.join(', ')}` : '';
}

async function provision(
  settings: DeviceSettings,
  output: DeviceOutput,
): Promise<DeviceCredentials | number> {
  const { thingName } = settings;
  if (!settings.apiUrl) {
    output.note?.({ error: 'no provisioning URL' });
    output.error('no provisioning URL: pass -a/--api-url (or start the local stack: make local-up)');
    return EXIT.usage;
  }
  if (!settings.signingKeyPem && !settings.fakeDevice) {
    output.note?.({ error: 'no signing key' });
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
      giveUpWhenRefused: isLoopbackUrl(settings.apiUrl),
      onRetry: (retry) =>
        output.line(
          `attempt ${retry.attempt}/${retry.maxAttempts} failed (${retry.reason}); ` +
            `retrying in ${(retry.delayMs / 1000).toFixed(1)} s`,
        ),
    });
    const { identity } = result.credentials;
    // The service answers 0 both for a device at the region's site and for one it placed
    // without coordinates (country rule or default region): don't claim "0 km away".
    const distance =
      identity.distance > 0
        ? `${identity.distance} km away`
        : '0 km: at its site, or placed without coordinates';
    output.line(
      `provisioned ${thingName} in ${identity.region} (${distance}); ` +
        `endpoint ${identity.endpointAddress}; ${result.attempts} attempt(s), ${result.latencyMs} ms`,
    );
    await saveCredentials(settings.dataDir, result.credentials);
    output.line(`credentials stored in ${settings.dataDir} (private key mode 0600)`);
    output.note?.({ provisioned: 'now', attempts: result.attempts, latencyMs: result.latencyMs });
    return result.credentials;
  } catch (error) {
    if (error instanceof ProvisioningRejectedError) {
      output.note?.({ httpStatus: error.status, error: error.message });
      output.error(`the service refused ${thingName} (HTTP ${error.status}): ${error.message}`);
      return EXIT.rejected;
    }
    if (error instanceof ProvisioningUnavailableError) {
      output.note?.({ error: error.message });
      output.error(`provisioning failed: ${error.message}`);
      if (error.connectionRefused && isLoopbackUrl(settings.apiUrl)) {
        output.error(
          `nothing listens at ${settings.apiUrl}: is the local stack running? Start it with ` +
            '`make local-up && make seed`, or pass -a with the provisioning URL.',
        );
      }
      return EXIT.unavailable;
    }
    throw error;
  }
}

async function connectAndPublish(
  settings: DeviceSettings,
  credentials: DeviceCredentials,
  output: DeviceOutput,
  fromEarlierRun: boolean,
  device: DeviceDependencies,
  /** A connection a renewal or a move already opened with these credentials. */
  connected?: MqttClient,
): Promise<number> {
  const { identity } = credentials;
  let client = connected;
  if (!client) {
    await step(
      settings,
      output,
      `Step 2: connect to AWS IoT in ${identity.region}`,
      `MQTT over mutual TLS to ${identity.endpointAddress}, client id ${identity.thingName}, ` +
        `authenticated by the certificate the service registered in ${identity.region}.`,
    );
    try {
      client = await device.connect(connectionOptions(credentials, settings.caPems));
    } catch (error) {
      output.note?.({ error: messageOf(error) });
      output.error(`cannot connect to ${identity.endpointAddress}: ${messageOf(error)}`);
      if (fromEarlierRun) output.error(staleCredentialsAdvice(settings, credentials, error));
      return EXIT.connectFailed;
    }
    output.line(`connected to ${identity.endpointAddress}`);
  }
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
      onPublished: (index, topic, payload) => {
        output.note?.({ published: index });
        output.line(`published ${index}/${settings.count} to ${topic}: ${payload}`);
      },
    });
  } catch (error) {
    output.note?.({ error: messageOf(error) });
    output.error(`publish failed: ${messageOf(error)}`);
    return EXIT.publishFailed;
  } finally {
    await disconnect(client);
  }
  return EXIT.ok;
}

/**
 * Credentials from an earlier run that the endpoint no longer accepts: say why that happens and
 * what to do, rather than leave a bare "Not authorized".
 */
function staleCredentialsAdvice(
  settings: DeviceSettings,
  credentials: DeviceCredentials,
  error: unknown,
): string {
  const { identity } = credentials;
  const refused = (error as { code?: unknown }).code === 5 || /not authori[sz]ed/i.test(messageOf(error));
  const stackStarted = settings.localStack?.startedAt;
  const reason =
    stackStarted && stackStarted > identity.provisionedAt
      ? `the local stack was restarted at ${stackStarted}, after ${identity.thingName} was provisioned ` +
        `(${identity.provisionedAt}), and a new local stack forgets every device`
      : refused
        ? `the endpoint does not accept the certificate stored in ${settings.dataDir} ` +
          `(provisioned ${identity.provisionedAt}): it was revoked or deleted, or the local stack was restarted`
        : `the endpoint stored in ${settings.dataDir} (provisioned ${identity.provisionedAt}) does not answer`;
  const seed = settings.localStack ? '`make seed` (if the registry forgot it too), then ' : '';
  return `${reason}. To provision again: ${seed}the same command with --reset.`;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The local stack's URL: a refused connection there means the stack is down, not busy. */
function isLoopbackUrl(url: string | undefined): boolean {
  if (!url) return false;
  try {
    const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    return host === 'localhost' || host === '::1' || /^127\./.test(host);
  } catch {
    return false;
  }
}

export interface LocalStackDefaults {
  readonly file: string;
  readonly provisioningUrl?: string;
  readonly statusUrl?: string;
  readonly renewUrl?: string;
  readonly fleetSigningKey?: string;
  readonly caCertificate?: string;
  readonly startedAt?: string;
  readonly pids?: { readonly stackServer?: number };
}

/**
 * With a local stack running in this directory (make local-up), its URL, fleet key and CA are
 * the defaults, so `npm run device -- -t mydevice1` works out of the box. Flags always win.
 */
function localStackDefaults(): LocalStackDefaults | undefined {
  const file = resolve('.local', 'stack.json');
  if (!existsSync(file)) return undefined;
  return { ...(JSON.parse(readFileSync(file, 'utf8')) as Omit<LocalStackDefaults, 'file'>), file };
}

/** stack.json outlives a stack that was killed or a machine that rebooted. */
function localStackRunning(stack: LocalStackDefaults): boolean {
  const pid = stack.pids?.stackServer;
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A bad flag value found after commander parsed the command line; printed as `error: …`, exit 2. */
class UsageError extends Error {}

function httpUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError('not a URL (expected http:// or https://…)');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new InvalidArgumentError(`expected an http:// or https:// URL, got ${url.protocol}`);
  return value;
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

function header(value: string, previous: Record<string, string> | undefined): Record<string, string> {
  const colon = value.indexOf(':');
  if (colon <= 0) throw new InvalidArgumentError(`expected 'Name: value', got '${value}'`);
  return { ...previous, [value.slice(0, colon).trim()]: value.slice(colon + 1).trim() };
}

function readPem(path: string, what: string, flag: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new UsageError(`${flag}: cannot read ${what} ${path}: ${messageOf(error)}`);
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
  header?: Record<string, string>;
  reset: boolean;
  json?: boolean;
  statusUrl?: string;
  renewUrl?: string;
  statusInterval: number;
  /** --check-status: true; --no-check-status: false; neither: when due. */
  checkStatus?: boolean;
}

export function parseDeviceArguments(argv: readonly string[]): DeviceSettings {
  const local = localStackDefaults();
  const program = new Command()
    .name('gdp-device')
    .version(version, '-V, --version')
    .description(
      'Virtual IoT device: provisions itself through the global URL, then publishes to its region.',
    )
    .requiredOption('-t, --thing-name <name>', 'thing name (must be on the allowlist)')
    .option(
      '-a, --api-url <url>',
      'provisioning URL (default: the local stack’s, when .local/stack.json is here)',
      httpUrl,
    )
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
      'CA certificate(s) the MQTT endpoint must chain to (default: ' +
        (local?.caCertificate
          ? 'the local stack’s CA, unless -a is given; then Amazon Root CA 1 and 3)'
          : 'Amazon Root CA 1 and 3)'),
    )
    .option('--count <n>', 'messages to publish', positiveInteger, 3)
    .option('--interval <seconds>', 'seconds between messages', nonNegativeNumber, 1)
    .option('--header <header>', "extra request header 'Name: value' (repeatable)", header)
    .option(
      '--reset',
      'provision this device again; the stored credentials are replaced only once new ones arrive',
      false,
    )
    .option(
      '--json',
      'for scripts: one JSON object on stdout at the end (outcome, region, endpoint, certificate id, day two); ' +
        'the progress lines go to stderr. Implies -c',
    )
    .option(
      '--status-url <url>',
      'where a provisioned device asks what to do (default: the provisioning URL with /device-status)',
      httpUrl,
    )
    .option(
      '--renew-url <url>',
      'where it renews its certificate (default: the status URL with /device-renew)',
      httpUrl,
    )
    .option(
      '--status-interval <seconds>',
      'after "nothing to do", ask again only when the last check is older than this',
      nonNegativeNumber,
      DEFAULT_STATUS_INTERVAL_SECONDS,
    )
    .option('--check-status', 'ask the service now, even if it was asked recently')
    .option('--no-check-status', 'do not ask the service on start (as devices before status checks)')
    .addHelpText(
      'after',
      '\nA device that holds credentials asks the service on start (when due) whether to renew its\n' +
        'certificate, follow a move to another region, or provision again, and does it.\n' +
        '\nExit status: 0 ok, 1 unexpected error, 2 bad usage, 3 refused by the service (4xx),\n' +
        '4 service unavailable after retries, 5 MQTT connection refused or failed, 6 publish refused or failed,\n' +
        '7 revoked, disabled or no longer allowed (403 to a status check or renewal).',
    )
    .exitOverride()
    .parse([...argv]);
  const flags = program.opts<ParsedFlags>();
  const apiUrl = flags.apiUrl ?? local?.provisioningUrl;
  const signingKeyPath = flags.signingKey ?? local?.fleetSigningKey;
  const caPath = flags.ca ?? (flags.apiUrl === undefined ? local?.caCertificate : undefined);
  const usesLocalStack = local !== undefined && flags.apiUrl === undefined;
  return {
    thingName: flags.thingName,
    apiUrl,
    ownKey: flags.ownKey,
    fakeDevice: flags.fakeDevice,
    continueWithoutPauses: flags.continue,
    keyType: flags.keyType,
    signingKeyPem: signingKeyPath ? readPem(signingKeyPath, 'signing key', '--signing-key') : undefined,
    protocol: flags.protocol,
    dataDir: flags.dataDir ? resolve(flags.dataDir) : defaultDataDir(flags.thingName),
    caPems: caPath ? [readPem(caPath, 'CA certificate', '--ca')] : AMAZON_ROOT_CAS,
    count: flags.count,
    intervalSeconds: flags.interval,
    headers: flags.header ?? {},
    reset: flags.reset,
    json: flags.json === true,
    localStack: usesLocalStack ? local : undefined,
    lifecycle: {
      statusUrl:
        flags.statusUrl ??
        (usesLocalStack ? local.statusUrl : undefined) ??
        lifecycleUrl(apiUrl, STATUS_PATH),
      renewUrl:
        flags.renewUrl ??
        (usesLocalStack && flags.statusUrl === undefined ? local.renewUrl : undefined) ??
        lifecycleUrl(flags.statusUrl ?? apiUrl, RENEW_PATH),
      statusCheck: flags.checkStatus === undefined ? 'when-due' : flags.checkStatus ? 'always' : 'never',
      statusIntervalSeconds: flags.statusInterval,
    },
  };
}

async function main(): Promise<number> {
  let settings: DeviceSettings;
  try {
    settings = parseDeviceArguments(process.argv);
  } catch (error) {
    // Commander has already printed its own errors (and --help / --version).
    if (error instanceof CommanderError) {
      return error.code === 'commander.helpDisplayed' || error.code === 'commander.version'
        ? EXIT.ok
        : EXIT.usage;
    }
    if (error instanceof UsageError) {
      process.stderr.write(`error: ${error.message}\n`);
      return EXIT.usage;
    }
    throw error;
  }
  if (settings.localStack && !localStackRunning(settings.localStack)) {
    const stale =
      `${settings.localStack.file} is stale: the local stack that wrote it is not running. ` +
      'Start it with `make local-up && make seed`, or pass -a with the provisioning URL.';
    process.stderr.write(`${stale}\n`);
    if (settings.json) {
      const report: DeviceReport = {
        outcome: OUTCOME[EXIT.unavailable],
        exitCode: EXIT.unavailable,
        thingName: settings.thingName,
        dataDir: settings.dataDir,
        error: stale,
      };
      process.stdout.write(`${JSON.stringify(report)}\n`);
    }
    return EXIT.unavailable;
  }
  if (settings.json) {
    const report = await runDeviceForScripts(settings);
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return report.exitCode;
  }
  return runDevice(settings);
}

/** `tsx device/cli.ts …`, `npm run device`, and the `gdp-device` bin (bin/gdp-device.js). */
export function runCommandLine(): void {
  main().then(
    (status) => process.exit(status),
    (error: unknown) => {
      process.stderr.write(`unexpected error: ${messageOf(error)}\n`);
      process.exit(EXIT.unexpected);
    },
  );
}

if (require.main === module) runCommandLine();
