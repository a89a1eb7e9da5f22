/**
 * After day one, against the local stack: /device-status and /device-renew through the local edge,
 * the device's own certificate as proof, AWS IoT in moto, MQTT over TLS to the local brokers.
 */
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { issueDeviceCertificate } from '../../functions/provisioning/certificate-authority';
import { RENEWAL_RETRY_INTERVAL_SECONDS } from '../../functions/provisioning/lifecycle';
import { connectDevice, disconnect } from '../../device/mqtt';
import { getCalls, getFaults } from '../local/aws-proxy';
import { addDevice } from '../local/stack';
import { seedAgedDevice } from '../local/aged-device';
import { admin } from '../support/admin';
import { testCa } from '../support/ca';
import { certificatesOfOurCa } from './audit';
import {
  Answer,
  certificateStatus,
  clearFaults,
  DeviceCredentials,
  lifecycleBody,
  localReconcile,
  makeCsr,
  moveRecordClock,
  PLACES,
  post,
  postRenew,
  postStatus,
  registryRecord,
  setFaults,
  stack,
  uniqueThingName,
  v2Body,
} from './requests';

const FRANKFURT = {
  'X-Local-Viewer-Latitude': '50.11',
  'X-Local-Viewer-Longitude': '8.68',
  'X-Local-Viewer-Country': 'DE',
};

interface Device extends DeviceCredentials {
  readonly thingName: string;
  readonly region: string;
  readonly endpointAddress: string;
  readonly certificateId: string;
}

/** A device provisioned now, in CSR mode, so the test holds its key. */
async function provisioned(prefix: string, place: Record<string, string> = PLACES.mumbai): Promise<Device> {
  const thingName = uniqueThingName(prefix);
  await addDevice(stack, thingName);
  const csr = await makeCsr(thingName);
  const answer = await post(v2Body(thingName, { csrPem: csr.pem }), place);
  expect(answer.status).toBe(200);
  const record = await registryRecord(thingName);
  return {
    thingName,
    region: answer.body.region as string,
    endpointAddress: answer.body.endpointAddress as string,
    certificatePem: answer.body.certificatePem as string,
    privateKeyPem: csr.privateKeyPem,
    certificateId: record?.certificate_id?.S as string,
  };
}

/** A device provisioned 300 days ago with a one-year certificate: past 80 % of its lifetime. */
async function aged(prefix: string): Promise<Device & { readonly notAfter: Date }> {
  const device = await seedAgedDevice(stack, {
    thingName: uniqueThingName(prefix),
    region: 'eu-west-2',
    ageDays: 300,
    validityDays: 365,
  });
  return device;
}

const localCaPems = () => [readFileSync(stack.caCertificate, 'utf8')];

/** Whether these credentials get an MQTT session at this endpoint. */
async function connects(
  device: { thingName: string },
  credentials: DeviceCredentials,
  endpointAddress: string,
) {
  try {
    const client = await connectDevice({
      endpointAddress,
      thingName: device.thingName,
      certificatePem: credentials.certificatePem,
      privateKeyPem: credentials.privateKeyPem,
      caPems: localCaPems(),
      connectTimeoutMs: 5_000,
    });
    await disconnect(client);
    return true;
  } catch {
    return false;
  }
}

/** ACTIVE certificates of our CA issued for this thing, in a region. */
async function liveCertificates(thingName: string, region: string): Promise<string[]> {
  const ours = await certificatesOfOurCa(region);
  return ours
    .filter((certificate) => certificate.commonName === thingName && certificate.status === 'ACTIVE')
    .map((certificate) => certificate.certificateId);
}

const credentialsOf = (answer: Answer, privateKeyPem: string): DeviceCredentials => ({
  certificatePem: answer.body.certificatePem as string,
  privateKeyPem: (answer.body.PrivateKey as string | undefined) ?? privateKeyPem,
});

afterEach(clearFaults);

