/**
 * Keys nobody holds, sent to the local stack where a public key enters: a CSR, a record's own
 * key, and the certificate of a status or renewal call. With an RSA public exponent of 1 the
 * PKCS#1 "signature" of anything is its padded hash, so every one of these was once accepted.
 */
import { randomBytes } from 'node:crypto';
import { issueDeviceCertificate } from '../../functions/provisioning/certificate-authority';
import { toPem } from '../../functions/provisioning/ca-certificate';
import {
  LifecycleOperation,
  canonicalLifecycleMessage,
  canonicalV2Message,
} from '../../functions/provisioning/wire';
import { parseCaCertificate } from '../../functions/provisioning/certificate-authority';
import { addDevice } from '../local/stack';
import { exponentOneCsr, exponentOneKey } from '../support/unsound-keys';
import { kmsSigner } from '../../functions/provisioning/kms';
import { readFileSync } from 'node:fs';
import { KMSClient } from '@aws-sdk/client-kms';
import {
  post,
  postRenew,
  postStatus,
  registryRecord,
  stack,
  thingExists,
  uniqueThingName,
  v2Body,
} from './requests';

/** A certificate of the local stack's own CA for `thingName`, around any SubjectPublicKeyInfo. */
async function localCaCertificate(thingName: string, publicKeySpki: Buffer): Promise<string> {
  const kms = new KMSClient({
    region: stack.homeRegion,
    endpoint: stack.awsEndpoint,
    credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
  });
  const certificate = await issueDeviceCertificate(
    parseCaCertificate(readFileSync(stack.deviceCaCertificate, 'utf8')),
    kmsSigner(kms, stack.deviceCaKmsKeyId),
    { thingName, publicKeySpki, validityDays: 30 },
  );
  return certificate.pem;
}

/** A status or renewal body "signed" by `sign`, with `certificatePem` as the proof of identity. */
function forgedLifecycleBody(
  operation: LifecycleOperation,
  thingName: string,
  certificatePem: string,
  sign: (message: Buffer) => Buffer,
) {
  const timestamp = Math.floor(Date.now() / 1000);
  const nonce = randomBytes(16).toString('base64url');
  return {
    'thing-name': thingName,
    timestamp,
    nonce,
    certificate: certificatePem,
    signature: sign(canonicalLifecycleMessage({ operation, thingName, timestamp, nonce })).toString('base64'),
  };
}

describe('keys nobody holds', () => {
  it('refuses a CSR with an RSA key of exponent 1 with 400, and writes nothing', async () => {
    const thingName = uniqueThingName('e1-csr');
    await addDevice(stack, thingName);
    const before = await registryRecord(thingName);
    const answer = await post(v2Body(thingName, { csrPem: exponentOneCsr(thingName) }));
    expect(answer.status).toBe(400);
    expect(answer.body.message).toBe(
      'CSR key refused: RSA public exponent is 1; it must be odd and at least 65537',
    );
    expect(await registryRecord(thingName)).toEqual(before);
    const things = await Promise.all(stack.regions.map((region) => thingExists(region, thingName)));
    expect(things.some(Boolean)).toBe(false);
  });

  it('answers 401 to status and renewal "signed" with an exponent-1 key, even in a certificate of our CA', async () => {
    const thingName = uniqueThingName('e1-status');
    await addDevice(stack, thingName);
    const key = exponentOneKey();
    const certificatePem = await localCaCertificate(thingName, key.spki);
    for (const [operation, send] of [
      ['status', postStatus],
      ['renew', postRenew],
    ] as const) {
      const answer = await send(forgedLifecycleBody(operation, thingName, certificatePem, key.sign));
      expect(answer.status).toBe(401);
      expect(answer.body.message).toContain('certificate key refused: RSA public exponent is 1');
    }
    expect(await registryRecord(thingName)).toEqual({
      thing_name: { S: thingName },
      prov_status: { S: 'unprovisioned' },
    });
  });

  it('answers 401, not 500, to a certificate whose public key cannot be decoded', async () => {
    const thingName = uniqueThingName('undecodable');
    await addDevice(stack, thingName);
    // rsaEncryption around bytes that are no RSAPublicKey: X509Certificate parses the certificate
    // and throws only when its key is read.
    const garbageKey = Buffer.concat([
      Buffer.from('3022300d06092a864886f70d01010105000311', 'hex'),
      Buffer.from([0x00]),
      randomBytes(16),
    ]);
    const certificatePem = await localCaCertificate(thingName, garbageKey);
    const answer = await postStatus(
      forgedLifecycleBody('status', thingName, certificatePem, () => randomBytes(256)),
    );
    expect(answer.status).toBe(401);
    expect(answer.body.message).toMatch(/certificate key refused/);
  });

  it('refuses a v2 request "signed" with a record\'s exponent-1 key', async () => {
    const thingName = uniqueThingName('e1-record');
    const key = exponentOneKey();
    await addDevice(stack, thingName, { device_public_key: { S: toPem(key.spki, 'PUBLIC KEY') } });
    const body = v2Body(thingName);
    const message = canonicalV2Message({ thingName, timestamp: body.timestamp, nonce: body.nonce });
    const answer = await post({ ...body, signature: key.sign(message).toString('base64') });
    expect(answer.status).toBe(401);
    expect((await registryRecord(thingName))?.prov_status?.S).toBe('unprovisioned');
  });
});
