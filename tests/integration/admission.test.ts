/**
 * Admission control on the local stack: the handler runs in this process (as the edge would run
 * it) with an admission table of this test's own, so its schedules can be set without slowing
 * any other test's region. Calls are counted in the AWS proxy's call log.
 */
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { memoryAdmissionState, Verdict } from '../../functions/provisioning/admission';
import { dynamoAdmissionState } from '../../functions/provisioning/admission-state';
import { admissionTable } from './admission-table';
import { awsDeviceIot } from '../../functions/provisioning/iot';
import { readFileSync } from 'node:fs';
import { addDevice } from '../local/stack';
import { CallRecord, getCalls } from '../local/aws-proxy';
import {
  certificateStatus,
  clearFaults,
  makeCsr,
  moveRecordClock,
  post,
  registryClient,
  registryRecord,
  setFaults,
  stack,
  thingExists,
  uniqueThingName,
  useLocalAws,
  v1Body,
  v2Body,
} from './requests';

// Seoul: no other test provisions there.
const REGION = 'ap-northeast-2';
const SEOUL = { 'cloudfront-viewer-latitude': '37.5665', 'cloudfront-viewer-longitude': '126.9780' };
const TABLE = `admission-test-${process.pid}`;

useLocalAws();

const { create, handlerWith, call, schedule } = admissionTable(TABLE, SEOUL);

/** The proxy's calls made while `work` ran. */
async function callsDuring(work: () => Promise<unknown>): Promise<CallRecord[]> {
  const before = (await getCalls(stack.faultsUrl)).at(-1)?.seq ?? 0;
  await work();
  return getCalls(stack.faultsUrl, before);
}

const iotCalls = (calls: CallRecord[]) => calls.filter((call) => call.what.startsWith('iot '));

async function setSchedule(region: string, nextFreeMs: number) {
  await registryClient().send(
    new PutItemCommand({
      TableName: TABLE,
      Item: { region: { S: region }, next_free_ms: { N: String(nextFreeMs) } },
    }),
  );
}

beforeAll(create);

afterEach(clearFaults);

describe('admission', () => {
  const handler = handlerWith();

  it('admits a request while the region is idle, with one write to its schedule', async () => {
    const thingName = uniqueThingName('admitted');
    await addDevice(stack, thingName);
    const calls = await callsDuring(async () => {
      expect(await call(handler, v1Body(thingName))).toMatchObject({ status: 200, body: { region: REGION } });
    });
    expect(Number((await schedule(REGION))?.next_free_ms?.N)).toBeGreaterThan(Date.now() - 60_000);
    // Read, claim, admission, mark: the schedule costs one UpdateItem.
    expect(calls.filter((call) => call.what.endsWith('DynamoDB_20120810.UpdateItem'))).toHaveLength(3);
  });

  it('refuses a request the region has no room for: 429 with Retry-After, no AWS IoT call, claim released', async () => {
    const thingName = uniqueThingName('refused');
    await addDevice(stack, thingName);
    await setSchedule(REGION, Date.now() + 30_000);
    let answer: Awaited<ReturnType<typeof call>> | undefined;
    const request = v2Body(thingName);
    const calls = await callsDuring(async () => {
      answer = await call(handler, request);
    });
    expect(answer).toMatchObject({ status: 429, body: { status: 'error' } });
    expect(String(answer?.body.message)).toContain(REGION);
    expect(answer?.retryAfter).toBeGreaterThanOrEqual(29);
    expect(answer?.retryAfter).toBeLessThanOrEqual(31);
    expect(iotCalls(calls)).toEqual([]);
    const record = await registryRecord(thingName);
    expect(record?.prov_status?.S).toBe('unprovisioned');
    expect(record?.claim_id).toBeUndefined();
    expect(await thingExists(REGION, thingName)).toBe(false);

    // The next refusal is told to come after this one: the queue, not the same second.
    const second = uniqueThingName('refused-next');
    await addDevice(stack, second);
    const next = await call(handler, v1Body(second));
    expect(next.status).toBe(429);
    expect(next.retryAfter).toBeGreaterThanOrEqual(answer?.retryAfter ?? 0);
    await setSchedule(REGION, 0);

    // The refusal spent the request's nonce: sent again once the region has room, it gets 401.
    expect(await call(handler, request)).toMatchObject({ status: 401 });
    expect((await registryRecord(thingName))?.prov_status?.S).toBe('unprovisioned');
  });

  it('never lets a stranger reach admission', async () => {
    await setSchedule('ap-northeast-2', 0);
    const before = await schedule(REGION);
    const forged = { ...v1Body('stranger-device'), 'thing-name-sig': Buffer.alloc(256).toString('base64') };
    expect((await call(handler, forged)).status).toBe(401);
    expect(await schedule(REGION)).toEqual(before);
  });

  it('fails open when the schedule is unreadable, as documented; closed when configured so', async () => {
    await setFaults({
      rules: [{ match: { service: 'dynamodb', body: `"${TABLE}"` }, error: 'InternalFailure' }],
    });
    const open = uniqueThingName('fail-open');
    await addDevice(stack, open);
    expect(await call(handler, v1Body(open))).toMatchObject({ status: 200, body: { region: REGION } });

    const closed = uniqueThingName('fail-closed');
    await addDevice(stack, closed);
    const calls = await callsDuring(async () => {
      const answer = await call(handlerWith({ ADMISSION_WHEN_UNAVAILABLE: 'closed' }), v1Body(closed));
      expect(answer.status).toBe(429);
      expect(answer.retryAfter).toBeGreaterThanOrEqual(1);
    });
    expect(iotCalls(calls)).toEqual([]);
  });

  it('answers a throttle AWS IoT still raises with 429 after one SDK retry, and leaves nothing behind', async () => {
    const thingName = uniqueThingName('iot-throttled');
    await addDevice(stack, thingName);
    await setFaults({
      rules: [
        {
          match: { service: 'iot', region: REGION, path: '^/certificate/register' },
          error: 'ThrottlingException',
        },
      ],
    });
    let answer: Awaited<ReturnType<typeof call>> | undefined;
    const calls = await callsDuring(async () => {
      answer = await call(handler, v1Body(thingName));
    });
    expect(answer?.status).toBe(429);
    expect(answer?.retryAfter).toBeGreaterThanOrEqual(1);
    expect(calls.filter((call) => call.what.includes('/certificate/register'))).toHaveLength(2);
    expect(await thingExists(REGION, thingName)).toBe(false);
    expect((await registryRecord(thingName))?.claim_id).toBeUndefined();
  });
});