describe('POST /device-status', () => {
  it('tells a healthy device where it lives, with one DynamoDB read and no IoT call', async () => {
    const device = await provisioned('st-none');
    const before = (await getCalls(stack.faultsUrl)).at(-1)?.seq ?? 0;
    const answer = await postStatus(
      lifecycleBody('status', device.thingName, device, { region: device.region }),
    );
    const calls = await getCalls(stack.faultsUrl, before);

    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({
      status: 'success',
      action: 'none',
      provStatus: 'provisioned',
      region: device.region,
      endpointAddress: device.endpointAddress,
      certificateId: device.certificateId,
      certificateStatus: 'ACTIVE',
    });
    expect(new Date(answer.body.notAfter as string).getTime()).toBeGreaterThan(Date.now());
    expect(new Date(answer.body.renewAfter as string).getTime()).toBeLessThan(
      new Date(answer.body.notAfter as string).getTime(),
    );
    const what = calls.map((call) => call.what);
    expect(what.filter((call) => call.includes('GetItem'))).toHaveLength(1);
    expect(what.filter((call) => call.includes('UpdateItem'))).toHaveLength(1);
    expect(what.filter((call) => call.startsWith('iot '))).toEqual([]);
  });

  it('answers 429 with Retry-After to a second call within the interval, and 401 to a replay', async () => {
    const device = await provisioned('st-rate');
    const body = lifecycleBody('status', device.thingName, device);
    expect((await postStatus(body)).status).toBe(200);
    const replay = await postStatus(body);
    expect(replay.status).toBe(401);
    expect(replay.body.message).toMatch(/nonce was already used/);
    const again = await postStatus(lifecycleBody('status', device.thingName, device));
    expect(again.status).toBe(429);
    expect(Number(again.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  });

  it('refuses a wrong key, a certificate of another CA and another thing, and writes nothing', async () => {
    const device = await provisioned('st-wrong');
    const other = await makeCsr(device.thingName);
    const wrongKey = await postStatus(
      lifecycleBody('status', device.thingName, device, { signingKeyPem: other.privateKeyPem }),
    );
    expect(wrongKey.status).toBe(401);
    expect(wrongKey.body.message).toMatch(/signature does not verify/);

    // The same thing name, from a CA of the caller's own.
    const foreignCa = await testCa('someone else');
    const foreignKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const foreign = await issueDeviceCertificate(foreignCa.certificate, foreignCa.signer, {
      thingName: device.thingName,
      publicKeySpki: foreignKey.publicKey.export({ type: 'spki', format: 'der' }),
      validityDays: 30,
    });
    const selfMade = await postStatus(
      lifecycleBody('status', device.thingName, {
        certificatePem: foreign.pem,
        privateKeyPem: foreignKey.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      }),
    );
    expect(selfMade.status).toBe(401);
    expect(selfMade.body.message).toMatch(/not issued by this service/);

    const neighbour = await provisioned('st-neighbour');
    const borrowed = await postStatus(lifecycleBody('status', device.thingName, neighbour));
    expect(borrowed.status).toBe(401);

    const record = await registryRecord(device.thingName);
    expect(record?.status_epoch).toBeUndefined();
    expect(record?.status_nonces).toBeUndefined();
  });

  it('tells a revoked device so, and a reset one to provision again', async () => {
    const revoked = await provisioned('st-revoked');
    expect((await admin('revoke', revoked.thingName)).code).toBe(0);
    const refused = await postStatus(lifecycleBody('status', revoked.thingName, revoked));
    expect(refused.status).toBe(403);
    expect(refused.body.message).toMatch(/revoked/);

    const reset = await provisioned('st-reset');
    expect((await admin('reset', reset.thingName)).code).toBe(0);
    const answer = await postStatus(lifecycleBody('status', reset.thingName, reset));
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ action: 'reprovision', provStatus: 'unprovisioned' });
    expect(answer.body.endpointAddress).toBeUndefined();
    // And it can: the fleet key provisions it again.
    expect((await post(v2Body(reset.thingName), PLACES.mumbai)).status).toBe(200);
  });

  it('sends a moved device to its new region, where its certificate connects', async () => {
    const device = await provisioned('st-move', FRANKFURT);
    expect(device.region).toBe('eu-central-1');
    expect((await admin('move', device.thingName, '--to', 'eu-west-1')).code).toBe(0);

    const answer = await postStatus(
      lifecycleBody('status', device.thingName, device, { region: 'eu-central-1' }),
    );
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({
      action: 'move',
      region: 'eu-west-1',
      endpointAddress: stack.mqttEndpoints['eu-west-1'],
      movedFrom: 'eu-central-1',
      certificateId: device.certificateId,
    });
    expect(await connects(device, device, answer.body.endpointAddress as string)).toBe(true);

    await new Promise((resolve) => setTimeout(resolve, 5_000)); // the per-device status interval
    const settled = await postStatus(
      lifecycleBody('status', device.thingName, device, { region: 'eu-west-1' }),
    );
    expect(settled.body.action).toBe('none');
  }, 30_000);

  it('recognises its own status write when the answer was lost, and counts it against the interval', async () => {
    const device = await provisioned('st-lost-write');
    await setFaults({
      rules: [
        {
          match: { target: 'DynamoDB_20120810.UpdateItem', body: `${device.thingName}.*status_epoch` },
          action: 'reset-after',
          times: 1,
        },
      ],
    });
    const answer = await postStatus(lifecycleBody('status', device.thingName, device));
    expect((await getFaults(stack.faultsUrl)).rules).toEqual([]); // the fault fired
    await clearFaults();
    expect(answer.status).toBe(200);
    expect((await registryRecord(device.thingName))?.status_epoch).toBeDefined();
    expect((await postStatus(lifecycleBody('status', device.thingName, device))).status).toBe(429);
  });

  it('still answers when retiring the previous certificate fails; the record keeps it for the reconciler', async () => {
    const device = await aged('st-retire-fails');
    const csr = await makeCsr(device.thingName);
    const renewed = await postRenew(lifecycleBody('renew', device.thingName, device, { csrPem: csr.pem }));
    expect(renewed.status).toBe(200);
    await setFaults({
      rules: [{ match: { service: 'iot', region: device.region }, error: 'InternalFailure' }],
    });
    const answer = await postStatus(
      lifecycleBody('status', device.thingName, credentialsOf(renewed, csr.privateKeyPem)),
    );
    await clearFaults();
    expect(answer.status).toBe(200);
    expect((await registryRecord(device.thingName))?.previous_certificate_id?.S).toBe(device.certificateId);
    expect(await certificateStatus(device.region, device.certificateId)).toBe('ACTIVE');
  }, 40_000);

  it('retires what a failed renewal could not, named on the record: one live certificate without the reconciler', async () => {
    const device = await aged('st-retiring');
    // The renewal's mark is throttled, and so is every step that would retire its certificate.
    await setFaults({
      rules: [
        {
          match: {
            target: 'DynamoDB_20120810.UpdateItem',
            body: `(?=[\\s\\S]*"${device.thingName}")(?=[\\s\\S]*SET prov_status)`,
          },
          error: 'ThrottlingException',
        },
        {
          match: { service: 'iot', region: device.region, method: 'PUT', path: '^/certificates/' },
          error: 'ThrottlingException',
        },
        {
          match: { service: 'iot', region: device.region, method: 'DELETE', path: '/principals' },
          error: 'ThrottlingException',
        },
        {
          match: { service: 'iot', region: device.region, method: 'POST', path: '^/target-policies/' },
          error: 'ThrottlingException',
        },
      ],
    });
    const failed = await postRenew(lifecycleBody('renew', device.thingName, device));
    await clearFaults();
    expect(failed.status).toBe(429);
    const record = await registryRecord(device.thingName);
    expect(record?.claim_id).toBeUndefined();
    const leftover = (record?.retiring?.SS ?? [])[0]?.split('/')[1] as string;
    expect(await liveCertificates(device.thingName, device.region)).toEqual(
      expect.arrayContaining([device.certificateId, leftover]),
    );

    const status = await postStatus(lifecycleBody('status', device.thingName, device));
    expect(status.status).toBe(200);
    expect(await liveCertificates(device.thingName, device.region)).toEqual([device.certificateId]);
    expect((await registryRecord(device.thingName))?.retiring).toBeUndefined();
  }, 40_000);

  it('answers renew past 80 % of the lifetime', async () => {
    const device = await aged('st-renew');
    const answer = await postStatus(lifecycleBody('status', device.thingName, device));
    expect(answer.status).toBe(200);
    expect(answer.body.action).toBe('renew');
    expect(new Date(answer.body.renewAfter as string).getTime()).toBeLessThan(Date.now());
  });
});

