/**
 * Certificates on their way out: retired, then forgotten. A certificate that a re-issue or a
 * renewal replaced, or that a failed request's undo could not finish, stays named in the record
 * (`retiring`) until it is gone, so no live certificate is ever referenced by nothing. Whoever
 * comes first finishes it: the device's next request, its next status call, or the reconciler.
 * Retire first, then forget: stopped in between, the name is still there and retiring a
 * certificate that is gone is done.
 */
import { isThrottling } from './aws-errors';
import { retiringEntry, type CertificateRef, type DeviceRecord } from './device-record';
import type { DeviceIot } from './iot';
import type { DeviceRegistry } from './registry-device';

/**
 * Runs `work` up to `attempts` times with a short backoff while `signal` allows. A throttled
 * failure is not tried again unless `retryThrottled`: the SDK has retried it already, and a
 * throttled region is better left alone (the name stays; a later request finishes). Giving a
 * lease back is worth it: held, it turns the device away for a minute.
 */
export async function withRetries<T>(
  work: () => Promise<T>,
  signal: AbortSignal,
  attempts = 3,
  retryThrottled = false,
): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await work();
    } catch (error) {
      const cause = (error as { cause?: unknown }).cause;
      const throttledError = isThrottling(error) || isThrottling(cause);
      if (attempt >= attempts || signal.aborted || (throttledError && !retryThrottled)) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** attempt));
    }
  }
}

export interface RetirementReport {
  /** Retired (or already gone) and no longer named. */
  readonly retired: readonly CertificateRef[];
  /** Still named: retiring or forgetting failed. */
  readonly failures: readonly { readonly certificate: CertificateRef; readonly errorClass: string }[];
}

/** Each certificate once, in the order first named. */
export function distinctCertificates(refs: readonly CertificateRef[]): CertificateRef[] {
  const seen = new Set<string>();
  return refs.filter((ref) => {
    const key = retiringEntry(ref);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * Retires each certificate (in parallel, each tried again within `signal`), then stops naming
 * those that are gone, in one write. Never throws: what failed stays named and is reported.
 */
export async function retireAndForget(
  deps: { readonly iot: DeviceIot; readonly registry: DeviceRegistry },
  thingName: string,
  certificates: readonly CertificateRef[],
  signal: AbortSignal,
): Promise<RetirementReport> {
  const failures: { certificate: CertificateRef; errorClass: string }[] = [];
  const retired: CertificateRef[] = [];
  await Promise.all(
    distinctCertificates(certificates).map(async (certificate) => {
      try {
        await withRetries(
          () => deps.iot.retireCertificate(certificate.region, certificate.certificateId, signal),
          signal,
        );
        retired.push(certificate);
      } catch (error) {
        failures.push({ certificate, errorClass: (error as Error).name });
      }
    }),
  );
  if (retired.length === 0) return { retired, failures };
  try {
    await withRetries(() => deps.registry.forgetRetiring(thingName, retired, signal), signal);
    return { retired, failures };
  } catch (error) {
    const errorClass = (error as Error).name;
    return {
      retired: [],
      failures: [...failures, ...retired.map((certificate) => ({ certificate, errorClass }))],
    };
  }
}

/** Finishes what the record names as retiring (a status call, the reconciler). */
export function finishRetiring(
  deps: { readonly iot: DeviceIot; readonly registry: DeviceRegistry },
  record: DeviceRecord,
  signal: AbortSignal,
): Promise<RetirementReport> {
  if (record.retiring.length === 0) return Promise.resolve({ retired: [], failures: [] });
  return retireAndForget(deps, record.thingName, record.retiring, signal);
}
