/**
 * The ipstack path: the access key comes from SSM as KMS ciphertext (moto), decrypted with the
 * encryption context and cached; lookups go to the local ipstack fake (the real ipstack can't be
 * reached from here). ipstack failing must never fail provisioning.
 */
import { EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { IPSTACK_KEY_ENCRYPTION_CONTEXT } from '../../functions/provisioning/config';
import { kmsSecretSource } from '../../functions/provisioning/secrets';
import { addIpstackFixture } from '../local/ipstack-fake';
import { addDevice } from '../local/stack';
import { post, registryRecord, stack, uniqueThingName, v1Body } from './requests';

describe('locating by IP when ipstack fails', () => {
  it('falls back to the default region when ipstack reports its usage limit (error 104 with HTTP 200)', async () => {
    const thingName = uniqueThingName('ipstack-quota');
    await addDevice(stack, thingName);
    const answer = await post(v1Body(thingName), { 'X-Local-Viewer-Address': '198.51.100.104:40000' });
    expect(answer).toMatchObject({ status: 200, body: { region: stack.defaultRegion, distance: 0 } });
    expect((await registryRecord(thingName))?.geo_source?.S).toBe('default');
  });

  it('uses the country ipstack knows when it has no coordinates (residency override DE)', async () => {
    const thingName = uniqueThingName('ipstack-country');
    await addDevice(stack, thingName);
    const answer = await post(v1Body(thingName), { 'X-Local-Viewer-Address': '198.51.100.7:40000' });
    expect(answer).toMatchObject({ status: 200, body: { region: 'eu-central-1' } });
    expect((await registryRecord(thingName))?.geo_source?.S).toBe('ipstack');
  });
});

describe('ipstack answers that are not places', () => {
  it('ignores coordinates out of range and falls back to the default region', async () => {
    const thingName = uniqueThingName('ipstack-range');
    await addDevice(stack, thingName);
    addIpstackFixture(stack.ipstackFixtures, '198.51.100.99', {
      latitude: 999,
      longitude: -999,
      country_code: null,
    });
    const answer = await post(v1Body(thingName), { 'X-Local-Viewer-Address': '198.51.100.99:40000' });
    expect(answer).toMatchObject({ status: 200, body: { region: stack.defaultRegion, distance: 0 } });
    expect((await registryRecord(thingName))?.geo_source?.S).toBe('default');
  });
});

describe('the ipstack key', () => {
  const credentials = { accessKeyId: 'testing', secretAccessKey: 'testing' };
  const parameterName = `/tests/ipstack-key-${Date.now()}`;
  const kms = new KMSClient({ region: stack.homeRegion, endpoint: stack.awsEndpoint, credentials });
  const ssm = new SSMClient({ region: stack.homeRegion, endpoint: stack.awsEndpoint, credentials });
  const saved = {
    endpoint: process.env.AWS_ENDPOINT_URL,
    id: process.env.AWS_ACCESS_KEY_ID,
    secret: process.env.AWS_SECRET_ACCESS_KEY,
  };

  beforeAll(() => {
    // The adapter builds its own clients, as in Lambda: point the SDK at the local stack.
    Object.assign(process.env, {
      AWS_ENDPOINT_URL: stack.awsEndpoint,
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
    });
  });
  afterAll(() => {
    for (const [name, value] of [
      ['AWS_ENDPOINT_URL', saved.endpoint],
      ['AWS_ACCESS_KEY_ID', saved.id],
      ['AWS_SECRET_ACCESS_KEY', saved.secret],
    ] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  async function store(
    plaintext: string,
    context: Record<string, string> = { ...IPSTACK_KEY_ENCRYPTION_CONTEXT },
  ) {
    const encrypted = await kms.send(
      new EncryptCommand({
        KeyId: stack.kmsKeyId,
        Plaintext: Buffer.from(plaintext),
        EncryptionContext: context,
      }),
    );
    await ssm.send(
      new PutParameterCommand({
        Name: parameterName,
        Type: 'String',
        Overwrite: true,
        Value: Buffer.from(encrypted.CiphertextBlob ?? new Uint8Array()).toString('base64'),
      }),
    );
  }

  it('is cached, and a rotated key is picked up once the cache period ends', async () => {
    let now = 1_000_000;
    const secrets = kmsSecretSource(
      { region: stack.homeRegion, parameterName, cacheSeconds: 300 },
      () => now,
    );
    await store('first-key-0000000000000000');
    expect(await secrets.ipstackKey()).toBe('first-key-0000000000000000');

    await store('second-key-111111111111111');
    now += 299_000;
    expect(await secrets.ipstackKey()).toBe('first-key-0000000000000000');
    now += 2_000;
    expect(await secrets.ipstackKey()).toBe('second-key-111111111111111');
  });

  it('does not decrypt ciphertext made without the encryption context', async () => {
    const secrets = kmsSecretSource({ region: stack.homeRegion, parameterName, cacheSeconds: 300 });
    await store('wrong-context-key-00000000', { purpose: 'something-else' });
    await expect(secrets.ipstackKey()).rejects.toMatchObject({ name: 'InvalidCiphertextException' });
  });

  it('reads as "no key" while the parameter still holds the placeholder', async () => {
    await ssm.send(
      new PutParameterCommand({ Name: parameterName, Type: 'String', Overwrite: true, Value: 'UNSET' }),
    );
    const secrets = kmsSecretSource({ region: stack.homeRegion, parameterName, cacheSeconds: 300 });
    expect(await secrets.ipstackKey()).toBeUndefined();
  });
});
