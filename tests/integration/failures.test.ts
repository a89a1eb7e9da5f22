/**
 * Failure paths: AWS throttling and failures injected by the local stack's fault proxy (in front
 * of moto), and traffic that bypasses CloudFront. Nothing may be left half-created.
 */
import { ListCertificatesCommand } from '@aws-sdk/client-iot';
import { loadConfig } from '../../functions/provisioning/config';
import { awsDependencies, createHandler } from '../../functions/provisioning/http';
import { addDevice } from '../local/stack';
import {
  clearFaults,
  iotIn,
  PLACES,
  post,
  registryRecord,
  setFaults,
  stack,
  uniqueThingName,
  v1Body,
  thingExists,
} from './requests';

// Mumbai: no other test provisions there, so certificate counts in ap-south-1 are ours alone.
const REGION = 'ap-south-1';

async function certificateCount(): Promise<number> {
  const listed = await iotIn(REGION).send(new ListCertificatesCommand({ pageSize: 250 }));
  return listed.certificates?.length ?? 0;
}

const recordOf = registryRecord;
const thingExistsHere = (thingName: string) => thingExists(REGION, thingName);

afterEach(clearFaults);

describe('when AWS IoT fails after the claim', () => {
  it('undoes the certificate and the thing, releases the claim, answers 503, and the retry succeeds', async () => {
    const thingName = uniqueThingName('rollback');
    await addDevice(stack, thingName);
    const before = await certificateCount();
    // AttachThingPrincipal fails every time (past the SDK's own retries).
    await setFaults({
      rules: [
        {
          match: { service: 'iot', region: REGION, method: 'PUT', path: `^/things/${thingName}/principals` },
          error: 'InternalFailure',
        },
      ],
    });

    const failed = await post(v1Body(thingName), PLACES.mumbai);
    expect(failed.status).toBe(503);
    expect(failed.body).toEqual({
      status: 'error',
      message: expect.stringContaining('AWS IoT is unavailable'),
    });
    expect(failed.headers.get('retry-after')).toBeTruthy();
    expect(await certificateCount()).toBe(before);
    expect(await thingExistsHere(thingName)).toBe(false);
    const item = await recordOf(thingName);
    expect(item?.prov_status?.S).toBe('unprovisioned');
    expect(item?.claim_id).toBeUndefined();

    await clearFaults();
    const retried = await post(v1Body(thingName), PLACES.mumbai);
    expect(retried).toMatchObject({ status: 200, body: { region: REGION } });
    expect(await certificateCount()).toBe(before + 1);
  });
});

describe('when AWS IoT throttles certificate creation', () => {
  it('answers 429 with Retry-After and leaves nothing behind', async () => {
    const thingName = uniqueThingName('throttled');
    await addDevice(stack, thingName);
    const before = await certificateCount();
    await setFaults({
      rules: [
        {
          match: { service: 'iot', region: REGION, path: '^/certificate/register' },
          error: 'ThrottlingException',
        },
      ],
    });

    const answer = await post(v1Body(thingName), PLACES.mumbai);
    expect(answer.status).toBe(429);
    expect(Number(answer.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(answer.body).toEqual({ status: 'error', message: expect.stringContaining('throttling') });
    expect(await certificateCount()).toBe(before);
    expect(await thingExistsHere(thingName)).toBe(false);
    expect((await recordOf(thingName))?.claim_id).toBeUndefined();
  });

  it('answers 429 when the registry throttles', async () => {
    const thingName = uniqueThingName('ddb-throttled');
    await addDevice(stack, thingName);
    await setFaults({
      rules: [
        {
          match: { service: 'dynamodb', target: 'DynamoDB_20120810.UpdateItem' },
          error: 'ProvisionedThroughputExceededException',
        },
      ],
    });
    const answer = await post(v1Body(thingName), PLACES.mumbai);
    expect(answer.status).toBe(429);
    expect(await thingExistsHere(thingName)).toBe(false);
  });
});

describe('traffic that did not come through CloudFront', () => {
  it('is refused with 403 even with forged viewer headers', async () => {
    // The same handler the edge runs, called directly as API Gateway would without CloudFront.
    const handler = createHandler(
      awsDependencies(loadConfig({ ...process.env, ...stack.functionEnvironment })),
    );
    const thingName = uniqueThingName('bypass');
    await addDevice(stack, thingName);
    const answer = await handler({
      headers: {
        'content-type': 'application/json',
        'cloudfront-viewer-latitude': '35.6',
        'cloudfront-viewer-longitude': '139.7',
      },
      body: JSON.stringify(v1Body(thingName)),
      isBase64Encoded: false,
    } as unknown as Parameters<typeof handler>[0]);
    expect(answer.statusCode).toBe(403);
    expect(JSON.parse(String(answer.body))).toEqual({
      status: 'error',
      message: 'requests must come through the provisioning URL',
    });
  });
});
