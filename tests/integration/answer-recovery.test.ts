/**
 * Answer recovery in key mode (functions/provisioning/answer-recovery.ts), on the local stack: a
 * device whose answer was lost asks again and gets the same certificate and the same private key,
 * with no second RegisterCertificate; past the window, or when KMS refuses the sealed key, it is
 * re-issued as before; every other write, a status call and the reconciler wipe the sealed key.
 *
 * The devices live in eu-north-1 (Stockholm), where no other test provisions, so the AWS proxy's
 * call log can be counted by region.
 */
import { X509Certificate } from 'node:crypto';
import { sha256Hex } from '../../functions/provisioning/ca-certificate';
import { getCalls } from '../local/aws-proxy';
import { addDevice } from '../local/stack';
import { admin } from '../support/admin';
import { auditDevice } from './audit';
import {
  Answer,
  certificateStatus,
  clearFaults,
  lifecycleBody,
  localReconcile,
  moveRecordClock,
  post,
  postStatus,
  registryClient,
  registryRecord,
  setFaults,
  stack,
  uniqueThingName,
  v1Body,
  v2Body,
} from './requests';
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';

const REGION = 'eu-north-1';
const STOCKHOLM = {
  'X-Local-Viewer-Latitude': '59.33',
  'X-Local-Viewer-Longitude': '18.07',
  'X-Local-Viewer-Country': 'SE',
};

afterEach(clearFaults);

async function newDevice(prefix: string): Promise<string> {
  const thingName = uniqueThingName(prefix);
  await addDevice(stack, thingName);
  return thingName;
}

const certificateIdOf = (answer: Answer) =>
  sha256Hex(new X509Certificate(String(answer.body.certificatePem)).raw);

/** The AWS calls a step makes, by `service region method path`. */
async function callsDuring(step: () => Promise<Answer>): Promise<{ answer: Answer; calls: string[] }> {
  const before = (await getCalls(stack.faultsUrl)).at(-1)?.seq ?? 0;
  const answer = await step();
  const calls = (await getCalls(stack.faultsUrl, before)).map((call) => call.what);
  return { answer, calls };
}

const registrations = (calls: readonly string[]) =>
  calls.filter((what) => what.includes(`iot ${REGION}`) && what.includes('/certificate/register')).length;

/** Provisioned in key mode, its answer "lost": the test holds it, the device never saw it. */
async function provisionedInKeyMode(prefix: string): Promise<{ thingName: string; first: Answer }> {
  const thingName = await newDevice(prefix);
  const first = await post(v2Body(thingName), STOCKHOLM);
  expect(first).toMatchObject({ status: 200, body: { region: REGION } });
  return { thingName, first };
}

async function expectOneLiveCertificate(thingName: string, answer: Answer): Promise<void> {
  const audit = await auditDevice(thingName, REGION, String(answer.body.certificatePem));
  expect(audit.problems).toEqual([]);
  expect(audit).toMatchObject({ provisioned: true, liveCertificates: 1, principals: 1 });
}

const sealedKeyOf = async (thingName: string) => (await registryRecord(thingName))?.sealed_key;

