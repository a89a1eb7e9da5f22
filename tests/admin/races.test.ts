/**
 * Operators racing devices and the reconciler (issue 18, item 3): every operator change, every
 * reconciler write and every device request on one record is decided on the record, so whatever
 * the interleaving, what the record names is what is live. Each interleaving is produced on the
 * local stack: a kill checkpoint, a call held by the fault proxy, or a step held in the adapter.
 */
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import type { DeviceIot } from '../../functions/provisioning/iot';
import type { Registry } from '../../functions/provisioning/registry';
import { move, OperatorDependencies, reset } from '../../functions/admin/operations';
import { loadReconcilerConfig } from '../../functions/reconciler/config';
import { reconcilerDependencies } from '../../functions/reconciler/wiring';
import { seedAgedDevice } from '../local/aged-device';
import { addDevice } from '../local/stack';
import { admin } from '../support/admin';
import { certificatesOfOurCa } from '../integration/audit';
import {
  certificateStatus,
  clearFaults,
  lifecycleBody,
  localReconcile,
  makeCsr,
  moveRecordClock,
  PLACES,
  post,
  postRenew,
  registryClient,
  registryRecord,
  setFaults,
  stack,
  thingExists,
  uniqueThingName,
  useLocalAws,
  v1Body,
} from '../integration/requests';

const MUMBAI = 'ap-south-1';
const TARGET = 'eu-central-1';

afterEach(clearFaults);

/** The function's own adapters against the local stack, as the reconciler and gdp-admin get them. */
function adapters() {
  useLocalAws();
  return reconcilerDependencies(loadReconcilerConfig({ ...process.env, ...stack.functionEnvironment }));
}

/** gdp-admin's operations, called directly so two can run at once in this process. */
function operator(): OperatorDependencies {
  const { registry, iot } = adapters();
  return {
    registry,
    iot,
    regions: stack.regions,
    caller: async () => 'arn:aws:sts::123456789012:assumed-role/test/races',
    waitSeconds: 5,
    log: () => undefined,
  };
}

async function provisioned(prefix: string): Promise<{ thingName: string; certificateId: string }> {
  const thingName = uniqueThingName(prefix);
  await addDevice(stack, thingName);
  expect((await post(v1Body(thingName), PLACES.mumbai)).status).toBe(200);
  return { thingName, certificateId: (await registryRecord(thingName))?.certificate_id?.S ?? '' };
}

/** Our CA's ACTIVE certificates issued to the thing, in a region. */
async function liveIn(region: string, thingName: string): Promise<string[]> {
  return (await certificatesOfOurCa(region))
    .filter((certificate) => certificate.commonName === thingName && certificate.status === 'ACTIVE')
    .map((certificate) => certificate.certificateId);
}

/** The next RegisterCertificate in `region` is held for 2 s (the fault proxy): a step to race. */
function holdNextRegistration(region: string): Promise<void> {
  return setFaults({
    rules: [
      {
        match: { service: 'iot', region, path: '^/certificate/register' },
        action: 'delay',
        delayMs: 2_000,
        times: 1,
      },
    ],
  });
}

async function until(condition: () => Promise<boolean>, what: string): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt += 1) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('revoke covers every certificate the record references', () => {
  it('after a renewal killed when attached: the live one and the intent attached to the thing', async () => {
    const device = await seedAgedDevice(stack, {
      thingName: uniqueThingName('race-revoke'),
      region: 'eu-west-2',
      ageDays: 300,
      validityDays: 365,
    });
    const csr = await makeCsr(device.thingName);
    await setFaults({ kills: [{ point: 'attached', thingName: device.thingName, times: 1 }] });
    const killed = await postRenew(lifecycleBody('renew', device.thingName, device, { csrPem: csr.pem }));
    await clearFaults();
    expect(killed.status).toBe(500);
    const intent = (await registryRecord(device.thingName))?.pending_certificate_id?.S ?? '';
    expect(await certificateStatus(device.region, intent)).toBe('ACTIVE');
    // The dead request's lease runs out (moved on the record).
    await moveRecordClock(device.thingName, 'claim_expires', { at: Math.floor(Date.now() / 1000) - 1 });

    expect((await admin('revoke', device.thingName)).code).toBe(0);
    expect(await liveIn(device.region, device.thingName)).toEqual([]);
    const record = await registryRecord(device.thingName);
    expect(record?.prov_status?.S).toBe('revoked');
    // The dead request's claim went with the change: its mark can no longer land.
    expect(record?.claim_id).toBeUndefined();
    const retry = await postRenew(lifecycleBody('renew', device.thingName, device, { csrPem: csr.pem }));
    expect(retry.status).toBe(403);
    expect(await liveIn(device.region, device.thingName)).toEqual([]);
  }, 40_000);

  it("during a move: both regions' copies", async () => {
    const { thingName, certificateId } = await provisioned('race-revmove');
    expect((await admin('move', thingName, '--to', TARGET)).code).toBe(0);
    expect(await certificateStatus(TARGET, certificateId)).toBe('ACTIVE');
    expect((await admin('revoke', thingName)).code).toBe(0);
    expect(await certificateStatus(MUMBAI, certificateId)).toBe('INACTIVE');
    expect(await certificateStatus(TARGET, certificateId)).toBe('INACTIVE');
  });
});

