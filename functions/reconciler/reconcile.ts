/**
 * The reconciler: finishes what dead or failed provisioning requests left, through the same
 * registry and IoT adapters the function uses. Scheduled in AWS (EventBridge Scheduler), and
 * `make reconcile` locally.
 *
 * 1. Stale claims (lease expired: their function is dead). The claim and its intent are dropped
 *    first, with a compare-and-set on exactly that claim, then the intent's certificate is
 *    retired. In that order a request resuming the intent at the same moment can't end up with a
 *    retired certificate: one of the two writes fails.
 * 2. Certificates of our CA that no record references (live, pending, or a move's other copy) and that were registered
 *    before the scan began, minus a grace period: orphans of killed requests, previous
 *    certificates whose retirement failed, extra live certificates on a thing. Provably ours
 *    (ListCertificatesByCA), so nothing another issuer made is ever touched.
 * 3. Provisioned records whose certificate no longer exists: back to unprovisioned, so the
 *    device can provision again instead of being stranded.
 *
 * Between 1 and 2: renewals whose grace period ended without the device proving its new key (a
 * status call does that, and retires the previous certificate itself). The previous certificate
 * is retired, then forgotten; after the grace period exactly one certificate is live.
 */
import type { DeviceRecord } from '../provisioning/device-record';
import { PROV_STATUS, referencedCertificates } from '../provisioning/device-record';
import type { DeviceIot } from '../provisioning/iot';
import type { Registry } from '../provisioning/registry';
import { finishRetiring } from '../provisioning/retiring';

export interface ReconcileDependencies {
  readonly registry: Registry;
  readonly iot: DeviceIot;
  readonly regions: readonly string[];
  /** Certificates registered less than this long before the run are left alone. */
  readonly graceSeconds: number;
  readonly clock?: () => number;
  /** One line per action, for people (the CLI) and logs (the scheduled function). */
  readonly log?: (line: string) => void;
  readonly signal?: AbortSignal;
  /**
   * Only records whose thing name starts with this (stale claims, missing certificates). The
   * sweep of orphan certificates is account-wide either way.
   */
  readonly thingNamePrefix?: string;
  /** Called for every record scanned and every certificate listed: progress for the CLI. */
  readonly onProgress?: (step: 'records' | 'certificates', region?: string) => void;
}

export interface ReconcileReport {
  readonly recordsScanned: number;
  readonly certificatesListed: number;
  readonly staleClaimsReleased: number;
  readonly orphanCertificatesRetired: number;
  readonly recordsReset: number;
  /** Renewals' previous certificates retired at the end of their grace period. */
  readonly previousCertificatesRetired: number;
  /** Provisioned records whose certificate exists but is not ACTIVE (reported, not changed). */
  readonly inactiveCertificates: number;
  readonly failures: readonly string[];
  /**
   * Everything repaired: the alarm's metric. Grace periods that ended are routine (a device whose
   * proving status call was refused), so they are counted apart.
   */
  readonly fixed: number;
}

const refKey = (region: string, certificateId: string) => `${region}/${certificateId}`;

