/**
 * The one place a refused verified request spends its nonce (functions/provisioning/replay-guard.ts):
 * whatever the work after verification throws, the nonce is spent before the refusal goes out, and
 * a spend that fails never replaces the refusal.
 */
import { Deadline } from '../../../functions/provisioning/deadline';
import { toDeviceRecord } from '../../../functions/provisioning/device-record';
import { throttled } from '../../../functions/provisioning/errors';
import type { ProvisioningDependencies } from '../../../functions/provisioning/provision';
import type { NonceSpend } from '../../../functions/provisioning/registry-device';
import { spendingTheNonce } from '../../../functions/provisioning/replay-guard';

const record = toDeviceRecord({ thing_name: { S: 'wm101' }, prov_status: { S: 'unprovisioned' } });

function dependencies(spend: (request: NonceSpend) => Promise<boolean>) {
  const spent: NonceSpend[] = [];
  const deps = {
    registry: {
      spendNonce: async (request: NonceSpend) => {
        spent.push(request);
        return spend(request);
      },
    },
    config: { v2MaxClockSkewSeconds: 300 },
    clock: () => 1_795_497_600_000,
  } as unknown as Pick<ProvisioningDependencies, 'registry' | 'config' | 'clock'>;
  return { deps, spent };
}

const nonce = { record, list: 'recent_nonces', entry: '1795497600.nonce-one-abcdefgh' } as const;

describe('spendingTheNonce', () => {
  it('spends the nonce of a refusal raised anywhere after verification, then refuses', async () => {
    const { deps, spent } = dependencies(async () => true);
    const refusal = throttled('admission: the region is busy', 3);
    await expect(
      spendingTheNonce(deps, nonce, Deadline.from(undefined), async () => {
        throw refusal;
      }),
    ).rejects.toBe(refusal);
    expect(spent).toEqual([expect.objectContaining({ list: 'recent_nonces', entry: nonce.entry, record })]);
  });

  it('writes nothing for an answer: the claim or status write carried the nonce', async () => {
    const { deps, spent } = dependencies(async () => true);
    await expect(
      spendingTheNonce(deps, nonce, Deadline.from(undefined), async () => 'answered'),
    ).resolves.toBe('answered');
    expect(spent).toEqual([]);
  });

  it('spends nothing more when a write of the work carried the nonce before it failed', async () => {
    const { deps, spent } = dependencies(async () => true);
    await expect(
      spendingTheNonce(deps, nonce, Deadline.from(undefined), async (nonceWritten) => {
        nonceWritten(); // the claim landed
        throw throttled('AWS IoT is throttling RegisterCertificate', 2);
      }),
    ).rejects.toThrow('throttling');
    expect(spent).toEqual([]);
  });

  it('keeps the refusal when the spend itself fails', async () => {
    const { deps } = dependencies(async () => {
      throw new Error('registry unavailable');
    });
    const refusal = throttled('in flight', 2);
    await expect(
      spendingTheNonce(deps, nonce, Deadline.from(undefined), async () => {
        throw refusal;
      }),
    ).rejects.toBe(refusal);
  });

  it('has nothing to spend for v1 (no nonce) or a device without a record', async () => {
    const { deps, spent } = dependencies(async () => true);
    for (const without of [
      { ...nonce, entry: undefined },
      { ...nonce, record: undefined },
    ]) {
      await expect(
        spendingTheNonce(deps, without, Deadline.from(undefined), async () => {
          throw throttled('busy', 1);
        }),
      ).rejects.toThrow('busy');
    }
    expect(spent).toEqual([]);
  });
});
