import { createPrivateKey, createPublicKey, sign } from 'node:crypto';
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { verifyWith } from '../../../functions/provisioning/signature';
import lifecycleVector from '../fixtures/lifecycle-test-vector.json';
import {
  MAX_RECENT_NONCES,
  nonceSpent,
  provDatetime,
  referencedCertificates,
  toDeviceRecord,
} from '../../../functions/provisioning/device-record';
import {
  decideRenewal,
  decideStatus,
  identify,
  LifecycleFacts,
  RenewalRules,
  RENEWAL_RETRY_INTERVAL_SECONDS,
  StatusRules,
  Validity,
} from '../../../functions/provisioning/lifecycle';
import { parseLifecycleRequest } from '../../../functions/provisioning/request';
import { canonicalLifecycleMessage, pemToDer } from '../../../functions/provisioning/wire';

const NOW = 1_795_497_600;
const CURRENT = 'c'.repeat(64);
const PREVIOUS = 'p'.repeat(64);
const STRANGER = 's'.repeat(64);
const DAY = 86_400;

const record = (item: Record<string, AttributeValue>) =>
  toDeviceRecord({ thing_name: { S: 'wm101' }, ...item });
const provisioned = (extra: Record<string, AttributeValue> = {}) =>
  record({
    prov_status: { S: 'provisioned' },
    aws_region: { S: 'eu-central-1' },
    prov_datetime: { S: provDatetime(NOW - 10 * DAY) },
    prov_epoch: { N: String(NOW - 10 * DAY) },
    certificate_id: { S: CURRENT },
    certificate_pem: { S: 'pem' },
    certificate_key_sha256: { S: 'k'.repeat(64) },
    ...extra,
  });
const renewed = (extra: Record<string, AttributeValue> = {}) =>
  provisioned({
    prov_epoch: { N: String(NOW - 60) },
    previous_certificate_id: { S: PREVIOUS },
    previous_region: { S: 'eu-central-1' },
    previous_retire_after: { N: String(NOW + 7 * DAY) },
    ...extra,
  });

const facts = (certificateId: string, extra: Partial<LifecycleFacts> = {}) => ({
  thingName: 'wm101',
  nonceEntry: `${NOW}.nonce-abcdefghijklmnop`,
  certificateId,
  issuedByUs: () => false,
  ...extra,
});

const validity = (renewInSeconds: number): Validity => ({
  notBefore: new Date((NOW - 300 * DAY) * 1000),
  notAfter: new Date((NOW + 65 * DAY) * 1000),
  renewAfter: new Date((NOW + renewInSeconds) * 1000),
});
const statusRules: StatusRules = {
  nowSeconds: NOW,
  statusMinIntervalSeconds: 5,
  currentValidity: validity(DAY),
};
const renewalRules: RenewalRules = {
  nowSeconds: NOW,
  renewMinIntervalSeconds: DAY,
  renewGraceSeconds: 7 * DAY,
};

