/**
 * The crash-safety properties of docs/protocol.md, each reproduced on the local stack with its
 * fault: an AWS answer lost (P1), the function killed at every checkpoint (P2), a call that hangs
 * (P3), an undo that can't finish (P4), many requests for one device at once (P7), and no two live
 * certificates even before the reconciler runs (P8: an undo under sustained throttling, a re-issue
 * killed while retiring what it replaced).
 *
 * The devices here live in us-west-2 (Portland), where no other test provisions, so IoT faults
 * can match by region; registry faults match the thing's name in the request body.
 */
import { CHECKPOINTS } from '../../functions/provisioning/checkpoints';
import { addDevice } from '../local/stack';
import { getFaults, type FaultAction } from '../local/aws-proxy';
import { auditDevice, DeviceAudit } from './audit';
import {
  certificateStatus,
  clearFaults,
  localReconcile,
  makeCsr,
  post,
  moveRecordClock,
  registryRecord,
  setFaults,
  stack,
  uniqueThingName,
  v1Body,
  v2Body,
  Answer,
} from './requests';
import { X509Certificate } from 'node:crypto';
import { sha256Hex } from '../../functions/provisioning/certificate-authority';

const REGION = 'us-west-2';
const PORTLAND = {
  'X-Local-Viewer-Latitude': '45.5152',
  'X-Local-Viewer-Longitude': '-122.6784',
  'X-Local-Viewer-Country': 'US',
};

afterEach(clearFaults);

type Mode = 'server-key' | 'csr';

/** A device that retries as firmware does: 5xx, 429 and lost answers, with backoff. */
async function provisionLikeADevice(
  thingName: string,
  mode: Mode,
  options: { attempts?: number } = {},
): Promise<{ final: Answer; answers: Answer[] }> {
  const csr = mode === 'csr' ? await makeCsr(thingName) : undefined;
  const answers: Answer[] = [];
  for (let attempt = 1; attempt <= (options.attempts ?? 8); attempt += 1) {
    const answer = await post(v2Body(thingName, { csrPem: csr?.pem }), PORTLAND).catch((): Answer => ({
      status: 0,
      headers: new Headers(),
      body: {},
    }));
    answers.push(answer);
    if (answer.status === 200 || (answer.status >= 400 && answer.status < 500 && answer.status !== 429)) {
      return { final: answer, answers };
    }
    const retryAfter = Number(answer.headers.get('retry-after') ?? 0);
    await new Promise((resolve) => setTimeout(resolve, Math.max(retryAfter * 1000, 100 * attempt)));
  }
  return { final: answers[answers.length - 1] as Answer, answers };
}

/** Instead of waiting out the 60 s lease, age it: as if the time had passed. */
const expireLease = (thingName: string) =>
  moveRecordClock(thingName, 'claim_expires', { at: Math.floor(Date.now() / 1000) - 1 });

function expectProvisionedOnce(audit: DeviceAudit): void {
  expect(audit.problems).toEqual([]);
  expect(audit).toMatchObject({ provisioned: true, liveCertificates: 1, principals: 1 });
}

/** Registry writes carry the thing name in their body; the mark is the one that sets prov_status. */
const registryCall = (thingName: string, which: 'read' | 'claim' | 'mark') => ({
  service: 'dynamodb',
  target: which === 'read' ? 'DynamoDB_20120810.GetItem' : 'DynamoDB_20120810.UpdateItem',
  body:
    which === 'mark'
      ? `(?=[\\s\\S]*"${thingName}")(?=[\\s\\S]*SET prov_status)`
      : which === 'claim'
        ? `(?=[\\s\\S]*"${thingName}")(?=[\\s\\S]*SET claim_id)`
        : `"${thingName}"`,
});