describe('bad input on the lifecycle routes', () => {
  const garbageDer = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';
  it.each([
    ['not JSON', () => 'not json', 400, /not valid JSON/],
    ['a JSON array', () => '[]', 400, /JSON object/],
    [
      'no thing name',
      (body: Record<string, unknown>) => ({ ...body, 'thing-name': undefined }),
      400,
      /thing-name/,
    ],
    [
      'a certificate that is not DER',
      (body: Record<string, unknown>) => ({ ...body, certificate: garbageDer }),
      400,
      /certificate/,
    ],
    [
      'two certificate blocks',
      (body: Record<string, unknown>) => ({
        ...body,
        certificate: `${String(body.certificate)}${String(body.certificate)}`,
      }),
      400,
      /exactly one PEM block/,
    ],
    [
      'a signature of junk bytes',
      (body: Record<string, unknown>) => ({ ...body, signature: 'AAAA' }),
      401,
      /signature does not verify/,
    ],
    [
      'a timestamp an hour old',
      (body: Record<string, unknown>) => ({ ...body, timestamp: Number(body.timestamp) - 3600 }),
      401,
      /timestamp/,
    ],
    [
      'a CSR that is not one',
      (body: Record<string, unknown>) => ({
        ...body,
        CSR: '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
      }),
      400,
      /CSR/,
    ],
  ])(
    'answers %s with a clear 4xx, never 500, and writes nothing',
    async (_label, mutate, status, message) => {
      const device = await provisioned('bad-input');
      const before = await registryRecord(device.thingName);
      for (const url of [stack.statusUrl, stack.renewUrl]) {
        const operation = url === stack.statusUrl ? 'status' : 'renew';
        const mutated = mutate(lifecycleBody(operation, device.thingName, device));
        const body = typeof mutated === 'string' ? mutated : JSON.stringify(mutated);
        if (operation === 'status' && body.includes('CERTIFICATE REQUEST')) continue; // renew-only field
        const answer = await post(body, {}, url);
        expect(answer.status).toBe(status);
        expect(answer.body.message).toMatch(message);
      }
      expect(await registryRecord(device.thingName)).toEqual(before);
    },
  );
});

