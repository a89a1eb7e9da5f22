/**
 * The fault-injecting AWS proxy: injected errors must reach the code as the same SDK exceptions
 * AWS produces. These tests run their own proxy in front of the stack's moto so their faults
 * never leak into other tests sharing the stack's proxy.
 */
import {
  DynamoDBClient,
  ListTablesCommand,
  ProvisionedThroughputExceededException,
} from '@aws-sdk/client-dynamodb';
import { IoTClient, ListThingsCommand, ThrottlingException } from '@aws-sdk/client-iot';
import { KMSClient, KMSInternalException, ListKeysCommand } from '@aws-sdk/client-kms';
import { GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { AwsProxy, clearFaults, getFaults, setFaults, startAwsProxy } from './aws-proxy';
import { LocalStack, readStack } from './stack-state';

const describeWithStack = process.env.NO_LOCAL_STACK ? describe.skip : describe;

describeWithStack('fault-injecting AWS proxy', () => {
  let stack: LocalStack;
  let proxy: AwsProxy;
  const config = (region: string) => ({
    endpoint: proxy.url,
    region,
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts: 1,
  });

  beforeAll(async () => {
    stack = readStack();
    proxy = await startAwsProxy({ host: '127.0.0.1', port: 0, target: stack.motoUrl });
  });
  afterAll(() => proxy.close());
  afterEach(() => clearFaults(proxy.faultsUrl));

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
