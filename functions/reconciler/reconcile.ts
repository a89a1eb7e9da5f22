/**
 * The reconciler: finishes what dead or failed provisioning requests left, through the same
 * registry and IoT adapters the function uses. Scheduled in AWS (EventBridge Scheduler), and
 * `make reconcile` locally.
 *
 * A run plans first and acts second. It reads every record and lists our CA's certificates in
 * every region, decides everything below, and lets the circuit breaker (breaker.ts) judge the
 * plan: a plan that would take more than a bounded share of the fleet, or that rests on records
 * it can't read, does nothing destructive at all and emits `ReconcilerAborted`. Every destructive
 * step then goes through the breaker's budget.
 *
 * 1. Stale claims (lease expired: their function is dead). The claim and its intent are dropped
 *    first, with a compare-and-set on exactly that claim and record version, then the intent's
 *    certificate is retired. In that order a request resuming the intent at the same moment
 *    can't end up with a retired certificate: one of the two writes fails.
 * 2. Renewals whose grace period ended without the device proving its new key (a status call does
 *    that, and retires the previous certificate itself): the previous certificate is retired,
 *    then forgotten.
 * 3. Certificates of our CA that no record references (live, pending, previous, or a move's other
 *    copy) and that were registered before the scan began, minus a grace period: orphans of
 *    killed requests, failed retirements. Provably ours (ListCertificatesByCA), so nothing
 *    another issuer made is ever touched. They are quarantined (deactivated, attachments kept),
 *    and deleted only once in quarantine longer than the quarantine period (quarantine.ts).
 * 4. Provisioned records whose certificate no longer exists: back to unprovisioned, so the device
 *    can provision again. Judged again on the record read fresh just before the write (a move or
 *    a re-provisioning may have happened since the scan), and written only if the record is still
 *    at that version and region.
 * 5. Empty things of ours in a region where no record places the device: what a CreateThing left
 *    that AWS IoT applied after its answer was lost (a retry succeeded meanwhile, and a move or an
 *    undo deleted the thing before the late one landed). Provably ours (our marker attribute),
 *    judged again on the record read fresh, and deleted only while it holds no certificate
 *    (iot.deleteThingIfOursAndEmpty); a thing with a certificate is left to step 3's quarantine.
 *
 * `ReconcilerRun` (1) is emitted at the end of every run that got that far, aborted or not: a
 * heartbeat. A run that throws (the table or IoT unreadable) emits none, which is the point.
 */
import type { DeviceRecord } from '../provisioning/device-record';
import { PROV_STATUS, referencedCertificates } from '../provisioning/device-record';
import type { DeviceIot } from '../provisioning/iot';
import type { Registry } from '../provisioning/registry';
import { finishRetiring } from '../provisioning/retiring';
import {
  BreakerLimits,
  breakerLimit,
  BreakerVerdict,
  DEFAULT_BREAKER,
  DestructionBudget,
  judgeRun,
} from './breaker';
import { DEFAULT_QUARANTINE_DAYS, quarantinedSince, refKey } from './quarantine';

export interface ReconcileDependencies {
  readonly registry: Registry;
  readonly iot: DeviceIot;
  readonly regions: readonly string[];
  /** Certificates registered less than this long before the run are left alone. */
  readonly graceSeconds: number;
  /** How long an orphan stays deactivated before it is deleted (default 7 days). */
  readonly quarantineSeconds?: number;
  /** The circuit breaker's N and X (default DEFAULT_BREAKER). */
  readonly breaker?: BreakerLimits;
  /** The operator confirmed a run larger than the breaker allows (`--allow-large`). */
  readonly allowLarge?: boolean;
  /** Emits a count metric (the scheduled function: CloudWatch EMF). */
  readonly count?: (metric: string, value: number) => void;
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
  /** Orphans deactivated into the quarantine this run. */
  readonly orphanCertificatesQuarantined: number;
  /** Quarantined certificates deleted this run (their quarantine period ended). */
  readonly quarantinedCertificatesDeleted: number;
  readonly recordsReset: number;
  /** Renewals' previous certificates retired at the end of their grace period. */
  readonly previousCertificatesRetired: number;
  /** Provisioned records whose certificate exists but is not ACTIVE (reported, not changed). */
  readonly inactiveCertificates: number;
  /** Sealed keys (answer-recovery.ts) removed because their window ended. */
  readonly sealedKeysWiped: number;
  /** Empty things of ours deleted from regions where no record places their device (step 5). */
  readonly strayThingsDeleted: number;
  /** True when the circuit breaker stopped the run: nothing destructive was done. */
  readonly aborted: boolean;
  readonly breaker: BreakerVerdict & { readonly planned: number; readonly unreferencedActive: number };
  readonly failures: readonly string[];
  /**
   * Everything repaired: the alarm's metric. Grace periods that ended are routine (a device whose
   * proving status call was refused), so they are counted apart.
   */
  readonly fixed: number;
}