describe('POST /device-renew', () => {
  it('issues a new certificate; both connect until the device proves the new key, then only the new one', async () => {
    const device = await aged('rn-ok');
    const csr = await makeCsr(device.thingName);
    const answer = await postRenew(lifecycleBody('renew', device.thingName, device, { csrPem: csr.pem }));
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({
      status: 'success',
      region: device.region,
      endpointAddress: device.endpointAddress,
    });
    expect(answer.body.PrivateKey).toBeUndefined();
    const renewed = credentialsOf(answer, csr.privateKeyPem);
    const renewedId = answer.body.certificateId as string;
    expect(new Date(answer.body.notAfter as string).getTime()).toBeGreaterThan(device.notAfter.getTime());

    expect(await liveCertificates(device.thingName, device.region)).toEqual(
      expect.arrayContaining([device.certificateId, renewedId]),
    );
    expect(await connects(device, device, device.endpointAddress)).toBe(true);
    expect(await connects(device, renewed, device.endpointAddress)).toBe(true);
    // Two live certificates on the thing are expected now: the operator sees why, not a warning.
    const shown = await admin('show', device.thingName);
    expect(shown.out).toMatch(
      new RegExp(`previous certificate +${device.certificateId} in ${device.region}`),
    );
    expect(shown.out).not.toContain('WARNINGS');

    const status = await postStatus(lifecycleBody('status', device.thingName, renewed));
    expect(status.status).toBe(200);
    expect(status.body).toMatchObject({ action: 'none', certificateId: renewedId });
    expect(await certificateStatus(device.region, device.certificateId)).toBeUndefined();
    expect(await liveCertificates(device.thingName, device.region)).toEqual([renewedId]);
    expect(await connects(device, device, device.endpointAddress)).toBe(false);
    expect((await registryRecord(device.thingName))?.previous_certificate_id).toBeUndefined();
  }, 40_000);

  it('after a lost answer, the old certificate still works and a retry renews; never three live', async () => {
    const device = await aged('rn-lost');
    // The answer is lost on the way back: the device never sees it.
    const lost = await postRenew(lifecycleBody('renew', device.thingName, device));
    expect(lost.status).toBe(200);
    const lostId = lost.body.certificateId as string;
    expect(await connects(device, device, device.endpointAddress)).toBe(true);

    const status = await postStatus(lifecycleBody('status', device.thingName, device));
    expect(status.body).toMatchObject({ action: 'renew', certificateStatus: 'RETIRING' });

    // Key mode: the lost key can't be sent again, so a fresh certificate replaces the lost one,
    // at most one per RENEWAL_RETRY_INTERVAL_SECONDS (paced, never refused for good).
    const tooSoon = await postRenew(lifecycleBody('renew', device.thingName, device));
    expect(tooSoon.status).toBe(429);
    expect(Number(tooSoon.headers.get('retry-after'))).toBeLessThanOrEqual(RENEWAL_RETRY_INTERVAL_SECONDS);
    await moveRecordClock(device.thingName, 'prov_epoch', { earlierBy: RENEWAL_RETRY_INTERVAL_SECONDS });
    const retry = await postRenew(lifecycleBody('renew', device.thingName, device));
    expect(retry.status).toBe(200);
    expect(retry.body.certificateId).not.toBe(lostId);
    expect(await certificateStatus(device.region, lostId)).toBeUndefined();
    expect((await liveCertificates(device.thingName, device.region)).sort()).toEqual(
      [device.certificateId, retry.body.certificateId as string].sort(),
    );
    const renewed = credentialsOf(retry, '');
    expect(await connects(device, renewed, device.endpointAddress)).toBe(true);

    // CSR mode: the same CSR again gets the same certificate at once (one write: its nonce).
    await moveRecordClock(device.thingName, 'prov_epoch', { earlierBy: RENEWAL_RETRY_INTERVAL_SECONDS });
    const csr = await makeCsr(device.thingName);
    const first = await postRenew(lifecycleBody('renew', device.thingName, device, { csrPem: csr.pem }));
    const again = await postRenew(lifecycleBody('renew', device.thingName, device, { csrPem: csr.pem }));
    expect(again.status).toBe(200);
    expect(again.body.certificatePem).toBe(first.body.certificatePem);
    expect(await liveCertificates(device.thingName, device.region)).toHaveLength(2);
  }, 40_000);

  it('retires the previous certificate at the end of the grace period (the reconciler)', async () => {
    const device = await aged('rn-grace');
    const answer = await postRenew(lifecycleBody('renew', device.thingName, device));
    expect(answer.status).toBe(200);
    const renewedId = answer.body.certificateId as string;
    const record = await registryRecord(device.thingName);
    expect(record?.previous_certificate_id?.S).toBe(device.certificateId);
    expect(Number(record?.previous_retire_after?.N)).toBeGreaterThan(Date.now() / 1000 + 86_000);

    // Within the grace period the reconciler keeps it.
    await localReconcile({ thingNamePrefix: device.thingName });
    expect(await certificateStatus(device.region, device.certificateId)).toBe('ACTIVE');

    // The grace period ends (the record's clock is moved, not the test's).
    await moveRecordClock(device.thingName, 'previous_retire_after', {
      at: Math.floor(Date.now() / 1000) - 1,
    });
    const report = await localReconcile({ thingNamePrefix: device.thingName });
    expect(report.previousCertificatesRetired).toBe(1);
    expect(await certificateStatus(device.region, device.certificateId)).toBeUndefined();
    expect(await liveCertificates(device.thingName, device.region)).toEqual([renewedId]);
    expect((await registryRecord(device.thingName))?.previous_certificate_id).toBeUndefined();
  }, 40_000);

  it('refuses a renewal within a day of the last one with 429 and Retry-After', async () => {
    const device = await provisioned('rn-soon');
    const answer = await postRenew(lifecycleBody('renew', device.thingName, device));
    expect(answer.status).toBe(429);
    expect(Number(answer.headers.get('retry-after'))).toBeGreaterThan(80_000);
    expect(await liveCertificates(device.thingName, device.region)).toEqual([device.certificateId]);
  });

  it('refuses a revoked device, a replay and a wrong key, leaving one live certificate', async () => {
    const device = await aged('rn-refused');
    const other = await makeCsr(device.thingName);
    const wrong = await postRenew(
      lifecycleBody('renew', device.thingName, device, { signingKeyPem: other.privateKeyPem }),
    );
    expect(wrong.status).toBe(401);

    const body = lifecycleBody('renew', device.thingName, device);
    expect((await postRenew(body)).status).toBe(200);
    const replay = await postRenew(body);
    expect(replay.status).toBe(401);

    const revokedDevice = await aged('rn-revoked');
    expect((await admin('revoke', revokedDevice.thingName)).code).toBe(0);
    const revoked = await postRenew(lifecycleBody('renew', revokedDevice.thingName, revokedDevice));
    expect(revoked.status).toBe(403);
    expect(await liveCertificates(revokedDevice.thingName, revokedDevice.region)).toEqual([]);
  }, 40_000);

  it('survives a lost mark: the retry finishes the renewal and nothing is left over', async () => {
    const device = await aged('rn-drop');
    const csr = await makeCsr(device.thingName);
    await setFaults({
      rules: [
        {
          match: {
            target: 'DynamoDB_20120810.UpdateItem',
            body: `${device.thingName}.*certificate_id = :certificateId`,
          },
          action: 'reset-after',
          times: 1,
        },
      ],
    });
    const first = await postRenew(lifecycleBody('renew', device.thingName, device, { csrPem: csr.pem }));
    expect((await getFaults(stack.faultsUrl)).rules).toEqual([]); // the fault fired
    await clearFaults();
    const second = await postRenew(lifecycleBody('renew', device.thingName, device, { csrPem: csr.pem }));
    const answers = [first, second].filter((answer) => answer.status === 200);
    expect(answers.length).toBeGreaterThanOrEqual(1);
    const renewedId = (answers.at(-1) as Answer).body.certificateId as string;
    await localReconcile({ thingNamePrefix: device.thingName, graceSeconds: 0 });
    expect((await liveCertificates(device.thingName, device.region)).sort()).toEqual(
      [device.certificateId, renewedId].sort(),
    );
    expect((await registryRecord(device.thingName))?.certificate_id?.S).toBe(renewedId);
  }, 40_000);
});