const CALLS = {
  'registry read': (thingName: string) => registryCall(thingName, 'read'),
  'registry claim': (thingName: string) => registryCall(thingName, 'claim'),
  RegisterCertificate: () => ({ service: 'iot', region: REGION, path: '^/certificate/register' }),
  CreateThing: (thingName: string) => ({
    service: 'iot',
    region: REGION,
    method: 'POST',
    path: `^/things/${thingName}$`,
  }),
  AttachPolicy: () => ({ service: 'iot', region: REGION, path: '^/target-policies/' }),
  AttachThingPrincipal: (thingName: string) => ({
    service: 'iot',
    region: REGION,
    method: 'PUT',
    path: `^/things/${thingName}/principals`,
  }),
  'registry mark': (thingName: string) => registryCall(thingName, 'mark'),
} as const;

const LOST: FaultAction[] = ['drop', 'reset-after', 'reset-before'];

/** The calls that retire a certificate after its description: deactivate, detach from thing and policy. */
const RETIRING_CALLS = {
  UpdateCertificate: () => ({
    service: 'iot',
    region: REGION,
    method: 'PUT',
    path: '^/certificates/[^/?]+\\?newStatus',
  }),
  DetachThingPrincipal: () => ({
    service: 'iot',
    region: REGION,
    method: 'DELETE',
    path: '^/things/[^/]+/principals',
  }),
  DetachPolicy: () => ({ service: 'iot', region: REGION, method: 'POST', path: '^/target-policies/' }),
} as const;

/** The certificates a record names as retiring (`<region>/<certificateId>`). */
async function retiringOn(thingName: string): Promise<string[]> {
  return ((await registryRecord(thingName))?.retiring?.SS ?? []).map((entry) =>
    entry.slice(entry.indexOf('/') + 1),
  );
}

describe('P1: an AWS call applied with its answer lost, or its connection reset', () => {
  const cases = Object.keys(CALLS).flatMap((call) =>
    LOST.map((action, index) => [call, action, index % 2 === 0 ? 'server-key' : 'csr'] as const),
  );
  it.each(cases)('%s, %s (%s): one live certificate, attached, recorded', async (call, action, mode) => {
    const thingName = uniqueThingName(`p1-${action}`);
    await addDevice(stack, thingName);
    await setFaults({ rules: [{ match: CALLS[call as keyof typeof CALLS](thingName), action, times: 1 }] });
    const { final } = await provisionLikeADevice(thingName, mode);
    await clearFaults();
    expect(final.status).toBe(200);
    expect(final.body.region).toBe(REGION);
    expectProvisionedOnce(await auditDevice(thingName, REGION, String(final.body.certificatePem)));
  });
});

describe('P2: the function killed at every checkpoint', () => {
  const cases = CHECKPOINTS.flatMap((point) => [
    [point, 'server-key', 'device retry'] as const,
    [point, 'csr', 'reconciler'] as const,
  ]);
  it.each(cases)('killed when %s (%s), finished by the %s', async (point, mode, finisher) => {
    const thingName = uniqueThingName(`p2-${point}`);
    await addDevice(stack, thingName);
    await setFaults({
      kills: [{ point, thingName, times: 1 }],
      // 'undoing' is reached only by a failing request: make its attach fail (past the SDK's retries).
      rules:
        point === 'undoing'
          ? [{ match: CALLS.AttachThingPrincipal(thingName), error: 'InternalFailure', times: 4 }]
          : [],
    });
    const killed = await provisionLikeADevice(thingName, mode, { attempts: 1 });
    await clearFaults();
    // The edge's answer for a function that died (API Gateway's 500).
    expect(killed.final).toMatchObject({ status: 500, body: { message: 'Internal Server Error' } });
    await expireLease(thingName);
    if (finisher === 'reconciler') {
      const report = await localReconcile({ thingNamePrefix: thingName });
      expect(report.failures).toEqual([]);
    }
    const { final } = await provisionLikeADevice(thingName, mode);
    expect(final.status).toBe(200);
    expectProvisionedOnce(await auditDevice(thingName, REGION, String(final.body.certificatePem)));
    // Whatever the dead function registered and nobody references is swept.
    await localReconcile({ thingNamePrefix: thingName });
    expectProvisionedOnce(await auditDevice(thingName, REGION, String(final.body.certificatePem)));
  });
});

