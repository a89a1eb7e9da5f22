/**
 * Spill-over on the local stack: the handler runs in this process (as the edge would run it)
 * with an admission table of this test's own, where Frankfurt's schedule is set far ahead, as a
 * storm there would leave it. A device located in Frankfurt (CloudFront's coordinates, no
 * country) is placed in London, the next-nearest enabled region, when spill-over is on.
 */
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { admissionTable } from './admission-table';
import { createHash, randomUUID } from 'node:crypto';
import { getCalls, getFaults } from '../local/aws-proxy';
import { certificatesOfOurCa } from './audit';
import { addDevice } from '../local/stack';
import {
  certificateStatus,
  clearFaults,
  issueFromLocalCa,
  localReconcile,
  moveRecordClock,
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

const NEAREST = 'eu-central-1';
/** From Frankfurt: London 638 km, Dublin 1,088 km. */
const SPILL_TO = 'eu-west-2';
const SECOND = 'eu-west-1';
const FRANKFURT = { 'cloudfront-viewer-latitude': '50.11', 'cloudfront-viewer-longitude': '8.68' };
const TABLE = `spill-over-test-${process.pid}`;
const SPILL_OVER = JSON.stringify({ afterWaitSeconds: 60, maxExtraKm: 1500 });

useLocalAws();

const { create, dependenciesWith, handlerWith, call, schedule } = admissionTable(TABLE, FRANKFURT);

/** A region as a storm leaves it: admitted work and a queue of refused devices far ahead. */
async function backlog(region: string, seconds: number) {
  const until = String(Date.now() + seconds * 1000);
  await registryClient().send(
    new PutItemCommand({
      TableName: TABLE,
      Item: { region: { S: region }, next_free_ms: { N: until }, promised_ms: { N: until } },
    }),
  );
}

async function idle(region: string) {
  await registryClient().send(new PutItemCommand({ TableName: TABLE, Item: { region: { S: region } } }));
}

beforeAll(create);

afterEach(clearFaults);

beforeEach(async () => {
  await backlog(NEAREST, 300);
  await idle(SPILL_TO);
  await idle(SECOND);
});

describe('spill-over', () => {
  const spilling = handlerWith({ ADMISSION_SPILL_OVER: SPILL_OVER });

  it('places a device its backlogged region refuses in the next-nearest region, and says so', async () => {
    const thingName = uniqueThingName('spilled');
    await addDevice(stack, thingName);
    const before = await schedule(NEAREST);
    const answer = await call(spilling, v2Body(thingName));
    expect(answer).toMatchObject({
      status: 200,
      body: { status: 'success', region: SPILL_TO, distance: 638, spilledFrom: NEAREST },
    });
    const record = await registryRecord(thingName);
    expect(record?.prov_status?.S).toBe('provisioned');
    expect(record?.aws_region?.S).toBe(SPILL_TO);
    expect(await certificateStatus(SPILL_TO, record?.certificate_id?.S as string)).toBe('ACTIVE');
    expect(await thingExists(SPILL_TO, thingName)).toBe(true);
    expect(await thingExists(NEAREST, thingName)).toBe(false);
    // Frankfurt's queue holds no place for a device that went elsewhere.
    expect(await schedule(NEAREST)).toEqual(before);
  });

  it("moves the claim's intent even when that write's answer is lost: the retry finds the claim still ours", async () => {
    const thingName = uniqueThingName('spill-lost');
    await addDevice(stack, thingName);
    await setFaults({
      rules: [
        {
          match: { service: 'dynamodb', body: 'SET pending_region = :region' },
          action: 'reset-after',
          times: 1,
        },
      ],
    });
    const answer = await call(spilling, v1Body(thingName));
    // The rule acted once (a spent rule leaves the set).
    expect((await getFaults(stack.faultsUrl)).rules).toEqual([]);
    expect(answer).toMatchObject({ status: 200, body: { region: SPILL_TO, spilledFrom: NEAREST } });
    expect((await registryRecord(thingName))?.aws_region?.S).toBe(SPILL_TO);
  });

  it('undoes a spilled request that fails in the region it spilled into, there', async () => {
    const thingName = uniqueThingName('spill-undo');
    await addDevice(stack, thingName);
    await setFaults({
      rules: [
        {
          match: {
            service: 'iot',
            region: SPILL_TO,
            method: 'PUT',
            path: `^/things/${thingName}/principals`,
          },
          error: 'InternalFailure',
          times: 4,
        },
      ],
    });
    const before = (await getCalls(stack.faultsUrl)).at(-1)?.seq ?? 0;
    const answer = await call(spilling, v1Body(thingName));
    expect(answer.status).toBe(503);
    const iot = (await getCalls(stack.faultsUrl, before)).filter((made) => made.what.startsWith('iot '));
    // Registered in London, then retired there by the undo; nothing ever reached Frankfurt.
    expect(
      iot.some(
        (made) => made.what.startsWith(`iot ${SPILL_TO} `) && made.what.includes('/certificate/register'),
      ),
    ).toBe(true);
    expect(iot.filter((made) => made.what.startsWith(`iot ${NEAREST} `))).toEqual([]);
    expect(await thingExists(SPILL_TO, thingName)).toBe(false);
    const left = (await certificatesOfOurCa(SPILL_TO)).filter(
      (certificate) => certificate.commonName === thingName && certificate.status === 'ACTIVE',
    );
    expect(left).toEqual([]);
    const record = await registryRecord(thingName);
    expect(record?.claim_id).toBeUndefined();
    expect(record?.retiring).toBeUndefined();
  });

  it.each(['the device retrying', 'the reconciler'])(
    'a function killed after the move leaves an intent in the new region, which %s finishes there',
    async (finisher) => {
      // What a spilled request leaves when it dies after registering its certificate in London:
      // its claim, re-pointed from Frankfurt, and the certificate, made with the function's adapters.
      const thingName = uniqueThingName('spill-killed');
      await addDevice(stack, thingName);
      const deps = dependenciesWith();
      const record = await deps.registry.read(thingName);
      const certificate = await issueFromLocalCa(thingName);
      const now = Math.floor(Date.now() / 1000);
      const claim = await deps.registry.claim({
        record: record as NonNullable<typeof record>,
        claimId: randomUUID(),
        nowSeconds: now,
        leaseSeconds: 60,
        pending: {
          certificateId: certificate.id,
          certificatePem: certificate.pem,
          region: NEAREST,
          keySha256: createHash('sha256').update(certificate.der).digest('hex'),
          keyMode: 'server',
          since: now,
        },
      });
      await deps.registry.repoint(claim, SPILL_TO);
      await deps.iot.registerCertificate(SPILL_TO, { id: certificate.id, pem: certificate.pem });
      expect((await registryRecord(thingName))?.pending_region?.S).toBe(SPILL_TO);
      expect(await certificateStatus(SPILL_TO, certificate.id)).toBe('ACTIVE');
      await moveRecordClock(thingName, 'claim_expires', { at: now - 1 });

      if (finisher === 'the reconciler') {
        expect((await localReconcile({ thingNamePrefix: thingName })).failures).toEqual([]);
      } else {
        await idle(NEAREST);
        expect(await call(spilling, v1Body(thingName))).toMatchObject({
          status: 200,
          body: { region: NEAREST },
        });
      }
      // The dead request's certificate is retired where the intent said it was.
      expect(await certificateStatus(SPILL_TO, certificate.id)).not.toBe('ACTIVE');
      expect((await registryRecord(thingName))?.claim_id).toBeUndefined();
    },
  );

  it('never moves a pinned device', async () => {
    const thingName = uniqueThingName('spill-pinned');
    await addDevice(stack, thingName, { region_pin: { S: NEAREST } });
    const answer = await call(spilling, v1Body(thingName));
    expect(answer.status).toBe(429);
    expect(answer.retryAfter).toBeGreaterThanOrEqual(299);
    expect((await registryRecord(thingName))?.claim_id).toBeUndefined();
  });

  it('never moves a device its country places (data residency)', async () => {
    const thingName = uniqueThingName('spill-country');
    await addDevice(stack, thingName);
    const answer = await call(spilling, v1Body(thingName), {
      ...FRANKFURT,
      'cloudfront-viewer-country': 'DE',
    });
    expect(answer.status).toBe(429);
    expect(await thingExists(SPILL_TO, thingName)).toBe(false);
  });

  it('is off unless configured', async () => {
    const thingName = uniqueThingName('spill-off');
    await addDevice(stack, thingName);
    const answer = await call(handlerWith(), v1Body(thingName));
    expect(answer.status).toBe(429);
    expect(answer.retryAfter).toBeGreaterThanOrEqual(299);
  });

  it("answers the nearest region's 429 when the candidates are backlogged too, and joins no queue of theirs", async () => {
    await backlog(SPILL_TO, 120);
    await backlog(SECOND, 120);
    const candidates = [await schedule(SPILL_TO), await schedule(SECOND)];
    const thingName = uniqueThingName('spill-nowhere');
    await addDevice(stack, thingName);
    const answer = await call(spilling, v1Body(thingName));
    expect(answer.status).toBe(429);
    expect(String(answer.body.message)).toContain(NEAREST);
    // Frankfurt's Retry-After: the end of its queue, where this request now has its place.
    expect(answer.retryAfter).toBeGreaterThanOrEqual(299);
    expect([await schedule(SPILL_TO), await schedule(SECOND)]).toEqual(candidates);
    expect(Number((await schedule(NEAREST))?.promised_ms?.N)).toBeGreaterThan(Date.now() + 299_000);
    const record = await registryRecord(thingName);
    expect(record?.claim_id).toBeUndefined();
    expect(record?.pending_region).toBeUndefined();
  });
});
