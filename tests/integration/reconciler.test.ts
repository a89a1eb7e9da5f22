/**
 * The reconciler against the local stack, through the same adapters the function uses: it
 * finishes what dead requests left, and never touches what isn't provably ours.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  CreateThingCommand,
  DeleteCertificateCommand,
  DescribeThingCommand,
  DetachPolicyCommand,
  DetachThingPrincipalCommand,
  ListThingPrincipalsCommand,
  RegisterCertificateCommand,
  RegisterCertificateWithoutCACommand,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import { THING_MARKER } from '../../functions/provisioning/iot';
import { addDevice } from '../local/stack';
import { testCa } from '../support/ca';
import {
  certificateStatus,
  iotIn,
  issueFromLocalCa,
  localReconcile,
  PLACES,
  post,
  registryRecord,
  stack,
  uniqueThingName,
  v1Body,
} from './requests';

const REGION = 'ap-south-1';
const caPem = () => readFileSync(stack.deviceCaCertificate, 'utf8');

async function registerOurs(thingName: string) {
  const certificate = await issueFromLocalCa(thingName);
  await iotIn(REGION).send(
    new RegisterCertificateCommand({
      certificatePem: certificate.pem,
      caCertificatePem: caPem(),
      status: 'ACTIVE',
    }),
  );
  return certificate;
}

describe('the reconciler', () => {
  it('quarantines certificates of our CA that no record references, and leaves other issuers alone', async () => {
    const prefix = uniqueThingName('orphan');
    const orphan = await registerOurs(`${prefix}-a`);
    // A certificate from elsewhere (self-signed, registered without a CA): never ours to touch.
    const foreignPem = (await testCa(`${prefix} someone else`)).certificate.pem;
    const foreign = await iotIn(REGION).send(
      new RegisterCertificateWithoutCACommand({ certificatePem: foreignPem, status: 'ACTIVE' }),
    );

    const report = await localReconcile({ thingNamePrefix: prefix });
    expect(report.failures).toEqual([]);
    // Deactivated, not deleted: deleted after the quarantine period (tests/integration/quarantine.test.ts).
    expect(await certificateStatus(REGION, orphan.id)).toBe('INACTIVE');
    expect(await certificateStatus(REGION, foreign.certificateId ?? '')).toBe('ACTIVE');
  });

  it('releases the stale claim of a dead request and retires the certificate it intended', async () => {
    const thingName = uniqueThingName('stale');
    const intended = await registerOurs(thingName);
    const past = Math.floor(Date.now() / 1000) - 30;
    await addDevice(stack, thingName, {
      claim_id: { S: 'dead-request' },
      claim_expires: { N: String(past) },
      pending_certificate_id: { S: intended.id },
      pending_certificate_pem: { S: intended.pem },
      pending_region: { S: REGION },
      pending_key_sha256: { S: 'f'.repeat(64) },
      pending_key_mode: { S: 'server' },
      pending_since: { N: String(past - 60) },
    });

    await localReconcile({ thingNamePrefix: thingName });
    const record = await registryRecord(thingName);
    expect(record?.claim_id).toBeUndefined();
    expect(record?.pending_certificate_id).toBeUndefined();
    expect(record?.prov_status?.S).toBe('unprovisioned');
    expect(await certificateStatus(REGION, intended.id)).toBeUndefined();

    const answer = await post(v1Body(thingName), PLACES.mumbai);
    expect(answer).toMatchObject({ status: 200, body: { region: REGION } });
  });

  it('leaves a live claim and the live certificate of a provisioned device alone', async () => {
    const thingName = uniqueThingName('alive');
    await addDevice(stack, thingName);
    const provisioned = await post(v1Body(thingName), PLACES.mumbai);
    expect(provisioned.status).toBe(200);
    const certificateId = (await registryRecord(thingName))?.certificate_id?.S ?? '';

    const report = await localReconcile({ thingNamePrefix: thingName });
    expect(report).toMatchObject({ recordsReset: 0, staleClaimsReleased: 0 });
    expect(await certificateStatus(REGION, certificateId)).toBe('ACTIVE');
  });

  it('puts a record whose certificate is gone back to unprovisioned, so the device can provision again', async () => {
    const thingName = uniqueThingName('gone');
    await addDevice(stack, thingName);
    const first = await post(v1Body(thingName), PLACES.mumbai);
    expect(first.status).toBe(200);
    const record = await registryRecord(thingName);
    const certificateId = record?.certificate_id?.S ?? '';
    const certificateArn = record?.certificate_arn?.S ?? '';
    // An operator deletes the certificate by hand.
    const iot = iotIn(REGION);
    await iot.send(new UpdateCertificateCommand({ certificateId, newStatus: 'INACTIVE' }));
    await iot.send(new DetachThingPrincipalCommand({ thingName, principal: certificateArn }));
    await iot.send(new DetachPolicyCommand({ policyName: stack.iotPolicyName, target: certificateArn }));
    await iot.send(new DeleteCertificateCommand({ certificateId }));

    const report = await localReconcile({ thingNamePrefix: thingName });
    expect(report.recordsReset).toBe(1);
    expect((await registryRecord(thingName))?.prov_status?.S).toBe('unprovisioned');

    const again = await post(v1Body(thingName), PLACES.mumbai);
    expect(again.status).toBe(200);
    const principals = await iot.send(new ListThingPrincipalsCommand({ thingName }));
    expect(principals.principals).toHaveLength(1);
    expect(new X509Certificate(String(again.body.certificatePem)).subject).toBe(`CN=${thingName}`);
  });

  it('deletes an empty thing of ours where no record places its device, and nothing else', async () => {
    const prefix = uniqueThingName('stray');
    const lives = `${prefix}-lives`;
    await addDevice(stack, lives);
    expect((await post(v1Body(lives), PLACES.mumbai)).status).toBe(200);
    // A CreateThing applied after its answer was lost, once a move had deleted the thing: ours, empty.
    const elsewhere = 'eu-north-1';
    const ours = { attributePayload: { attributes: { [THING_MARKER.name]: THING_MARKER.value } } };
    await iotIn(elsewhere).send(new CreateThingCommand({ thingName: lives, ...ours }));
    // Someone else's empty thing under a name of ours, and an empty thing of ours with no record at all.
    await iotIn(elsewhere).send(new CreateThingCommand({ thingName: `${prefix}-foreign` }));
    await iotIn(elsewhere).send(new CreateThingCommand({ thingName: `${prefix}-unknown`, ...ours }));
    // An empty thing of ours in the region its record names (a revoked device keeps its thing).
    const revoked = `${prefix}-revoked`;
    await addDevice(stack, revoked, { prov_status: { S: 'revoked' }, aws_region: { S: REGION } });
    await iotIn(REGION).send(new CreateThingCommand({ thingName: revoked, ...ours }));

    const report = await localReconcile({ thingNamePrefix: prefix });
    expect(report.failures).toEqual([]);
    expect(report.strayThingsDeleted).toBe(2);
    const exists = (region: string, thingName: string) =>
      iotIn(region)
        .send(new DescribeThingCommand({ thingName }))
        .then(
          () => true,
          () => false,
        );
    expect(await exists(elsewhere, lives)).toBe(false);
    expect(await exists(elsewhere, `${prefix}-unknown`)).toBe(false);
    expect(await exists(elsewhere, `${prefix}-foreign`)).toBe(true);
    expect(await exists(REGION, lives)).toBe(true);
    expect(await exists(REGION, revoked)).toBe(true);
  });
});
