/**
 * A verified request's nonce is spent whatever the answer, so that nobody who saw the request (a
 * logging proxy, a captured trace) can send it again for a better one: a renewal refused with 429
 * and replayed after the pacing interval would otherwise be answered with a new certificate and
 * its private key, and the device's own certificate retired.
 *
 * The writes that decide already carry the nonce: a claim (provisioning, renewal) and a status
 * call's record. Everything else a verified request can end in (a refusal, a 429 from admission or
 * from a request in flight, a failure after the claim, running out of time) goes through
 * `spendingTheNonce`, which the flows wrap around everything after verification: no caller has to
 * remember it, and a refusal added there later spends the nonce too.
 *
 * Costs: one conditional UpdateItem per refused verified request (more only if other writes keep
 * changing the list); none for a stranger (the wrapper starts after verification), none for a
 * replay (its nonce is spent already), none on the steady-state path (the claim writes it).
 */
import type { Deadline } from './deadline';
import type { DeviceRecord } from './device-record';
import type { ProvisioningDependencies } from './provision';
import type { NonceList } from './registry-device';
import { countMetric, logger } from './telemetry';

/** The nonce of a request whose signature verified, and the record it was read with. */
export interface VerifiedNonce {
  /** undefined when the device has no record: there is nothing to spend it in (403 anyway). */
  readonly record: DeviceRecord | undefined;
  readonly list: NonceList;
  /** `timestamp.nonce`; undefined for v1, which has none. */
  readonly entry: string | undefined;
}

/** Spends the nonce now (an answer that wrote nothing, or a refusal). Never throws: it is logged. */
export async function spendNonce(
  deps: Pick<ProvisioningDependencies, 'registry' | 'config' | 'clock'>,
  nonce: VerifiedNonce,
  deadline: Deadline,
): Promise<void> {
  const { record, entry } = nonce;
  if (!record || !entry) return;
  try {
    const written = await deps.registry.spendNonce(
      {
        record,
        list: nonce.list,
        entry,
        nowSeconds: Math.floor((deps.clock ?? Date.now)() / 1000),
        maxClockSkewSeconds: deps.config.v2MaxClockSkewSeconds,
      },
      deadline.undoSignal(),
    );
    if (written) countMetric('NonceSpentOnRefusal');
  } catch (error) {
    // The refusal is still answered; a replay of it stays possible until the timestamp expires.
    countMetric('NonceSpendFailed');
    logger.warn('could not spend the nonce of a refused request', {
      thingName: record.thingName,
      errorClass: (error as Error).name,
    });
  }
}

/**
 * Runs everything after verification; whatever it throws, the nonce is spent first. `work` may
 * call `nonceWritten` once a write of its own carried the nonce (a claim, a status call's record):
 * a failure after that costs no spend. Forgetting it costs one conditional write that finds the
 * nonce there, never a replay.
 */
export async function spendingTheNonce<T>(
  deps: Pick<ProvisioningDependencies, 'registry' | 'config' | 'clock'>,
  nonce: VerifiedNonce,
  deadline: Deadline,
  work: (nonceWritten: () => void) => Promise<T>,
): Promise<T> {
  let written = false;
  try {
    return await work(() => {
      written = true;
    });
  } catch (error) {
    if (!written) await spendNonce(deps, nonce, deadline);
    throw error;
  }
}
