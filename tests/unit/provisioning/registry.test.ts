import { claimRefusal, provDatetime, ClaimRequest } from '../../../functions/provisioning/registry';

const request: ClaimRequest = {
  thingName: 'wm101',
  claimId: 'c1',
  nowSeconds: 1_795_497_600,
  leaseSeconds: 60,
  reprovisionWindowSeconds: 300,
  nonce: 'q2Xr8JkTz0vW4mNa',
};

describe('why a claim is refused', () => {
  it('answers 403 for a device that is not on the allowlist', () => {
    expect(claimRefusal(undefined, request)).toMatchObject({
      status: 403,
      message: 'thing wm101 is not on the allowlist',
    });
  });

  it('answers 401 for a reused v2 nonce', () => {
    const old = {
      thing_name: { S: 'wm101' },
      prov_status: { S: 'unprovisioned' },
      used_nonces: { SS: [request.nonce ?? ''] },
    };
    expect(claimRefusal(old, request)).toMatchObject({ status: 401 });
  });

  it('answers 429 with Retry-After while another request holds the claim', () => {
    const old = {
      thing_name: { S: 'wm101' },
      prov_status: { S: 'unprovisioned' },
      claim_expires: { N: String(request.nowSeconds + 12) },
    };
    expect(claimRefusal(old, request)).toMatchObject({ status: 429, retryAfterSeconds: 12 });
  });

  it('answers 409 for a provisioned device, naming its region', () => {
    const old = {
      thing_name: { S: 'wm101' },
      prov_status: { S: 'provisioned' },
      aws_region: { S: 'eu-central-1' },
      prov_datetime: { S: '2026-11-24T05:00:00' },
    };
    expect(claimRefusal(old, request)).toMatchObject({
      status: 409,
      message: 'thing wm101 is already provisioned in eu-central-1 since 2026-11-24T05:00:00Z',
    });
  });
});

describe('prov_datetime', () => {
  it("keeps the sample's format: UTC, seconds, no zone suffix", () => {
    expect(provDatetime(1_795_497_600)).toBe('2026-11-24T05:20:00');
  });
});
