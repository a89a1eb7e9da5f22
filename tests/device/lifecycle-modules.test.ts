/**
 * The device's side of day two without any server: where it asks, when it asks, what it signs,
 * and the renewal's order of steps — against an in-process stand-in for the service
 * (support/fake-lifecycle-service.ts) and a stand-in for the MQTT connection.
 */
import { createPublicKey, verify } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { EXIT, parseDeviceArguments, runDevice, type DeviceSettings } from '../../device/cli';
import { certificateIdOf, createKeyAndCsr, signedLifecycleRequest } from '../../device/keys';
import {
  DEFAULT_STATUS_INTERVAL_SECONDS,
  LifecycleRefusedError,
  lifecycleUrl,
  statusCheckDue,
  type StatusCheckInputs,
} from '../../device/lifecycle';
import type { DeviceConnectionOptions } from '../../device/mqtt';
import { renewCertificate, resumeInterruptedRenewal, type RenewalContext } from '../../device/renewal';
import {
  loadCredentials,
  loadLifecycleState,
  loadPendingCredentials,
  loadPendingRequest,
  loadPreviousCredentials,
  PENDING_DIR,
  PREVIOUS_DIR,
  forgetCredentials,
  saveCredentials,
  saveLifecycleState,
  savePendingCredentials,
  type DeviceCredentials,
} from '../../device/store';
import {
  canonicalLifecycleMessage,
  pemToDer,
  RENEW_PATH,
  STATUS_PATH,
} from '../../functions/provisioning/wire';
import { FakeLifecycleService, RENEW_URL, STATUS_URL } from './support/fake-lifecycle-service';
import { capture } from './support/device-run';

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'device-lifecycle-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const noWait = { sleep: async () => undefined };

describe('where a provisioned device asks', () => {
  it('finds /device-status and /device-renew beside the provisioning URL', () => {
    const provisioning = 'https://d111.cloudfront.net/device-provisioning';
    expect(lifecycleUrl(provisioning, STATUS_PATH)).toBe('https://d111.cloudfront.net/device-status');
    expect(lifecycleUrl(provisioning, RENEW_PATH)).toBe('https://d111.cloudfront.net/device-renew');
    expect(lifecycleUrl('http://127.0.0.1:17400/prod/device-provisioning/', STATUS_PATH)).toBe(
      'http://127.0.0.1:17400/prod/device-status',
    );
    expect(lifecycleUrl('https://x.example/device-status', RENEW_PATH)).toBe(
      'https://x.example/device-renew',
    );
  });

  it('takes them from the command line: derived from -a, overridden by flags', () => {
    const argv = (...flags: string[]) => ['node', 'gdp-device', '-t', 'wm101', ...flags];
    const derived = parseDeviceArguments(argv('-a', 'https://d111.cloudfront.net/device-provisioning'));
    expect(derived.lifecycle).toEqual({
      statusUrl: 'https://d111.cloudfront.net/device-status',
      renewUrl: 'https://d111.cloudfront.net/device-renew',
      statusCheck: 'when-due',
      statusIntervalSeconds: 3600,
    });
    const given = parseDeviceArguments(
      argv(
        '-a',
        'https://a.example/p',
        '--status-url',
        'https://b.example/v1/device-status',
        '--check-status',
      ),
    );
    expect(given.lifecycle).toMatchObject({
      statusUrl: 'https://b.example/v1/device-status',
      renewUrl: 'https://b.example/v1/device-renew',
      statusCheck: 'always',
    });
    const off = parseDeviceArguments(
      argv('-a', 'https://a.example/p', '--no-check-status', '--status-interval', '0'),
    );
    expect(off.lifecycle).toMatchObject({
      statusUrl: undefined,
      statusCheck: 'never',
      statusIntervalSeconds: 0,
    });
  });

  it('does not guess when the provisioning URL has another path', () => {
    expect(lifecycleUrl('http://127.0.0.1:9/unreachable', STATUS_PATH)).toBeUndefined();
    expect(lifecycleUrl(undefined, STATUS_PATH)).toBeUndefined();
    expect(lifecycleUrl('not a url', STATUS_PATH)).toBeUndefined();
  });
});

