/**
 * gdp-device after day one, end to end against the local stack (jest's global setup starts or
 * reuses it): /device-status and /device-renew through the local edge, gdp-admin as the operator
 * runs it (--local), the regional MQTT endpoints deciding which certificates still connect.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { MqttClient } from 'mqtt';
import {
  connectionOptions,
  EXIT,
  runDevice,
  type DeviceDependencies,
  type DeviceSettings,
} from '../../device/cli';
import { certificateIdOf } from '../../device/keys';
import { DEFAULT_STATUS_INTERVAL_SECONDS } from '../../device/lifecycle';
import { canConnect, connectDevice, telemetryTopic } from '../../device/mqtt';
import {
  loadLifecycleState,
  loadPendingCredentials,
  saveCredentials,
  type DeviceCredentials,
} from '../../device/store';
import { seedAgedDevice } from '../local/aged-device';
import { viewerHeaders } from '../local/edge';
import { addDevice, readStack, type LocalStack } from '../local/stack';
import { openWatch, type WatchSubscription } from '../local/watch';
import { admin } from '../support/admin';
import { capture, stored } from './support/device-run';
import { uniqueThingName } from './support/iot-fixtures';

const FRANKFURT = viewerHeaders({ latitude: 50.11, longitude: 8.68, country: 'DE' });
const SINGAPORE = viewerHeaders({ latitude: 1.35, longitude: 103.82, country: 'SG' });

let stack: LocalStack;
let watch: WatchSubscription;
let dataRoot: string;
let caPems: string[];

beforeAll(async () => {
  stack = readStack();
  if (!stack.mqttRunning) throw new Error('the local stack runs without MQTT endpoints');
  watch = await openWatch(stack.watchUrl);
  dataRoot = mkdtempSync(join(tmpdir(), 'device-lifecycle-'));
  caPems = [readFileSync(stack.caCertificate, 'utf8')];
});

afterAll(() => {
  watch?.close();
  if (dataRoot) rmSync(dataRoot, { recursive: true, force: true });
});

function settingsFor(thingName: string, headers: Record<string, string> = FRANKFURT): DeviceSettings {
  return {
    thingName,
    apiUrl: stack.provisioningUrl,
    ownKey: true,
    keyType: 'ec',
    fakeDevice: false,
    continueWithoutPauses: true,
    signingKeyPem: readFileSync(stack.fleetSigningKey, 'utf8'),
    protocol: 'v2',
    dataDir: join(dataRoot, thingName),
    caPems,
    count: 1,
    intervalSeconds: 0,
    headers,
    lifecycle: {
      statusUrl: stack.statusUrl,
      renewUrl: stack.renewUrl,
      statusCheck: 'when-due',
      statusIntervalSeconds: DEFAULT_STATUS_INTERVAL_SECONDS,
    },
  };
}

/** A device provisioned now through gdp-device itself, as on first boot. */
async function provisionedDevice(headers: Record<string, string> = FRANKFURT): Promise<DeviceSettings> {
  const thingName = uniqueThingName('life');
  await addDevice(stack, thingName);
  const settings = settingsFor(thingName, headers);
  const output = capture();
  expect(await runDevice(settings, output)).toBe(EXIT.ok);
  return settings;
}

/** A device provisioned 300 days ago with a one-year certificate, stored as gdp-device stores it. */
async function agedDevice(): Promise<{ settings: DeviceSettings; aged: DeviceCredentials }> {
  const thingName = uniqueThingName('aged');
  const device = await seedAgedDevice(stack, {
    thingName,
    region: 'eu-west-2',
    ageDays: 300,
    validityDays: 365,
  });
  const settings = settingsFor(thingName);
  const aged: DeviceCredentials = {
    privateKeyPem: device.privateKeyPem,
    certificatePem: device.certificatePem,
    identity: {
      thingName,
      region: device.region,
      endpointAddress: device.endpointAddress,
      distance: 0,
      provisionedAt: device.notBefore.toISOString(),
      keySource: 'device',
    },
  };
  await saveCredentials(settings.dataDir, aged);
  return { settings, aged };
}

