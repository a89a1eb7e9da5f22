import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import {
  decide,
  DecisionRules,
  historyWith,
  MAX_HISTORY,
  MAX_RECENT_NONCES,
  nextRecentNonces,
  provDatetime,
  referencedCertificates,
  toDeviceRecord,
} from '../../../functions/provisioning/device-record';

const NOW = 1_795_497_600;
const rules: DecisionRules = { nowSeconds: NOW, reprovisionWindowSeconds: 300, reissueLimit: 3 };
const record = (item: Record<string, AttributeValue>) =>
  toDeviceRecord({ thing_name: { S: 'wm101' }, ...item });
const provisioned = (extra: Record<string, AttributeValue> = {}) =>
  record({
    prov_status: { S: 'provisioned' },
    aws_region: { S: 'eu-central-1' },
    prov_datetime: { S: provDatetime(NOW - 100) },
    prov_epoch: { N: String(NOW - 100) },
    first_prov_epoch: { N: String(NOW - 100) },
    certificate_id: { S: 'a'.repeat(64) },
    certificate_pem: { S: '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n' },
    certificate_key_sha256: { S: 'k'.repeat(64) },
    ...extra,
  });
const pendingIntent = (keySha: string, mode = 'csr') => ({
  claim_id: { S: 'dead-claim' },
  claim_expires: { N: String(NOW - 1) },
  pending_certificate_id: { S: 'b'.repeat(64) },
  pending_certificate_pem: { S: 'pem' },
  pending_region: { S: 'ap-south-1' },
  pending_key_sha256: { S: keySha },
  pending_key_mode: { S: mode },
  pending_since: { N: String(NOW - 90) },
});

