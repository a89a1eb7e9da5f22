/**
 * What gdp-admin prints about records: list rows, the status × region count, stats, and `show`
 * with the disagreements between the record and AWS IoT. Pure: records and reports in, text or
 * plain objects out.
 */
import { DeviceRecord, PROV_STATUS } from '../provisioning/device-record';
import { X509Certificate } from 'node:crypto';
import type { PrincipalReport, ThingReport } from '../provisioning/iot';
import { recordValidity } from '../provisioning/lifecycle';

export interface ListRow {
  readonly thingName: string;
  readonly status: string;
  readonly region?: string;
  readonly provisioned?: string;
  readonly certificateId?: string;
  readonly regionPin?: string;
  readonly movedFrom?: string;
  readonly claim?: string;
}

const iso = (epochSeconds: number | undefined) =>
  epochSeconds === undefined ? undefined : new Date(epochSeconds * 1000).toISOString().slice(0, 19) + 'Z';

export function listRow(record: DeviceRecord): ListRow {
  return {
    thingName: record.thingName,
    status: record.provStatus,
    ...(record.region ? { region: record.region } : {}),
    ...(record.provisionedAtEpoch !== undefined ? { provisioned: iso(record.provisionedAtEpoch) } : {}),
    ...(record.certificateId ? { certificateId: record.certificateId } : {}),
    ...(record.regionPin ? { regionPin: record.regionPin } : {}),
    ...(record.movedFrom ? { movedFrom: record.movedFrom.region } : {}),
    ...(record.claimId ? { claim: `until ${iso(record.claimExpires)}` } : {}),
  };
}

/** Columns padded to their widest cell. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column] ?? 0))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export const LIST_HEADER = ['THING', 'STATUS', 'REGION', 'PROVISIONED', 'CERTIFICATE', 'NOTE'];

export function listTableRow(row: ListRow): string[] {
  const note = [
    row.regionPin ? `pinned ${row.regionPin}` : '',
    row.movedFrom ? `also live in ${row.movedFrom}` : '',
    row.claim ? `claim ${row.claim}` : '',
  ]
    .filter(Boolean)
    .join('; ');
  return [
    row.thingName,
    row.status,
    row.region ?? '',
    row.provisioned ?? '',
    row.certificateId ? row.certificateId.slice(0, 12) : '',
    note,
  ];
}

/** status → region ('-' for none) → count. */
export type Counts = Record<string, Record<string, number>>;

export function addToCounts(counts: Counts, record: DeviceRecord): void {
  const byRegion = (counts[record.provStatus || '(none)'] ??= {});
  const region = record.region ?? '-';
  byRegion[region] = (byRegion[region] ?? 0) + 1;
}

export function countsTable(counts: Counts): string {
  const regions = [...new Set(Object.values(counts).flatMap((byRegion) => Object.keys(byRegion)))].sort();
  const statuses = Object.keys(counts).sort();
  const rows = statuses.map((status) => {
    const byRegion = counts[status] ?? {};
    const total = Object.values(byRegion).reduce((sum, count) => sum + count, 0);
    return [status, ...regions.map((region) => String(byRegion[region] ?? '')), String(total)];
  });
  const totals = regions.map((region) =>
    String(statuses.reduce((sum, status) => sum + (counts[status]?.[region] ?? 0), 0)),
  );
  const all = statuses.reduce(
    (sum, status) => sum + Object.values(counts[status] ?? {}).reduce((a, b) => a + b, 0),
    0,
  );
  return table(['STATUS', ...regions, 'TOTAL'], [...rows, ['total', ...totals, String(all)]]);
}

export interface Stats {
  readonly counts: Counts;
  /** Provisionings per hour over the last 24 hours, oldest hour first (from prov_epoch). */
  readonly perHour: readonly { readonly hour: string; readonly provisioned: number }[];
  /** The oldest claims in flight (or stale), oldest first. */
  readonly oldestClaims: readonly {
    readonly thingName: string;
    readonly expires: string;
    readonly stale: boolean;
  }[];
}

export class StatsBuilder {
  private readonly counts: Counts = {};
  private readonly hours = new Array<number>(24).fill(0);
  private readonly claims: { thingName: string; expires: number }[] = [];
  private readonly firstHour: number;

  constructor(private readonly nowSeconds: number) {
    this.firstHour = Math.floor(nowSeconds / 3600) - 23;
  }

  add(record: DeviceRecord): void {
    addToCounts(this.counts, record);
    const epoch = record.provisionedAtEpoch;
    if (epoch !== undefined) {
      const slot = Math.floor(epoch / 3600) - this.firstHour;
      if (slot >= 0 && slot < 24) this.hours[slot] = (this.hours[slot] ?? 0) + 1;
    }
    if (record.claimId) this.claims.push({ thingName: record.thingName, expires: record.claimExpires ?? 0 });
  }

