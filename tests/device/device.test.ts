/**
 * The virtual device end to end against the local stack (jest's global setup starts it): the
 * provisioning service behind the local edge, moto as AWS, the regional MQTT endpoints. Places are
 * simulated with the local edge's X-Local-Viewer-* headers (real CloudFront cannot run here).
 */
import { spawnSync } from 'node:child_process';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { EXIT, runDevice, runDeviceForScripts, type DeviceSettings } from '../../device/cli';
import { certificateIdOf } from '../../device/keys';
import { connectDevice, disconnect, publishTelemetry, telemetryTopic } from '../../device/mqtt';
import { PRIVATE_KEY_FILE } from '../../device/store';
import { viewerHeaders } from '../local/edge';
import { addDevice, readStack, type LocalStack } from '../local/stack';
import { openWatch, type WatchSubscription } from '../local/watch';
import { iotClient, setCertificateStatus, uniqueThingName } from './support/iot-fixtures';
import { capture, stored } from './support/device-run';

const TOKYO = viewerHeaders({ latitude: 35.68, longitude: 139.69, country: 'JP' });
const SYDNEY = viewerHeaders({ latitude: -33.87, longitude: 151.21, country: 'AU' });
// Mumbai: the retry tests inject faults into ap-south-1 only, so parallel test files are unaffected.
const MUMBAI = viewerHeaders({ latitude: 19.08, longitude: 72.88, country: 'IN' });

let stack: LocalStack;
let watch: WatchSubscription;
let dataRoot: string;

beforeAll(async () => {
  stack = readStack();
  if (!stack.mqttRunning) throw new Error('the local stack runs without MQTT endpoints');
  watch = await openWatch(stack.watchUrl);
  dataRoot = mkdtempSync(join(tmpdir(), 'device-test-'));
});

afterAll(() => {
  watch?.close();
  if (dataRoot) rmSync(dataRoot, { recursive: true, force: true });
});

async function newDevice(overrides: Partial<DeviceSettings> = {}): Promise<DeviceSettings> {
  const thingName = overrides.thingName ?? uniqueThingName();
  await addDevice(stack, thingName);
  return {
    thingName,
    apiUrl: stack.provisioningUrl,
    ownKey: false,
    fakeDevice: false,
    continueWithoutPauses: true,
    keyType: 'rsa',
    signingKeyPem: readFileSync(stack.fleetSigningKey, 'utf8'),
    protocol: 'v1',
    dataDir: join(dataRoot, thingName),
    caPems: [readFileSync(stack.caCertificate, 'utf8')],
    count: 1,
    intervalSeconds: 0,
    headers: TOKYO,
    ...overrides,
  };
}

async function setFaults(rules: readonly object[]): Promise<void> {
  const response = await fetch(stack.faultsUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ rules }),
  });
  if (!response.ok) throw new Error(`fault injection answered ${response.status}`);
}

async function clearFaults(): Promise<void> {
  await fetch(stack.faultsUrl, { method: 'DELETE' });
}

