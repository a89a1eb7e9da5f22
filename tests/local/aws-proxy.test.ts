/**
 * The fault-injecting AWS proxy: injected errors must reach the code as the same SDK exceptions
 * AWS produces. These tests run their own proxy in front of the stack's moto so their faults
 * never leak into other tests sharing the stack's proxy.
 */
import {
  CreateTableCommand,
  DynamoDBClient,
  GetItemCommand,
  ListTablesCommand,
  ProvisionedThroughputExceededException,
  ResourceInUseException,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import {
  DescribeCertificateCommand,
  IoTClient,
  ListThingsCommand,
  ThrottlingException,
} from '@aws-sdk/client-iot';
import { KMSClient, KMSInternalException, ListKeysCommand, SignCommand } from '@aws-sdk/client-kms';
import { isThrottlingError } from '@smithy/core/retry';
import { GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { awsClientSettings } from '../../functions/provisioning/aws-client-settings';
import {
  AwsProxy,
  CallRecord,
  clearFaults,
  clearQuotas,
  getCalls,
  getFaults,
  getQuotas,
  setFaults,
  setQuotas,
  startAwsProxy,
} from './aws-proxy';
import { apiOf } from './aws-quotas';
import { LocalStack, readStack } from './stack-state';

const describeWithStack = process.env.NO_LOCAL_STACK ? describe.skip : describe;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** SDK settings for a client of `proxy` in `region`, without retries. */
const clientOf = (proxy: AwsProxy, region: string) => ({
  endpoint: proxy.url,
  region,
  credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  maxAttempts: 1,
});

describeWithStack('fault-injecting AWS proxy', () => {
  let stack: LocalStack;
  let proxy: AwsProxy;
  const config = (region: string) => clientOf(proxy, region);

  beforeAll(async () => {
    stack = readStack();
    proxy = await startAwsProxy({ host: '127.0.0.1', port: 0, target: stack.motoUrl });
  });
  afterAll(() => proxy.close());
  afterEach(() => clearFaults(proxy.faultsUrl));

  it('logs every call with when it arrived and when its answer finished: parallel calls overlap, calls in series do not', async () => {
    const before = (await getCalls(proxy.faultsUrl)).at(-1)?.seq ?? 0;
    await setFaults(proxy.faultsUrl, { delayMs: 300 });
    const iot = new IoTClient(config('eu-central-1'));
    const kms = new KMSClient(config('eu-central-1'));
    await Promise.all([iot.send(new ListThingsCommand({})), kms.send(new ListKeysCommand({}))]);
    await iot.send(new ListThingsCommand({}));
    const calls = await getCalls(proxy.faultsUrl, before);
    expect(calls.map((call) => call.what)).toEqual([
      expect.stringMatching(/^(iot|kms) eu-central-1 /),
      expect.stringMatching(/^(iot|kms) eu-central-1 /),
      'iot eu-central-1 GET /things',
    ]);
    expect(calls.map((call) => call.seq)).toEqual([before + 1, before + 2, before + 3]);
    const [first, second, third] = calls as [CallRecord, CallRecord, CallRecord];
    for (const call of calls) {
      expect(call.status).toBe(200);
      expect(call.endMs).toBeGreaterThan(call.startMs);
    }
    expect(second.startMs).toBeLessThan(first.endMs);
    expect(third.startMs).toBeGreaterThanOrEqual(Math.max(first.endMs, second.endMs));
    expect((await getFaults(proxy.faultsUrl)).calls.length).toBeGreaterThanOrEqual(3);
    expect((await clearFaults(proxy.faultsUrl)).calls).toEqual([]);
  });

  it('injects an IoT ThrottlingException the SDK recognises, only in the matching region and only `times` times', async () => {
    await setFaults(proxy.faultsUrl, {
      rules: [
        {
          match: { service: 'iot', region: 'eu-central-1', method: 'GET', path: '^/things' },
          error: 'ThrottlingException',
          times: 1,
        },
      ],
    });
    const frankfurt = new IoTClient(config('eu-central-1'));
    const ohio = new IoTClient(config('us-east-2'));
    await expect(ohio.send(new ListThingsCommand({}))).resolves.toBeDefined();
    const throttled = await frankfurt.send(new ListThingsCommand({})).catch((error: unknown) => error);
    expect(throttled).toBeInstanceOf(ThrottlingException);
    expect((throttled as ThrottlingException).$metadata.httpStatusCode).toBe(429);
    expect((throttled as ThrottlingException).message).toBe('Rate exceeded');
    await expect(frankfurt.send(new ListThingsCommand({}))).resolves.toBeDefined();
    expect((await getFaults(proxy.faultsUrl)).injected).toBe(1);
    frankfurt.destroy();
    ohio.destroy();
  });

  it('injects DynamoDB throttling matched on X-Amz-Target', async () => {
    await setFaults(proxy.faultsUrl, {
      rules: [
        {
          match: { target: 'DynamoDB_20120810.ListTables' },
          error: 'ProvisionedThroughputExceededException',
        },
      ],
    });
    const dynamodb = new DynamoDBClient(config(stack.homeRegion));
    await expect(dynamodb.send(new ListTablesCommand({}))).rejects.toBeInstanceOf(
      ProvisionedThroughputExceededException,
    );
    await setFaults(proxy.faultsUrl, {
      rules: [{ match: { service: 'dynamodb' }, error: 'ThrottlingException', times: 1 }],
    });
    const throttled = await dynamodb.send(new ListTablesCommand({})).catch((error: unknown) => error);
    expect((throttled as Error).name).toBe('ThrottlingException');
    expect((throttled as ThrottlingException).$metadata.httpStatusCode).toBe(400);
    dynamodb.destroy();
  });

  it("matches the request body: only the named item's DynamoDB calls fail", async () => {
    await setFaults(proxy.faultsUrl, {
      rules: [{ match: { service: 'dynamodb', body: '"wanted-item"' }, error: 'ThrottlingException' }],
    });
    const dynamodb = new DynamoDBClient({ ...config(stack.homeRegion), maxAttempts: 1 });
    const get = (thingName: string) =>
      dynamodb.send(
        new GetItemCommand({ TableName: stack.tableName, Key: { thing_name: { S: thingName } } }),
      );
    await expect(get('other-item')).resolves.toBeDefined();
    await expect(get('wanted-item')).rejects.toMatchObject({ name: 'ThrottlingException' });
    dynamodb.destroy();
  });

  it('injects KMS and SSM failures in their JSON protocol', async () => {
    await setFaults(proxy.faultsUrl, {
      rules: [
        { match: { service: 'kms' }, error: 'InternalFailure', times: 1 },
        { match: { service: 'ssm' }, error: 'ThrottlingException', times: 1 },
      ],
    });
    const kms = new KMSClient(config(stack.homeRegion));
    const ssm = new SSMClient(config(stack.homeRegion));
    const kmsError = await kms.send(new ListKeysCommand({})).catch((error: unknown) => error);
    expect(kmsError).toBeInstanceOf(KMSInternalException);
    expect((kmsError as KMSInternalException).$metadata.httpStatusCode).toBe(500);
    const ssmError = await ssm
      .send(new GetParameterCommand({ Name: stack.ipstackKeyParameter }))
      .catch((error: unknown) => error);
    expect((ssmError as Error).name).toBe('ThrottlingException');
    await expect(
      ssm.send(new GetParameterCommand({ Name: stack.ipstackKeyParameter })),
    ).resolves.toBeDefined();
    kms.destroy();
    ssm.destroy();
  });

  it('delays every AWS call by delayMs', async () => {
    await setFaults(proxy.faultsUrl, { delayMs: 150 });
    const dynamodb = new DynamoDBClient(config(stack.homeRegion));
    await dynamodb.send(new ListTablesCommand({}));
    const started = Date.now();
    await dynamodb.send(new ListTablesCommand({}));
    await dynamodb.send(new ListTablesCommand({}));
    // A lower bound only: the delay is added, whatever moto's own speed.
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    dynamodb.destroy();
  });

  it('rejects a malformed fault specification', async () => {
    await expect(
      setFaults(proxy.faultsUrl, { rules: [{ error: 'NoSuchError' as 'ThrottlingException' }] }),
    ).rejects.toThrow(/error must be one of/);
    const cleared = await clearFaults(proxy.faultsUrl);
    expect(cleared).toMatchObject({ delayMs: 0, rules: [] });
  });
});

/**
 * The faults that lose answers or connections, against the real SDK with the function's own
 * client settings (3 s request timeout that throws, standard retries): what was applied in moto
 * is read back from moto directly, behind the proxy's back.
 */
describeWithStack('fault actions against the real SDK', () => {
  let stack: LocalStack;
  let proxy: AwsProxy;
  let moto: DynamoDBClient;
  const tableName = 'fault-actions';
  const credentials = { accessKeyId: 'local', secretAccessKey: 'local' };
  const unique = (prefix: string) =>
    `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const updateItem = { target: 'DynamoDB_20120810.UpdateItem' };

  /** A client configured like the function's (aws-client-settings.ts). */
  const functionClient = (maxAttempts = 3) =>
    new DynamoDBClient({
      ...awsClientSettings(stack.homeRegion, maxAttempts),
      endpoint: proxy.url,
      credentials,
    });

  /** Adds 1 to the item's counter: not idempotent, so every application shows. */
  const increment = (client: DynamoDBClient, key: string) =>
    client.send(
      new UpdateItemCommand({
        TableName: tableName,
        Key: { key: { S: key } },
        UpdateExpression: 'ADD applied :one',
        ExpressionAttributeValues: { ':one': { N: '1' } },
      }),
    );

  const appliedInMoto = async (key: string): Promise<number> => {
    const item = await moto.send(new GetItemCommand({ TableName: tableName, Key: { key: { S: key } } }));
    return Number(item.Item?.applied?.N ?? '0');
  };

  beforeAll(async () => {
    stack = readStack();
    proxy = await startAwsProxy({ host: '127.0.0.1', port: 0, target: stack.motoUrl, holdMs: 10_000 });
    moto = new DynamoDBClient({
      endpoint: stack.motoUrl,
      region: stack.homeRegion,
      credentials,
      maxAttempts: 1,
    });
    await moto
      .send(
        new CreateTableCommand({
          TableName: tableName,
          AttributeDefinitions: [{ AttributeName: 'key', AttributeType: 'S' }],
          KeySchema: [{ AttributeName: 'key', KeyType: 'HASH' }],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      )
      .catch((error: unknown) => {
        if (!(error instanceof ResourceInUseException)) throw error;
      });
  });
  afterAll(async () => {
    moto.destroy();
    await proxy.close();
  });
  afterEach(() => clearFaults(proxy.faultsUrl));

  it('drop: the UpdateItem is applied, its answer never comes, the SDK times out and retries', async () => {
    const key = unique('drop');
    await setFaults(proxy.faultsUrl, { rules: [{ match: updateItem, action: 'drop', times: 1 }] });
    const client = functionClient();
    const answer = await increment(client, key);
    // Two applications: the dropped one and the retry that was answered.
    expect(answer.$metadata.attempts).toBe(2);
    expect(await appliedInMoto(key)).toBe(2);
    const state = await getFaults(proxy.faultsUrl);
    expect(state.byAction.drop).toBe(1);
    expect(state.events.at(-1)).toMatchObject({
      action: 'drop',
      what: expect.stringContaining('UpdateItem'),
    });
    client.destroy();
  });

  it('drop without retries: the caller sees a TimeoutError although the write was applied', async () => {
    const key = unique('drop-once');
    await setFaults(proxy.faultsUrl, { rules: [{ match: updateItem, action: 'drop' }] });
    const client = functionClient(1);
    await expect(increment(client, key)).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(await appliedInMoto(key)).toBe(1);
    client.destroy();
  });

  it('reset-after: the UpdateItem is applied, the connection is reset, the SDK retries', async () => {
    const key = unique('reset-after');
    await setFaults(proxy.faultsUrl, { rules: [{ match: updateItem, action: 'reset-after', times: 1 }] });
    const client = functionClient();
    const answer = await increment(client, key);
    expect(answer.$metadata.attempts).toBe(2);
    expect(await appliedInMoto(key)).toBe(2);
    expect((await getFaults(proxy.faultsUrl)).byAction['reset-after']).toBe(1);
    client.destroy();
  });

  it('reset-before: the connection is reset before moto sees the call; nothing is applied', async () => {
    const key = unique('reset-before');
    await setFaults(proxy.faultsUrl, { rules: [{ match: updateItem, action: 'reset-before', times: 1 }] });
    const once = functionClient(1);
    // The SDK reports it as a retryable network error naming the reset.
    await expect(increment(once, key)).rejects.toThrow(/ECONNRESET/);
    expect(await appliedInMoto(key)).toBe(0);
    await setFaults(proxy.faultsUrl, { rules: [{ match: updateItem, action: 'reset-before', times: 1 }] });
    const retrying = functionClient();
    const answer = await increment(retrying, key);
    expect(answer.$metadata.attempts).toBe(2);
    expect(await appliedInMoto(key)).toBe(1);
    expect((await getFaults(proxy.faultsUrl)).byAction['reset-before']).toBe(2);
    once.destroy();
    retrying.destroy();
  });

  it('delay: only the matching call waits; one delayed past the client timeout still lands late', async () => {
    const key = unique('delay');
    await setFaults(proxy.faultsUrl, {
      rules: [{ match: updateItem, action: 'delay', delayMs: 5_500, times: 1 }],
    });
    const client = functionClient(1);
    // Other calls are not delayed.
    await moto.send(new GetItemCommand({ TableName: tableName, Key: { key: { S: key } } }));
    await expect(increment(client, key)).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(await appliedInMoto(key)).toBe(0);
    // Like a request stuck in the network, it reaches AWS after the client gave up.
    for (let waited = 0; waited < 10_000 && (await appliedInMoto(key)) === 0; waited += 250) await sleep(250);
    expect(await appliedInMoto(key)).toBe(1);
    const state = await getFaults(proxy.faultsUrl);
    expect(state.byAction.delay).toBe(1);
    expect(state.rules).toEqual([]);
    client.destroy();
  });

  it('probability 0 never acts and 1 always does; times still caps it', async () => {
    const key = unique('probability');
    await setFaults(proxy.faultsUrl, {
      rules: [
        { match: updateItem, error: 'InternalFailure', probability: 0 },
        { match: updateItem, action: 'error', error: 'ThrottlingException', probability: 1, times: 2 },
      ],
    });
    const client = functionClient(1);
    await expect(increment(client, key)).rejects.toMatchObject({ name: 'ThrottlingException' });
    await expect(increment(client, key)).rejects.toMatchObject({ name: 'ThrottlingException' });
    await expect(increment(client, key)).resolves.toBeDefined();
    const state = await getFaults(proxy.faultsUrl);
    expect(state.byAction.error).toBe(2);
    expect(state.rules).toEqual([{ match: updateItem, error: 'InternalFailure', probability: 0 }]);
    client.destroy();
  });

  it('closes a dropped call by itself when the client never gives up', async () => {
    const shortHold = await startAwsProxy({ host: '127.0.0.1', port: 0, target: stack.motoUrl, holdMs: 300 });
    await setFaults(shortHold.faultsUrl, { rules: [{ match: { service: 'sts' }, action: 'drop' }] });
    const outcome = await fetch(shortHold.url, {
      method: 'POST',
      headers: {
        authorization:
          'AWS4-HMAC-SHA256 Credential=local/20240101/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=0',
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'Action=GetCallerIdentity&Version=2011-06-15',
    }).catch((error: unknown) => error);
    // fetch's error for a connection closed without an answer.
    expect(outcome).toMatchObject({ name: 'TypeError', message: 'fetch failed' });
    const state = await getFaults(shortHold.faultsUrl);
    expect(state).toMatchObject({ held: 0, byAction: { drop: 1 } });
    await shortHold.close();
  });

  it('rejects rules that mix actions and fields, and bad kills', async () => {
    const bad: unknown[] = [
      { rules: [{ action: 'explode' }] },
      { rules: [{ action: 'drop', error: 'ThrottlingException' }] },
      { rules: [{ action: 'delay' }] },
      { rules: [{ action: 'drop', delayMs: 10 }] },
      { rules: [{ action: 'drop', probability: 1.5 }] },
      { rules: [{ action: 'drop', times: 0 }] },
      { rules: [{ action: 'drop', wat: 1 }] },
      { kills: [{ point: 'nowhere' }] },
      { kills: [{ point: 'claimed', thingNamePattern: '(' }] },
    ];
    for (const spec of bad) {
      const response = await fetch(proxy.faultsUrl, { method: 'POST', body: JSON.stringify(spec) });
      expect(response.status).toBe(400);
    }
    expect((await getFaults(proxy.faultsUrl)).rules).toEqual([]);
  });
});

/**
 * The quota mode: AWS's default rates per (region, API), scaled, answered as AWS answers a
 * throttled call. Its own proxy, so its buckets never throttle other tests.
 */
describeWithStack('quota mode', () => {
  let proxy: AwsProxy;
  const config = (region: string) => clientOf(proxy, region);

  beforeAll(async () => {
    proxy = await startAwsProxy({ host: '127.0.0.1', port: 0, target: readStack().motoUrl });
  });
  afterAll(() => proxy.close());
  afterEach(async () => {
    await clearFaults(proxy.faultsUrl);
    await clearQuotas(proxy.faultsUrl);
  });

  const certificateId = 'a'.repeat(64);
  const describeCertificate = (iot: IoTClient) =>
    iot.send(new DescribeCertificateCommand({ certificateId })).catch((error: unknown) => error);

  it('answers a call over its rate ThrottlingException, as AWS IoT does, without reaching moto; per region', async () => {
    // DescribeCertificate: 10/s × 0.1 = one call a second, a bucket of one.
    await setQuotas(proxy.faultsUrl, { scale: 0.1 });
    const frankfurt = new IoTClient(config('eu-central-1'));
    const ohio = new IoTClient(config('us-east-2'));
    const first = await describeCertificate(frankfurt);
    expect((first as Error).name).toBe('ResourceNotFoundException');
    const forwarded = (await getFaults(proxy.faultsUrl)).forwarded;
    const throttled = await describeCertificate(frankfurt);
    expect(throttled).toBeInstanceOf(ThrottlingException);
    expect((throttled as ThrottlingException).name).toBe('ThrottlingException');
    expect((throttled as ThrottlingException).$metadata.httpStatusCode).toBe(429);
    expect(isThrottlingError(throttled as Parameters<typeof isThrottlingError>[0])).toBe(true);
    expect((await getFaults(proxy.faultsUrl)).forwarded).toBe(forwarded);
    // Another region has its own bucket.
    expect(((await describeCertificate(ohio)) as Error).name).toBe('ResourceNotFoundException');
    const { counts, rates } = await getQuotas(proxy.faultsUrl);
    expect(rates.RegisterCertificate).toBeCloseTo(1);
    expect(counts).toEqual([
      {
        service: 'iot',
        region: 'eu-central-1',
        api: 'DescribeCertificate',
        calls: 2,
        throttled: 1,
        distinctBodies: 1,
      },
      {
        service: 'iot',
        region: 'us-east-2',
        api: 'DescribeCertificate',
        calls: 1,
        throttled: 0,
        distinctBodies: 1,
      },
    ]);
    frankfurt.destroy();
    ohio.destroy();
  });

  it("lets the SDK's own retries through once the bucket refills; off again after DELETE", async () => {
    await setQuotas(proxy.faultsUrl, { scale: 1, rates: { DescribeCertificate: 5 } });
    const iot = new IoTClient({ ...config('eu-west-1'), maxAttempts: 3 });
    const answers = await Promise.all(Array.from({ length: 8 }, () => describeCertificate(iot)));
    // Five pass at once; of the others the SDK retries after its throttling backoff.
    expect(
      answers.every(
        (answer) =>
          (answer as Error).name === 'ResourceNotFoundException' || answer instanceof ThrottlingException,
      ),
    ).toBe(true);
    const [count] = (await getQuotas(proxy.faultsUrl)).counts;
    expect(count?.throttled).toBeGreaterThanOrEqual(3);
    await clearQuotas(proxy.faultsUrl);
    const again = await Promise.all(Array.from({ length: 8 }, () => describeCertificate(iot)));
    expect(again.every((answer) => (answer as Error).name === 'ResourceNotFoundException')).toBe(true);
    expect((await getQuotas(proxy.faultsUrl)).enabled).toBe(false);
    iot.destroy();
  });

  it('throttles KMS Sign in its JSON protocol', async () => {
    await setQuotas(proxy.faultsUrl, { scale: 1, rates: { Sign: 0.5 } });
    const kms = new KMSClient(config('eu-central-1'));
    const sign = () =>
      kms
        .send(
          new SignCommand({
            KeyId: 'alias/none',
            Message: Buffer.from('x'),
            SigningAlgorithm: 'ECDSA_SHA_256',
          }),
        )
        .then(
          () => new Error('signed'),
          (error: unknown) => error as Error,
        );
    expect((await sign()).name).not.toBe('ThrottlingException');
    const throttled = await sign();
    expect(throttled.name).toBe('ThrottlingException');
    expect(isThrottlingError(throttled as Parameters<typeof isThrottlingError>[0])).toBe(true);
    kms.destroy();
  });

  it('names the API of each IoT route and KMS target, and nothing for DynamoDB', () => {
    const call = (service: string, method: string, path: string, target = '') =>
      apiOf({ service, method, path, target });
    expect(call('iot', 'POST', '/certificate/register')).toBe('RegisterCertificate');
    expect(call('iot', 'POST', '/things/wm101')).toBe('CreateThing');
    expect(call('iot', 'PUT', '/things/wm101/principals')).toBe('AttachThingPrincipal');
    expect(call('iot', 'PUT', '/target-policies/gdp-device')).toBe('AttachPolicy');
    expect(call('iot', 'PUT', '/certificates/abc?newStatus=INACTIVE')).toBe('UpdateCertificate');
    expect(call('iot', 'GET', '/certificates-by-ca/abc?pageSize=250')).toBe('ListCertificatesByCA');
    expect(call('kms', 'POST', '/', 'TrentService.Sign')).toBe('Sign');
    expect(call('dynamodb', 'POST', '/', 'DynamoDB_20120810.GetItem')).toBeUndefined();
  });

  it('refuses a malformed quota spec and keeps the fault rules apart', async () => {
    for (const spec of [{}, { scale: 0 }, { scale: 1, rates: { CreateThing: -1 } }, { scale: 1, wat: 1 }]) {
      const response = await fetch(proxy.quotasUrl, { method: 'POST', body: JSON.stringify(spec) });
      expect(response.status).toBe(400);
    }
    await setQuotas(proxy.faultsUrl, { scale: 0.5 });
    await setFaults(proxy.faultsUrl, { delayMs: 1 });
    expect((await getQuotas(proxy.faultsUrl)).enabled).toBe(true);
  });
});
