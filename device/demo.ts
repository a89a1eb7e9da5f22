/**
 * `make demo`: the whole journey on one machine. Starts the local stack unless one runs, seeds the
 * registry, provisions virtual devices from simulated places on five continents (both key modes,
 * both signature schemes), has each connect to the region it was given and publish, checks the
 * observer saw every message, shows a forged device and a revoked certificate being refused, then
 * day two (demo-day-two.ts): a renewal, an operator's move followed, a revocation told by
 * /device-status. Prints a summary. Stops what it started; exits 0 only if every check held.
 */
import '../functions/cli-runtime';
import { Command } from 'commander';
import { version } from '../package.json';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { IoTClient, UpdateCertificateCommand } from '@aws-sdk/client-iot';
import { viewerHeaders, type ViewerPlace } from '../tests/local/edge';
import { addDevice, seed, startStack, stopStack, type LocalStack } from '../tests/local/stack';
import { LOCAL_DIR } from '../tests/local/stack-state';
import { openWatch, type WatchSubscription } from '../tests/local/watch';
import { certificateIdOf, type DeviceKeyType } from './keys';
import { connectionOptions } from './cli';
import { DayTwo, type DayTwoCheck } from './demo-day-two';
import { connectDevice, disconnect, publishTelemetry, telemetryTopic } from './mqtt';
import { provisionDevice, ProvisioningRejectedError, type ProtocolVersion } from './provision';
import { loadCredentials, saveCredentials, type DeviceCredentials } from './store';

interface Place extends ViewerPlace {
  readonly name: string;
  readonly expectedRegion: string;
  readonly ownKey: boolean;
  readonly keyType: DeviceKeyType;
  readonly protocol: ProtocolVersion;
}

// Places near, not at, a region's site: the distance column shows the choice was made, and each
// one's nearest region among the default 14 (infra/deployment.json) is the expected one.
const PLACES: readonly Place[] = [
  {
    name: 'Osaka',
    latitude: 34.69,
    longitude: 135.5,
    country: 'JP',
    expectedRegion: 'ap-northeast-1',
    ownKey: false,
    keyType: 'rsa',
    protocol: 'v1',
  },
  {
    name: 'Auckland',
    latitude: -36.85,
    longitude: 174.76,
    country: 'NZ',
    expectedRegion: 'ap-southeast-2',
    ownKey: true,
    keyType: 'ec',
    protocol: 'v2',
  },
  {
    name: 'Buenos Aires',
    latitude: -34.6,
    longitude: -58.38,
    country: 'AR',
    expectedRegion: 'sa-east-1',
    ownKey: true,
    keyType: 'rsa',
    protocol: 'v1',
  },
  // No coordinates: the country override (DE → eu-central-1) must place it.
  {
    name: 'Germany (country only)',
    country: 'DE',
    expectedRegion: 'eu-central-1',
    ownKey: false,
    keyType: 'rsa',
    protocol: 'v2',
  },
  {
    name: 'Chicago',
    latitude: 41.88,
    longitude: -87.63,
    country: 'US',
    expectedRegion: 'us-east-2',
    ownKey: true,
    keyType: 'ec',
    protocol: 'v2',
  },
];

/** Provisioned and published like the others, then its certificate is revoked. */
const REVOKED_PLACE: Place = {
  name: 'Bangalore',
  latitude: 12.97,
  longitude: 77.59,
  country: 'IN',
  expectedRegion: 'ap-south-1',
  ownKey: true,
  keyType: 'rsa',
  protocol: 'v1',
};

const MESSAGES_PER_DEVICE = 2;
const OBSERVER_WAIT_MS = 5000;

interface DeviceRow {
  readonly device: string;
  readonly place: string;
  readonly keyMode: string;
  readonly region: string;
  readonly distance: string;
  readonly geoSource: string;
  readonly latencyMs: string;
  readonly delivered: string;
  readonly ok: boolean;
  readonly note: string;
}

interface Check {
  readonly what: string;
  readonly ok: boolean;
}

const log = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