describe('what a status call answers', () => {
  it('answers none to the current certificate before its renewal point', () => {
    expect(decideStatus(provisioned(), facts(CURRENT), statusRules)).toMatchObject({
      kind: 'answer',
      action: 'none',
      signer: 'current',
    });
  });

  it('answers renew past the renewal point', () => {
    const rules = { ...statusRules, currentValidity: validity(-1) };
    expect(decideStatus(provisioned(), facts(CURRENT), rules)).toMatchObject({ action: 'renew' });
  });

  it('answers renew to the certificate a renewal replaced, and retires nothing', () => {
    const decision = decideStatus(renewed(), facts(PREVIOUS), statusRules);
    expect(decision).toMatchObject({ action: 'renew', signer: 'previous' });
    expect(decision).not.toHaveProperty('retirePrevious', expect.anything());
  });

  it('retires the previous certificate once the device signs with the renewed one', () => {
    const decision = decideStatus(renewed(), facts(CURRENT), statusRules);
    expect(decision).toMatchObject({
      action: 'none',
      retirePrevious: { certificateId: PREVIOUS, region: 'eu-central-1' },
    });
  });

  it('answers move when the device reports another region, or reports none while the old copy lives', () => {
    const moved = provisioned({
      aws_region: { S: 'eu-west-1' },
      moved_from_region: { S: 'eu-central-1' },
      moved_at: { N: String(NOW - 30) },
    });
    expect(
      decideStatus(moved, { ...facts(CURRENT), reportedRegion: 'eu-central-1' }, statusRules),
    ).toMatchObject({
      action: 'move',
    });
    expect(decideStatus(moved, facts(CURRENT), statusRules)).toMatchObject({ action: 'move' });
    expect(
      decideStatus(moved, { ...facts(CURRENT), reportedRegion: 'eu-west-1' }, statusRules),
    ).toMatchObject({
      action: 'none',
    });
  });

  it('answers reprovision to a certificate of ours after a reset, and 401 to anyone else', () => {
    const reset = record({ prov_status: { S: 'unprovisioned' } });
    expect(decideStatus(reset, facts(STRANGER, { issuedByUs: () => true }), statusRules)).toMatchObject({
      action: 'reprovision',
    });
    expect(decideStatus(reset, facts(STRANGER), statusRules)).toMatchObject({ error: { status: 401 } });
  });

  it('gives every stranger the same 401, whatever the record says', () => {
    for (const item of [undefined, provisioned(), record({ prov_status: { S: 'revoked' } })]) {
      const decision = decideStatus(item, facts(STRANGER), statusRules);
      expect(decision).toMatchObject({
        error: { status: 401, message: 'certificate was not issued by this service for wm101' },
      });
    }
  });

  it('refuses a disabled or revoked device with 403 once it has proven who it is', () => {
    for (const status of ['disabled', 'revoked']) {
      const decision = decideStatus(provisioned({ prov_status: { S: status } }), facts(CURRENT), statusRules);
      expect(decision).toMatchObject({ error: { status: 403, message: expect.stringContaining(status) } });
    }
  });

  it('refuses a superseded certificate of ours with 401 naming it', () => {
    const decision = decideStatus(provisioned(), facts(STRANGER, { issuedByUs: () => true }), statusRules);
    expect(decision).toMatchObject({ error: { status: 401, message: expect.stringContaining('no longer') } });
  });

  it('refuses a replay with 401 and a call within the interval with 429 and the wait', () => {
    const seen = provisioned({ status_nonces: { SS: [`${NOW}.nonce-abcdefghijklmnop`] } });
    expect(decideStatus(seen, facts(CURRENT), statusRules)).toMatchObject({ error: { status: 401 } });
    const recent = provisioned({ status_epoch: { N: String(NOW - 2) } });
    expect(decideStatus(recent, facts(CURRENT), statusRules)).toMatchObject({
      error: { status: 429, retryAfterSeconds: 3 },
    });
  });
});

