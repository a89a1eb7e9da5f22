/**
 * A signed request can't be replayed, whatever it was answered: its nonce is spent on a refusal as
 * on a success (functions/provisioning/replay-guard.ts). Each case is a replay that used to win:
 * the request is refused, the reason for the refusal goes away (the pacing interval passes, the
 * request in flight finishes), and the same bytes are sent again.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { getCalls } from '../local/aws-proxy';
import { seedAgedDevice } from '../local/aged-device';
import { addDevice } from '../local/stack';
import { certificatesOfOurCa } from './audit';
import {
  certificateStatus,
  lifecycleBody,
  makeCsr,
  moveRecordClock,
  PLACES,
  post,
  postRenew,
  postStatus,
  registryClient,
  registryRecord,
  stack,
  uniqueThingName,
  v2Body,
} from './requests';

/** DynamoDB writes the service made since `after` (the proxy's call log). */
async function registryWritesSince(after: number): Promise<number> {
  const calls = await getCalls(stack.faultsUrl, after);
  return calls.filter((call) => call.what.startsWith('dynamodb ') && call.what.includes('UpdateItem')).length;
}

const lastCall = async () => (await getCalls(stack.faultsUrl)).at(-1)?.seq ?? 0;

async function liveCertificates(thingName: string, region: string): Promise<string[]> {
  return (await certificatesOfOurCa(region))
    .filter((certificate) => certificate.commonName === thingName && certificate.status === 'ACTIVE')
    .map((certificate) => certificate.certificateId)
    .sort();
}

describe('a refused signed request, replayed once the refusal no longer applies, gets 401', () => {
  it('a renewal paced with 429, replayed after the interval: no new certificate, the device keeps its own', async () => {
    const device = await seedAgedDevice(stack, {
      thingName: uniqueThingName('rp-renew'),
      region: 'eu-west-2',
      ageDays: 300,
      validityDays: 365,
    });
    // A renewal whose answer the device lost: its own certificate is now the previous one.
    const lost = await postRenew(lifecycleBody('renew', device.thingName, device));
    expect(lost.status).toBe(200);
    const lostId = lost.body.certificateId as string;

    // The retry, signed with the previous certificate, comes too soon: paced.
    const refusedBody = lifecycleBody('renew', device.thingName, device);
    const before = await lastCall();
    const refused = await postRenew(refusedBody);
    expect(refused.status).toBe(429);
    expect(await registryWritesSince(before)).toBe(1); // the spent nonce, nothing else

    // The interval passes (the record's clock is moved); whoever saw the refused request sends it.
    await moveRecordClock(device.thingName, 'prov_epoch', { earlierBy: 60 });
    const replayBefore = await lastCall();
    const replay = await postRenew(refusedBody);
    expect(replay.status).toBe(401);
    expect(replay.body.message).toMatch(/nonce was already used/);
    expect(replay.body.PrivateKey).toBeUndefined();
    expect(await registryWritesSince(replayBefore)).toBe(0);

    expect(await certificateStatus(device.region, device.certificateId)).toBe('ACTIVE');
    expect(await liveCertificates(device.thingName, device.region)).toEqual(
      [device.certificateId, lostId].sort(),
    );
    expect((await registryRecord(device.thingName))?.certificate_id?.S).toBe(lostId);

    // The device's own retry carries a new nonce, and renews.
    const retry = await postRenew(lifecycleBody('renew', device.thingName, device));
    expect(retry.status).toBe(200);
  }, 40_000);

  it('a v2 provisioning signed with the device key, refused while another is in flight, replayed after it', async () => {
    const thingName = uniqueThingName('rp-inflight');
    const deviceKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    await addDevice(stack, thingName, {
      device_public_key: { S: deviceKey.publicKey.export({ type: 'spki', format: 'pem' }) as string },
    });
    // Another request holds the lease.
    const inFlight = (set: boolean) =>
      registryClient().send(
        new UpdateItemCommand({
          TableName: stack.tableName,
          Key: { thing_name: { S: thingName } },
          UpdateExpression: set
            ? 'SET claim_id = :claim, claim_expires = :expires'
            : 'REMOVE claim_id, claim_expires',
          ...(set
            ? {
                ExpressionAttributeValues: {
                  ':claim': { S: randomUUID() },
                  ':expires': { N: String(Math.floor(Date.now() / 1000) + 60) },
                },
              }
            : {}),
        }),
      );
    await inFlight(true);
    const body = v2Body(thingName, { key: deviceKey.privateKey });
    const refused = await post(body, PLACES.mumbai);
    expect(refused.status).toBe(429);
    await inFlight(false);

    const replay = await post(body, PLACES.mumbai);
    expect(replay.status).toBe(401);
    expect(replay.body.PrivateKey).toBeUndefined();
    expect((await registryRecord(thingName))?.prov_status?.S).toBe('unprovisioned');

    const retry = await post(v2Body(thingName, { key: deviceKey.privateKey }), PLACES.mumbai);
    expect(retry.status).toBe(200);
  });

  it('a status call refused for its interval, replayed after it', async () => {
    const thingName = uniqueThingName('rp-status');
    await addDevice(stack, thingName);
    const csr = await makeCsr(thingName);
    const provisioned = await post(v2Body(thingName, { csrPem: csr.pem }), PLACES.mumbai);
    expect(provisioned.status).toBe(200);
    const device = {
      certificatePem: provisioned.body.certificatePem as string,
      privateKeyPem: csr.privateKeyPem,
    };
    expect((await postStatus(lifecycleBody('status', thingName, device))).status).toBe(200);

    const refusedBody = lifecycleBody('status', thingName, device);
    const before = await lastCall();
    expect((await postStatus(refusedBody)).status).toBe(429);
    expect(await registryWritesSince(before)).toBe(1);

    await moveRecordClock(thingName, 'status_epoch', { earlierBy: 60 });
    const replay = await postStatus(refusedBody);
    expect(replay.status).toBe(401);
    expect(replay.body.message).toMatch(/nonce was already used/);
    expect((await postStatus(lifecycleBody('status', thingName, device))).status).toBe(200);
  });

  it('a stranger still writes nothing: a certificate of ours for another thing', async () => {
    const thingName = uniqueThingName('rp-stranger');
    await addDevice(stack, thingName);
    const neighbour = uniqueThingName('rp-neighbour');
    await addDevice(stack, neighbour);
    const csr = await makeCsr(neighbour);
    const provisioned = await post(v2Body(neighbour, { csrPem: csr.pem }), PLACES.mumbai);
    const borrowed = {
      certificatePem: provisioned.body.certificatePem as string,
      privateKeyPem: csr.privateKeyPem,
    };
    const before = await lastCall();
    expect((await postStatus(lifecycleBody('status', thingName, borrowed))).status).toBe(401);
    expect((await postRenew(lifecycleBody('renew', thingName, borrowed))).status).toBe(401);
    expect(await registryWritesSince(before)).toBe(0);
  });
});