describe('moves racing devices', () => {
  it('a re-provisioning while a move is held at RegisterCertificate gets 409 with Retry-After; the move completes', async () => {
    const { thingName, certificateId } = await provisioned('race-reprov');
    await holdNextRegistration(TARGET);
    const moving = move(operator(), thingName, { to: TARGET });
    await until(
      async () => (await registryRecord(thingName))?.move_to_region?.S === TARGET,
      'the move intent',
    );
    const refused = await post(v1Body(thingName), PLACES.mumbai);
    expect(refused.status).toBe(409);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(refused.body.message).toContain('moving');
    await moving;

    const record = await registryRecord(thingName);
    expect(record).toMatchObject({ aws_region: { S: TARGET }, certificate_id: { S: certificateId } });
    expect(await liveIn(TARGET, thingName)).toEqual([certificateId]);
  }, 30_000);

  it('a move the record outran (a reset while it registered) undoes its target-region registration', async () => {
    const { thingName, certificateId } = await provisioned('race-abort');
    await holdNextRegistration(TARGET);
    const operations = operator();
    const moving = move(operations, thingName, { to: TARGET }).then(
      () => 'moved',
      (error: Error) => error.message,
    );
    await until(
      async () => (await registryRecord(thingName))?.move_to_region?.S === TARGET,
      'the move intent',
    );
    await reset(operations, thingName);
    expect(await moving).toContain('changed during the move');

    expect(await certificateStatus(TARGET, certificateId)).toBeUndefined();
    expect(await thingExists(TARGET, thingName)).toBe(false);
    expect(await certificateStatus(MUMBAI, certificateId)).toBeUndefined();
    expect((await registryRecord(thingName))?.prov_status?.S).toBe('unprovisioned');
  }, 30_000);
});