describe('what a renewal does', () => {
  it('makes the current certificate the previous one, kept for the grace period', () => {
    expect(decideRenewal(provisioned(), facts(CURRENT), renewalRules)).toEqual({
      kind: 'renew',
      previous: { certificateId: CURRENT, region: 'eu-central-1', retireAfter: NOW + 7 * DAY },
      retire: [],
      reissueCount: 0,
      resume: undefined,
    });
  });

  it('refuses a renewal within the interval with 429 and the wait', () => {
    const fresh = provisioned({ prov_epoch: { N: String(NOW - 100) } });
    expect(decideRenewal(fresh, facts(CURRENT), renewalRules)).toMatchObject({
      error: { status: 429, retryAfterSeconds: DAY - 100 },
    });
  });

  it('re-issues for a retry signed with the previous certificate, retiring the unproven one', () => {
    expect(decideRenewal(renewed(), facts(PREVIOUS), renewalRules)).toMatchObject({
      kind: 'renew',
      previous: { certificateId: PREVIOUS },
      retire: [{ certificateId: CURRENT, region: 'eu-central-1' }],
      reissueCount: 1,
    });
  });

  it('answers the same certificate to a retry with the same CSR key', () => {
    const decision = decideRenewal(
      renewed(),
      { ...facts(PREVIOUS), csrKeySha256: 'k'.repeat(64) },
      renewalRules,
    );
    expect(decision).toEqual({ kind: 'same-certificate' });
  });

  it('paces re-issues (429 with the wait) but never refuses them for good', () => {
    const justIssued = renewed({ prov_epoch: { N: String(NOW - 10) }, reissue_count: { N: '3' } });
    expect(decideRenewal(justIssued, facts(PREVIOUS), renewalRules)).toMatchObject({
      error: { status: 429, retryAfterSeconds: RENEWAL_RETRY_INTERVAL_SECONDS - 10 },
    });
    const later = renewed({ reissue_count: { N: '30' } });
    expect(decideRenewal(later, facts(PREVIOUS), renewalRules)).toMatchObject({
      kind: 'renew',
      reissueCount: 31,
    });
  });

  it('retires the proven predecessor and the old copy of a finished move when the current certificate renews', () => {
    const item = renewed({
      prov_epoch: { N: String(NOW - 2 * DAY) },
      moved_from_region: { S: 'eu-west-1' },
      moved_at: { N: String(NOW - DAY) },
    });
    expect(decideRenewal(item, facts(CURRENT), renewalRules)).toMatchObject({
      retire: [
        { certificateId: PREVIOUS, region: 'eu-central-1' },
        { certificateId: CURRENT, region: 'eu-west-1' },
      ],
    });
  });

  it('waits for a move under way (409) and for a request in flight (429)', () => {
    const moving = provisioned({ move_to_region: { S: 'eu-west-1' }, move_started: { N: String(NOW) } });
    expect(decideRenewal(moving, facts(CURRENT), renewalRules)).toMatchObject({
      error: { status: 409, retryAfterSeconds: 60 },
    });
    const busy = provisioned({ claim_id: { S: 'live' }, claim_expires: { N: String(NOW + 30) } });
    expect(decideRenewal(busy, facts(CURRENT), renewalRules)).toMatchObject({ error: { status: 429 } });
  });

  it('resumes a dead renewal for the same CSR key instead of issuing another', () => {
    const dead = provisioned({
      claim_id: { S: 'dead' },
      claim_expires: { N: String(NOW - 1) },
      pending_certificate_id: { S: 'n'.repeat(64) },
      pending_certificate_pem: { S: 'pem' },
      pending_region: { S: 'eu-central-1' },
      pending_key_sha256: { S: 'q'.repeat(64) },
      pending_key_mode: { S: 'csr' },
      pending_since: { N: String(NOW - 90) },
    });
    const decision = decideRenewal(dead, { ...facts(CURRENT), csrKeySha256: 'q'.repeat(64) }, renewalRules);
    expect(decision).toMatchObject({ kind: 'renew', resume: { certificateId: 'n'.repeat(64) }, retire: [] });
  });

  it('tells a reset device to provision again (409)', () => {
    const reset = record({ prov_status: { S: 'unprovisioned' } });
    expect(decideRenewal(reset, facts(STRANGER, { issuedByUs: () => true }), renewalRules)).toMatchObject({
      error: { status: 409, message: expect.stringContaining('provision again') },
    });
  });
});

describe('the record during a renewal', () => {
  it('references the previous certificate, so the reconciler keeps it through the grace period', () => {
    expect(referencedCertificates(renewed())).toContainEqual({
      certificateId: PREVIOUS,
      region: 'eu-central-1',
    });
  });

  it('treats a full nonce list as spent for anything older than all it kept', () => {
    const kept = Array.from({ length: MAX_RECENT_NONCES }, (_, index) => `${NOW - index}.nonce-${index}`);
    expect(nonceSpent(kept, `${NOW - MAX_RECENT_NONCES - 5}.nonce-old-abcdefgh`)).toBe(true);
    expect(nonceSpent(kept, `${NOW}.nonce-new-abcdefgh`)).toBe(false);
    expect(nonceSpent(kept.slice(1), `${NOW - 100}.nonce-old-abcdefgh`)).toBe(false);
  });
});