describe('when a provisioned device asks', () => {
  const now = new Date('2026-06-01T12:00:00Z');
  const inputs = (overrides: Partial<StatusCheckInputs>): StatusCheckInputs => ({
    mode: 'when-due',
    intervalSeconds: DEFAULT_STATUS_INTERVAL_SECONDS,
    state: {},
    previousAwaitingRetirement: false,
    now,
    ...overrides,
  });
  const checked = (minutesAgo: number, action: 'none' | 'renew' | 'move' = 'none', renewAfter?: string) => ({
    lastStatusCheck: { at: new Date(now.getTime() - minutesAgo * 60_000).toISOString(), action, renewAfter },
  });

  it('asks when it never asked, or when the last answer is an hour old', () => {
    expect(statusCheckDue(inputs({}))).toEqual({ due: true, reason: 'never checked' });
    expect(statusCheckDue(inputs({ state: checked(61) }))).toMatchObject({ due: true });
  });

  it('does not ask again within the hour after "nothing to do"', () => {
    const decision = statusCheckDue(inputs({ state: checked(10) }));
    expect(decision.due).toBe(false);
    expect(decision.reason).toMatch(/checked 10 min ago .*--check-status/);
    expect(statusCheckDue(inputs({ state: checked(10), intervalSeconds: 300 })).due).toBe(true);
    expect(statusCheckDue(inputs({ state: checked(0), intervalSeconds: 0 })).due).toBe(true);
  });

  it('asks again at once while something is still open', () => {
    expect(statusCheckDue(inputs({ state: checked(1, 'renew') }))).toMatchObject({ due: true });
    expect(statusCheckDue(inputs({ state: checked(1), previousAwaitingRetirement: true })).due).toBe(true);
    expect(statusCheckDue(inputs({ state: checked(1, 'none', '2026-06-01T11:00:00Z') })).reason).toMatch(
      /past its renewal point/,
    );
  });

  it('follows --check-status and --no-check-status whatever the state', () => {
    expect(statusCheckDue(inputs({ mode: 'always', state: checked(0) })).due).toBe(true);
    expect(statusCheckDue(inputs({ mode: 'never', state: checked(600, 'renew') })).due).toBe(false);
  });
});

describe('status and renewal signatures', () => {
  it.each(['rsa', 'ec'] as const)(
    'signs with the %s key of the current certificate over the operation, thing, time, nonce and CSR',
    async (type) => {
      const { credentials } = await FakeLifecycleService.withDevice('wm101', type);
      const { csrPem } = await createKeyAndCsr('wm101', 'ec');
      const body = signedLifecycleRequest({
        operation: 'renew',
        thingName: 'wm101',
        certificatePem: credentials.certificatePem,
        privateKeyPem: credentials.privateKeyPem,
        csrPem,
      });
      expect(body.certificate).toBe(credentials.certificatePem);
      expect(body.nonce).toMatch(/^[A-Za-z0-9_-]{16,64}$/);
      const key = createPublicKey(credentials.privateKeyPem);
      const signature = Buffer.from(body.signature, 'base64');
      const parts = { thingName: 'wm101', timestamp: body.timestamp, nonce: body.nonce };
      const renew = canonicalLifecycleMessage({ ...parts, operation: 'renew', csrDer: pemToDer(csrPem) });
      expect(verify('sha256', renew, { key, dsaEncoding: 'der' }, signature)).toBe(true);
      // Neither a status call nor another CSR can be made from it.
      const status = canonicalLifecycleMessage({ ...parts, operation: 'status' });
      expect(verify('sha256', status, { key, dsaEncoding: 'der' }, signature)).toBe(false);
      const unbound = canonicalLifecycleMessage({ ...parts, operation: 'renew' });
      expect(verify('sha256', unbound, { key, dsaEncoding: 'der' }, signature)).toBe(false);
    },
  );

  it('reports the region on status calls, unsigned, and never reuses a nonce', async () => {
    const { credentials } = await FakeLifecycleService.withDevice('wm101');
    const sign = () =>
      signedLifecycleRequest({
        operation: 'status',
        thingName: 'wm101',
        certificatePem: credentials.certificatePem,
        privateKeyPem: credentials.privateKeyPem,
        region: 'eu-central-1',
      });
    const [first, second] = [sign(), sign()];
    expect(first.region).toBe('eu-central-1');
    expect(first.CSR).toBeUndefined();
    expect(first.nonce).not.toBe(second.nonce);
  });
});