/** Attributes that name a certificate or its region: read as anything but a string, the reference is lost. */
const REFERENCE_ATTRIBUTES = [
  'certificate_id',
  'aws_region',
  'pending_certificate_id',
  'pending_region',
  'previous_certificate_id',
  'previous_region',
  'move_to_region',
  'moved_from_region',
] as const;

/** How a record names certificates the reconciler can't read: each would look unreferenced. */
export function unreadableReferences(record: DeviceRecord): string[] {
  const problems = REFERENCE_ATTRIBUTES.filter((attribute) => {
    const value = record.raw[attribute];
    return value !== undefined && value.NULL !== true && typeof value.S !== 'string';
  });
  if (record.raw.pending_certificate_id?.S && !record.pending) problems.push('pending_certificate_id');
  if (record.raw.previous_certificate_id?.S && !record.previous) problems.push('previous_certificate_id');
  if (record.certificateId && !record.region) problems.push('aws_region');
  return [...new Set(problems)].map((attribute) => `${record.thingName}: ${attribute}`);
}

/**
 * The regions a record places its device in, where its thing must stay: where it lives, where a
 * move takes or took it, and where any certificate it names is registered.
 */
function placedIn(record: DeviceRecord): string[] {
  const regions = referencedCertificates(record).map((ref) => ref.region);
  if (record.region) regions.push(record.region);
  return [...new Set(regions)];
}

interface Listed {
  readonly region: string;
  readonly certificateId: string;
  readonly status: string;
}