describe('the lifecycle request', () => {
  const body = {
    'thing-name': 'wm101',
    timestamp: NOW,
    nonce: 'nonce-abcdefghijklmnop',
    certificate: '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n',
    signature: 'c2lnbmF0dXJl',
  };

  it('reads a status call, region included', () => {
    expect(parseLifecycleRequest('status', JSON.stringify({ ...body, region: 'eu-west-1' }))).toMatchObject({
      operation: 'status',
      thingName: 'wm101',
      reportedRegion: 'eu-west-1',
    });
  });

  it.each([
    ['no certificate', { ...body, certificate: undefined }, /certificate/],
    ['a certificate that is not PEM', { ...body, certificate: 'not a pem' }, /certificate must be a PEM/],
    ['a short nonce', { ...body, nonce: 'short' }, /nonce/],
    ['a region that is not one', { ...body, region: 'Frankfurt' }, /region must be an AWS region/],
    [
      'a CSR in a status call',
      { ...body, CSR: '-----BEGIN CERTIFICATE REQUEST-----' },
      /CSR belongs in POST \/device-renew/,
    ],
  ])('refuses %s with 400 naming the field', (_label, fields, message) => {
    expect(() => parseLifecycleRequest('status', JSON.stringify(fields))).toThrow(message);
  });

  it('signs five lines: tag, thing name, timestamp, nonce, CSR hash or "-"', () => {
    const message = canonicalLifecycleMessage({
      operation: 'status',
      thingName: 'wm101',
      timestamp: NOW,
      nonce: 'nonce-abcdefghijklmnop',
    });
    expect(message.toString('utf8')).toBe(`GDP-STATUS-V1\nwm101\n${NOW}\nnonce-abcdefghijklmnop\n-`);
  });
});

describe('the lifecycle test vector (docs/protocol.md)', () => {
  it('reproduces the canonical messages and verifies the signatures byte for byte', () => {
    const parts = {
      thingName: lifecycleVector.thingName,
      timestamp: lifecycleVector.timestamp,
      nonce: lifecycleVector.nonce,
    };
    const key = createPrivateKey(lifecycleVector.rsaPrivateKeyPem);
    const status = canonicalLifecycleMessage({ operation: 'status', ...parts });
    const renew = canonicalLifecycleMessage({
      operation: 'renew',
      ...parts,
      csrDer: pemToDer(lifecycleVector.csrPem),
    });
    expect(status.toString('hex')).toBe(lifecycleVector.statusMessageHex);
    expect(renew.toString('hex')).toBe(lifecycleVector.renewMessageHex);
    expect(sign('sha256', status, key).toString('base64')).toBe(lifecycleVector.statusSignature);
    expect(sign('sha256', renew, key).toString('base64')).toBe(lifecycleVector.renewSignature);
    const publicKey = createPublicKey(key);
    expect(verifyWith(publicKey, renew, Buffer.from(lifecycleVector.renewSignature, 'base64'))).toBe(true);
    expect(verifyWith(publicKey, status, Buffer.from(lifecycleVector.renewSignature, 'base64'))).toBe(false);
  });
});

describe('who may spend a nonce: identify', () => {
  it('recognises the record current or previous certificate, or one our CA issued for the thing', () => {
    expect(identify(renewed(), facts(CURRENT))).toBeUndefined();
    expect(identify(renewed(), facts(PREVIOUS))).toBeUndefined();
    expect(identify(undefined, facts(STRANGER, { issuedByUs: () => true }))).toBeUndefined();
  });

  it('refuses everyone else with 401 before anything is written', () => {
    expect(identify(renewed(), facts(STRANGER))).toMatchObject({ status: 401 });
    expect(identify(undefined, facts(STRANGER))).toMatchObject({ status: 401 });
  });
});