/** Whether the region's MQTT endpoint accepts these credentials now. */
function connects(credentials: DeviceCredentials): Promise<boolean> {
  return canConnect(connectionOptions(credentials, caPems));
}

/** Messages on the device's topic the observer saw in `region`, waiting up to 5 s for `expected`. */
function observedIn(thingName: string, region: string, expected: number): Promise<number> {
  const topic = telemetryTopic(thingName);
  return watch.countWithin((message) => message.topic === topic && message.region === region, expected, 5000);
}

describe('gdp-device after day one, against the local stack', () => {
  it('asks on its next start, hears "nothing to do", and does not ask again within the hour', async () => {
    const settings = await provisionedDevice();

    const first = capture();
    expect(await runDevice(settings, first)).toBe(EXIT.ok);
    expect(first.text()).toMatch(/^status: none \(nothing to do\); certificate \w{12}, valid until/m);
    expect((await loadLifecycleState(settings.dataDir)).lastStatusCheck?.action).toBe('none');

    const second = capture();
    expect(await runDevice(settings, second)).toBe(EXIT.ok);
    expect(second.text()).toMatch(/status check skipped: checked \d+ s ago/);
    expect(await observedIn(settings.thingName, 'eu-central-1', 3)).toBe(3);
  });

  it('renews when its certificate nears its end: the old one works until the new one connected, then is retired', async () => {
    const { settings, aged } = await agedDevice();
    const atNewConnect: { storedCertificate?: string; oldStillConnects?: boolean; pending?: string } = {};
    const connect: DeviceDependencies['connect'] = async (options) => {
      if (options.certificatePem !== aged.certificatePem) {
        atNewConnect.storedCertificate = (await stored(settings)).certificatePem;
        atNewConnect.pending = (await loadPendingCredentials(settings.dataDir))?.certificatePem;
        atNewConnect.oldStillConnects = await connects(aged);
      }
      return connectDevice(options);
    };
    const output = capture();

    expect(await runDevice(settings, output, { connect })).toBe(EXIT.ok);

    const renewed = await stored(settings);
    expect(renewed.certificatePem).not.toBe(aged.certificatePem);
    expect(atNewConnect).toEqual({
      storedCertificate: aged.certificatePem,
      pending: renewed.certificatePem,
      oldStillConnects: true,
    });
    expect(output.text()).toMatch(/^status: renew \(the certificate passed its renewal point/m);
    expect(output.text()).toMatch(/the previous one \(\w{12}\) is retired/);
    expect(await connects(aged)).toBe(false);
    expect(await connects(renewed)).toBe(true);
    expect(await observedIn(settings.thingName, 'eu-west-2', 1)).toBe(1);
    expect((await loadLifecycleState(settings.dataDir)).lastRenewal).toMatchObject({
      certificateId: certificateIdOf(renewed.certificatePem),
      previousCertificateId: certificateIdOf(aged.certificatePem),
    });
  });

  it('keeps its old credentials when the renewed ones do not connect, and renews again on the next start', async () => {
    const { settings, aged } = await agedDevice();
    const refuseNew: DeviceDependencies['connect'] = async (options) => {
      if (options.certificatePem !== aged.certificatePem)
        throw new Error('Connection refused: Not authorized');
      return connectDevice(options);
    };
    const first = capture();

    expect(await runDevice(settings, first, { connect: refuseNew })).toBe(EXIT.ok);

    expect((await stored(settings)).certificatePem).toBe(aged.certificatePem);
    expect(await loadPendingCredentials(settings.dataDir)).toBeUndefined();
    expect(first.text()).toMatch(
      /the renewed certificate could not connect .* discarded it\nkeeping the current/,
    );
    expect(await observedIn(settings.thingName, 'eu-west-2', 1)).toBe(1);

    // Signed with the certificate the unproven renewal replaced: the service says renew again.
    const second = capture();
    expect(await runDevice(settings, second)).toBe(EXIT.ok);
    expect(second.text()).toMatch(/^status: renew \(this certificate was replaced by a renewal/m);
    expect((await stored(settings)).certificatePem).not.toBe(aged.certificatePem);
    expect(await connects(aged)).toBe(false);
  });

  it('after a crash between the renewal’s answer and its connect, tries the renewed set first on the next start', async () => {
    const { settings, aged } = await agedDevice();
    let reached: () => void = () => undefined;
    const atConnect = new Promise<void>((done) => (reached = done));
    // The process "dies" while connecting with the renewed certificate: that call never returns.
    const dies: DeviceDependencies['connect'] = (options) => {
      if (options.certificatePem === aged.certificatePem) return connectDevice(options);
      reached();
      return new Promise<MqttClient>(() => undefined);
    };
    void runDevice(settings, capture(), { connect: dies });
    await atConnect;
    const pending = await loadPendingCredentials(settings.dataDir);
    expect(pending).toBeDefined();
    expect((await stored(settings)).certificatePem).toBe(aged.certificatePem);

    const output = capture();
    expect(await runDevice(settings, output)).toBe(EXIT.ok);

    expect(output.lines[1]).toMatch(
      /a renewal was interrupted before its certificate \w{12} connected: trying it first/,
    );
    expect((await stored(settings)).certificatePem).toBe(pending?.certificatePem);
    expect(await connects(aged)).toBe(false);
  });

  it('follows an operator’s move to Dublin, and keeps working there once the move is finished', async () => {
    const settings = await provisionedDevice(FRANKFURT);
    expect((await stored(settings)).identity.region).toBe('eu-central-1');

    const moved = await admin('move', settings.thingName, '--to', 'eu-west-1');
    expect(moved.code).toBe(0);
    const output = capture();
    expect(await runDevice(settings, output)).toBe(EXIT.ok);

    expect(output.text()).toMatch(/^status: move \(an operator moved .* to eu-west-1/m);
    expect(output.text()).toMatch(
      /moved: connected to \S+ in eu-west-1 \(was eu-central-1\); stored the new endpoint/,
    );
    const identity = (await stored(settings)).identity;
    expect(identity).toMatchObject({
      region: 'eu-west-1',
      endpointAddress: stack.mqttEndpoints['eu-west-1'],
      movedFrom: 'eu-central-1',
    });
    expect(await observedIn(settings.thingName, 'eu-west-1', 1)).toBe(1);

    expect((await admin('move', settings.thingName, '--finish')).code).toBe(0);
    const after = capture();
    const checkNow: DeviceSettings = {
      ...settings,
      lifecycle: {
        statusUrl: stack.statusUrl,
        renewUrl: stack.renewUrl,
        statusCheck: 'always',
        statusIntervalSeconds: 3600,
      },
    };
    expect(await runDevice(checkNow, after)).toBe(EXIT.ok);
    expect(after.text()).toMatch(/^status: none/m);
    expect(await observedIn(settings.thingName, 'eu-west-1', 2)).toBe(2);
  });

  it('provisions again, as on first boot, after an operator reset its record', async () => {
    const settings = await provisionedDevice(SINGAPORE);
    const before = await stored(settings);
    expect((await admin('reset', settings.thingName)).code).toBe(0);

    const output = capture();
    expect(await runDevice(settings, output)).toBe(EXIT.ok);

    expect(output.text()).toMatch(/^status: reprovision \(the registry record of .* was reset/m);
    expect(output.text()).toMatch(/^provisioned .* in ap-southeast-1/m);
    const after = await stored(settings);
    expect(after.certificatePem).not.toBe(before.certificatePem);
    expect(await loadLifecycleState(settings.dataDir)).toEqual({});
    expect(await connects(before)).toBe(false);
  });

  it('stops with exit 7 and the service’s message once revoked (gdp-admin revoke)', async () => {
    const settings = await provisionedDevice(SINGAPORE);
    expect((await admin('revoke', settings.thingName)).code).toBe(0);

    const cli = spawnSync(
      resolve('node_modules/.bin/tsx'),
      [
        'device/cli.ts',
        '-t',
        settings.thingName,
        '-c',
        '-a',
        stack.provisioningUrl,
        '--ca',
        stack.caCertificate,
        '--data-dir',
        settings.dataDir,
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 },
    );

    expect(cli.status).toBe(EXIT.revoked);
    expect(cli.stderr).toMatch(/the service refused .* \(HTTP 403\): thing .* is revoked/);
    expect(cli.stdout).not.toMatch(/connected to/);
  });
});
