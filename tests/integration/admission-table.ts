/**
 * The provisioning handler run in this process (as the edge would run it) against an admission
 * table of the test's own, so that a test can set a region's schedule (a storm's backlog, an idle
 * region) without slowing any other test's region. Shared by the admission and spill-over tests.
 */
import {
  AttributeValue,
  CreateTableCommand,
  GetItemCommand,
  ResourceInUseException,
} from '@aws-sdk/client-dynamodb';
import { loadConfig } from '../../functions/provisioning/config';
import { awsDependencies, createHandler } from '../../functions/provisioning/http';
import { registryClient, stack } from './requests';

export type InProcessHandler = ReturnType<typeof createHandler>;

export interface AdmissionTable {
  readonly name: string;
  /** Creates the table (once per test file: call it in beforeAll). */
  create(): Promise<void>;
  /** The function's dependencies with this table, no jitter, and `environment` on top. */
  dependenciesWith(environment?: Record<string, string>): ReturnType<typeof awsDependencies>;
  handlerWith(environment?: Record<string, string>): InProcessHandler;
  /** A POST to the handler from a viewer at `viewer` (CloudFront's headers). */
  call(
    handler: InProcessHandler,
    body: unknown,
    viewer?: Record<string, string>,
  ): Promise<{ status: number | undefined; retryAfter: number; body: Record<string, unknown> }>;
  /** The region's schedule item as stored (undefined: never used). */
  schedule(region: string): Promise<Record<string, AttributeValue> | undefined>;
}

export function admissionTable(name: string, defaultViewer: Record<string, string>): AdmissionTable {
  const dependenciesWith = (environment: Record<string, string> = {}) =>
    awsDependencies(
      loadConfig({
        ...process.env,
        ...stack.functionEnvironment,
        ADMISSION_TABLE_NAME: name,
        ADMISSION_JITTER_SECONDS: '0',
        ...environment,
      }),
    );
  return {
    name,
    async create() {
      await registryClient()
        .send(
          new CreateTableCommand({
            TableName: name,
            AttributeDefinitions: [{ AttributeName: 'region', AttributeType: 'S' }],
            KeySchema: [{ AttributeName: 'region', KeyType: 'HASH' }],
            BillingMode: 'PAY_PER_REQUEST',
          }),
        )
        .catch((error: unknown) => {
          if (!(error instanceof ResourceInUseException)) throw error;
        });
    },
    dependenciesWith,
    handlerWith: (environment = {}) => createHandler(dependenciesWith(environment)),
    async call(handler, body, viewer = defaultViewer) {
      const answer = await handler({
        headers: {
          'content-type': 'application/json',
          'x-origin-verify': stack.functionEnvironment.ORIGIN_VERIFY_SECRET as string,
          ...viewer,
        },
        body: JSON.stringify(body),
        isBase64Encoded: false,
        requestContext: { http: { method: 'POST', sourceIp: '203.0.113.7' } },
      } as unknown as Parameters<typeof handler>[0]);
      return {
        status: answer.statusCode,
        retryAfter: Number(answer.headers?.['retry-after'] ?? NaN),
        body: JSON.parse(String(answer.body)) as Record<string, unknown>,
      };
    },
    async schedule(region) {
      const item = await registryClient().send(
        new GetItemCommand({ TableName: name, Key: { region: { S: region } }, ConsistentRead: true }),
      );
      return item.Item;
    },
  };
}