describe('a renewal whose DescribeCertificate fails', () => {
  it.each([
    ['throttled', { error: 'ThrottlingException' }, 429],
    ['answered with a 5xx', { error: 'InternalFailure' }, 503],
    ['reset', { action: 'reset-before' }, 503],
  ] as const)(
    '%s: %s with Retry-After, never 500; the retry renews',
    async (_label, fault, status) => {
      const device = await aged('rn-describe');
      await setFaults({
        rules: [
          {
            match: {
              service: 'iot',
              region: device.region,
              method: 'GET',
              path: `^/certificates/${device.certificateId}`,
            },
            ...fault,
          },
        ],
      });
      const refused = await postRenew(lifecycleBody('renew', device.thingName, device));
      await clearFaults();
      expect(refused.status).toBe(status);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(refused.body.message).toMatch(/DescribeCertificate/);
      expect(await liveCertificates(device.thingName, device.region)).toEqual([device.certificateId]);
      expect((await postRenew(lifecycleBody('renew', device.thingName, device))).status).toBe(200);
    },
    40_000,
  );
});

describe('a renewal killed at every checkpoint', () => {
  it.each(['claimed', 'registered', 'attached', 'marked', 'retired'])(
    'killed when %s: the device keeps its old certificate, a retry renews, nothing is left over',
    async (point) => {
      const device = await aged(`rn-kill-${point}`);
      const csr = await makeCsr(device.thingName);
      const body = () => lifecycleBody('renew', device.thingName, device, { csrPem: csr.pem });
      await setFaults({ kills: [{ point, thingName: device.thingName, times: 1 }] });
      const killed = await postRenew(body());
      await clearFaults();
      expect(killed).toMatchObject({ status: 500, body: { message: 'Internal Server Error' } });
      expect(await certificateStatus(device.region, device.certificateId)).toBe('ACTIVE');

      // The lease of the dead request runs out (moved on the record), then the device retries.
      await moveRecordClock(device.thingName, 'claim_expires', { at: Math.floor(Date.now() / 1000) - 1 });
      const retry = await postRenew(body());
      expect(retry.status).toBe(200);
      await localReconcile({ thingNamePrefix: device.thingName, graceSeconds: 0 });
      const renewedId = retry.body.certificateId as string;
      expect((await liveCertificates(device.thingName, device.region)).sort()).toEqual(
        [device.certificateId, renewedId].sort(),
      );
      const record = await registryRecord(device.thingName);
      expect(record?.certificate_id?.S).toBe(renewedId);
      expect(record?.previous_certificate_id?.S).toBe(device.certificateId);
      expect(record?.claim_id).toBeUndefined();
    },
    40_000,
  );
});