/** A connection stand-in: which certificate connected, and what the store held at that moment. */
interface Connected {
  readonly certificateId: string;
  readonly storedCurrent?: string;
  readonly storedPending?: string;
}

async function renewalContext(
  service: FakeLifecycleService,
  options: { refuse?: (credentials: DeviceCredentials) => boolean } = {},
) {
  const lines: string[] = [];
  const connections: Connected[] = [];
  const context: RenewalContext<Connected> = {
    dataDir: dir,
    statusUrl: STATUS_URL,
    renewUrl: RENEW_URL,
    tuning: { ...noWait, fetch: service.fetch },
    report: (line) => lines.push(line),
    connect: async (credentials) => {
      if (options.refuse?.(credentials)) throw new Error('Connection refused: Not authorized');
      const current = await loadCredentials(dir);
      const pending = await loadPendingCredentials(dir);
      const connection = {
        certificateId: certificateIdOf(credentials.certificatePem),
        storedCurrent: current && certificateIdOf(current.certificatePem),
        storedPending: pending && certificateIdOf(pending.certificatePem),
      };
      connections.push(connection);
      return connection;
    },
  };
  return { context, lines, connections };
}

describe('renewing the certificate', () => {
  it('keeps the old set current until the new one connected, then retires the old one with a status call', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    const oldId = certificateIdOf(credentials.certificatePem);
    const { context, lines, connections } = await renewalContext(service);

    const outcome = await renewCertificate(context, credentials);

    expect(outcome.kind).toBe('renewed');
    const newId = service.currentCertificateId;
    expect(newId).not.toBe(oldId);
    // At the moment the renewed set connected, the old one was still the stored current set.
    expect(connections).toEqual([{ certificateId: newId, storedCurrent: oldId, storedPending: newId }]);
    expect(certificateIdOf((await loadCredentials(dir))?.certificatePem ?? '')).toBe(newId);
    expect(await loadPendingCredentials(dir)).toBeUndefined();
    // The renewal was signed with the old certificate, the status call after it with the new one.
    expect(service.callsTo(RENEW_PATH).map((call) => call.signedWith)).toEqual([oldId]);
    expect(service.callsTo(STATUS_PATH).map((call) => call.signedWith)).toEqual([newId]);
    expect(service.certificates.get(oldId)).toBe('RETIRED');
    expect(await loadPreviousCredentials(dir)).toBeUndefined();
    expect(existsSync(join(dir, PREVIOUS_DIR))).toBe(false);
    const state = await loadLifecycleState(dir);
    expect(state.lastRenewal).toMatchObject({ certificateId: newId, previousCertificateId: oldId });
    expect(state.lastStatusCheck?.action).toBe('none');
    expect(lines.join('\n')).toMatch(
      /renewed: certificate .* kept as pending[\s\S]*connected to .* it is the current one now[\s\S]*previous one .* is retired/,
    );
  });

  it('keeps the renewal key type: an RSA device stays RSA', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101', 'rsa');
    await saveCredentials(dir, credentials);
    const { context } = await renewalContext(service);
    const outcome = await renewCertificate(context, credentials);
    expect(outcome.kind).toBe('renewed');
    expect(createPublicKey(outcome.credentials.privateKeyPem).asymmetricKeyType).toBe('rsa');
    expect(outcome.credentials.identity.renewedAt).toBeDefined();
  });

  it('keeps the old set when the renewed one does not connect, and says so', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    const { context, lines } = await renewalContext(service, {
      refuse: (offered) => offered.certificatePem !== credentials.certificatePem,
    });

    const outcome = await renewCertificate(context, credentials);

    expect(outcome).toEqual({ kind: 'kept', credentials });
    expect((await loadCredentials(dir))?.certificatePem).toBe(credentials.certificatePem);
    expect(existsSync(join(dir, PENDING_DIR))).toBe(false);
    expect(service.callsTo(STATUS_PATH)).toHaveLength(0);
    expect(lines.join('\n')).toMatch(
      /could not connect .*Not authorized.*discarded it\nkeeping the current certificate/,
    );
  });

  it('asks again with the same CSR when the answer is lost, and gets the same certificate', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    service.then({ path: RENEW_PATH, dropAfterApplying: true });
    const { context } = await renewalContext(service);

    const outcome = await renewCertificate(context, credentials);

    const renewals = service.callsTo(RENEW_PATH);
    expect(renewals).toHaveLength(2);
    expect(renewals[1]?.body.CSR).toBe(renewals[0]?.body.CSR);
    expect(outcome.kind).toBe('renewed');
    expect(certificateIdOf(outcome.credentials.certificatePem)).toBe(service.currentCertificateId);
  });

  it('sends the same key and CSR again on a later run when no answer ever came', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    const { context, lines } = await renewalContext(service);
    const unreachable: typeof fetch = async () => {
      throw new TypeError('fetch failed');
    };
    const first = await renewCertificate(
      { ...context, tuning: { ...noWait, fetch: unreachable } },
      credentials,
    );
    expect(first.kind).toBe('kept');
    const kept = await loadPendingRequest(dir);
    expect(kept).toBeDefined();
    expect(lines.join('\n')).toMatch(
      /renewal failed, keeping the current certificate: gave up after 6 attempts/,
    );

    const second = await renewCertificate(context, credentials);

    expect(second.kind).toBe('renewed');
    expect(service.callsTo(RENEW_PATH)[0]?.body.CSR).toBe(kept?.csrPem);
    expect(second.credentials.privateKeyPem).toBe(kept?.privateKeyPem);
  });

  it('does not wait a day when the service says it renewed less than a day ago', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    service.then({
      path: RENEW_PATH,
      status: 429,
      retryAfter: '86000',
      message: 'renewed less than 1 day ago',
    });
    const waits: number[] = [];
    const { context, lines } = await renewalContext(service);
    const outcome = await renewCertificate(
      { ...context, tuning: { fetch: service.fetch, sleep: async (ms) => void waits.push(ms) } },
      credentials,
    );
    expect(outcome.kind).toBe('kept');
    expect(waits).toEqual([]);
    expect(lines.join('\n')).toMatch(/renewed less than 1 day ago; the service asks to come back in 24 h/);
  });

  it('waits out a move under way (409 + Retry-After) and then renews', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    service.then({ path: RENEW_PATH, status: 409, retryAfter: '2', message: 'a move is under way' });
    const waits: number[] = [];
    const { context } = await renewalContext(service);
    const outcome = await renewCertificate(
      { ...context, tuning: { fetch: service.fetch, sleep: async (ms) => void waits.push(ms) } },
      credentials,
    );
    expect(outcome.kind).toBe('renewed');
    expect(waits[0]).toBeGreaterThanOrEqual(2000);
  });

  it('does not ask again after a 409 without Retry-After (the record was reset)', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    service.then({ path: RENEW_PATH, status: 409, message: 'the registry record of wm101 was reset' });
    const { context, lines } = await renewalContext(service);
    expect((await renewCertificate(context, credentials)).kind).toBe('kept');
    expect(service.callsTo(RENEW_PATH)).toHaveLength(1);
    expect(lines.join('\n')).toMatch(/HTTP 409: the registry record of wm101 was reset/);
  });

  it('throws on 403 (revoked) and explains 401', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    const { context, lines } = await renewalContext(service);
    service.then({ path: RENEW_PATH, status: 403, message: 'wm101 is revoked' });
    await expect(renewCertificate(context, credentials)).rejects.toEqual(
      new LifecycleRefusedError('renew', 403, 'wm101 is revoked'),
    );
    service.then({ path: RENEW_PATH, status: 401, message: 'signature does not verify' });
    expect((await renewCertificate(context, credentials)).kind).toBe('kept');
    expect(lines.join('\n')).toMatch(/HTTP 401: signature does not verify \(the service could not verify/);
    expect(await loadPendingRequest(dir)).toBeUndefined();
  });

  it('is content with a throttled status call after the renewal: the service retires the old one later', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    const oldId = certificateIdOf(credentials.certificatePem);
    service
      .then({ path: STATUS_PATH, status: 429, retryAfter: '5' })
      .then({ path: STATUS_PATH, status: 429, retryAfter: '5' });
    const { context, lines } = await renewalContext(service);

    const outcome = await renewCertificate(context, credentials);

    expect(outcome.kind).toBe('renewed');
    expect(service.callsTo(STATUS_PATH)).toHaveLength(2);
    expect(service.certificates.get(oldId)).toBe('RETIRING');
    expect(lines.join('\n')).toMatch(
      /status call throttled \(HTTP 429\): the service retires it at the end of the grace period \(2026-12-10/,
    );
    // Kept until a later status call confirms it.
    expect(certificateIdOf((await loadPreviousCredentials(dir))?.certificatePem ?? '')).toBe(oldId);
  });
});