describe('what a verified request gets, from the record as read', () => {
  it('refuses a device that is not on the allowlist with 403', () => {
    const decision = decide(undefined, { thingName: 'wm101' }, rules);
    expect(decision).toMatchObject({ kind: 'refuse', error: { status: 403 } });
  });

  it.each(['disabled', 'revoked', 'something-else'])('refuses a %s device with 403', (status) => {
    const decision = decide(record({ prov_status: { S: status } }), { thingName: 'wm101' }, rules);
    expect(decision).toMatchObject({ kind: 'refuse', error: { status: 403 } });
  });

  it('refuses a replayed v2 nonce with 401', () => {
    const seen = record({
      prov_status: { S: 'unprovisioned' },
      recent_nonces: { SS: [`${NOW}.nonce-one-abcdefgh`] },
    });
    const decision = decide(seen, { thingName: 'wm101', nonceEntry: `${NOW}.nonce-one-abcdefgh` }, rules);
    expect(decision).toMatchObject({ kind: 'refuse', error: { status: 401 } });
  });

  it('answers 429 with a Retry-After of seconds, not the lease, while another request holds the claim', () => {
    const held = record({
      prov_status: { S: 'unprovisioned' },
      claim_id: { S: 'other' },
      claim_expires: { N: String(NOW + 55) },
    });
    const decision = decide(held, { thingName: 'wm101' }, rules);
    expect(decision).toMatchObject({ kind: 'refuse', error: { status: 429, retryAfterSeconds: 2 } });
  });

  it('issues for an unprovisioned device, retiring the certificate of a dead request', () => {
    const decision = decide(
      record({ prov_status: { S: 'unprovisioned' }, ...pendingIntent('x'.repeat(64), 'server') }),
      { thingName: 'wm101' },
      rules,
    );
    expect(decision).toEqual({
      kind: 'issue',
      reissue: false,
      retire: [expect.objectContaining({ certificateId: 'b'.repeat(64), region: 'ap-south-1' })],
    });
  });

  it("resumes a dead request's certificate when the same CSR key comes back", () => {
    const decision = decide(
      record({ prov_status: { S: 'unprovisioned' }, ...pendingIntent('c'.repeat(64)) }),
      { thingName: 'wm101', csrKeySha256: 'c'.repeat(64) },
      rules,
    );
    expect(decision).toMatchObject({ kind: 'resume', pending: { certificateId: 'b'.repeat(64) } });
  });

  it('answers the same certificate for the same CSR key inside the window', () => {
    const decision = decide(provisioned(), { thingName: 'wm101', csrKeySha256: 'k'.repeat(64) }, rules);
    expect(decision).toMatchObject({ kind: 'same-certificate', region: 'eu-central-1' });
  });

  it('re-issues a lost key-mode answer inside the window when no key is sealed, retiring the live certificate', () => {
    const decision = decide(provisioned(), { thingName: 'wm101' }, rules);
    expect(decision).toEqual({
      kind: 'issue',
      reissue: true,
      retire: [{ certificateId: 'a'.repeat(64), region: 'eu-central-1' }],
    });
  });

  describe('a lost key-mode answer whose key is sealed (answer recovery)', () => {
    const sealed = (until: number, extra: Record<string, AttributeValue> = {}) =>
      provisioned({
        sealed_key: { B: Buffer.from('ciphertext') },
        sealed_key_until: { N: String(until) },
        ...extra,
      });

    it('recovers the same certificate and key while the seal lasts', () => {
      expect(decide(sealed(NOW + 1), { thingName: 'wm101' }, rules)).toEqual({
        kind: 'recover',
        region: 'eu-central-1',
        certificateId: 'a'.repeat(64),
        certificatePem: expect.stringContaining('BEGIN CERTIFICATE'),
        sealedKey: Buffer.from('ciphertext'),
      });
    });

    it('re-issues once the seal has ended, as without one', () => {
      expect(decide(sealed(NOW), { thingName: 'wm101' }, rules)).toMatchObject({
        kind: 'issue',
        reissue: true,
      });
    });

    it('never recovers for a request with a CSR: its key is the CSR key', () => {
      const decision = decide(sealed(NOW + 60), { thingName: 'wm101', csrKeySha256: 'k'.repeat(64) }, rules);
      expect(decision).toMatchObject({ kind: 'same-certificate' });
    });

    it('recovers past the re-issue window and limit: it registers nothing', () => {
      const late = sealed(NOW + 60, {
        first_prov_epoch: { N: String(NOW - 301) },
        reissue_count: { N: '3' },
      });
      expect(decide(late, { thingName: 'wm101' }, rules)).toMatchObject({ kind: 'recover' });
    });

    it.each([
      ['disabled', 403],
      ['revoked', 403],
    ])('still refuses a %s device first', (status, code) => {
      const decision = decide(
        sealed(NOW + 60, { prov_status: { S: status } }),
        { thingName: 'wm101' },
        rules,
      );
      expect(decision).toMatchObject({ kind: 'refuse', error: { status: code } });
    });

    it('still refuses a replayed nonce, and waits for a live claim', () => {
      const replayed = sealed(NOW + 60, { recent_nonces: { SS: [`${NOW}.nonce-one-abcdefgh`] } });
      expect(
        decide(replayed, { thingName: 'wm101', nonceEntry: `${NOW}.nonce-one-abcdefgh` }, rules),
      ).toMatchObject({ kind: 'refuse', error: { status: 401 } });
      const held = sealed(NOW + 60, { claim_id: { S: 'other' }, claim_expires: { N: String(NOW + 55) } });
      expect(decide(held, { thingName: 'wm101' }, rules)).toMatchObject({
        kind: 'refuse',
        error: { status: 429 },
      });
    });

    it('reads a sealed key of the wrong type as none', () => {
      const odd = provisioned({ sealed_key: { S: 'text' }, sealed_key_until: { N: String(NOW + 60) } });
      expect(decide(odd, { thingName: 'wm101' }, rules)).toMatchObject({ kind: 'issue' });
    });
  });

  it('anchors the window at the first provisioning, so re-issues cannot slide it', () => {
    const late = provisioned({
      prov_epoch: { N: String(NOW - 10) },
      first_prov_epoch: { N: String(NOW - 301) },
    });
    expect(decide(late, { thingName: 'wm101' }, rules)).toMatchObject({
      kind: 'refuse',
      error: { status: 409, message: expect.stringContaining('already provisioned in eu-central-1') },
    });
  });

  it('stops re-issuing after the limit', () => {
    const decision = decide(provisioned({ reissue_count: { N: '3' } }), { thingName: 'wm101' }, rules);
    expect(decision).toMatchObject({ kind: 'refuse', error: { status: 409 } });
  });

  it('never re-issues when the window is 0', () => {
    const decision = decide(provisioned(), { thingName: 'wm101' }, { ...rules, reprovisionWindowSeconds: 0 });
    expect(decision).toMatchObject({ kind: 'refuse', error: { status: 409 } });
  });
});

describe('records of any shape', () => {
  it('reads attributes of the wrong type as missing instead of failing', () => {
    const odd = toDeviceRecord({
      thing_name: { S: 'wm101' },
      prov_status: { N: '1' },
      used_nonces: { S: 'not a set' },
      recent_nonces: { N: '5' },
      record_version: { S: 'three' },
      device_public_key: { N: '0' },
      claim_expires: { S: 'soon' },
    });
    expect(odd).toMatchObject({
      provStatus: '',
      recentNonces: [],
      version: 0,
      devicePublicKeyPem: undefined,
    });
    expect(decide(odd, { thingName: 'wm101' }, rules)).toMatchObject({
      kind: 'refuse',
      error: { status: 403 },
    });
  });
});