function keyMode(place: Place): string {
  return `${place.ownKey ? `CSR ${place.keyType.toUpperCase()}` : 'service key'}, ${place.protocol}`;
}

class Demo {
  readonly runId = randomBytes(3).toString('hex');
  private readonly fleetKeyPem: string;
  private readonly caPem: string;
  private readonly registry: DynamoDBClient;

  constructor(
    private readonly stack: LocalStack,
    private readonly watch: WatchSubscription,
    private readonly dataRoot: string,
  ) {
    this.fleetKeyPem = readFileSync(stack.fleetSigningKey, 'utf8');
    this.caPem = readFileSync(stack.caCertificate, 'utf8');
    this.registry = new DynamoDBClient({
      region: stack.homeRegion,
      endpoint: stack.awsEndpoint,
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    });
  }

  thingName(place: Place): string {
    const slug = place.name
      .normalize('NFD')
      .replace(/\(.*\)/, '')
      .toLowerCase()
      .replace(/[^a-z]+/g, '');
    return `demo-${slug}-${this.runId}`;
  }

  async provision(
    place: Place,
  ): Promise<{ thingName: string; credentials: DeviceCredentials; latencyMs: number }> {
    const thingName = this.thingName(place);
    await addDevice(this.stack, thingName);
    const result = await provisionDevice({
      thingName,
      apiUrl: this.stack.provisioningUrl,
      signingKeyPem: this.fleetKeyPem,
      ownKey: place.ownKey,
      keyType: place.keyType,
      protocol: place.protocol,
      headers: viewerHeaders(place),
      onRetry: (retry) => log(`  ${thingName}: attempt ${retry.attempt} failed (${retry.reason}); retrying`),
    });
    await saveCredentials(join(this.dataRoot, thingName), result.credentials);
    return { thingName, credentials: result.credentials, latencyMs: result.latencyMs };
  }

  connect(credentials: DeviceCredentials) {
    return connectDevice(connectionOptions(credentials, [this.caPem]));
  }

  /** Publishes and returns how many of the messages the observer saw, in the right region. */
  async publishAndObserve(credentials: DeviceCredentials): Promise<number> {
    const { thingName, region } = credentials.identity;
    const client = await this.connect(credentials);
    try {
      await publishTelemetry(client, thingName, { count: MESSAGES_PER_DEVICE, intervalMs: 100 });
    } finally {
      await disconnect(client);
    }
    const topic = telemetryTopic(thingName);
    return this.watch.countWithin(
      (message) => message.topic === topic && message.region === region,
      MESSAGES_PER_DEVICE,
      OBSERVER_WAIT_MS,
    );
  }

  async geoSource(thingName: string): Promise<string> {
    const item = await this.registry.send(
      new GetItemCommand({
        TableName: this.stack.tableName,
        Key: { thing_name: { S: thingName } },
        ProjectionExpression: 'geo_source',
      }),
    );
    return item.Item?.geo_source?.S ?? '?';
  }

  async device(place: Place): Promise<DeviceRow> {
    const thingName = this.thingName(place);
    const base = { device: thingName, place: place.name, keyMode: keyMode(place) };
    try {
      const provisioned = await this.provision(place);
      const { identity } = provisioned.credentials;
      const delivered = await this.publishAndObserve(provisioned.credentials);
      const regionOk = identity.region === place.expectedRegion;
      const ok = regionOk && delivered === MESSAGES_PER_DEVICE;
      return {
        ...base,
        region: identity.region,
        // The service answers 0 for a device it placed without coordinates.
        distance: place.latitude === undefined ? '-' : `${identity.distance} km`,
        geoSource: await this.geoSource(thingName),
        latencyMs: `${provisioned.latencyMs} ms`,
        delivered: `${delivered}/${MESSAGES_PER_DEVICE}`,
        ok,
        note: regionOk ? '' : `expected ${place.expectedRegion}`,
      };
    } catch (error) {
      return {
        ...base,
        region: '-',
        distance: '-',
        geoSource: '-',
        latencyMs: '-',
        delivered: '-',
        ok: false,
        note: messageOf(error),
      };
    }
  }