export async function reconcile(deps: ReconcileDependencies): Promise<ReconcileReport> {
  const { registry, iot, signal } = deps;
  const log = deps.log ?? (() => undefined);
  const count = deps.count ?? (() => undefined);
  const now = () => (deps.clock ?? Date.now)();
  const startedAt = now();
  const nowSeconds = Math.floor(startedAt / 1000);
  const failures: string[] = [];
  const fail = (what: string, error: unknown) => {
    failures.push(`${what}: ${(error as Error).name}: ${(error as Error).message}`);
    log(`FAILED ${what}: ${(error as Error).name}`);
  };

  // Plan 1: every record, and what each references.
  const referenced = new Set<string>();
  const stale: DeviceRecord[] = [];
  const graceEnded: DeviceRecord[] = [];
  /** Records naming certificates as retiring (retiring.ts): retired, then forgotten, here too. */
  const retiring: DeviceRecord[] = [];
  const provisioned: DeviceRecord[] = [];
  /** Records holding a sealed key whose recovery window ended. */
  const expiredSeals: DeviceRecord[] = [];
  const unreadable: string[] = [];
  /** `region/thingName` of every region a record places its device in (step 5 keeps their things). */
  const placed = new Set<string>();
  let recordsScanned = 0;
  for await (const record of registry.scan(signal)) {
    recordsScanned += 1;
    deps.onProgress?.('records');
    unreadable.push(...unreadableReferences(record));
    // The live copy, a pending intent, a renewal's previous one, and a move's copy in the other region.
    for (const ref of referencedCertificates(record)) referenced.add(refKey(ref.region, ref.certificateId));
    for (const region of placedIn(record)) placed.add(refKey(region, record.thingName));
    if (!record.thingName.startsWith(deps.thingNamePrefix ?? '')) continue;
    if (record.claimId && (record.claimExpires ?? 0) <= nowSeconds) stale.push(record);
    if (record.previous && record.previous.retireAfter <= nowSeconds) graceEnded.push(record);
    if (record.retiring.length > 0) retiring.push(record);
    if (record.raw.sealed_key && (record.sealedKeyUntil ?? 0) <= nowSeconds) expiredSeals.push(record);
    if (record.provStatus === PROV_STATUS.provisioned && record.certificateId && record.region) {
      provisioned.push(record);
    }
  }
  log(
    `scanned ${recordsScanned} records: ${stale.length} stale claims, ${graceEnded.length} renewal grace periods ended`,
  );

  // Plan 2: our CA's certificates, every region. A region that can't be listed whole is left
  // alone this run: "missing" can't be told from "not listed".
  const listed: Listed[] = [];
  const listedRegions = new Set<string>();
  const toQuarantine: Listed[] = [];
  const inQuarantine: Listed[] = [];
  for (const region of deps.regions) {
    const inRegion: Listed[] = [];
    try {
      const orphans: Listed[] = [];
      for await (const certificate of iot.listCertificatesOfOurCa(region, signal)) {
        deps.onProgress?.('certificates', region);
        const entry = { region, certificateId: certificate.certificateId, status: certificate.status };
        inRegion.push(entry);
        if (referenced.has(refKey(region, certificate.certificateId))) continue;
        const createdAt = certificate.createdAt?.getTime() ?? 0;
        if (createdAt < startedAt - deps.graceSeconds * 1000) orphans.push(entry);
      }
      listed.push(...inRegion);
      toQuarantine.push(...orphans.filter((orphan) => orphan.status === 'ACTIVE'));
      inQuarantine.push(...orphans.filter((orphan) => orphan.status === 'INACTIVE'));
      listedRegions.add(region);
    } catch (error) {
      fail(`listing the certificates of our CA in ${region}`, error);
    }
  }
  // Plan 2b: things of ours in regions no record places them in (step 5), in the regions whose
  // certificates were listed whole (so a region AWS could not answer for is left alone).
  const strayThings: { readonly region: string; readonly thingName: string }[] = [];
  for (const region of listedRegions) {
    const inRegion: { region: string; thingName: string }[] = [];
    try {
      for await (const thingName of iot.listThingsOfOurs(region, signal)) {
        if (!thingName.startsWith(deps.thingNamePrefix ?? '')) continue;
        if (!placed.has(refKey(region, thingName))) inRegion.push({ region, thingName });
      }
      strayThings.push(...inRegion);
    } catch (error) {
      fail(`listing the things of ours in ${region}`, error);
    }
  }
  const unreferencedActive = listed.filter(
    (certificate) =>
      certificate.status === 'ACTIVE' &&
      !referenced.has(refKey(certificate.region, certificate.certificateId)),
  ).length;

  // Plan 3: which quarantined certificates have served their time; which records lost their
  // certificate. Both need one DescribeCertificate each; stopped early once the plan is over the
  // limit anyway (the run will do none of it).
  const limits = deps.breaker ?? DEFAULT_BREAKER;
  const quarantineMs = (deps.quarantineSeconds ?? DEFAULT_QUARANTINE_DAYS * 86_400) * 1000;
  const quarantineEndedBefore = startedAt - quarantineMs;
  const isDue = (state: { status: string; createdAt?: Date; lastModifiedAt?: Date }) => {
    const since = quarantinedSince(state);
    return state.status === 'INACTIVE' && since !== undefined && since.getTime() <= quarantineEndedBefore;
  };
  const toDelete: Listed[] = [];
  const missing: DeviceRecord[] = [];
  const limit = breakerLimit(limits, listed.length);
  const retiringCount = retiring.reduce((sum, record) => sum + record.retiring.length, 0);
  const planned = () =>
    stale.length +
    graceEnded.length +
    retiringCount +
    toQuarantine.length +
    toDelete.length +
    missing.length +
    strayThings.length;
  const overLimit = () => deps.allowLarge !== true && (planned() > limit || unreferencedActive > limit);
  let inactiveCertificates = 0;
  const statusOf = new Map(
    listed.map((certificate) => [refKey(certificate.region, certificate.certificateId), certificate.status]),
  );
  for (const certificate of inQuarantine) {
    if (overLimit()) break;
    try {
      const state = await iot.describeCertificate(certificate.region, certificate.certificateId, signal);
      if (state && isDue(state)) toDelete.push(certificate);
    } catch (error) {
      fail(`describing quarantined certificate ${certificate.certificateId} in ${certificate.region}`, error);
    }
  }
  for (const record of provisioned) {
    if (overLimit()) break;
    const region = record.region as string;
    if (!listedRegions.has(region)) continue;
    const certificateId = record.certificateId as string;
    try {
      let status = statusOf.get(refKey(region, certificateId));
      // Not ours: issued before the CA (CreateKeysAndCertificate), or gone. Ask.
      if (status === undefined)
        status = (await iot.describeCertificate(region, certificateId, signal))?.status;
      if (status === undefined) missing.push(record);
      else if (status !== 'ACTIVE') {
        inactiveCertificates += 1;
        log(`${record.thingName}: certificate ${certificateId} in ${region} is ${status}`);
      }
    } catch (error) {
      fail(`checking the certificate of ${record.thingName}`, error);
    }
  }

  const verdict = judgeRun(
    { listed: listed.length, destructive: planned(), unreferencedActive, unreadable },
    limits,
  );
  const budget = new DestructionBudget(verdict, deps.allowLarge === true);
  const aborted = verdict.tripped && deps.allowLarge !== true;
  if (verdict.tripped) {
    for (const reason of verdict.reasons)
      log(`${aborted ? 'ABORTED' : 'ALLOWED (--allow-large)'}: ${reason}`);
  }

  let staleClaimsReleased = 0;
  let previousCertificatesRetired = 0;
  let orphanCertificatesQuarantined = 0;
  let quarantinedCertificatesDeleted = 0;
  let recordsReset = 0;
  let strayThingsDeleted = 0;
  // Not under the breaker: a sealed key past its window answers nothing any more, and removing it
  // touches no certificate and no device state.
  let sealedKeysWiped = 0;
  for (const record of expiredSeals) {
    try {
      if (await registry.wipeExpiredSealedKey(record, signal)) sealedKeysWiped += 1;
    } catch (error) {
      fail(`expired sealed key of ${record.thingName}`, error);
    }
  }
  if (sealedKeysWiped > 0) log(`removed ${sealedKeysWiped} expired sealed keys`);
  if (!aborted) {
    for (const record of stale) {
      try {
        budget.spend(`stale claim on ${record.thingName}`);
        if (!(await registry.dropStaleClaim(record, signal))) continue; // it moved on meanwhile
        staleClaimsReleased += 1;
        const pending = record.pending;
        if (pending && pending.certificateId !== record.certificateId) {
          await iot.retireCertificate(pending.region, pending.certificateId, signal);
        }
        log(
          `released the stale claim on ${record.thingName}${pending ? ` and retired ${pending.certificateId}` : ''}`,
        );
      } catch (error) {
        fail(`stale claim on ${record.thingName}`, error);
      }
    }

    for (const record of graceEnded) {
      const previous = record.previous;
      if (!previous) continue;
      try {
        budget.spend(`previous certificate of ${record.thingName}`);
        // Retire first, then forget: stopped in between, the next run finds it named and retires
        // again (retiring a certificate that is gone is done).
        await iot.retireCertificate(previous.region, previous.certificateId, signal);
        if (await registry.forgetPrevious(record, signal)) previousCertificatesRetired += 1;
        log(
          `${record.thingName}: retired previous certificate ${previous.certificateId} in ${previous.region} (grace period ended)`,
        );
      } catch (error) {
        fail(`previous certificate of ${record.thingName}`, error);
      }
    }

    // Named as retiring by a request that could not finish (retiring.ts): the record says so.
    for (const record of retiring) {
      try {
        for (const certificate of record.retiring)
          budget.spend(`retiring certificate ${certificate.certificateId} of ${record.thingName}`);
        const report = await finishRetiring(deps, record, signal ?? new AbortController().signal);
        for (const certificate of report.retired)
          log(
            `${record.thingName}: retired ${certificate.certificateId} in ${certificate.region} (named as retiring)`,
          );
        for (const { certificate, errorClass } of report.failures)
          failures.push(
            `retiring certificate ${certificate.certificateId} of ${record.thingName}: ${errorClass}`,
          );
      } catch (error) {
        fail(`retiring certificates of ${record.thingName}`, error);
      }
    }

    for (const certificate of toQuarantine) {
      const what = `orphan certificate ${certificate.certificateId} in ${certificate.region}`;
      try {
        budget.spend(what);
        // Deactivated only: attached as it was, a restore is one reactivation.
        if (await iot.setCertificateStatus(certificate.region, certificate.certificateId, 'INACTIVE')) {
          orphanCertificatesQuarantined += 1;
          log(`quarantined ${what}`);
        }
      } catch (error) {
        fail(what, error);
      }
    }

    for (const certificate of toDelete) {
      const what = `quarantined certificate ${certificate.certificateId} in ${certificate.region}`;
      try {
        budget.spend(what);
        // Judged again on the certificate as it is now: restored or changed since, it stays.
        if (await iot.retireCertificateIf(certificate.region, certificate.certificateId, isDue, signal)) {
          quarantinedCertificatesDeleted += 1;
          log(`deleted ${what} (quarantine period over)`);
        }
      } catch (error) {
        fail(what, error);
      }
    }

    for (const scanned of missing) {
      try {
        budget.spend(`record ${scanned.thingName}`);
        // Judged again on the record as it is now, and written only if it still is.
        const record = await registry.read(scanned.thingName, signal);
        if (
          !record ||
          record.provStatus !== PROV_STATUS.provisioned ||
          record.certificateId !== scanned.certificateId ||
          record.region !== scanned.region ||
          !record.certificateId ||
          !record.region
        ) {
          continue;
        }
        if (await iot.describeCertificate(record.region, record.certificateId, signal)) continue;
        if (await registry.resetMissingCertificate(record, signal)) {
          recordsReset += 1;
          log(
            `${record.thingName}: certificate ${record.certificateId} is gone; record reset to unprovisioned`,
          );
        }
      } catch (error) {
        fail(`resetting ${scanned.thingName}`, error);
      }
    }

    for (const stray of strayThings) {
      const what = `thing ${stray.thingName} in ${stray.region}`;
      try {
        budget.spend(what);
        // Judged again on the record as it is now: a request or a move may place the device there since.
        const record = await registry.read(stray.thingName, signal);
        if (record && placedIn(record).includes(stray.region)) continue;
        // Ours and empty only (checked just before the delete); one holding a certificate stays.
        if (await iot.deleteThingIfOursAndEmpty(stray.region, stray.thingName, signal)) {
          strayThingsDeleted += 1;
          log(`deleted empty ${what} (no record places the device there)`);
        }
      } catch (error) {
        fail(what, error);
      }
    }
  }

  const fixed =
    staleClaimsReleased +
    orphanCertificatesQuarantined +
    quarantinedCertificatesDeleted +
    recordsReset +
    strayThingsDeleted;
  log(
    `done in ${now() - startedAt} ms${aborted ? ' (ABORTED by the circuit breaker: nothing changed)' : ''}: ` +
      `${staleClaimsReleased} stale claims released, ${previousCertificatesRetired} previous certificates retired, ` +
      `${orphanCertificatesQuarantined} orphan certificates quarantined, ` +
      `${quarantinedCertificatesDeleted} quarantined certificates deleted, ${recordsReset} records reset, ` +
      `${inactiveCertificates} inactive certificates reported, ${sealedKeysWiped} expired sealed keys removed, ` +
      `${strayThingsDeleted} empty things deleted, ` +
      `${failures.length} failures`,
  );
  if (aborted) count('ReconcilerAborted', 1);
  count('ReconcilerRun', 1);
  return {
    recordsScanned,
    certificatesListed: listed.length,
    staleClaimsReleased,
    orphanCertificatesQuarantined,
    quarantinedCertificatesDeleted,
    recordsReset,
    previousCertificatesRetired,
    inactiveCertificates,
    sealedKeysWiped,
    strayThingsDeleted,
    aborted,
    breaker: { ...verdict, planned: planned(), unreferencedActive },
    failures,
    fixed,
  };
}