describe('an admission refusal after a dead request', () => {
  const handler = handlerWith();
  const SEOUL_VIEWER = { 'X-Local-Viewer-Latitude': '37.5665', 'X-Local-Viewer-Longitude': '126.9780' };

  /** A request the stack's function dies in once it registered its certificate; its lease aged out. */
  async function diedAfterRegistering(thingName: string, csrPem?: string): Promise<string> {
    await addDevice(stack, thingName);
    await setFaults({ kills: [{ point: 'registered', thingName, times: 1 }] });
    expect((await post(v2Body(thingName, { csrPem }), SEOUL_VIEWER)).status).toBe(500);
    await clearFaults();
    await moveRecordClock(thingName, 'claim_expires', { at: Math.floor(Date.now() / 1000) - 1 });
    const intent = (await registryRecord(thingName))?.pending_certificate_id?.S as string;
    expect(await certificateStatus(REGION, intent)).toBe('ACTIVE');
    return intent;
  }

  async function refused(body: unknown) {
    await setSchedule(REGION, Date.now() + 30_000);
    try {
      expect((await call(handler, body)).status).toBe(429);
    } finally {
      await setSchedule(REGION, 0);
    }
  }

  it('keeps a resumed intent: the next try finishes it, with no new certificate', async () => {
    const thingName = uniqueThingName('refused-resume');
    const csr = await makeCsr(thingName);
    const intent = await diedAfterRegistering(thingName, csr.pem);
    await refused(v2Body(thingName, { csrPem: csr.pem }));
    const record = await registryRecord(thingName);
    expect(record?.pending_certificate_id?.S).toBe(intent);
    expect(record?.claim_id).toBeUndefined();

    const answer = await call(handler, v2Body(thingName, { csrPem: csr.pem }));
    expect(answer.status).toBe(200);
    expect((await registryRecord(thingName))?.certificate_id?.S).toBe(intent);
  });

  it('names a stale intent that a fresh claim replaced as retiring; the next request retires it', async () => {
    const thingName = uniqueThingName('refused-stale');
    const intent = await diedAfterRegistering(thingName);
    await refused(v2Body(thingName));
    const record = await registryRecord(thingName);
    expect(record?.retiring?.SS).toEqual([`${REGION}/${intent}`]);
    expect(record?.pending_certificate_id).toBeUndefined();
    expect(record?.claim_id).toBeUndefined();

    expect((await call(handler, v2Body(thingName))).status).toBe(200);
    expect(await certificateStatus(REGION, intent)).toBeUndefined();
    expect((await registryRecord(thingName))?.retiring).toBeUndefined();
  });
});

describe('IoT throttles', () => {
  it('are reported per API for each attempt, and the SDK makes two', async () => {
    const seen: string[] = [];
    const iot = awsDeviceIot({
      policyName: stack.iotPolicyName,
      caCertificatePem: readFileSync(stack.deviceCaCertificate, 'utf8'),
      caCertificateId: stack.deviceCaCertificateId,
      onThrottle: (api, region) => seen.push(`${api} ${region}`),
    });
    const certificateId = 'ab'.repeat(32);
    await setFaults({
      rules: [
        {
          match: { service: 'iot', region: REGION, path: `^/certificates/${certificateId}` },
          error: 'ThrottlingException',
        },
      ],
    });
    await expect(iot.describeCertificate(REGION, certificateId)).rejects.toBeDefined();
    expect(seen).toEqual([`DescribeCertificate ${REGION}`, `DescribeCertificate ${REGION}`]);
  });
});

describe('the schedule in DynamoDB', () => {
  it('decides as the reference rule does, for a burst of concurrent requests', async () => {
    const state = dynamoAdmissionState({ region: stack.homeRegion, tableName: TABLE });
    const reference = memoryAdmissionState();
    const region = `burst-${Date.now()}`;
    const now = Date.now();
    const verdicts = await Promise.all(Array.from({ length: 16 }, () => state.take(region, now, 100, 1_000)));
    const expected: Verdict[] = [];
    for (let request = 0; request < 16; request += 1)
      expected.push(await reference.take(region, now, 100, 1_000));
    const slots = (list: Verdict[]) =>
      list
        .map((verdict) =>
          verdict.kind === 'unavailable' ? 'unavailable' : `${verdict.kind} ${verdict.slotMs - now}`,
        )
        .sort();
    expect(slots(verdicts)).toEqual(slots(expected));
  });
});
