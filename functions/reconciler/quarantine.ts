/**
 * The quarantine: certificates of our CA that no record references are deactivated first and
 * deleted only after a quarantine period (default 7 days), if they are still unreferenced and
 * still INACTIVE. Until then a restore is one reactivation: their thing and policy attachments
 * are kept.
 *
 * Where the quarantine is recorded: nowhere but in AWS IoT itself. A certificate is in quarantine
 * when it is ours (ListCertificatesByCA), INACTIVE and referenced by no record; it entered the
 * quarantine when its status last changed (DescribeCertificate's lastModifiedDate). Why not a
 * record of our own:
 * - nothing can disagree with the truth: a restored, emptied or wrong table can't lose or invent
 *   quarantine entries, and a certificate an operator reactivated by hand has left it;
 * - the registry table's key space stays devices only (operator scans, counts and the import read
 *   every item as a device), and there is no second table to deploy, back up or point wrong;
 * - every read and write goes through the IoT and registry adapters the reconciler already uses.
 * Fail safe: a certificate whose lastModifiedDate is missing or not after its creationDate can't
 * date its quarantine, and is never deleted (listed with no date; an operator decides).
 */
import type { DeviceIot } from '../provisioning/iot';
import { referencedCertificates } from '../provisioning/device-record';
import type { Registry } from '../provisioning/registry';

export const DEFAULT_QUARANTINE_DAYS = 7;

export const refKey = (region: string, certificateId: string) => `${region}/${certificateId}`;

/** Every certificate copy some record references, as refKey(region, id). */
export async function referencedByRecords(registry: Registry, signal?: AbortSignal): Promise<Set<string>> {
  const referenced = new Set<string>();
  for await (const record of registry.scan(signal)) {
    for (const ref of referencedCertificates(record)) referenced.add(refKey(ref.region, ref.certificateId));
  }
  return referenced;
}

export interface QuarantinedCertificate {
  readonly certificateId: string;
  readonly region: string;
  /** When it was deactivated (ISO), or undefined when AWS IoT can't say: then never deleted. */
  readonly since?: string;
  /** The things it is still attached to (a restore makes it work there again). */
  readonly things: readonly string[];
}

/** When a certificate's quarantine began, from its state; undefined when it can't be dated. */
export function quarantinedSince(state: { createdAt?: Date; lastModifiedAt?: Date }): Date | undefined {
  const since = state.lastModifiedAt;
  if (!since || !state.createdAt || since.getTime() <= state.createdAt.getTime()) return undefined;
  return since;
}

/** The quarantine as it stands: `gdp-admin quarantine`. */
export async function listQuarantine(
  deps: { readonly registry: Registry; readonly iot: DeviceIot; readonly regions: readonly string[] },
  signal?: AbortSignal,
): Promise<QuarantinedCertificate[]> {
  const referenced = await referencedByRecords(deps.registry, signal);
  const entries: QuarantinedCertificate[] = [];
  for (const region of deps.regions) {
    for await (const certificate of deps.iot.listCertificatesOfOurCa(region, signal)) {
      if (certificate.status !== 'INACTIVE') continue;
      if (referenced.has(refKey(region, certificate.certificateId))) continue;
      const state = await deps.iot.describeCertificate(region, certificate.certificateId, signal);
      if (!state) continue;
      entries.push({
        certificateId: certificate.certificateId,
        region,
        since: quarantinedSince(state)?.toISOString(),
        things: await deps.iot.certificateThings(region, certificate.certificateId, signal),
      });
    }
  }
  return entries;
}
