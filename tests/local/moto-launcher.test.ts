/**
 * moto as patched by moto_launcher.py: the behaviours the provisioning tests rely on, checked
 * against moto directly (not through the fault proxy) with the real SDK.
 */
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  CreateCertificateFromCsrCommand,
  CreateKeysAndCertificateCommand,
  CreateThingCommand,
  DescribeCertificateCommand,
  DescribeEndpointCommand,
  InvalidRequestException,
  IoTClient,
  ResourceAlreadyExistsException,
} from '@aws-sdk/client-iot';
import {
  ConditionalCheckFailedException,
  CreateTableCommand,
  DynamoDBClient,
  PutItemCommand,
  ResourceInUseException,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { makeCsr } from '../support/csr';
import { LocalStack, readStack } from './stack-state';

const describeWithStack = process.env.NO_LOCAL_STACK ? describe.skip : describe;

async function csrFor(commonName: string): Promise<{ csrPem: string; publicKeyDer: Buffer }> {
  const csr = await makeCsr(`CN=${commonName}`);
  return { csrPem: csr.pem, publicKeyDer: csr.publicKeySpki };
}

describeWithStack('moto launcher patches', () => {
  let stack: LocalStack;
  let caCertificate: X509Certificate;
  const clients: IoTClient[] = [];
  const iot = (region: string) => {
    const client = new IoTClient({
      endpoint: stack.motoUrl,
      region,
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
      maxAttempts: 1,
    });
    clients.push(client);
    return client;
  };
  const unique = (prefix: string) =>
    `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

  beforeAll(() => {
    stack = readStack();
    caCertificate = new X509Certificate(readFileSync(stack.caCertificate));
  });
  afterAll(() => clients.forEach((client) => client.destroy()));

  it('issues a CSR certificate for the CSR key and subject, signed by the local CA', async () => {
    const thingName = unique('moto-csr');
    const { csrPem, publicKeyDer } = await csrFor(thingName);
    const created = await iot(stack.regions[0] ?? stack.homeRegion).send(
      new CreateCertificateFromCsrCommand({ certificateSigningRequest: csrPem }),
    );
    const certificate = new X509Certificate(created.certificatePem ?? '');
    expect(certificate.publicKey.export({ type: 'spki', format: 'der' })).toEqual(publicKeyDer);
    expect(certificate.subject).toBe(`CN=${thingName}`);
    expect(certificate.checkIssued(caCertificate)).toBe(true);
    expect(certificate.verify(caCertificate.publicKey)).toBe(true);
  });

  it('derives certificateId from the DER as AWS does, and Describe returns the same certificate', async () => {
    const { csrPem } = await csrFor(unique('moto-id'));
    const client = iot(stack.homeRegion);
    const created = await client.send(
      new CreateCertificateFromCsrCommand({ certificateSigningRequest: csrPem }),
    );
    const der = new X509Certificate(created.certificatePem ?? '').raw;
    expect(created.certificateId).toBe(createHash('sha256').update(der).digest('hex'));
    const described = await client.send(
      new DescribeCertificateCommand({ certificateId: created.certificateId }),
    );
    expect(described.certificateDescription?.certificatePem).toBe(created.certificatePem);
    // setAsActive omitted: AWS leaves the certificate inactive.
    expect(described.certificateDescription?.status).toBe('INACTIVE');
  });

  it('answers a malformed CSR with InvalidRequestException, as AWS does', async () => {
    await expect(
      iot(stack.homeRegion).send(
        new CreateCertificateFromCsrCommand({ certificateSigningRequest: 'not a CSR' }),
      ),
    ).rejects.toBeInstanceOf(InvalidRequestException);
  });

  it('honours setAsActive=false and true', async () => {
    const client = iot(stack.homeRegion);
    const inactive = await client.send(
      new CreateCertificateFromCsrCommand({
        certificateSigningRequest: (await csrFor(unique('off'))).csrPem,
        setAsActive: false,
      }),
    );
    const active = await client.send(
      new CreateCertificateFromCsrCommand({
        certificateSigningRequest: (await csrFor(unique('on'))).csrPem,
        setAsActive: true,
      }),
    );
    const status = async (certificateId?: string) =>
      (await client.send(new DescribeCertificateCommand({ certificateId }))).certificateDescription?.status;
    expect(await status(inactive.certificateId)).toBe('INACTIVE');
    expect(await status(active.certificateId)).toBe('ACTIVE');
  });

  it('signs CreateKeysAndCertificate certificates with the local CA too', async () => {
    const created = await iot(stack.homeRegion).send(
      new CreateKeysAndCertificateCommand({ setAsActive: true }),
    );
    const certificate = new X509Certificate(created.certificatePem ?? '');
    expect(certificate.verify(caCertificate.publicKey)).toBe(true);
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(certificate.verify(publicKey)).toBe(false);
    expect(created.keyPair?.PrivateKey).toContain('PRIVATE KEY');
  });

  it('answers DescribeEndpoint with the local MQTT endpoint of the region, every time', async () => {
    for (const region of stack.regions) {
      const client = iot(region);
      const first = await client.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }));
      const second = await client.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }));
      expect(first.endpointAddress).toBe(stack.mqttEndpoints[region]);
      expect(second.endpointAddress).toBe(first.endpointAddress);
    }
  });

  it('keeps a stable AWS-shaped endpoint for regions without a local broker', async () => {
    const client = iot('eu-west-3');
    const first = await client.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }));
    const second = await client.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }));
    expect(first.endpointAddress).toMatch(/^[a-z0-9]{14}-ats\.iot\.eu-west-3\.amazonaws\.com$/);
    expect(second.endpointAddress).toBe(first.endpointAddress);
  });

  it('refuses to overwrite an existing thing with different attributes, accepts an identical request', async () => {
    const client = iot(stack.homeRegion);
    const thingName = unique('moto-thing');
    const created = await client.send(
      new CreateThingCommand({ thingName, attributePayload: { attributes: { batch: '1' } } }),
    );
    const again = await client.send(
      new CreateThingCommand({ thingName, attributePayload: { attributes: { batch: '1' } } }),
    );
    expect(again.thingArn).toBe(created.thingArn);
    expect(again.thingId).toBe(created.thingId);
    await expect(
      client.send(new CreateThingCommand({ thingName, attributePayload: { attributes: { batch: '2' } } })),
    ).rejects.toBeInstanceOf(ResourceAlreadyExistsException);
  });
});

describeWithStack('moto launcher: DynamoDB requests one at a time', () => {
  const tableName = 'serialised-writes';
  const credentials = { accessKeyId: 'local', secretAccessKey: 'local' };
  let dynamodb: DynamoDBClient;

  beforeAll(async () => {
    const stack = readStack();
    // Straight to moto, no proxy: only moto's own behaviour is under test.
    dynamodb = new DynamoDBClient({
      endpoint: stack.motoUrl,
      region: stack.homeRegion,
      credentials,
      maxAttempts: 1,
    });
    await dynamodb
      .send(
        new CreateTableCommand({
          TableName: tableName,
          AttributeDefinitions: [{ AttributeName: 'thing_name', AttributeType: 'S' }],
          KeySchema: [{ AttributeName: 'thing_name', KeyType: 'HASH' }],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      )
      .catch((error: unknown) => {
        if (!(error instanceof ResourceInUseException)) throw error;
      });
  });
  afterAll(() => dynamodb.destroy());

  it('lets exactly one of many concurrent conditional updates of one item win, round after round', async () => {
    const rounds = 15;
    const writers = 24;
    const winnersPerRound: number[] = [];
    for (let round = 0; round < rounds; round += 1) {
      const thingName = `race-${Date.now().toString(36)}-${round}`;
      await dynamodb.send(
        new PutItemCommand({
          TableName: tableName,
          Item: { thing_name: { S: thingName }, prov_status: { S: 'unprovisioned' } },
        }),
      );
      const outcomes = await Promise.all(
        Array.from({ length: writers }, (_, writer) =>
          dynamodb
            .send(
              new UpdateItemCommand({
                TableName: tableName,
                Key: { thing_name: { S: thingName } },
                UpdateExpression: 'SET prov_status = :claimed, claim_id = :writer',
                ConditionExpression: 'prov_status = :unprovisioned',
                ExpressionAttributeValues: {
                  ':claimed': { S: 'claimed' },
                  ':unprovisioned': { S: 'unprovisioned' },
                  ':writer': { S: `writer-${writer}` },
                },
              }),
            )
            .then(
              () => 1,
              (error: unknown) => {
                if (error instanceof ConditionalCheckFailedException) return 0;
                throw error;
              },
            ),
        ),
      );
      winnersPerRound.push(outcomes.reduce((sum, won) => sum + won, 0));
    }
    expect(winnersPerRound).toEqual(Array.from({ length: rounds }, () => 1));
  });
});