  /** A device signed with an unregistered key must get 401 and nothing else. */
  async forgedDeviceRefused(): Promise<Check> {
    const thingName = `demo-forged-${this.runId}`;
    await addDevice(this.stack, thingName);
    try {
      await provisionDevice({
        thingName,
        apiUrl: this.stack.provisioningUrl,
        ownKey: false,
        keyType: 'rsa',
        protocol: 'v1',
        fakeSignature: true,
        headers: viewerHeaders(PLACES[0] as Place),
      });
      return { what: `forged signature (${thingName}): provisioned, but must be refused`, ok: false };
    } catch (error) {
      const refused = error instanceof ProvisioningRejectedError && error.status === 401;
      const status = error instanceof ProvisioningRejectedError ? `HTTP ${error.status}` : 'no answer';
      return {
        what: `forged signature (${thingName}): refused with ${status}, ${messageOf(error)}`,
        ok: refused,
      };
    }
  }

  /** Revokes the certificate of a device that published (its row) in its region: it must be refused. */
  async revokedDeviceRefused(row: DeviceRow): Promise<Check> {
    const what = `revoked certificate (${row.device})`;
    if (!row.ok) return { what: `${what}: not tested, the device did not publish first`, ok: false };
    const credentials = await this.loadSaved(REVOKED_PLACE);
    const certificateId = certificateIdOf(credentials.certificatePem);
    const iot = new IoTClient({
      region: credentials.identity.region,
      endpoint: this.stack.awsEndpoint,
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    });
    try {
      await iot.send(new UpdateCertificateCommand({ certificateId, newStatus: 'REVOKED' }));
    } finally {
      iot.destroy();
    }
    try {
      await disconnect(await this.connect(credentials));
      return { what: `${what}: still connects to ${row.region} after REVOKED`, ok: false };
    } catch (error) {
      return { what: `${what}: set REVOKED, then refused by ${row.region}, ${messageOf(error)}`, ok: true };
    }
  }

  /** What the device kept in its data directory: the demo uses it as the device would. */
  private async loadSaved(place: Place): Promise<DeviceCredentials> {
    const thingName = this.thingName(place);
    const credentials = await loadCredentials(join(this.dataRoot, thingName));
    if (!credentials) throw new Error(`no stored credentials for ${thingName}`);
    return credentials;
  }