describe('P3 and P4: calls that hang', () => {
  it('a call that hangs 5.5 s times out, the request answers 503 itself within its deadline, and nothing is left', async () => {
    const thingName = uniqueThingName('p3-slow');
    await addDevice(stack, thingName);
    await setFaults({ rules: [{ match: CALLS.CreateThing(thingName), action: 'delay', delayMs: 5_500 }] });
    const answer = await post(v1Body(thingName), PORTLAND);
    await clearFaults();
    // Our own error body (the edge's timeout answer would be {"message":"Internal Server Error"}).
    expect(answer).toMatchObject({ status: 503, body: { status: 'error' } });
    const audit = await auditDevice(thingName, REGION);
    expect(audit).toMatchObject({ provisioned: false, liveCertificates: 0, claimed: false });
    expect((await post(v1Body(thingName), PORTLAND)).status).toBe(200);
  });

  it('when every IoT call hangs, the undo is left recorded and the reconciler finishes it', async () => {
    const thingName = uniqueThingName('p4-undo');
    await addDevice(stack, thingName);
    await setFaults({
      rules: [{ match: { service: 'iot', region: REGION }, action: 'delay', delayMs: 5_500 }],
    });
    const answer = await post(v1Body(thingName), PORTLAND);
    await clearFaults();
    expect(answer.status).toBe(503);
    await expireLease(thingName);
    const report = await localReconcile({ thingNamePrefix: thingName });
    expect(report.failures).toEqual([]);
    const audit = await auditDevice(thingName, REGION);
    expect(audit).toMatchObject({ provisioned: false, liveCertificates: 0, claimed: false });
    const { final } = await provisionLikeADevice(thingName, 'server-key');
    expectProvisionedOnce(await auditDevice(thingName, REGION, String(final.body.certificatePem)));
  });
});

describe('P7: many requests for one device at once', () => {
  it.each(['server-key', 'same CSR'] as const)(
    '6 at once (%s): one certificate; the others 429, or the same certificate',
    async (mode) => {
      const thingName = uniqueThingName('p7');
      await addDevice(stack, thingName);
      const csr = mode === 'same CSR' ? await makeCsr(thingName) : undefined;
      // Warm sandboxes, as a busy Lambda has (the local pool holds at most 8): the six requests
      // then really run at once instead of queueing behind a cold start.
      for (let round = 0; round < 2; round += 1) {
        await Promise.all(
          Array.from({ length: 8 }, () => post(v1Body(uniqueThingName('warm-up')), PORTLAND)),
        );
      }
      // Holding each claim write 2 s lets all six read the record before any claim lands.
      await setFaults({
        rules: [{ match: registryCall(thingName, 'claim'), action: 'delay', delayMs: 2_000 }],
      });
      const answers = await Promise.all(
        Array.from({ length: 6 }, () => post(v2Body(thingName, { csrPem: csr?.pem }), PORTLAND)),
      );
      await clearFaults();
      const statuses = answers.map((answer) => answer.status);
      expect(statuses.every((status) => status === 200 || status === 429 || status === 409)).toBe(true);
      const record = await registryRecord(thingName);
      const live = answers.filter(
        (answer) =>
          answer.status === 200 &&
          sha256Hex(new X509Certificate(String(answer.body.certificatePem)).raw) ===
            record?.certificate_id?.S,
      );
      expect(live.length).toBeGreaterThanOrEqual(1);
      if (mode === 'same CSR') {
        // Every 200 is the same certificate.
        expect(
          new Set(answers.filter((answer) => answer.status === 200).map((a) => a.body.certificatePem)).size,
        ).toBe(1);
      } else {
        // Requests that overlap: one claim wins, the others get 429. A request the local edge had
        // to queue behind a busy sandbox starts after the winner finished: to the service that is a
        // lost answer asked again, so it gets the winner's answer again (answer recovery).
        expect(statuses.filter((status) => status === 200).length).toBeLessThanOrEqual(1 + 3);
      }
      expectProvisionedOnce(await auditDevice(thingName, REGION, String(live[0]?.body.certificatePem)));
    },
  );
});