describe('moves leave no empty things behind', () => {
  it('a move during a renewal held mid-flight, then --finish: one live certificate, no stray thing', async () => {
    const device = await seedAgedDevice(stack, {
      thingName: uniqueThingName('race-renewmove'),
      region: 'eu-west-2',
      ageDays: 300,
      validityDays: 365,
    });
    await holdNextRegistration(device.region);
    const renewal = postRenew(lifecycleBody('renew', device.thingName, device));
    await until(
      async () => (await registryRecord(device.thingName))?.claim_id !== undefined,
      'the renewal claim',
    );
    // The move waits for the renewal's claim, then moves the renewed certificate.
    await move(operator(), device.thingName, { to: TARGET });
    const renewed = await renewal;
    expect(renewed.status).toBe(200);
    expect(await registryRecord(device.thingName)).toMatchObject({
      aws_region: { S: TARGET },
      certificate_id: { S: renewed.body.certificateId },
    });

    expect((await admin('move', device.thingName, '--finish')).code).toBe(4);
    await moveRecordClock(device.thingName, 'previous_retire_after', {
      at: Math.floor(Date.now() / 1000) - 1,
    });
    await localReconcile({ thingNamePrefix: device.thingName });
    expect((await admin('move', device.thingName, '--finish')).code).toBe(0);
    await localReconcile({ thingNamePrefix: device.thingName });

    expect(await thingExists(device.region, device.thingName)).toBe(false);
    expect(await liveIn(device.region, device.thingName)).toEqual([]);
    expect(await liveIn(TARGET, device.thingName)).toEqual([renewed.body.certificateId]);
  }, 40_000);

  it("--finish during a renewal's grace period is refused; once it ends, the old region is left clean", async () => {
    const device = await seedAgedDevice(stack, {
      thingName: uniqueThingName('race-grace'),
      region: 'eu-west-2',
      ageDays: 300,
      validityDays: 365,
    });
    const renewed = await postRenew(lifecycleBody('renew', device.thingName, device));
    expect(renewed.status).toBe(200);
    expect((await admin('move', device.thingName, '--to', TARGET)).code).toBe(0);

    const early = await admin('move', device.thingName, '--finish');
    expect(early.code).toBe(4);
    expect(early.err).toContain('has not proven its new certificate');
    expect(await thingExists(device.region, device.thingName)).toBe(true);

    // The grace period ends (the record's clock) and the reconciler retires the previous one.
    await moveRecordClock(device.thingName, 'previous_retire_after', {
      at: Math.floor(Date.now() / 1000) - 1,
    });
    await localReconcile({ thingNamePrefix: device.thingName });
    expect((await admin('move', device.thingName, '--finish')).code).toBe(0);
    expect(await thingExists(device.region, device.thingName)).toBe(false);
    expect(await liveIn(device.region, device.thingName)).toEqual([]);
    expect(await liveIn(TARGET, device.thingName)).toEqual([renewed.body.certificateId]);
  }, 40_000);

  it('a device that re-provisions between the move and --finish: --finish deletes the thing nobody uses', async () => {
    const { thingName } = await provisioned('race-between');
    expect((await admin('move', thingName, '--to', TARGET)).code).toBe(0);
    const again = await post(v1Body(thingName), PLACES.mumbai);
    expect(again.status).toBe(200);
    // Re-issued where the record says it lives now; the move's old region holds nothing of it.
    const home = again.body.region as string;
    const left = home === TARGET ? MUMBAI : TARGET;
    expect(await liveIn(left, thingName)).toEqual([]);

    const finished = await admin('move', thingName, '--finish');
    expect(finished.code).toBe(0);
    expect(finished.out).toContain(`deleted empty thing ${thingName} in ${left}`);
    expect(await thingExists(left, thingName)).toBe(false);
    expect(await thingExists(home, thingName)).toBe(true);
    expect(await liveIn(home, thingName)).toHaveLength(1);
  }, 30_000);
});

describe('the reconciler racing a move', () => {
  it('a device moved (--to and --finish) while the reconciler walks the regions keeps its record', async () => {
    const { thingName, certificateId } = await provisioned('race-recmove');
    const base = adapters();
    let scanned!: () => void;
    const scanDone = new Promise<void>((resolve) => (scanned = resolve));
    // The move runs between the scan and the listing of the device's old region.
    const movedAway = scanDone.then(async () => {
      expect((await admin('move', thingName, '--to', TARGET)).code).toBe(0);
      expect((await admin('move', thingName, '--finish')).code).toBe(0);
    });
    const registry: Registry = {
      ...base.registry,
      async *scan(signal, filter) {
        yield* base.registry.scan(signal, filter);
        scanned();
      },
    };
    const iot: DeviceIot = {
      ...base.iot,
      async *listCertificatesOfOurCa(region, signal) {
        if (region === MUMBAI) await movedAway;
        yield* base.iot.listCertificatesOfOurCa(region, signal);
      },
    };

    const report = await localReconcile({ registry, iot, thingNamePrefix: thingName });
    expect(report.recordsReset).toBe(0);
    const record = await registryRecord(thingName);
    expect(record).toMatchObject({
      prov_status: { S: 'provisioned' },
      aws_region: { S: TARGET },
      certificate_id: { S: certificateId },
    });
    expect(await certificateStatus(TARGET, certificateId)).toBe('ACTIVE');
  }, 30_000);

  it('a reconciler write lands only on the record it judged (version and region)', async () => {
    const { thingName } = await provisioned('race-version');
    const { registry } = adapters();
    const judged = await registry.read(thingName);
    if (!judged) throw new Error('no record');
    // Anything written since (here a move's switch, by hand) makes the reset miss.
    await registryClient().send(
      new UpdateItemCommand({
        TableName: stack.tableName,
        Key: { thing_name: { S: thingName } },
        UpdateExpression: 'SET aws_region = :to, record_version = record_version + :one',
        ExpressionAttributeValues: { ':to': { S: TARGET }, ':one': { N: '1' } },
      }),
    );
    expect(await registry.resetMissingCertificate(judged)).toBe(false);
    expect((await registryRecord(thingName))?.prov_status?.S).toBe('provisioned');
  });
});