  close(): void {
    this.registry.destroy();
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const COLUMNS: readonly { title: string; cell: (row: DeviceRow) => string; width?: number }[] = [
  { title: 'device', cell: (row) => row.device },
  { title: 'simulated location', cell: (row) => row.place },
  { title: 'key, protocol', cell: (row) => row.keyMode, width: 15 },
  { title: 'region', cell: (row) => row.region, width: 14 },
  { title: 'distance', cell: (row) => row.distance, width: 8 },
  { title: 'geo source', cell: (row) => row.geoSource, width: 10 },
  { title: 'latency', cell: (row) => row.latencyMs, width: 7 },
  { title: 'messages', cell: (row) => row.delivered, width: 8 },
  { title: 'outcome', cell: (row) => `${row.ok ? 'ok' : 'FAILED'}${row.note ? ` ${row.note}` : ''}` },
];

/** A table printed one row at a time, as each device finishes: widths are fixed up front. */
function liveTable(devices: readonly string[], places: readonly string[]) {
  const widths = COLUMNS.map((column, index) =>
    Math.max(
      column.title.length,
      column.width ?? 0,
      ...(index === 0 ? devices : index === 1 ? places : []).map((value) => value.length),
    ),
  );
  const format = (cells: readonly string[]) =>
    cells
      .map((value, column) => value.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd();
  return {
    header: () =>
      [format(COLUMNS.map((column) => column.title)), format(widths.map((width) => '-'.repeat(width)))].join(
        '\n',
      ),
    row: (row: DeviceRow) => format(COLUMNS.map((column) => column.cell(row))),
  };
}

async function main(): Promise<number> {
  const options = new Command('demo')
    .description(
      'The whole journey locally: start the local stack, provision six virtual devices from five ' +
        'continents, each connects to its own region over MQTT/TLS and publishes, the observer sees every ' +
        'message, a forged device and a revoked certificate are refused; then day two: a certificate near its ' +
        'end renewed, an operator’s move followed, a revoked device told so. Exits 0 only if all of that held.',
    )
    .version(version)
    .option(
      '--keep-running',
      'leave a stack this demo started running afterwards (stop it with make local-down)',
    )
    .parse()
    .opts<{ keepRunning?: boolean }>();
  log('Starting the local stack (moto as AWS, local edge, regional MQTT endpoints)...');
  const { stack, started } = await startStack({ log, stopWithOwner: !options.keepRunning });
  // Ctrl-C must not leave a stack this demo started behind.
  process.once('SIGINT', () => {
    log('\ninterrupted');
    const stop = started && !options.keepRunning ? stopStack({ log }) : Promise.resolve(false);
    void stop.finally(() => process.exit(130));
  });
  log(
    started
      ? `local stack started: ${stack.provisioningUrl}`
      : `reusing the running local stack: ${stack.provisioningUrl}`,
  );
  const dataRoot = await mkdtemp(join(LOCAL_DIR, 'demo-devices-'));
  let watch: WatchSubscription | undefined;
  let demo: Demo | undefined;
  try {
    if (!stack.mqttRunning) throw new Error('the local stack runs without its MQTT endpoints');
    log('\nSeeding the registry (mydevice1..mydevice10, as the 2018 sample did)...');
    await seed(stack, false, () => undefined);
    watch = await openWatch(stack.watchUrl);
    const journey = new Demo(stack, watch, dataRoot);
    demo = journey;

    log('\nProvisioning devices from around the world; each publishes to its own region:\n');
    const places = [...PLACES, REVOKED_PLACE];
    const table = liveTable(
      places.map((place) => journey.thingName(place)),
      places.map((place) => place.name),
    );
    log(table.header());
    const rows: DeviceRow[] = [];
    for (const place of places) {
      const row = await journey.device(place);
      rows.push(row);
      log(table.row(row));
    }

    log('\nDevices that must be refused:');
    const refusals: Check[] = [];
    const revokedRow = rows[rows.length - 1] as DeviceRow;
    for (const check of [
      () => journey.forgedDeviceRefused(),
      () => journey.revokedDeviceRefused(revokedRow),
    ]) {
      const refusal = await check();
      refusals.push(refusal);
      log(`  ${refusal.ok ? 'ok  ' : 'FAIL'} ${refusal.what}`);
    }

    log('\nDay two: devices in the field start again; gdp-device asks /device-status and does what it says:');
    const dayTwo = new DayTwo(stack, watch, dataRoot, journey.runId, log);
    const dayTwoChecks: DayTwoCheck[] = [];
    for (const scene of [() => dayTwo.renewal(), () => dayTwo.move(), () => dayTwo.revocation()]) {
      const check = await scene().catch((error: unknown) => ({ what: messageOf(error), ok: false }));
      dayTwoChecks.push(check);
      log(`  ${check.ok ? 'ok  ' : 'FAIL'} ${check.what}`);
    }

    const failed = [...rows, ...refusals, ...dayTwoChecks].filter((check) => !check.ok).length;
    log(
      failed === 0
        ? `\nDemo passed: ${rows.length} devices reached their regions and were observed; both refusals held; ` +
            'day two: renewed, moved, revoked.'
        : `\nDemo FAILED: ${failed} check(s).`,
    );
    return failed === 0 ? 0 : 1;
  } finally {
    watch?.close();
    demo?.close();
    await rm(dataRoot, { recursive: true, force: true });
    if (started && !options.keepRunning) {
      log('Stopping the local stack this demo started...');
      await stopStack({ log });
    }
  }
}

main().then(
  (status) => process.exit(status),
  (error: unknown) => {
    process.stderr.write(`demo failed: ${messageOf(error)}\n`);
    process.exit(1);
  },
);