  build(limit = 10): Stats {
    return {
      counts: this.counts,
      perHour: this.hours.map((provisioned, slot) => ({
        hour: new Date((this.firstHour + slot) * 3600 * 1000).toISOString().slice(0, 13) + ':00Z',
        provisioned,
      })),
      oldestClaims: this.claims
        .sort((a, b) => a.expires - b.expires)
        .slice(0, limit)
        .map((claim) => ({
          thingName: claim.thingName,
          expires: iso(claim.expires) ?? '',
          stale: claim.expires <= this.nowSeconds,
        })),
    };
  }
}

export function statsText(stats: Stats): string {
  const peak = Math.max(1, ...stats.perHour.map((hour) => hour.provisioned));
  const bars = stats.perHour
    .map(
      (hour) =>
        `  ${hour.hour}  ${String(hour.provisioned).padStart(7)}  ${'#'.repeat(Math.round((40 * hour.provisioned) / peak))}`,
    )
    .join('\n');
  const claims =
    stats.oldestClaims.length === 0
      ? '  none'
      : stats.oldestClaims
          .map(
            (claim) =>
              `  ${claim.thingName}  lease until ${claim.expires}${claim.stale ? '  STALE (the reconciler releases it)' : ''}`,
          )
          .join('\n');
  return `${countsTable(stats.counts)}\n\nprovisionings per hour, last 24 hours (UTC):\n${bars}\n\noldest claims in flight:\n${claims}`;
}

/** Where the record and AWS IoT disagree, in words an operator can act on. */
export function disagreements(
  record: DeviceRecord,
  reports: readonly ThingReport[],
  nowSeconds: number,
): string[] {
  const warnings: string[] = [];
  const { thingName } = record;
  const home = reports.find((report) => report.region === record.region);
  const expectsLive =
    record.provStatus === PROV_STATUS.provisioned || record.provStatus === PROV_STATUS.disabled;
  if (record.certificateId && record.region && home) {
    const principal = home.principals.find((candidate) => candidate.certificateId === record.certificateId);
    if (!home.thing)
      warnings.push(`the record says ${record.region}, but there is no thing ${thingName} there`);
    else if (!principal) {
      warnings.push(
        `the record points at certificate ${record.certificateId}, which is not attached to ${thingName} in ${record.region} (missing?)`,
      );
    } else if (principal.status === undefined) {
      warnings.push(
        `certificate ${record.certificateId} is attached but no longer exists in ${record.region}`,
      );
    } else if (
      expectsLive &&
      record.provStatus === PROV_STATUS.provisioned &&
      principal.status !== 'ACTIVE'
    ) {
      warnings.push(
        `the record is provisioned but its certificate is ${principal.status}: the device cannot connect`,
      );
    }
  }
  for (const report of reports) {
    // A renewal's previous certificate is live on purpose during its grace period.
    const active = report.principals.filter(
      (principal) =>
        principal.status === 'ACTIVE' &&
        !(
          record.previous?.certificateId === principal.certificateId &&
          record.previous.region === report.region
        ),
    );
    if (active.length > 1) {
      warnings.push(
        `thing ${thingName} in ${report.region} has ${active.length} live certificates: ${active.map((p) => p.certificateId.slice(0, 12)).join(', ')}`,
      );
    }
    if (report.thing && !report.thing.ours) {
      warnings.push(
        `thing ${thingName} in ${report.region} was not created by this service (no marker attribute)`,
      );
    }
    const foreign = report.principals.filter(
      (principal) => principal.status !== undefined && !principal.ours,
    );
    if (foreign.length > 0)
      warnings.push(`${report.region}: ${foreign.length} certificate(s) from another issuer attached`);
    if (record.provStatus === PROV_STATUS.revoked && active.length > 0) {
      warnings.push(`the record is revoked but ${report.region} still has a live certificate`);
    }
  }
  if (
    !record.certificateId &&
    reports.some((report) => report.principals.some((p) => p.status === 'ACTIVE' && p.ours))
  ) {
    warnings.push(
      'the record has no certificate, but a live certificate of ours is attached (the reconciler retires it)',
    );
  }
  if (record.claimId && (record.claimExpires ?? 0) <= nowSeconds) {
    warnings.push('a stale claim (a request that died): the reconciler or the next request releases it');
  }
  if (record.moveTo) {
    warnings.push(
      `a move to ${record.moveTo.region} is under way or was interrupted: \`gdp-admin move ${thingName} --to ${record.moveTo.region}\` continues it`,
    );
  }
  return warnings;
}

/** The deployment's certificate policy, and where this device's certificate stands in it. */
export interface CertificatePolicy {
  readonly validityDays: number;
  readonly renewAtPercent: number;
  readonly renewGraceSeconds: number;
}

/** notBefore/notAfter/renewAfter of the record's certificate, under the deployment's renewal point. */
export function certificateLifetime(record: DeviceRecord, policy: CertificatePolicy) {
  const validity = recordValidity(record, policy.renewAtPercent);
  return (
    validity && {
      notBefore: validity.notBefore.toISOString(),
      notAfter: validity.notAfter.toISOString(),
      renewAfter: validity.renewAfter.toISOString(),
    }
  );
}