describe('a key-mode device whose answer was lost', () => {
  it.each(['v2', 'v1'] as const)(
    'asks again (%s) and gets the same certificate and key, with no second registration',
    async (version) => {
      const { thingName, first } = await provisionedInKeyMode(`recover-${version}`);
      expect(await sealedKeyOf(thingName)).toBeDefined();
      const { answer: retry, calls } = await callsDuring(() =>
        post(version === 'v2' ? v2Body(thingName) : v1Body(thingName), STOCKHOLM),
      );
      expect(retry.status).toBe(200);
      expect(retry.body.certificatePem).toBe(first.body.certificatePem);
      expect(retry.body.PrivateKey).toBe(first.body.PrivateKey);
      expect(retry.body.endpointAddress).toBe(first.body.endpointAddress);
      expect(registrations(calls)).toBe(0);
      expect(calls.filter((what) => what.startsWith('iot '))).toEqual([]);
      expect(calls.filter((what) => what.startsWith('kms ') && what.includes('Decrypt'))).toHaveLength(1);
      await expectOneLiveCertificate(thingName, retry);
    },
  );

  it('cannot replay the retry: a v2 request is answered once', async () => {
    const { thingName } = await provisionedInKeyMode('recover-replay');
    const body = v2Body(thingName);
    expect((await post(body, STOCKHOLM)).status).toBe(200);
    const replay = await post(body, STOCKHOLM);
    expect(replay.status).toBe(401);
    expect(replay.body.PrivateKey).toBeUndefined();
  });

  it('is re-issued once the window has passed, as before recovery existed', async () => {
    const { thingName, first } = await provisionedInKeyMode('recover-late');
    await moveRecordClock(thingName, 'sealed_key_until', { at: Math.floor(Date.now() / 1000) - 1 });
    const { answer: retry, calls } = await callsDuring(() => post(v2Body(thingName), STOCKHOLM));
    expect(retry.status).toBe(200);
    expect(registrations(calls)).toBe(1);
    expect(retry.body.PrivateKey).not.toBe(first.body.PrivateKey);
    expect(await certificateStatus(REGION, certificateIdOf(first))).toBeUndefined();
    await expectOneLiveCertificate(thingName, retry);
    // The re-issue's mark seals its own key: a retry of that answer recovers it.
    const again = await post(v2Body(thingName), STOCKHOLM);
    expect(again.body.PrivateKey).toBe(retry.body.PrivateKey);
  });

  it('is re-issued when KMS refuses the sealed key (not ours, or bound to another certificate)', async () => {
    const { thingName, first } = await provisionedInKeyMode('recover-refused');
    await registryClient().send(
      new UpdateItemCommand({
        TableName: stack.tableName,
        Key: { thing_name: { S: thingName } },
        UpdateExpression: 'SET sealed_key = :forged',
        ExpressionAttributeValues: { ':forged': { B: Buffer.from('not a KMS ciphertext') } },
      }),
    );
    const { answer: retry, calls } = await callsDuring(() => post(v2Body(thingName), STOCKHOLM));
    expect(retry.status).toBe(200);
    expect(registrations(calls)).toBe(1);
    expect(retry.body.certificatePem).not.toBe(first.body.certificatePem);
    await expectOneLiveCertificate(thingName, retry);
  });

  it('recovers after the function was killed right after the mark, leaving one live certificate', async () => {
    const thingName = await newDevice('recover-killed');
    await setFaults({ kills: [{ point: 'marked', thingName, times: 1 }] });
    const killed = await post(v2Body(thingName), STOCKHOLM);
    await clearFaults();
    expect(killed.status).toBe(500);
    const { answer: retry, calls } = await callsDuring(() => post(v2Body(thingName), STOCKHOLM));
    expect(retry.status).toBe(200);
    expect(registrations(calls)).toBe(0);
    expect(certificateIdOf(retry)).toBe((await registryRecord(thingName))?.certificate_id?.S);
    await expectOneLiveCertificate(thingName, retry);
  });

  it("recovers after the mark's answer was lost, leaving one live certificate", async () => {
    const thingName = await newDevice('recover-mark-lost');
    await setFaults({
      rules: [
        {
          match: {
            service: 'dynamodb',
            target: 'DynamoDB_20120810.UpdateItem',
            body: `(?=[\\s\\S]*"${thingName}")(?=[\\s\\S]*SET prov_status)`,
          },
          action: 'reset-after',
          times: 1,
        },
      ],
    });
    const first = await post(v2Body(thingName), STOCKHOLM);
    await clearFaults();
    const { answer: retry, calls } = await callsDuring(() => post(v2Body(thingName), STOCKHOLM));
    expect(retry.status).toBe(200);
    expect(registrations(calls)).toBe(0);
    if (first.status === 200) expect(retry.body.PrivateKey).toBe(first.body.PrivateKey);
    await expectOneLiveCertificate(thingName, retry);
  });
});

describe('sealing never fails a request', () => {
  it.each([
    ['refused', { error: 'InternalFailure' }],
    ['slower than the request', { action: 'delay', delayMs: 4_000 }],
  ] as const)('when KMS Encrypt is %s: provisioned without a sealed key', async (_label, fault) => {
    const thingName = await newDevice('seal-fails');
    await setFaults({
      // Every Encrypt for this device (the SDK retries a 500); KMS bodies carry the context.
      rules: [
        {
          match: { service: 'kms', target: 'TrentService.Encrypt', body: `"thing_name":"${thingName}"` },
          ...fault,
        },
      ],
    });
    const first = await post(v2Body(thingName), STOCKHOLM);
    await clearFaults();
    expect(first.status).toBe(200);
    expect(await sealedKeyOf(thingName)).toBeUndefined();
    // A lost answer is then re-issued, as without recovery.
    const { answer: retry, calls } = await callsDuring(() => post(v2Body(thingName), STOCKHOLM));
    expect(retry.status).toBe(200);
    expect(registrations(calls)).toBe(1);
    await expectOneLiveCertificate(thingName, retry);
  });
});

describe('the sealed key is wiped', () => {
  it('by the first status call: the device has proven it holds the key', async () => {
    const { thingName, first } = await provisionedInKeyMode('wipe-status');
    const credentials = {
      certificatePem: String(first.body.certificatePem),
      privateKeyPem: String(first.body.PrivateKey),
    };
    expect((await postStatus(lifecycleBody('status', thingName, credentials))).status).toBe(200);
    expect(await sealedKeyOf(thingName)).toBeUndefined();
    // The retry of a lost answer after that is a re-issue, as before.
    const { calls } = await callsDuring(() => post(v2Body(thingName), STOCKHOLM));
    expect(registrations(calls)).toBe(1);
  });

  it.each([['revoke'], ['reset'], ['disable']])('by an operator (%s)', async (command) => {
    const { thingName } = await provisionedInKeyMode(`wipe-${command}`);
    expect((await admin(command, thingName)).code).toBe(0);
    const record = await registryRecord(thingName);
    expect(record?.sealed_key).toBeUndefined();
    expect(record?.sealed_key_until).toBeUndefined();
  });

  it('by the reconciler once expired, and only then', async () => {
    const { thingName: expired } = await provisionedInKeyMode('wipe-expired');
    const { thingName: fresh } = await provisionedInKeyMode('wipe-expired-not');
    await moveRecordClock(expired, 'sealed_key_until', { at: Math.floor(Date.now() / 1000) - 1 });
    const prefix = expired.slice(0, expired.indexOf('-', 'wipe-expired'.length));
    const report = await localReconcile({ thingNamePrefix: prefix });
    expect(report.sealedKeysWiped).toBeGreaterThanOrEqual(1);
    expect(await sealedKeyOf(expired)).toBeUndefined();
    expect(await sealedKeyOf(fresh)).toBeDefined();
    expect(report.failures).toEqual([]);
  });
});