describe('starting after a crash in the middle of a renewal', () => {
  it('tries the pending set first and promotes it when it connects', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    const { csrPem, privateKeyPem } = await createKeyAndCsr('wm101', 'ec');
    const renewed = JSON.parse(
      await (
        await service.fetch(RENEW_URL, {
          method: 'POST',
          body: JSON.stringify(
            signedLifecycleRequest({
              operation: 'renew',
              thingName: 'wm101',
              certificatePem: credentials.certificatePem,
              privateKeyPem: credentials.privateKeyPem,
              csrPem,
            }),
          ),
        })
      ).text(),
    ) as { certificatePem: string };
    await savePendingCredentials(dir, {
      ...credentials,
      privateKeyPem,
      certificatePem: renewed.certificatePem,
    });
    const { context, lines, connections } = await renewalContext(service);

    const outcome = await resumeInterruptedRenewal(context);

    expect(outcome?.kind).toBe('renewed');
    expect(connections[0]?.certificateId).toBe(certificateIdOf(renewed.certificatePem));
    expect((await loadCredentials(dir))?.certificatePem).toBe(renewed.certificatePem);
    expect(service.certificates.get(certificateIdOf(credentials.certificatePem))).toBe('RETIRED');
    expect(lines[0]).toMatch(/a renewal was interrupted .* trying it first/);
  });

  it('drops the pending set when it does not connect, keeping the current one', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    const { privateKeyPem } = await createKeyAndCsr('wm101', 'ec');
    await savePendingCredentials(dir, { ...credentials, privateKeyPem });
    const { context, lines } = await renewalContext(service, { refuse: () => true });

    expect(await resumeInterruptedRenewal(context)).toBeUndefined();

    expect((await loadCredentials(dir))?.certificatePem).toBe(credentials.certificatePem);
    expect(existsSync(join(dir, PENDING_DIR))).toBe(false);
    expect(lines.join('\n')).toMatch(/could not connect .* discarded it/);
  });

  it('puts the previous set back when a promotion stopped half-way (new key, old certificate)', async () => {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    const { privateKeyPem } = await createKeyAndCsr('wm101', 'ec');
    await saveCredentials(join(dir, PREVIOUS_DIR), credentials);
    await saveCredentials(dir, { ...credentials, privateKeyPem });
    const { context, lines } = await renewalContext(service);

    await resumeInterruptedRenewal(context);

    expect(await loadCredentials(dir)).toEqual(credentials);
    expect(lines.join('\n')).toMatch(/did not belong together .* put back the previous set/);
  });
});

