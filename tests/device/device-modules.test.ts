/** The device's building blocks, without any server: keys, signatures, storage, backoff, endpoints. */
import 'reflect-metadata';
import { createPublicKey, generateKeyPairSync, verify, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { canonicalV2Message, pemToDer } from '../../functions/provisioning/wire';
import { DEFAULT_BACKOFF, isRetryableStatus, parseRetryAfter, retryDelayMs } from '../../device/backoff';
import { createKeyAndCsr, signedV1Request, signedV2Request } from '../../device/keys';
import { DEFAULT_MQTT_PORT, parseEndpointAddress, telemetryMessage } from '../../device/mqtt';
import { IDENTITY_FILE, loadCredentials, saveCredentials, type DeviceCredentials } from '../../device/store';

const rsaFleetKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ecFleetKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const pem = (key: { export(options: { type: 'pkcs8'; format: 'pem' }): string | Buffer }) =>
  key.export({ type: 'pkcs8', format: 'pem' }).toString();

describe('device keys and request signatures', () => {
  it.each(['rsa', 'ec'] as const)(
    'creates a %s key and a CSR whose CN is the thing name and which verifies',
    async (type) => {
      const { privateKeyPem, csrPem } = await createKeyAndCsr('wm101', type);
      const csr = new x509.Pkcs10CertificateRequest(csrPem);
      expect(csr.subject).toBe('CN=wm101');
      expect(await csr.verify(webcrypto as unknown as Parameters<typeof csr.verify>[0])).toBe(true);
      const csrKey = Buffer.from(csr.publicKey.rawData);
      const ownKey = createPublicKey(privateKeyPem).export({ type: 'spki', format: 'der' });
      expect(Buffer.compare(csrKey, ownKey)).toBe(0);
      expect(createPublicKey(privateKeyPem).asymmetricKeyType).toBe(type);
    },
  );

  it('signs v1 as the 2018 sample did: RSA PKCS#1 v1.5 SHA-256 over the thing name', () => {
    const request = signedV1Request({ thingName: 'wm101', signingKeyPem: pem(rsaFleetKey.privateKey) });
    expect(request['thing-name']).toBe('wm101');
    expect(request.CSR).toBeUndefined();
    const ok = verify(
      'sha256',
      Buffer.from('wm101'),
      rsaFleetKey.publicKey,
      Buffer.from(request['thing-name-sig'], 'base64'),
    );
    expect(ok).toBe(true);
  });

  it.each([
    ['RSA', rsaFleetKey],
    ['ECDSA P-256', ecFleetKey],
  ])('signs v2 with %s over thing name, time, nonce and the CSR hash', async (_name, fleetKey) => {
    const { csrPem } = await createKeyAndCsr('wm101', 'ec');
    const request = signedV2Request({ thingName: 'wm101', signingKeyPem: pem(fleetKey.privateKey), csrPem });
    expect(request['sig-version']).toBe(2);
    expect(request.nonce).toMatch(/^[A-Za-z0-9_-]{16,64}$/);
    expect(Math.abs(request.timestamp - Date.now() / 1000)).toBeLessThan(5);
    const message = canonicalV2Message({
      thingName: 'wm101',
      timestamp: request.timestamp,
      nonce: request.nonce,
      csrDer: pemToDer(csrPem),
    });
    const signature = Buffer.from(request.signature, 'base64');
    expect(verify('sha256', message, { key: fleetKey.publicKey, dsaEncoding: 'der' }, signature)).toBe(true);
    const otherCsr = canonicalV2Message({
      thingName: 'wm101',
      timestamp: request.timestamp,
      nonce: request.nonce,
    });
    expect(verify('sha256', otherCsr, { key: fleetKey.publicKey, dsaEncoding: 'der' }, signature)).toBe(
      false,
    );
  });

  it('uses a fresh nonce for every v2 request', () => {
    const signingKeyPem = pem(ecFleetKey.privateKey);
    const first = signedV2Request({ thingName: 'wm101', signingKeyPem });
    const second = signedV2Request({ thingName: 'wm101', signingKeyPem });
    expect(first.nonce).not.toBe(second.nonce);
  });
});

describe('device storage', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'device-store-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const credentials: DeviceCredentials = {
    privateKeyPem: '-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n',
    certificatePem: '-----BEGIN CERTIFICATE-----\ny\n-----END CERTIFICATE-----\n',
    identity: {
      thingName: 'wm101',
      region: 'eu-central-1',
      endpointAddress: 'abc-ats.iot.eu-central-1.amazonaws.com',
      distance: 12,
      provisionedAt: '2026-01-01T00:00:00.000Z',
      keySource: 'device',
    },
  };

  it('keeps the private key readable by the owner only and reads everything back', async () => {
    const deviceDir = join(dir, 'wm101');
    await saveCredentials(deviceDir, credentials);
    expect(statSync(join(deviceDir, 'private.key')).mode & 0o777).toBe(0o600);
    expect(await loadCredentials(deviceDir)).toEqual(credentials);
  });

  it('counts a directory without its identity file as never provisioned', async () => {
    expect(await loadCredentials(join(dir, 'nothing-here'))).toBeUndefined();
    await saveCredentials(dir, credentials);
    await unlink(join(dir, IDENTITY_FILE));
    expect(await loadCredentials(dir)).toBeUndefined();
  });
});

describe('provisioning retry schedule', () => {
  it('retries throttling and server errors only', () => {
    expect([429, 500, 502, 503].every(isRetryableStatus)).toBe(true);
    expect([400, 401, 403, 409, 413].some(isRetryableStatus)).toBe(false);
  });

  it('reads Retry-After as seconds or as an HTTP date', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('3', now)).toBe(3000);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:05 GMT', now)).toBe(5000);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });

  it('backs off exponentially with full jitter, capped, and never sooner than Retry-After', () => {
    const ceilings = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((attempt) =>
      retryDelayMs(attempt, DEFAULT_BACKOFF, undefined, () => 1),
    );
    expect(ceilings.slice(0, 4)).toEqual([500, 1000, 2000, 4000]);
    expect(Math.max(...ceilings)).toBe(DEFAULT_BACKOFF.maxDelayMs);
    expect(retryDelayMs(3, DEFAULT_BACKOFF, undefined, () => 0)).toBe(0);
    expect(retryDelayMs(1, DEFAULT_BACKOFF, 7000, () => 0.5)).toBe(7000);
  });
});

describe('endpoint addresses', () => {
  it('accepts the AWS form (hostname, port 8883) and the local form (host:port)', () => {
    expect(parseEndpointAddress('a1b2-ats.iot.eu-central-1.amazonaws.com')).toEqual({
      host: 'a1b2-ats.iot.eu-central-1.amazonaws.com',
      port: DEFAULT_MQTT_PORT,
    });
    expect(parseEndpointAddress('127.0.0.1:17411')).toEqual({ host: '127.0.0.1', port: 17411 });
    expect(parseEndpointAddress('[::1]:17411')).toEqual({ host: '::1', port: 17411 });
    expect(parseEndpointAddress('::1')).toEqual({ host: '::1', port: DEFAULT_MQTT_PORT });
  });

  it('rejects an address it cannot connect to', () => {
    expect(() => parseEndpointAddress('host:99999')).toThrow(/port/);
    expect(() => parseEndpointAddress('two words')).toThrow();
  });

  it('publishes the sample device’s message', () => {
    expect(JSON.parse(telemetryMessage('wm101', new Date('2026-01-01T00:00:00Z')))).toEqual({
      'thing-name': 'wm101',
      global: 'device provisioning',
      datetime: '2026-01-01T00:00:00.000Z',
    });
  });
});