const day = (date: Date) => date.toISOString().slice(0, 10);

/**
 * A certificate's dates as `show` prints them, with their source: the certificate's own (its PEM
 * on the record, for the live and the pending certificate), else what DescribeCertificate says.
 * The two differ locally: moto invents its own validity for a registered certificate.
 */
export function principalValidity(
  record: DeviceRecord,
  principal: Pick<PrincipalReport, 'certificateId' | 'notBefore' | 'notAfter'>,
): string {
  const pem =
    principal.certificateId === record.certificateId
      ? record.certificatePem
      : principal.certificateId === record.pending?.certificateId
        ? record.pending.certificatePem
        : undefined;
  if (pem) {
    try {
      const certificate = new X509Certificate(pem);
      return `  valid ${day(new Date(certificate.validFrom))} → ${day(new Date(certificate.validTo))} (its PEM)`;
    } catch {
      // Unreadable on the record: fall back to AWS IoT's dates, labelled as such.
    }
  }
  return principal.notAfter
    ? `  valid ${principal.notBefore ? day(principal.notBefore) : '?'} → ${day(principal.notAfter)} (AWS IoT's DescribeCertificate)`
    : '';
}

export function showText(
  record: DeviceRecord,
  reports: readonly ThingReport[],
  warnings: readonly string[],
  policy?: CertificatePolicy,
): string {
  const lines: string[] = [];
  const row = listRow(record);
  lines.push(`${record.thingName}: ${record.provStatus}${record.region ? ` in ${record.region}` : ''}`);
  const field = (name: string, value: string | number | undefined) => {
    if (value !== undefined && value !== '') lines.push(`  ${name.padEnd(20)} ${value}`);
  };
  field('provisioned', row.provisioned);
  field('first provisioned', iso(record.firstProvisionedAtEpoch));
  field('re-issues', record.reissueCount || undefined);
  field('certificate', record.certificateId);
  const lifetime = policy ? certificateLifetime(record, policy) : undefined;
  if (lifetime) {
    field('valid (its PEM)', `${lifetime.notBefore} → ${lifetime.notAfter}`);
    field('renews from', `${lifetime.renewAfter} (status answers "renew")`);
  }
  if (record.previous) {
    field(
      'previous certificate',
      `${record.previous.certificateId} in ${record.previous.region}, ACTIVE until the device uses the new one or ${iso(record.previous.retireAfter)}`,
    );
  }
  field('endpoint', record.endpointAddress);
  field(
    'last status call',
    record.statusEpoch !== undefined
      ? `${iso(record.statusEpoch)}${record.raw.status_region?.S ? ` from ${record.raw.status_region.S}` : ''}`
      : undefined,
  );
  field('thing', record.thingArn);
  field('key', record.devicePublicKeyPem ? 'own device key (v2)' : 'fleet key');
  field('region pin', record.regionPin);
  field('claim', row.claim);
  field('record version', record.version);
  if (record.movedFrom && record.region) {
    lines.push(
      `  BOTH ${record.region} and ${record.movedFrom.region} accept this device (moved ${iso(record.movedFrom.at)}); ` +
        `\`gdp-admin move ${record.thingName} --finish\` retires the ${record.movedFrom.region} copy once it uses ${record.region}`,
    );
  }
  for (const report of reports) {
    lines.push('', `AWS IoT ${report.region}:`);
    if (!report.thing) {
      lines.push('  no thing of that name');
      continue;
    }
    lines.push(
      `  thing ${report.thing.thingArn}${report.thing.ours ? '' : ' (not created by this service)'}`,
    );
    if (report.principals.length === 0) lines.push('  no certificates attached');
    for (const principal of report.principals) {
      lines.push(
        `  certificate ${principal.certificateId}  ${principal.status ?? 'MISSING'}` +
          principalValidity(record, principal) +
          `  issuer ${principal.ours ? 'our CA' : (principal.caCertificateId ?? 'none (registered without CA)')}` +
          `  policies ${principal.policies.join(', ') || 'none'}`,
      );
    }
  }
  if (policy) {
    lines.push(
      '',
      `certificate policy: valid ${policy.validityDays} days, renewal from ${policy.renewAtPercent} % of the lifetime, ` +
        `previous certificate kept ${Math.round(policy.renewGraceSeconds / 3600)} h after a renewal`,
    );
  }
  lines.push('', 'history:');
  if (record.history.length === 0) lines.push('  none');
  for (const entry of record.history) {
    const changes = Object.keys({ ...entry.before, ...entry.after })
      .map((name) => `${name}: ${entry.before[name] ?? '-'} → ${entry.after[name] ?? '-'}`)
      .join('; ');
    lines.push(`  ${entry.at}  ${entry.what}  by ${entry.by}${changes ? `  (${changes})` : ''}`);
  }
  if (warnings.length > 0) {
    lines.push('', 'WARNINGS:');
    for (const warning of warnings) lines.push(`  ! ${warning}`);
  }
  return lines.join('\n');
}