describe('the store after day one', () => {
  it('forgets pending, previous and lifecycle state with the credentials (--reset)', async () => {
    const { credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    await saveCredentials(join(dir, PREVIOUS_DIR), credentials);
    await savePendingCredentials(dir, credentials);
    await saveLifecycleState(dir, { lastStatusCheck: { at: new Date().toISOString(), action: 'none' } });

    expect(await forgetCredentials(dir)).toBe(true);

    expect(await loadCredentials(dir)).toBeUndefined();
    expect(existsSync(join(dir, PENDING_DIR))).toBe(false);
    expect(existsSync(join(dir, PREVIOUS_DIR))).toBe(false);
    expect(await loadLifecycleState(dir)).toEqual({});
  });
});

/** Enough of an MQTT client for publishTelemetry and disconnect. */
class FakeClient extends EventEmitter {
  connected = true;
  readonly published: string[] = [];
  publish(topic: string, _payload: string, _options: object, done: (error?: Error) => void): this {
    this.published.push(topic);
    done();
    return this;
  }
  async endAsync(): Promise<void> {
    this.connected = false;
  }
  end(): this {
    this.connected = false;
    return this;
  }
}

describe('gdp-device on start, against the stand-in service', () => {
  async function provisionedDevice(overrides: Partial<DeviceSettings['lifecycle']> = {}) {
    const { service, credentials } = await FakeLifecycleService.withDevice('wm101');
    await saveCredentials(dir, credentials);
    const settings: DeviceSettings = {
      thingName: 'wm101',
      apiUrl: 'http://lifecycle.test/device-provisioning',
      ownKey: false,
      fakeDevice: false,
      continueWithoutPauses: true,
      keyType: 'rsa',
      protocol: 'v1',
      dataDir: dir,
      caPems: [],
      count: 1,
      intervalSeconds: 0,
      headers: {},
      lifecycle: {
        statusUrl: STATUS_URL,
        renewUrl: RENEW_URL,
        statusCheck: 'when-due',
        statusIntervalSeconds: DEFAULT_STATUS_INTERVAL_SECONDS,
        ...overrides,
      },
    };
    const endpoints: string[] = [];
    const refused = new Set<string>();
    const connect = async (options: DeviceConnectionOptions): Promise<MqttClient> => {
      endpoints.push(options.endpointAddress);
      if (refused.has(options.endpointAddress)) throw new Error('connect ECONNREFUSED');
      return new FakeClient() as unknown as MqttClient;
    };
    const dependencies = { connect, lifecycleTuning: { ...noWait, fetch: service.fetch } };
    return { service, credentials, settings, endpoints, refused, dependencies };
  }

  it('asks once, records it, and skips the next start within the hour', async () => {
    const { service, settings, dependencies } = await provisionedDevice();
    const output = capture();
    expect(await runDevice(settings, output, dependencies)).toBe(EXIT.ok);
    expect(output.lines.join('\n')).toMatch(/status: none \(fake: none\); certificate \w{12}, valid until/);
    expect((await loadLifecycleState(dir)).lastStatusCheck?.action).toBe('none');

    const again = capture();
    expect(await runDevice(settings, again, dependencies)).toBe(EXIT.ok);
    expect(again.lines.join('\n')).toMatch(/status check skipped: checked \d+ s ago/);
    expect(service.callsTo(STATUS_PATH)).toHaveLength(1);

    const forced: DeviceSettings = {
      ...settings,
      lifecycle: {
        statusUrl: STATUS_URL,
        renewUrl: RENEW_URL,
        statusCheck: 'always',
        statusIntervalSeconds: 3600,
      },
    };
    expect(await runDevice(forced, capture(), dependencies)).toBe(EXIT.ok);
    expect(service.callsTo(STATUS_PATH)).toHaveLength(2);
  });

  it('stops with exit 7 and the service’s message when it is revoked, without connecting', async () => {
    const { service, settings, endpoints, dependencies } = await provisionedDevice();
    service.then({ path: STATUS_PATH, status: 403, message: 'wm101 is revoked' });
    const output = capture();

    expect(await runDevice(settings, output, dependencies)).toBe(EXIT.revoked);

    expect(output.errors[0]).toBe('the service refused wm101 (HTTP 403): wm101 is revoked');
    expect(endpoints).toEqual([]);
  });

  it('explains a 401 and carries on with the stored credentials', async () => {
    const { service, settings, endpoints, dependencies } = await provisionedDevice();
    service.then({ path: STATUS_PATH, status: 401, message: 'timestamp out of window' });
    const output = capture();

    expect(await runDevice(settings, output, dependencies)).toBe(EXIT.ok);

    expect(output.errors.join('\n')).toMatch(/refused \(HTTP 401\): timestamp out of window\n.*clock/);
    expect(endpoints).toEqual(['frankfurt.iot.test']);
  });

  it('carries on with the stored credentials when the service stays unavailable', async () => {
    const { service, settings, dependencies } = await provisionedDevice();
    for (let attempt = 0; attempt < 6; attempt++) service.then({ path: STATUS_PATH, status: 503 });
    const output = capture();
    expect(await runDevice(settings, output, dependencies)).toBe(EXIT.ok);
    expect(output.errors.join('\n')).toMatch(/status check failed: gave up after 6 attempts; last: HTTP 503/);
    expect((await loadLifecycleState(dir)).lastStatusCheck).toBeUndefined();
  });

  it('follows a move: connects to the new endpoint, then stores it', async () => {
    const { service, settings, endpoints, dependencies } = await provisionedDevice();
    Object.assign(service, {
      action: 'move',
      region: 'eu-west-1',
      endpointAddress: 'dublin.iot.test',
      movedFrom: 'eu-central-1',
    });
    const output = capture();

    expect(await runDevice(settings, output, dependencies)).toBe(EXIT.ok);

    expect(endpoints).toEqual(['dublin.iot.test']);
    expect((await loadCredentials(dir))?.identity).toMatchObject({
      region: 'eu-west-1',
      endpointAddress: 'dublin.iot.test',
      movedFrom: 'eu-central-1',
    });
    expect(output.lines.join('\n')).toMatch(
      /moved: connected to dublin.iot.test in eu-west-1 \(was eu-central-1\)/,
    );
  });

  it('stays where it is when the new region does not accept it yet', async () => {
    const { service, settings, endpoints, refused, dependencies } = await provisionedDevice();
    Object.assign(service, { action: 'move', region: 'eu-west-1', endpointAddress: 'dublin.iot.test' });
    refused.add('dublin.iot.test');
    const output = capture();

    expect(await runDevice(settings, output, dependencies)).toBe(EXIT.ok);

    expect(endpoints).toEqual(['dublin.iot.test', 'frankfurt.iot.test']);
    expect((await loadCredentials(dir))?.identity.region).toBe('eu-central-1');
    expect(output.errors.join('\n')).toMatch(/staying with frankfurt.iot.test in eu-central-1/);
  });

  it('renews when told and publishes over the connection the renewed certificate opened', async () => {
    const { service, credentials, settings, endpoints, dependencies } = await provisionedDevice();
    service.action = 'renew';
    const output = capture();

    expect(await runDevice(settings, output, dependencies)).toBe(EXIT.ok);

    expect(endpoints).toEqual(['frankfurt.iot.test']);
    expect((await loadCredentials(dir))?.certificatePem).not.toBe(credentials.certificatePem);
    expect(service.certificates.get(certificateIdOf(credentials.certificatePem))).toBe('RETIRED');
  });

  it('with --no-check-status starts as devices did before status checks', async () => {
    const { service, settings, dependencies } = await provisionedDevice({ statusCheck: 'never' });
    const output = capture();
    expect(await runDevice(settings, output, dependencies)).toBe(EXIT.ok);
    expect(service.calls).toEqual([]);
    expect(output.lines.join('\n')).toMatch(/status check skipped: status check switched off/);
  });

  it('says when it cannot tell where to ask', async () => {
    const { service, settings, dependencies } = await provisionedDevice();
    const output = capture();
    const elsewhere = { ...settings, apiUrl: 'http://127.0.0.1:9/unreachable', lifecycle: undefined };
    expect(await runDevice(elsewhere, output, dependencies)).toBe(EXIT.ok);
    expect(service.calls).toEqual([]);
    expect(output.lines.join('\n')).toMatch(/status check skipped: no status URL/);
  });
});