describe('certificates named as retiring', () => {
  const retiring = provisioned({
    retiring: { SS: [`ap-south-1/${'c'.repeat(64)}`, 'no-slash', '/empty-region', 'empty-id/'] },
  });

  it('reads well-formed `<region>/<certificateId>` entries and skips the rest', () => {
    expect(retiring.retiring).toEqual([{ region: 'ap-south-1', certificateId: 'c'.repeat(64) }]);
    expect(provisioned({ retiring: { S: 'not a set' } }).retiring).toEqual([]);
  });

  it('counts them as referenced, so the reconciler sweep leaves them to the path that forgets them', () => {
    expect(referencedCertificates(retiring)).toContainEqual({
      region: 'ap-south-1',
      certificateId: 'c'.repeat(64),
    });
  });

  it('retires them with the live certificate when the device is re-issued', () => {
    const decision = decide(retiring, { thingName: 'wm101' }, rules);
    expect(decision).toMatchObject({ kind: 'issue', reissue: true });
    expect(decision.kind === 'issue' && decision.retire).toContainEqual({
      region: 'ap-south-1',
      certificateId: 'c'.repeat(64),
    });
  });
});

describe('remembered nonces', () => {
  it('keeps only nonces still inside the clock-skew limit, and at most a fixed number', () => {
    const old = Array.from(
      { length: 40 },
      (_, index) => `${NOW - index}.nonce-${String(index).padStart(12, '0')}`,
    );
    const kept = nextRecentNonces(
      record({ recent_nonces: { SS: [...old, `${NOW - 301}.expired-nonce-00000`] } }),
      `${NOW}.the-new-nonce-0000`,
      NOW,
      300,
    );
    expect(kept).toHaveLength(MAX_RECENT_NONCES);
    expect(kept).toContain(`${NOW}.the-new-nonce-0000`);
    expect(kept).not.toContain(`${NOW - 301}.expired-nonce-00000`);
  });
});

describe('operator attributes (gdp-admin)', () => {
  const moved = () =>
    provisioned({ moved_from_region: { S: 'ap-south-1' }, moved_at: { N: String(NOW - 50) } });

  it('counts both copies of a moved certificate as referenced, so the reconciler keeps them', () => {
    expect(referencedCertificates(moved())).toEqual([
      { certificateId: 'a'.repeat(64), region: 'eu-central-1' },
      { certificateId: 'a'.repeat(64), region: 'ap-south-1' },
    ]);
    const moving = provisioned({ move_to_region: { S: 'sa-east-1' }, move_started: { N: String(NOW) } });
    expect(referencedCertificates(moving).map((ref) => ref.region)).toEqual(['eu-central-1', 'sa-east-1']);
  });

  it('retires every copy of a moved certificate when the device is re-issued', () => {
    expect(decide(moved(), { thingName: 'wm101' }, rules)).toMatchObject({
      kind: 'issue',
      retire: [
        { certificateId: 'a'.repeat(64), region: 'eu-central-1' },
        { certificateId: 'a'.repeat(64), region: 'ap-south-1' },
      ],
    });
  });

  it('keeps the newest MAX_HISTORY audit entries', () => {
    let current = record({ prov_status: { S: 'unprovisioned' } });
    for (let index = 0; index < MAX_HISTORY + 5; index += 1) {
      const history = historyWith(current, {
        at: `2026-01-01T00:00:${String(index).padStart(2, '0')}Z`,
        by: 'arn:aws:iam::1:user/op',
        what: `step ${index}`,
        before: { prov_status: 'a' },
        after: { prov_status: 'b' },
      });
      current = record({ prov_status: { S: 'unprovisioned' }, history });
    }
    expect(current.history).toHaveLength(MAX_HISTORY);
    expect(current.history[0]?.what).toBe('step 5');
    expect(current.history[MAX_HISTORY - 1]).toMatchObject({
      what: `step ${MAX_HISTORY + 4}`,
      after: { prov_status: 'b' },
    });
  });

  it('points refusals at the operator tool', () => {
    expect(decide(record({ prov_status: { S: 'disabled' } }), { thingName: 'wm101' }, rules)).toMatchObject({
      error: { status: 403, message: expect.stringContaining('`gdp-admin enable wm101`') },
    });
    expect(
      decide(provisioned({ first_prov_epoch: { N: String(NOW - 1000) } }), { thingName: 'wm101' }, rules),
    ).toMatchObject({
      error: {
        status: 409,
        message: expect.stringContaining('use `gdp-admin reset wm101` to allow it again'),
      },
    });
  });
});
