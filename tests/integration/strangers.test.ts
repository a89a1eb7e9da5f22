/**
 * P5 and P6 of the crash-safety issue: callers who cannot sign write nothing and learn nothing
 * (on every route: provisioning, status and renewal),
 * and bad input (CSRs, records, things that exist already) gets a clear 4xx, never a 500, and
 * leaves nothing behind.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import {
  AttachThingPrincipalCommand,
  CreateThingCommand,
  DescribeThingCommand,
  ListThingPrincipalsCommand,
  RegisterCertificateWithoutCACommand,
} from '@aws-sdk/client-iot';
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { addDevice } from '../local/stack';
import { testCa } from '../support/ca';
import { issueDeviceCertificate } from '../../functions/provisioning/certificate-authority';
import {
  Answer,
  clearFaults,
  iotIn,
  lifecycleBody,
  makeCsr,
  PLACES,
  post,
  postRenew,
  postStatus,
  registryClient,
  registryRecord,
  setFaults,
  stack,
  thingExists,
  uniqueThingName,
  v1Body,
  v2Body,
} from './requests';

const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

afterEach(clearFaults);

describe('a caller who cannot sign', () => {
  it('writes nothing, and gets the same answer for unknown, unprovisioned, provisioned and disabled devices', async () => {
    const unknown = uniqueThingName('nobody');
    const fresh = uniqueThingName('fresh');
    const done = uniqueThingName('done');
    const disabled = uniqueThingName('disabled');
    await addDevice(stack, fresh);
    await addDevice(stack, done);
    await addDevice(stack, disabled, { prov_status: { S: 'disabled' } }, true);
    expect((await post(v1Body(done), PLACES.tokyo)).status).toBe(200);
    const before = await Promise.all([unknown, fresh, done, disabled].map(registryRecord));

    const answers = [];
    for (const thingName of [unknown, fresh, done, disabled]) {
      answers.push(await post(v1Body(thingName, {}, stranger), PLACES.tokyo));
      answers.push(await post(v2Body(thingName, { key: stranger }), PLACES.tokyo));
    }
    const v1Answers = answers.filter((_answer, index) => index % 2 === 0);
    const v2Answers = answers.filter((_answer, index) => index % 2 === 1);
    for (const answer of v1Answers) {
      expect(answer).toMatchObject({
        status: 401,
        body: { status: 'error', message: 'thing-name-sig does not verify' },
      });
    }
    for (const answer of v2Answers) {
      expect(answer).toMatchObject({
        status: 401,
        body: { status: 'error', message: 'signature does not verify' },
      });
    }
    const after = await Promise.all([unknown, fresh, done, disabled].map(registryRecord));
    expect(after).toEqual(before);
  });

  it('gets the same 401 from /device-status and /device-renew whatever the record says, and writes nothing', async () => {
    const states = {
      unknown: uniqueThingName('lc-nobody'),
      fresh: uniqueThingName('lc-fresh'),
      done: uniqueThingName('lc-done'),
      disabled: uniqueThingName('lc-disabled'),
      revoked: uniqueThingName('lc-revoked'),
    };
    await addDevice(stack, states.fresh);
    await addDevice(stack, states.done);
    await addDevice(stack, states.disabled, { prov_status: { S: 'disabled' } }, true);
    await addDevice(stack, states.revoked, { prov_status: { S: 'revoked' } }, true);
    const provisioned = await post(v1Body(states.done), PLACES.tokyo);
    expect(provisioned.status).toBe(200);
    const names = Object.values(states);
    const before = await Promise.all(names.map(registryRecord));

    // A certificate for the thing name from the caller's own CA, correctly signed with its key.
    const ownCa = await testCa('a stranger');
    const ownKey = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const answers: Answer[] = [];
    for (const thingName of names) {
      const certificate = await issueDeviceCertificate(ownCa.certificate, ownCa.signer, {
        thingName,
        publicKeySpki: ownKey.publicKey.export({ type: 'spki', format: 'der' }),
        validityDays: 30,
      });
      const credentials = {
        certificatePem: certificate.pem,
        privateKeyPem: ownKey.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      };
      answers.push(await postStatus(lifecycleBody('status', thingName, credentials)));
      answers.push(await postRenew(lifecycleBody('renew', thingName, credentials)));
    }
    for (const answer of answers) {
      expect(answer).toMatchObject({
        status: 401,
        body: {
          status: 'error',
          message: expect.stringMatching(/^certificate was not issued by this service for /),
        },
      });
    }
    // The device's real certificate, signed with another key.
    const borrowed = {
      certificatePem: String(provisioned.body.certificatePem),
      privateKeyPem: ownKey.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    };
    for (const answer of [
      await postStatus(lifecycleBody('status', states.done, borrowed)),
      await postRenew(lifecycleBody('renew', states.done, borrowed)),
    ]) {
      expect(answer).toMatchObject({
        status: 401,
        body: { message: 'signature does not verify with the certificate sent' },
      });
    }
    expect(await Promise.all(names.map(registryRecord))).toEqual(before);
  });

  it('holds no lease: the real device provisions right after a flood of forged requests', async () => {
    const thingName = uniqueThingName('flooded');
    await addDevice(stack, thingName);
    await Promise.all(
      Array.from({ length: 20 }, () => post(v2Body(thingName, { key: stranger }), PLACES.tokyo)),
    );
    const record = await registryRecord(thingName);
    expect(record?.claim_id).toBeUndefined();
    expect(record?.recent_nonces).toBeUndefined();
    expect((await post(v2Body(thingName), PLACES.tokyo)).status).toBe(200);
  });
});

describe('the CSR', () => {
  it('must be exactly one CERTIFICATE REQUEST block: a decoy block before a second CSR gets 400 and nothing', async () => {
    const thingName = uniqueThingName('decoy');
    await addDevice(stack, thingName);
    const decoy = (await makeCsr(thingName)).pem;
    const smuggled = (await makeCsr('someone-else')).pem;
    const body = v1Body(thingName, {
      CSR: `-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n${decoy}${smuggled}`,
    });
    const answer = await post(body, PLACES.tokyo);
    expect(answer).toMatchObject({
      status: 400,
      body: { message: 'CSR: expected exactly one PEM block labelled CERTIFICATE REQUEST' },
    });
    const twoRequests = await post(v1Body(thingName, { CSR: `${decoy}${smuggled}` }), PLACES.tokyo);
    expect(twoRequests.status).toBe(400);
    expect(await thingExists('ap-northeast-1', thingName)).toBe(false);
    expect((await registryRecord(thingName))?.prov_status?.S).toBe('unprovisioned');
  });

  it('must be strict base64: a stray character gets 400, not 500', async () => {
    const thingName = uniqueThingName('stray');
    await addDevice(stack, thingName);
    const pem = (await makeCsr(thingName)).pem;
    const lines = pem.split('\n');
    lines[2] = `${lines[2]?.slice(0, 10)}*${lines[2]?.slice(11)}`;
    const answer = await post(v1Body(thingName, { CSR: lines.join('\n') }), PLACES.tokyo);
    expect(answer).toMatchObject({
      status: 400,
      body: { message: 'CSR: the CERTIFICATE REQUEST block is not valid base64' },
    });
  });
});

describe('registry records of any shape', () => {
  it('provision with nonces, versions and sets of the wrong type', async () => {
    const thingName = uniqueThingName('odd-record');
    await addDevice(stack, thingName, {
      used_nonces: { S: 'not a set' },
      recent_nonces: { N: '7' },
      record_version: { S: 'three' },
    });
    const answer = await post(v2Body(thingName), PLACES.tokyo);
    expect(answer.status).toBe(200);
    expect((await registryRecord(thingName))?.recent_nonces?.SS).toHaveLength(1);
  });

  it('answer 401, not 500, when the registered device key is broken', async () => {
    const thingName = uniqueThingName('broken-key');
    await addDevice(stack, thingName, {
      device_public_key: { S: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----' },
    });
    const answer = await post(v2Body(thingName), PLACES.tokyo);
    expect(answer).toMatchObject({ status: 401, body: { message: 'signature does not verify' } });
  });

  it('answer 403 naming the problem when prov_status is missing', async () => {
    const thingName = uniqueThingName('no-status');
    await registryClient().send(
      new PutItemCommand({
        TableName: stack.tableName,
        Item: { thing_name: { S: thingName }, prov_status: { N: '1' } },
      }),
    );
    const answer = await post(v1Body(thingName), PLACES.tokyo);
    expect(answer).toMatchObject({
      status: 403,
      body: { message: `thing ${thingName} has prov_status "" and cannot be provisioned` },
    });
  });
});

describe('a thing that exists already', () => {
  it('is refused with 409 when it carries a certificate we did not issue, and is left as it was', async () => {
    const thingName = uniqueThingName('foreign-thing');
    await addDevice(stack, thingName);
    const iot = iotIn('ap-northeast-1');
    await iot.send(
      new CreateThingCommand({ thingName, attributePayload: { attributes: { owner: 'factory' } } }),
    );
    const foreign = await iot.send(
      new RegisterCertificateWithoutCACommand({
        certificatePem: (await testCa()).certificate.pem,
        status: 'ACTIVE',
      }),
    );
    await iot.send(new AttachThingPrincipalCommand({ thingName, principal: foreign.certificateArn }));

    const answer = await post(v1Body(thingName), PLACES.tokyo);
    expect(answer.status).toBe(409);
    expect(answer.body.message).toContain('with certificates this service did not issue');
    const principals = await iot.send(new ListThingPrincipalsCommand({ thingName }));
    expect(principals.principals).toEqual([foreign.certificateArn]);
    expect((await registryRecord(thingName))?.prov_status?.S).toBe('unprovisioned');
  });

  it('is joined when it holds no certificate, and never deleted by an undo', async () => {
    const thingName = uniqueThingName('empty-thing');
    await addDevice(stack, thingName);
    const iot = iotIn('ap-northeast-1');
    await iot.send(
      new CreateThingCommand({ thingName, attributePayload: { attributes: { owner: 'factory' } } }),
    );
    await setFaults({
      rules: [
        {
          match: {
            service: 'iot',
            region: 'ap-northeast-1',
            method: 'PUT',
            path: `^/things/${thingName}/principals`,
          },
          error: 'InternalFailure',
        },
      ],
    });
    const failed = await post(v1Body(thingName), PLACES.tokyo);
    expect(failed.status).toBe(503);
    const thing = await iot.send(new DescribeThingCommand({ thingName }));
    expect(thing.attributes).toEqual({ owner: 'factory' });

    await clearFaults();
    const joined = await post(v1Body(thingName, { nonce: randomBytes(4).toString('hex') }), PLACES.tokyo);
    expect(joined.status).toBe(200);
  });
});