export async function reconcile(deps: ReconcileDependencies): Promise<ReconcileReport> {
  const { registry, iot, signal } = deps;
  const log = deps.log ?? (() => undefined);
  const now = () => (deps.clock ?? Date.now)();
  const startedAt = now();
  const failures: string[] = [];
  const fail = (what: string, error: unknown) => {
    failures.push(`${what}: ${(error as Error).name}: ${(error as Error).message}`);
    log(`FAILED ${what}: ${(error as Error).name}`);
  };

  // 1. Every record, and what each references.
  const referenced = new Set<string>();
  const stale: DeviceRecord[] = [];
  const graceEnded: DeviceRecord[] = [];
  /** Records naming certificates as retiring (retiring.ts): retired, then forgotten, here too. */
  const retiring: DeviceRecord[] = [];
  const provisioned: DeviceRecord[] = [];
  let recordsScanned = 0;
  for await (const record of registry.scan(signal)) {
    recordsScanned += 1;
    deps.onProgress?.('records');
    const inScope = record.thingName.startsWith(deps.thingNamePrefix ?? '');
    // The live copy, a pending intent, and a move's copy in the other region.
    for (const ref of referencedCertificates(record)) referenced.add(refKey(ref.region, ref.certificateId));
    if (!inScope) continue;
    if (record.claimId && (record.claimExpires ?? 0) <= Math.floor(startedAt / 1000)) stale.push(record);
    if (record.previous && record.previous.retireAfter <= Math.floor(startedAt / 1000))
      graceEnded.push(record);
    if (record.retiring.length > 0) retiring.push(record);
    if (record.provStatus === PROV_STATUS.provisioned && record.certificateId && record.region) {
      provisioned.push(record);
    }
  }
  log(
    `scanned ${recordsScanned} records: ${stale.length} stale claims, ${graceEnded.length} renewal grace periods ended`,
  );

  let staleClaimsReleased = 0;
  for (const record of stale) {
    try {
      if (!(await registry.dropStaleClaim(record, signal))) continue; // it moved on meanwhile
      staleClaimsReleased += 1;
      const pending = record.pending;
      if (pending && pending.certificateId !== record.certificateId) {
        await iot.retireCertificate(pending.region, pending.certificateId, signal);
        referenced.delete(refKey(pending.region, pending.certificateId));
      }
      log(
        `released the stale claim on ${record.thingName}${pending ? ` and retired ${pending.certificateId}` : ''}`,
      );
    } catch (error) {
      fail(`stale claim on ${record.thingName}`, error);
    }
  }

  let previousCertificatesRetired = 0;
  for (const record of graceEnded) {
    const previous = record.previous;
    if (!previous) continue;
    try {
      // Retire first, then forget: stopped in between, the next run finds it named and retires
      // again (retiring a certificate that is gone is done).
      await iot.retireCertificate(previous.region, previous.certificateId, signal);
      referenced.delete(refKey(previous.region, previous.certificateId));
      if (await registry.forgetPrevious(record, signal)) previousCertificatesRetired += 1;
      log(
        `${record.thingName}: retired previous certificate ${previous.certificateId} in ${previous.region} (grace period ended)`,
      );
    } catch (error) {
      fail(`previous certificate of ${record.thingName}`, error);
    }
  }

  for (const record of retiring) {
    const report = await finishRetiring(deps, record, signal ?? new AbortController().signal);
    for (const certificate of report.retired) {
      referenced.delete(refKey(certificate.region, certificate.certificateId));
      log(
        `${record.thingName}: retired ${certificate.certificateId} in ${certificate.region} (named as retiring)`,
      );
    }
    for (const { certificate, errorClass } of report.failures) {
      failures.push(
        `retiring certificate ${certificate.certificateId} of ${record.thingName}: ${errorClass}`,
      );
    }
  }

  // 2 and 3, region by region.
  let certificatesListed = 0;
  let orphanCertificatesRetired = 0;
  let recordsReset = 0;
  let inactiveCertificates = 0;
  const cutoff = startedAt - deps.graceSeconds * 1000;
  for (const region of deps.regions) {
    const ours = new Map<string, string>();
    try {
      for await (const certificate of iot.listCertificatesOfOurCa(region, signal)) {
        certificatesListed += 1;
        deps.onProgress?.('certificates', region);
        ours.set(certificate.certificateId, certificate.status);
        const key = refKey(region, certificate.certificateId);
        const createdAt = certificate.createdAt?.getTime() ?? 0;
        if (referenced.has(key) || createdAt >= cutoff) continue;
        try {
          await iot.retireCertificate(region, certificate.certificateId, signal);
          orphanCertificatesRetired += 1;
          ours.delete(certificate.certificateId);
          log(`retired orphan certificate ${certificate.certificateId} in ${region}`);
        } catch (error) {
          fail(`orphan certificate ${certificate.certificateId} in ${region}`, error);
        }
      }
    } catch (error) {
      // Without the whole listing, "missing" can't be told from "not listed": skip step 3 here.
      fail(`listing the certificates of our CA in ${region}`, error);
      continue;
    }

    for (const record of provisioned.filter((candidate) => candidate.region === region)) {
      const certificateId = record.certificateId as string;
      try {
        let status = ours.get(certificateId);
        // Not ours: issued before the CA (CreateKeysAndCertificate), or gone. Ask.
        if (status === undefined)
          status = (await iot.describeCertificate(region, certificateId, signal))?.status;
        if (status === undefined) {
          if (await registry.resetMissingCertificate(record, signal)) {
            recordsReset += 1;
            log(`${record.thingName}: certificate ${certificateId} is gone; record reset to unprovisioned`);
          }
        } else if (status !== 'ACTIVE') {
          inactiveCertificates += 1;
          log(`${record.thingName}: certificate ${certificateId} in ${region} is ${status}`);
        }
      } catch (error) {
        fail(`checking the certificate of ${record.thingName}`, error);
      }
    }
  }

  const fixed = staleClaimsReleased + orphanCertificatesRetired + recordsReset;
  log(
    `done in ${now() - startedAt} ms: ${staleClaimsReleased} stale claims released, ` +
      `${previousCertificatesRetired} previous certificates retired, ` +
      `${orphanCertificatesRetired} orphan certificates retired, ${recordsReset} records reset, ` +
      `${inactiveCertificates} inactive certificates reported, ${failures.length} failures`,
  );
  return {
    recordsScanned,
    certificatesListed,
    staleClaimsReleased,
    orphanCertificatesRetired,
    recordsReset,
    previousCertificatesRetired,
    inactiveCertificates,
    failures,
    fixed,
  };
}
