/**
 * The provisioning service end to end: HTTP through the local edge (CloudFront + API Gateway
 * stand-in) into the real handler, which talks to moto through the real AWS SDK. ipstack is the
 * local fake (the real one can't be reached from here).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  DescribeCertificateCommand,
  ListAttachedPoliciesCommand,
  ListThingPrincipalsCommand,
} from '@aws-sdk/client-iot';
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { addDevice } from '../local/stack';
import { FUNCTION_LOG, SECRETS_FILE } from '../local/stack-state';
import {
  clearFaults,
  iotIn,
  makeCsr,
  moveRecordClock,
  PLACES,
  post,
  registryClient,
  registryRecord,
  setFaults,
  stack,
  thingExists,
  uniqueThingName,
  v1Body,
  v2Body,
} from './requests';

const record = registryRecord;

async function newDevice(prefix: string, extra: Parameters<typeof addDevice>[2] = {}): Promise<string> {
  const thingName = uniqueThingName(prefix);
  await addDevice(stack, thingName, extra);
  return thingName;
}

describe('a device on the allowlist', () => {
  it("gets the sample's success body, a live certificate in the nearest region, and a provisioned record", async () => {
    const thingName = await newDevice('tokyo');
    const answer = await post(v1Body(thingName), PLACES.tokyo);

    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ status: 'success', region: 'ap-northeast-1', distance: 1 });
    expect(answer.body.endpointAddress).toBe(stack.mqttEndpoints['ap-northeast-1']);
    expect(String(answer.body.PrivateKey)).toContain('PRIVATE KEY');
    const certificate = new X509Certificate(String(answer.body.certificatePem));
    // The private key we were given belongs to the certificate.
    expect(certificate.checkPrivateKey(createPrivateKey(String(answer.body.PrivateKey)))).toBe(true);

    const item = await record(thingName);
    expect(item?.prov_status?.S).toBe('provisioned');
    expect(item?.aws_region?.S).toBe('ap-northeast-1');
    expect(item?.prov_datetime?.S).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/);
    expect(item?.geo_source?.S).toBe('cloudfront');
    expect(item?.claim_id).toBeUndefined();

    const iot = iotIn('ap-northeast-1');
    const certificateId = String(item?.certificate_id?.S);
    const described = await iot.send(new DescribeCertificateCommand({ certificateId }));
    expect(described.certificateDescription?.status).toBe('ACTIVE');
    const principals = await iot.send(new ListThingPrincipalsCommand({ thingName }));
    expect(principals.principals).toEqual([item?.certificate_arn?.S]);
    const policies = await iot.send(
      new ListAttachedPoliciesCommand({ target: String(item?.certificate_arn?.S) }),
    );
    expect(policies.policies?.map((policy) => policy.policyName)).toEqual([stack.iotPolicyName]);
  });

  it('with a CSR gets a certificate for its own key, signed for that CSR, and no private key', async () => {
    const thingName = await newDevice('csr');
    const csr = await makeCsr(thingName);
    const answer = await post(v1Body(thingName, { CSR: csr.pem }), PLACES.sydney);

    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ region: 'ap-southeast-2' });
    expect(answer.body.PrivateKey).toBeUndefined();
    const certificate = new X509Certificate(String(answer.body.certificatePem));
    const certificateKey = certificate.publicKey.export({ type: 'spki', format: 'der' });
    expect(Buffer.compare(certificateKey, csr.publicKeySpki)).toBe(0);
    expect(certificate.subject).toContain(`CN=${thingName}`);
    expect(certificate.verify(new X509Certificate(readFileSync(stack.deviceCaCertificate)).publicKey)).toBe(
      true,
    );
  });

  it('speaking v2 with its own ECDSA P-256 key is provisioned; the fleet key no longer works for it', async () => {
    const device = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const thingName = await newDevice('v2own', {
      device_public_key: { S: device.publicKey.export({ type: 'spki', format: 'pem' }) as string },
    });
    const csr = await makeCsr(thingName);
    const withFleetKey = await post(v2Body(thingName, { csrPem: csr.pem }), PLACES.saoPaulo);
    expect(withFleetKey).toMatchObject({
      status: 401,
      body: { status: 'error', message: 'signature does not verify' },
    });

    const answer = await post(
      v2Body(thingName, { csrPem: csr.pem, key: device.privateKey }),
      PLACES.saoPaulo,
    );
    expect(answer.status).toBe(200);
    expect(answer.body.region).toBe('sa-east-1');
  });

  it('is located by ipstack from CloudFront-Viewer-Address when CloudFront has no coordinates', async () => {
    const fixtures = JSON.parse(readFileSync(stack.ipstackFixtures, 'utf8')) as Record<
      string,
      { latitude: number; longitude: number; city?: string }
    >;
    const [ip, entry] =
      Object.entries(fixtures).find(
        ([, body]) => body.latitude !== null && body.latitude < -30 && body.longitude > 100,
      ) ?? [];
    expect(ip).toBeDefined(); // the fixture file carries a Sydney address
    const thingName = await newDevice('ipstack');
    const answer = await post(v1Body(thingName), { 'X-Local-Viewer-Address': `${ip}:51234` });
    expect(answer.status).toBe(200);
    expect(answer.body.region).toBe('ap-southeast-2');
    expect(entry).toBeDefined();
    expect((await record(thingName))?.geo_source?.S).toBe('ipstack');
  });

  it('falls back to the default region when neither CloudFront nor ipstack can tell', async () => {
    const thingName = await newDevice('nowhere');
    const answer = await post(v1Body(thingName), { 'X-Local-Viewer-Address': '192.0.2.200:4000' });
    expect(answer).toMatchObject({ status: 200, body: { region: stack.defaultRegion, distance: 0 } });
    expect((await record(thingName))?.geo_source?.S).toBe('default');
  });

  it('in Germany is kept in eu-central-1 by the residency override even from the Paris side of the border', async () => {
    const thingName = await newDevice('residency');
    const answer = await post(v1Body(thingName), {
      'X-Local-Viewer-Latitude': '49.23',
      'X-Local-Viewer-Longitude': '6.99',
      'X-Local-Viewer-Country': 'DE',
    });
    expect(answer).toMatchObject({ status: 200, body: { region: 'eu-central-1' } });
  });

  it('cannot forge its location with CloudFront headers: the edge drops them, as CloudFront does', async () => {
    const thingName = await newDevice('forger');
    const answer = await post(v1Body(thingName), {
      'CloudFront-Viewer-Latitude': '35.68',
      'CloudFront-Viewer-Longitude': '139.69',
      'X-Local-Viewer-Address': '192.0.2.201:4000',
    });
    expect(answer).toMatchObject({ status: 200, body: { region: stack.defaultRegion } });
  });
});

describe('requests that are refused', () => {
  it('answers 403 for a thing that is not on the allowlist, creating nothing', async () => {
    const thingName = uniqueThingName('stranger');
    const answer = await post(v1Body(thingName), PLACES.mumbai);
    expect(answer).toMatchObject({
      status: 403,
      body: { status: 'error', message: `thing ${thingName} is not on the allowlist` },
    });
    expect(await thingExists('ap-south-1', thingName)).toBe(false);
    expect(await record(thingName)).toBeUndefined();
  });

  it('answers 401 to a fake device (wrong key) and leaves the record unprovisioned and unclaimed', async () => {
    const thingName = await newDevice('fake');
    const impostor = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const answer = await post(v1Body(thingName, {}, impostor), PLACES.tokyo);
    expect(answer).toMatchObject({
      status: 401,
      body: { status: 'error', message: 'thing-name-sig does not verify' },
    });
    const item = await record(thingName);
    expect(item?.prov_status?.S).toBe('unprovisioned');
    expect(item?.claim_id).toBeUndefined();
    expect(await thingExists('ap-northeast-1', thingName)).toBe(false);
  });

  it('answers 409 for a device provisioned long ago', async () => {
    const thingName = uniqueThingName('old');
    await registryClient().send(
      new PutItemCommand({
        TableName: stack.tableName,
        Item: {
          thing_name: { S: thingName },
          prov_status: { S: 'provisioned' },
          aws_region: { S: 'eu-central-1' },
          prov_datetime: { S: '2018-06-01T10:00:00' },
        },
      }),
    );
    const answer = await post(v1Body(thingName), PLACES.tokyo);
    expect(answer).toMatchObject({
      status: 409,
      body: {
        status: 'error',
        message: `thing ${thingName} is already provisioned in eu-central-1 since 2018-06-01T10:00:00Z; use \`gdp-admin reset ${thingName}\` to allow it again`,
      },
    });
  });

  it.each([
    ['not JSON', 'hello', 400, 'request body is not valid JSON'],
    [
      'a bad thing name',
      JSON.stringify({ 'thing-name': 'a/b', 'thing-name-sig': 'QUJD' }),
      400,
      'thing-name must be',
    ],
    [
      'a wrong type',
      JSON.stringify({ 'thing-name': 'abc', 'thing-name-sig': 7 }),
      400,
      'thing-name-sig must be a base64 string',
    ],
    [
      'a body over 64 KiB',
      JSON.stringify({ 'thing-name': 'abc', 'thing-name-sig': 'QUJD', pad: 'x'.repeat(70000) }),
      413,
      'the limit is 65536',
    ],
  ])('answers %s with a clear error', async (_what, body, status, message) => {
    const answer = await post(body);
    expect(answer.status).toBe(status);
    expect(answer.body).toEqual({ status: 'error', message: expect.stringContaining(message) });
  });

  it('refuses a CSR whose CN is not the thing name before creating anything', async () => {
    const thingName = await newDevice('badcn');
    const csr = await makeCsr('someone-else');
    const answer = await post(v1Body(thingName, { CSR: csr.pem }), PLACES.sydney);
    expect(answer).toMatchObject({
      status: 400,
      body: { message: `CSR subject CN must be the thing name "${thingName}"` },
    });
    expect((await record(thingName))?.prov_status?.S).toBe('unprovisioned');
    expect(await thingExists('ap-southeast-2', thingName)).toBe(false);
  });

  it('refuses a v2 request replayed with another CSR, and one replayed with its nonce', async () => {
    const thingName = await newDevice('replay');
    const csr = await makeCsr(thingName);
    const original = v2Body(thingName, { csrPem: csr.pem });
    const attackerCsr = await makeCsr(thingName);
    const swapped = await post({ ...original, CSR: attackerCsr.pem }, PLACES.tokyo);
    expect(swapped).toMatchObject({ status: 401, body: { message: 'signature does not verify' } });
    // A request that does not verify writes nothing: the device's own request still works.
    const first = await post(original, PLACES.tokyo);
    expect(first.status).toBe(200);
    const replayed = await post(original, PLACES.tokyo);
    expect(replayed).toMatchObject({
      status: 401,
      body: { message: 'nonce was already used; sign a new request' },
    });
    // The device retrying with a fresh signature and the same CSR gets the same certificate.
    const fresh = await post(v2Body(thingName, { csrPem: csr.pem }), PLACES.tokyo);
    expect(fresh).toMatchObject({ status: 200, body: { certificatePem: first.body.certificatePem } });
  });

  it('refuses a v2 request whose timestamp is stale', async () => {
    const thingName = await newDevice('stale');
    const answer = await post(v2Body(thingName, { timestamp: Math.floor(Date.now() / 1000) - 3600 }));
    expect(answer.status).toBe(401);
    expect(String(answer.body.message)).toMatch(/^timestamp is 36\d\d s away from the service clock/);
  });
});

describe('two requests for one device at the same time', () => {
  it('provision it exactly once: one 200, the other 429 with Retry-After', async () => {
    const thingName = await newDevice('race');
    const csrs = await Promise.all([makeCsr(thingName), makeCsr(thingName)]);
    // 100 ms per AWS call keeps the first request's claim held while the second arrives.
    await setFaults({ delayMs: 100 });
    const answers = await Promise.all(
      csrs.map((csr) => post(v1Body(thingName, { CSR: csr.pem }), PLACES.detroit)),
    ).finally(clearFaults);
    const statuses = answers.map((answer) => answer.status).sort();
    expect(statuses).toEqual([200, 429]);
    const throttled = answers.find((answer) => answer.status === 429);
    expect(Number(throttled?.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const principals = await iotIn('us-east-2').send(new ListThingPrincipalsCommand({ thingName }));
    expect(principals.principals).toHaveLength(1);
  });
});

describe('a device whose answer was lost', () => {
  // Inside the recovery window a retry gets the same answer (tests/integration/answer-recovery.test.ts).
  it('retries after the recovery window and gets a new working certificate; the first one is retired, so only one is live', async () => {
    const thingName = await newDevice('lost');
    const first = await post(v1Body(thingName), PLACES.tokyo);
    expect(first.status).toBe(200);
    const firstId = String((await record(thingName))?.certificate_id?.S);
    await moveRecordClock(thingName, 'sealed_key_until', { at: Math.floor(Date.now() / 1000) - 1 });

    const retry = await post(v1Body(thingName), PLACES.tokyo);
    expect(retry).toMatchObject({ status: 200, body: { region: 'ap-northeast-1' } });
    const item = await record(thingName);
    expect(item?.certificate_id?.S).not.toBe(firstId);

    const iot = iotIn('ap-northeast-1');
    await expect(iot.send(new DescribeCertificateCommand({ certificateId: firstId }))).rejects.toMatchObject({
      name: 'ResourceNotFoundException',
    });
    const principals = await iot.send(new ListThingPrincipalsCommand({ thingName }));
    expect(principals.principals).toEqual([item?.certificate_arn?.S]);
    const key = createPublicKey(String(retry.body.PrivateKey));
    expect(new X509Certificate(String(retry.body.certificatePem)).publicKey.equals(key)).toBe(true);
  });
});

describe('the function log', () => {
  it('names thing, region and geo source but never a key, certificate, signature or the ipstack key', async () => {
    const thingName = await newDevice('logged');
    const body = v1Body(thingName);
    const answer = await post(body, { 'X-Local-Viewer-Address': '203.0.113.250:1234' });
    expect(answer.status).toBe(200);
    const secrets = JSON.parse(readFileSync(SECRETS_FILE, 'utf8')) as { ipstackAccessKey: string };
    // The edge's process writes the handler's stdout here; give it a moment to flush.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const log = readFileSync(FUNCTION_LOG, 'utf8');
    expect(log).toContain(thingName);
    const line = log
      .split('\n')
      .find((entry) => entry.includes(thingName) && entry.includes('"provisioned"'));
    expect(JSON.parse(String(line))).toMatchObject({
      thingName,
      region: stack.defaultRegion,
      stagesMs: expect.any(Object),
    });
    const certificateBody = String(answer.body.certificatePem).split('\n')[1];
    const keyBody = String(answer.body.PrivateKey).split('\n')[1];
    for (const secret of [certificateBody, keyBody, body['thing-name-sig'], secrets.ipstackAccessKey]) {
      expect(secret && secret.length > 10).toBe(true);
      expect(log).not.toContain(secret);
    }
  });
});
