/**
 * The reconciler can't destroy the fleet (issue 15, finding 1): orphans are quarantined before
 * they are deleted, a run that would take too much does nothing, and an operator can see and
 * restore the quarantine. Against the local stack, through the function's own adapters.
 */
import { readFileSync } from 'node:fs';
import {
  AttributeValue,
  CreateTableCommand,
  DeleteItemCommand,
  DeleteTableCommand,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import {
  ListCertificatesByCACommand,
  ListThingPrincipalsCommand,
  RegisterCertificateCommand,
} from '@aws-sdk/client-iot';
import { awsDeviceIot } from '../../functions/provisioning/iot';
import { dynamoRegistry } from '../../functions/provisioning/registry';
import { main as reconcileCli } from '../../functions/reconciler/cli';
import { admin } from '../support/admin';
import { addDevice } from '../local/stack';
import {
  certificateStatus,
  iotIn,
  issueFromLocalCa,
  localReconcile,
  PLACES,
  post,
  registryClient,
  registryRecord,
  stack,
  uniqueThingName,
  useLocalAws,
  v1Body,
} from './requests';

const REGION = 'ap-south-1';
const DAY_MS = 86_400_000;

/** A provisioned device, and its record as it was (to put back: a restored table). */
async function provisioned(prefix: string) {
  const thingName = uniqueThingName(prefix);
  await addDevice(stack, thingName);
  expect((await post(v1Body(thingName), PLACES.mumbai)).status).toBe(200);
  const item = (await registryRecord(thingName)) as Record<string, AttributeValue>;
  return { thingName, item, certificateId: item.certificate_id?.S ?? '' };
}

/** The record is lost (an emptied table, for one device). */
const forget = (thingName: string) =>
  registryClient().send(
    new DeleteItemCommand({ TableName: stack.tableName, Key: { thing_name: { S: thingName } } }),
  );

/** Every certificate of our CA, every region: region/id → status. */
async function statusesOfOurCa(): Promise<Map<string, string>> {
  const statuses = new Map<string, string>();
  for (const region of stack.regions) {
    let marker: string | undefined;
    do {
      const page = await iotIn(region).send(
        new ListCertificatesByCACommand({
          caCertificateId: stack.deviceCaCertificateId,
          marker,
          pageSize: 250,
        }),
      );
      for (const certificate of page.certificates ?? [])
        statuses.set(`${region}/${certificate.certificateId}`, certificate.status ?? '');
      marker = page.nextMarker;
    } while (marker);
  }
  return statuses;
}

/** A registry table of its own, as a point-in-time restore or a mistyped TABLE_NAME gives. */
async function privateTable(items: Record<string, AttributeValue>[] = []) {
  const tableName = `gdp-test-${uniqueThingName('table')}`;
  await registryClient().send(
    new CreateTableCommand({
      TableName: tableName,
      AttributeDefinitions: [{ AttributeName: 'thing_name', AttributeType: 'S' }],
      KeySchema: [{ AttributeName: 'thing_name', KeyType: 'HASH' }],
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
  for (const item of items)
    await registryClient().send(new PutItemCommand({ TableName: tableName, Item: item }));
  useLocalAws();
  return {
    registry: dynamoRegistry({ region: stack.homeRegion, tableName }),
    drop: () => registryClient().send(new DeleteTableCommand({ TableName: tableName })),
  };
}

const metricsOf = () => {
  const emitted: string[] = [];
  return { emitted, count: (metric: string, value: number) => emitted.push(`${metric}=${value}`) };
};

describe('the quarantine', () => {
  it('deactivates an orphan and keeps it attached; deletes it only after the quarantine period', async () => {
    const device = await provisioned('qr-orphan');
    await forget(device.thingName);

    const first = await localReconcile({ thingNamePrefix: device.thingName });
    expect(first.aborted).toBe(false);
    expect(await certificateStatus(REGION, device.certificateId)).toBe('INACTIVE');
    const principals = await iotIn(REGION).send(
      new ListThingPrincipalsCommand({ thingName: device.thingName }),
    );
    expect(principals.principals?.[0]).toMatch(new RegExp(`/${device.certificateId}$`));

    // Six days later it is still in quarantine (the reconciler's clock moves, not AWS IoT's).
    await localReconcile({ thingNamePrefix: device.thingName, clock: () => Date.now() + 6 * DAY_MS });
    expect(await certificateStatus(REGION, device.certificateId)).toBe('INACTIVE');

    // Eight days later it is deleted. Every quarantined certificate of the suite is due by then:
    // the operator's confirmation keeps the breaker out of this test.
    const later = await localReconcile({
      thingNamePrefix: device.thingName,
      clock: () => Date.now() + 8 * DAY_MS,
      allowLarge: true,
    });
    expect(later.quarantinedCertificatesDeleted).toBeGreaterThanOrEqual(1);
    expect(await certificateStatus(REGION, device.certificateId)).toBeUndefined();
  });

  it('never deletes a quarantined certificate that was restored, or that a record names again', async () => {
    const restored = await provisioned('qr-restored');
    const renamed = await provisioned('qr-renamed');
    await forget(restored.thingName);
    await forget(renamed.thingName);
    await localReconcile({ thingNamePrefix: 'qr-' });
    expect(await certificateStatus(REGION, restored.certificateId)).toBe('INACTIVE');

    // The operator restores one from the quarantine, and the table gets the other record back.
    expect((await admin('quarantine', 'restore', restored.certificateId, '--region', REGION)).code).toBe(0);
    await registryClient().send(new PutItemCommand({ TableName: stack.tableName, Item: renamed.item }));
    await registryClient().send(new PutItemCommand({ TableName: stack.tableName, Item: restored.item }));

    await localReconcile({ thingNamePrefix: 'qr-', clock: () => Date.now() + 8 * DAY_MS, allowLarge: true });
    expect(await certificateStatus(REGION, restored.certificateId)).toBe('ACTIVE');
    // Named again but INACTIVE: a record now holds it, so it is the operator's (reported, kept).
    expect(await certificateStatus(REGION, renamed.certificateId)).toBe('INACTIVE');
  });

  it('gdp-admin quarantine lists it with its thing; restore asks, audits and reactivates it', async () => {
    const device = await provisioned('qr-list');
    await forget(device.thingName);
    await localReconcile({ thingNamePrefix: device.thingName });

    const listed = await admin('quarantine', '--json');
    expect(listed.code).toBe(0);
    const entry = (JSON.parse(listed.out) as { certificateId: string }[]).find(
      (candidate) => candidate.certificateId === device.certificateId,
    );
    expect(entry).toMatchObject({ region: REGION, things: [device.thingName] });
    expect(Date.parse((entry as { since: string } & typeof entry).since)).toBeGreaterThan(
      Date.now() - 60_000,
    );

    // The table comes back (a restore), then the certificate.
    await registryClient().send(new PutItemCommand({ TableName: stack.tableName, Item: device.item }));
    const restore = await admin('quarantine', 'restore', device.certificateId);
    expect(restore.code).toBe(0);
    expect(restore.out).toContain(`reactivated certificate ${device.certificateId} in ${REGION}`);
    expect(await certificateStatus(REGION, device.certificateId)).toBe('ACTIVE');
    const history = (await registryRecord(device.thingName))?.history?.L ?? [];
    expect(JSON.stringify(history.at(-1))).toContain(`quarantine restore ${device.certificateId}`);

    // A certificate a record names was deactivated by an operator: not the quarantine's to restore.
    expect((await admin('revoke', device.thingName)).code).toBe(0);
    expect((await admin('quarantine', 'restore', device.certificateId)).code).toBe(4);
    expect(await certificateStatus(REGION, device.certificateId)).toBe('INACTIVE');
    expect((await admin('quarantine', 'restore', 'not-a-certificate')).code).toBe(2);
    expect((await admin('quarantine', 'restore', 'a'.repeat(64))).code).toBe(3);
  });
});

describe('the circuit breaker', () => {
  it('an empty table with live certificates: no certificate changes status, ReconcilerAborted', async () => {
    // Live certificates of our CA, more than the breaker's minimum (25) even on a fresh stack.
    const caPem = readFileSync(stack.deviceCaCertificate, 'utf8');
    const extra: string[] = [];
    for (let index = 0; index < 26; index += 1) {
      const certificate = await issueFromLocalCa(uniqueThingName('qr-live'));
      await iotIn(REGION).send(
        new RegisterCertificateCommand({
          certificatePem: certificate.pem,
          caCertificatePem: caPem,
          status: 'ACTIVE',
        }),
      );
      extra.push(certificate.id);
    }
    const table = await privateTable();
    const before = await statusesOfOurCa();
    const metrics = metricsOf();
    try {
      const report = await localReconcile({ registry: table.registry, count: metrics.count });
      expect(report).toMatchObject({
        aborted: true,
        orphanCertificatesQuarantined: 0,
        quarantinedCertificatesDeleted: 0,
        recordsScanned: 0,
      });
      expect(report.breaker.reasons.join()).toContain('referenced by no record');
      expect(metrics.emitted).toEqual(['ReconcilerAborted=1', 'ReconcilerRun=1']);
      expect(await statusesOfOurCa()).toEqual(before);
    } finally {
      await table.drop();
      // Left ACTIVE and unreferenced, they would stop every later run of the suite.
      const iot = awsDeviceIot({
        policyName: stack.iotPolicyName,
        caCertificatePem: caPem,
        caCertificateId: stack.deviceCaCertificateId,
      });
      for (const id of extra) await iot.retireCertificate(REGION, id);
    }
  });

  it('a certificate_id written with the wrong type stops the run, naming the record', async () => {
    const device = await provisioned('qr-typed');
    const wrong = { ...device.item, certificate_id: { B: Buffer.from(device.certificateId) } };
    const table = await privateTable([wrong]);
    try {
      const report = await localReconcile({ registry: table.registry, count: metricsOf().count });
      expect(report.aborted).toBe(true);
      expect(report.breaker.reasons.join()).toContain(`${device.thingName}: certificate_id`);
      expect(await certificateStatus(REGION, device.certificateId)).toBe('ACTIVE');
    } finally {
      await table.drop();
    }
  });

  it('gdp-admin reconcile / make reconcile: a large run exits 7 / 3 and changes nothing; --allow-large confirms it', async () => {
    const device = await provisioned('qr-large');
    await forget(device.thingName);
    const saved = { ...process.env };
    // A breaker of N = 0, X = 0: any destructive step is "large".
    process.env.RECONCILE_BREAKER_MINIMUM = '0';
    process.env.RECONCILE_BREAKER_PERCENT = '0';
    try {
      const stopped = await admin('reconcile', '--grace', '0', '--json');
      expect(stopped.code).toBe(7);
      expect(JSON.parse(stopped.out)).toMatchObject({ aborted: true, orphanCertificatesQuarantined: 0 });
      expect(stopped.err).toContain('--allow-large');
      expect(await certificateStatus(REGION, device.certificateId)).toBe('ACTIVE');

      // `make reconcile` says the same with its own exit code.
      const quiet = [jest.spyOn(console, 'log'), jest.spyOn(console, 'error')].map((spy) =>
        spy.mockImplementation(() => undefined),
      );
      try {
        expect(await reconcileCli(['node', 'reconcile', '--local', '--grace', '0', '--json'])).toBe(3);
      } finally {
        for (const spy of quiet) spy.mockRestore();
      }
      expect(await certificateStatus(REGION, device.certificateId)).toBe('ACTIVE');

      const confirmed = await admin('reconcile', '--grace', '0', '--allow-large', '--json');
      expect(confirmed.code).toBe(0);
      expect(JSON.parse(confirmed.out)).toMatchObject({ aborted: false });
      expect(await certificateStatus(REGION, device.certificateId)).toBe('INACTIVE');
    } finally {
      process.env = saved;
    }
  });
});