describe('virtual device against the local stack', () => {
  it.each([
    {
      mode: 'a service-made key (v1)',
      ownKey: false,
      keyType: 'rsa',
      protocol: 'v1',
      headers: TOKYO,
      region: 'ap-northeast-1',
    },
    {
      mode: 'its own EC key and a CSR (v2)',
      ownKey: true,
      keyType: 'ec',
      protocol: 'v2',
      headers: SYDNEY,
      region: 'ap-southeast-2',
    },
    {
      mode: 'its own RSA key and a CSR (v1)',
      ownKey: true,
      keyType: 'rsa',
      protocol: 'v1',
      headers: TOKYO,
      region: 'ap-northeast-1',
    },
  ] as const)(
    'provisions with $mode, connects to $region and publishes what the observer sees',
    async (mode) => {
      const settings = await newDevice({
        ownKey: mode.ownKey,
        keyType: mode.keyType,
        protocol: mode.protocol,
        headers: mode.headers,
        count: 2,
      });
      const output = capture();

      expect(await runDevice(settings, output)).toBe(EXIT.ok);

      const credentials = await stored(settings);
      expect(credentials.identity.region).toBe(mode.region);
      expect(credentials.identity.keySource).toBe(mode.ownKey ? 'device' : 'service');
      expect(statSync(join(settings.dataDir, PRIVATE_KEY_FILE)).mode & 0o777).toBe(0o600);
      const certificateKey = new X509Certificate(credentials.certificatePem).publicKey.export({
        type: 'spki',
        format: 'der',
      });
      const deviceKey = createPublicKey(credentials.privateKeyPem).export({ type: 'spki', format: 'der' });
      expect(Buffer.compare(certificateKey, deviceKey)).toBe(0);
      const topic = `data/${settings.thingName}/misc`;
      const seen = await watch.waitFor((message) => message.topic === topic, 5000);
      expect(seen.region).toBe(mode.region);
      expect(JSON.parse(seen.payload)).toMatchObject({
        'thing-name': settings.thingName,
        global: 'device provisioning',
      });
    },
  );

  it('refuses a fake device with 401 and exit status 3, storing nothing', async () => {
    const thingName = uniqueThingName();
    await addDevice(stack, thingName);
    const dataDir = join(dataRoot, thingName);
    const cli = spawnSync(
      resolve('node_modules/.bin/tsx'),
      ['device/cli.ts', '-t', thingName, '-a', stack.provisioningUrl, '-f', '-c', '--data-dir', dataDir],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 },
    );
    expect(cli.status).toBe(EXIT.rejected);
    expect(cli.stderr).toMatch(/HTTP 401/);
    expect(() => statSync(dataDir)).toThrow();
  });

  it('started again, goes straight to publishing without asking the service', async () => {
    const settings = await newDevice({ ownKey: true });
    expect(await runDevice(settings, capture())).toBe(EXIT.ok);
    const first = await stored(settings);

    // An unreachable provisioning URL proves the second run never calls it.
    const output = capture();
    expect(await runDevice({ ...settings, apiUrl: 'http://127.0.0.1:9/unreachable' }, output)).toBe(EXIT.ok);

    expect(output.lines.join('\n')).toMatch(/already provisioned/);
    expect((await stored(settings)).certificatePem).toBe(first.certificatePem);
    const topic = telemetryTopic(settings.thingName);
    expect(await watch.countWithin((message) => message.topic === topic, 2, 5000)).toBe(2);
  });

  it('--json reports outcome, region, endpoint, certificate and what it did after day one', async () => {
    const settings = await newDevice({ json: true });
    const humans = capture();
    const first = await runDeviceForScripts(settings, humans);
    const credentials = await stored(settings);
    expect(first).toEqual({
      outcome: 'ok',
      exitCode: EXIT.ok,
      thingName: settings.thingName,
      region: 'ap-northeast-1',
      endpoint: credentials.identity.endpointAddress,
      certificateId: certificateIdOf(credentials.certificatePem),
      dataDir: settings.dataDir,
      provisioned: 'now',
      attempts: 1,
      latencyMs: expect.any(Number),
      published: 1,
    });
    expect(humans.errors.join('\n')).toMatch(/provisioned .* in ap-northeast-1/);

    const again = await runDeviceForScripts(
      {
        ...settings,
        lifecycle: {
          statusCheck: 'always',
          statusIntervalSeconds: 0,
          statusUrl: stack.statusUrl,
          renewUrl: stack.renewUrl,
        },
      },
      capture(),
    );
    expect(again).toMatchObject({
      outcome: 'ok',
      provisioned: 'earlier',
      certificateId: first.certificateId,
      dayTwo: { statusCheck: 'answered', action: 'none' },
    });
  });

  describe('when AWS IoT fails in the device’s region', () => {
    afterEach(clearFaults);

    // The function's IoT client retries 4 times itself; failing 4 calls makes it answer the device.
    it.each([
      { error: 'ThrottlingException', status: /HTTP 429/ },
      { error: 'InternalFailure', status: /HTTP 5\d\d/ },
    ])('retries after $error and then provisions', async ({ error, status }) => {
      await setFaults([
        { match: { service: 'iot', region: 'ap-south-1', path: '^/certificate/register' }, error, times: 4 },
      ]);
      const settings = await newDevice({ headers: MUMBAI });
      const output = capture();

      expect(await runDevice(settings, output)).toBe(EXIT.ok);

      const retries = output.lines.filter((line) => /^attempt \d+\/\d+ failed/.test(line));
      expect(retries.length).toBeGreaterThanOrEqual(1);
      expect(retries[0]).toMatch(status);
      expect((await stored(settings)).identity.region).toBe('ap-south-1');
    });
  });

  it('is refused by its region once its certificate is revoked', async () => {
    const settings = await newDevice();
    expect(await runDevice(settings, capture())).toBe(EXIT.ok);
    const credentials = await stored(settings);
    const iot = iotClient(credentials.identity.region, stack.awsEndpoint);
    await setCertificateStatus(iot, certificateIdOf(credentials.certificatePem), 'REVOKED');
    iot.destroy();

    const output = capture();
    expect(await runDevice(settings, output)).toBe(EXIT.connectFailed);
    expect(output.errors.join('\n')).toMatch(/Not authorized/);
    // What was refused and why, from the CONNACK's reason code and reason string (MQTT 5).
    expect(output.errors.join('\n')).toContain(
      `refused the connection as ${settings.thingName}: Not authorized (MQTT 5 reason code 0x87): ` +
        `certificate ${certificateIdOf(credentials.certificatePem)} is REVOKED`,
    );
    expect(output.errors.join('\n')).toMatch(/does not accept the certificate stored in .*--reset/s);
  });

  it('with --reset forgets its stored credentials and provisions again', async () => {
    const settings = await newDevice();
    expect(await runDevice(settings, capture())).toBe(EXIT.ok);
    const first = await stored(settings);
    await addDevice(stack, settings.thingName, {}, true);

    const output = capture();
    expect(await runDevice({ ...settings, reset: true }, output)).toBe(EXIT.ok);

    expect(output.lines[0]).toMatch(
      /--reset: provisioning .* again; the credentials stored in .* stay until new ones arrive/,
    );
    expect(output.lines).toContain(`--reset: replaced the credentials stored in ${settings.dataDir}`);
    expect((await stored(settings)).certificatePem).not.toBe(first.certificatePem);
  });

  it('is refused by a region its certificate is not registered in', async () => {
    const settings = await newDevice({ headers: TOKYO });
    expect(await runDevice(settings, capture())).toBe(EXIT.ok);
    const credentials = await stored(settings);
    const elsewhere = stack.mqttEndpoints['eu-central-1'] ?? '';

    await expect(
      connectDevice({
        endpointAddress: elsewhere,
        thingName: settings.thingName,
        privateKeyPem: credentials.privateKeyPem,
        certificatePem: credentials.certificatePem,
        caPems: settings.caPems,
      }),
    ).rejects.toThrow(/Not authorized/);
  });

  it('loses its connection when it publishes outside data/<thing>/ (MQTT 3.1.1)', async () => {
    const settings = await newDevice();
    expect(await runDevice(settings, capture())).toBe(EXIT.ok);
    const credentials = await stored(settings);
    // MQTT 5 refuses just the message (PUBACK 0x87): tests/device/iot-data-plane.test.ts pins that.
    const client = await connectDevice({
      endpointAddress: credentials.identity.endpointAddress,
      thingName: settings.thingName,
      privateKeyPem: credentials.privateKeyPem,
      certificatePem: credentials.certificatePem,
      caPems: settings.caPems,
      protocolVersion: 4,
    });
    const foreign = `data/${uniqueThingName()}/misc`;

    await expect(
      publishTelemetry(client, settings.thingName, { count: 1, intervalMs: 0, topic: foreign }),
    ).rejects.toThrow(/closed/);
    await disconnect(client);
    expect(watch.messages.some((message) => message.topic === foreign)).toBe(false);
  });
});
