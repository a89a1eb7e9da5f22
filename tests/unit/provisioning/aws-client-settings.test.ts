/**
 * The SDK clients' socket pool never fails a call that waits for it. Many invocations share one
 * process in the local edge's scale-out mode; with the SDK's default pool (50 sockets) the 51st
 * concurrent call waited for a socket, and the SDK counted that wait against its 1 s connection
 * timeout: TimeoutError, as if the network had dropped it. A local HTTP server stands in for
 * DynamoDB here (no AWS is needed to show where the client waits): it answers each call only
 * after 1.5 s, so every call past the pool would wait longer than the connection timeout.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { awsClientSettings } from '../../../functions/provisioning/aws-client-settings';

describe('AWS client settings', () => {
  let server: http.Server;
  let endpoint: string;
  beforeAll(async () => {
    server = http.createServer((_request, response) => {
      setTimeout(() => {
        response.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' });
        response.end('{}');
      }, 1_500);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('gives 80 concurrent calls of one client a socket each: none fails waiting for the pool', async () => {
    const dynamodb = new DynamoDBClient({
      ...awsClientSettings('us-east-2', 1),
      endpoint,
      credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    });
    const results = await Promise.allSettled(
      Array.from({ length: 80 }, (_, index) =>
        dynamodb.send(new GetItemCommand({ TableName: 'registry', Key: { thing_name: { S: `d${index}` } } })),
      ),
    );
    expect(results.filter((result) => result.status === 'rejected')).toEqual([]);
    dynamodb.destroy();
  });
});