describe('P8: no two live certificates, even before the reconciler runs', () => {
  it.each([
    ['UpdateCertificate', ['UpdateCertificate']],
    ['UpdateCertificate and both detaches', ['UpdateCertificate', 'DetachThingPrincipal', 'DetachPolicy']],
  ] as const)(
    'an undo under sustained throttling of %s: the lease goes back, the certificate stays named, the retry leaves one',
    async (_label, throttledCalls) => {
      const thingName = uniqueThingName('p8-throttled');
      await addDevice(stack, thingName);
      // The mark fails (throttled past the SDK's retries), and so does every step of the undo that
      // retires the certificate: the request answers while its certificate is still attached.
      await setFaults({
        rules: [
          { match: registryCall(thingName, 'mark'), error: 'ThrottlingException' },
          ...throttledCalls.map((call) => ({ match: RETIRING_CALLS[call](), error: 'ThrottlingException' })),
          // The release too, past the SDK's own retries: the lease is worth one more try.
          {
            match: {
              service: 'dynamodb',
              body: `(?=[\\s\\S]*"${thingName}")(?=[\\s\\S]*ADD retiring :leftovers)`,
            },
            error: 'ThrottlingException',
            times: 3,
          },
        ],
      });
      const failed = await post(v2Body(thingName), PORTLAND);
      const record = await registryRecord(thingName);
      const named = await retiringOn(thingName);
      // The release's throttles were all spent: the sustained rules are all that is left.
      expect((await getFaults(stack.faultsUrl)).rules).toHaveLength(1 + throttledCalls.length);
      await clearFaults();
      expect(failed.status).toBe(429);
      expect(Number(failed.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      // The lease is back at once: the device's retry is not told "in progress" for a minute.
      expect(record?.claim_id).toBeUndefined();
      expect(record?.pending_certificate_id).toBeUndefined();
      if (!(throttledCalls as readonly string[]).includes('DetachThingPrincipal')) {
        // Deactivating was throttled, detaching was not: it is off the thing before the undo gave up.
        expect((await auditDevice(thingName, REGION)).principals).toBe(0);
      }

      const { final } = await provisionLikeADevice(thingName, 'server-key');
      expect(final.status).toBe(200);
      expectProvisionedOnce(await auditDevice(thingName, REGION, String(final.body.certificatePem)));
      // It was named until the retry retired it.
      expect(named).toHaveLength(1);
      expect(await certificateStatus(REGION, named[0] as string)).toBeUndefined();
      expect(await retiringOn(thingName)).toEqual([]);
    },
    40_000,
  );

  it.each(['device retry', 'reconciler'] as const)(
    'a re-issue killed while retiring the certificate it replaced leaves it named; the %s retires it',
    async (finisher) => {
      const thingName = uniqueThingName('p8-reissue');
      await addDevice(stack, thingName);
      const first = await post(v2Body(thingName), PORTLAND);
      expect(first.status).toBe(200);
      const replaced = sha256Hex(new X509Certificate(String(first.body.certificatePem)).raw);

      // A lost answer asked again after its recovery window: re-issued, and killed right after the mark.
      await moveRecordClock(thingName, 'sealed_key_until', { at: Math.floor(Date.now() / 1000) - 1 });
      await setFaults({ kills: [{ point: 'marked', thingName, times: 1 }] });
      const killed = await post(v2Body(thingName), PORTLAND);
      await clearFaults();
      expect(killed.status).toBe(500);
      const named = await retiringOn(thingName);
      expect(await certificateStatus(REGION, replaced)).toBe('ACTIVE');

      if (finisher === 'reconciler') {
        const report = await localReconcile({ thingNamePrefix: thingName });
        expect(report.failures).toEqual([]);
        const record = await registryRecord(thingName);
        expectProvisionedOnce(await auditDevice(thingName, REGION, record?.certificate_pem?.S));
      } else {
        const { final } = await provisionLikeADevice(thingName, 'server-key');
        expect(final.status).toBe(200);
        expectProvisionedOnce(await auditDevice(thingName, REGION, String(final.body.certificatePem)));
      }
      expect(await certificateStatus(REGION, replaced)).toBeUndefined();
      expect(named).toEqual([replaced]);
      expect(await retiringOn(thingName)).toEqual([]);
    },
    40_000,
  );
});
