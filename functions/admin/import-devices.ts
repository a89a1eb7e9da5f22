/**
 * What `gdp-admin import` does with checked rows (import-file.ts): new devices go in without ever
 * overwriting a record (registry-import.ts); with --update, existing records get the row's key
 * and pin through the operator's audited, conditional change. The existing records are read 100
 * at a time, so an unchanged re-import costs one BatchGetItem per 100 rows and no write.
 * --dry-run reads the same and counts what the real run would do. No terminal needed: the CLI
 * (cli.ts) prints what this returns.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { toPem } from '../provisioning/ca-certificate';
import type { AuditEntry, DeviceRecord } from '../provisioning/device-record';
import { checkPublicKeyPem } from '../provisioning/key-soundness';
import type { ImportRegistry, OperatorRegistry } from '../provisioning/registry';
import { auditEntry } from './audit';
import type { CheckedFile, ImportRow } from './import-file';

export interface ImportSummary {
  /** Rows in the file (accepted and rejected). */
  readonly rows: number;
  readonly rejected: number;
  /** Accepted rows with no record when the import read the registry. */
  readonly new: number;
  /** Accepted rows whose record existed when the import read the registry. */
  readonly existing: number;
  /** New records written (in a dry run: 0). */
  readonly written: number;
  /** New rows whose record appeared between the read and the write (a device or another import): left as they are. */
  readonly appeared: number;
  /** Existing records updated (--update); in a dry run, how many would be. */
  readonly updated: number;
  /** Existing records that --update found changed by someone else meanwhile: left as they are. */
  readonly updateLost: number;
  /** Seconds from the first registry call to the last. */
  readonly seconds: number;
  /** Accepted rows handled per second (read, and written where needed). */
  readonly rowsPerSecond: number;
  /** TransactWriteItems calls (up to 100 new records each), retries included. */
  readonly transactionCalls: number;
  readonly throttledRetries: number;
  readonly conflictRetries: number;
  readonly dryRun: boolean;
}

export interface ImportDependencies {
  readonly registry: ImportRegistry & Pick<OperatorRegistry, 'change'>;
  /** Who is importing (STS GetCallerIdentity), for the audit entries. */
  readonly caller: () => Promise<string>;
  /** Asked once before anything is written, with what will change; throws to stop. */
  readonly confirm: (question: string) => Promise<void>;
  readonly log: (line: string) => void;
}

export interface ImportOptions {
  /** The file's name, for audit entries and messages. */
  readonly file: string;
  readonly update: boolean;
  readonly dryRun: boolean;
  readonly concurrency: number;
  readonly tableName: string;
  readonly onProgress?: (count: number, total: number) => void;
}

/** A stored key as import-file.ts would store it, so formatting alone is no change. */
function canonicalKeyPem(pem: string | undefined): string | undefined {
  if (!pem) return undefined;
  const verdict = checkPublicKeyPem(pem);
  return verdict.sound ? toPem(verdict.spki, 'PUBLIC KEY') : pem;
}

/** The attributes --update would set on `record` from `row`; empty when it already holds them. */
export function updateFor(
  row: ImportRow,
  record: Pick<DeviceRecord, 'devicePublicKeyPem' | 'regionPin'>,
): Record<string, AttributeValue> {
  return {
    ...(row.devicePublicKeyPem && row.devicePublicKeyPem !== canonicalKeyPem(record.devicePublicKeyPem)
      ? { device_public_key: { S: row.devicePublicKeyPem } }
      : {}),
    ...(row.regionPin && row.regionPin !== record.regionPin ? { region_pin: { S: row.regionPin } } : {}),
  };
}

/** Runs `task` over `items`, `concurrency` at a time. */
async function eachConcurrently<T>(
  items: readonly T[],
  concurrency: number,
  task: (item: T) => Promise<void>,
) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await task(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
}

export async function importDevices(
  deps: ImportDependencies,
  checked: CheckedFile,
  options: ImportOptions,
): Promise<ImportSummary> {
  const { registry } = deps;
  const started = Date.now();
  const names = checked.rows.map((row) => row.thingName);
  // A plain import needs only which names exist; --update also the key and pin, then whole
  // records (audit history, version) for the rows it changes.
  const fields = options.update ? await registry.importedFields(names) : undefined;
  const existingNames = fields ? new Set(fields.keys()) : await registry.existingNames(names);
  const fresh = checked.rows.filter((row) => !existingNames.has(row.thingName));
  const changing = fields
    ? checked.rows.filter((row) => {
        const stored = fields.get(row.thingName);
        return stored !== undefined && Object.keys(updateFor(row, stored)).length > 0;
      })
    : [];
  const records =
    changing.length > 0
      ? await registry.existingRecords(changing.map((row) => row.thingName))
      : new Map<string, DeviceRecord>();
  const updates = changing.flatMap((row) => {
    const record = records.get(row.thingName);
    const set = record ? updateFor(row, record) : {};
    return record && Object.keys(set).length > 0 ? [{ row, record, set }] : [];
  });
  let written = 0;
  let appeared = 0;
  let updated = 0;
  let updateLost = 0;
  let transactionCalls = 0;
  let conflictRetries = 0;
  let throttledRetries = 0;
  if (!options.dryRun && (fresh.length > 0 || updates.length > 0)) {
    await deps.confirm(
      `add ${fresh.length} devices${options.update ? ` and update ${updates.length}` : ''} in ${options.tableName}?`,
    );
    const by = await deps.caller();
    const total = fresh.length + updates.length;
    let done = 0;
    const progressed = (count: number) => {
      done += count;
      options.onProgress?.(done, total);
    };
    const audit: AuditEntry = {
      at: new Date().toISOString(),
      by,
      what: `import ${options.file}`,
      before: {},
      after: { prov_status: 'unprovisioned' },
    };
    const report = await registry.putNewDevices(fresh, {
      audit,
      concurrency: options.concurrency,
      onWritten: progressed,
    });
    written = report.written;
    appeared = report.alreadyThere.length;
    transactionCalls = report.calls;
    conflictRetries = report.conflictRetries;
    throttledRetries = report.throttledRetries;
    for (const thingName of report.alreadyThere) {
      const line = checked.rows.find((row) => row.thingName === thingName)?.line;
      deps.log(`${options.file}:${line}: ${thingName} got a record while importing; left as it is`);
    }
    // Each update is one conditional UpdateItem; several in flight.
    await eachConcurrently(updates, options.concurrency * 4, async ({ row, record, set }) => {
      const entry = auditEntry(record, `import --update ${options.file}`, by, { set });
      if (await registry.change(record, { set, audit: entry })) updated += 1;
      else {
        updateLost += 1;
        deps.log(
          `${options.file}:${row.line}: ${row.thingName} changed while importing; run the import again`,
        );
      }
      progressed(1);
    });
  } else if (options.dryRun) updated = updates.length;
  const seconds = (Date.now() - started) / 1000;
  return {
    rows: checked.rows.length + checked.rejected.length,
    rejected: checked.rejected.length,
    new: fresh.length,
    existing: existingNames.size,
    written,
    appeared,
    updated,
    updateLost,
    seconds,
    rowsPerSecond: Math.round(checked.rows.length / Math.max(0.001, seconds)),
    transactionCalls,
    throttledRetries,
    conflictRetries,
    dryRun: options.dryRun,
  };
}

/** The summary line an operator reads. */
export function summaryText(summary: ImportSummary, update: boolean): string {
  const left = summary.existing - summary.updated - (summary.dryRun ? 0 : summary.updateLost);
  const parts = summary.dryRun
    ? [`dry run: would add ${summary.new} devices`, ...(update ? [`update ${summary.updated}`] : [])]
    : [
        `added ${summary.written} devices`,
        ...(update ? [`updated ${summary.updated}`] : []),
        ...(summary.appeared > 0
          ? [`${summary.appeared} got a record meanwhile and were left as they are`]
          : []),
        ...(summary.updateLost > 0 ? [`${summary.updateLost} changed meanwhile and were not updated`] : []),
      ];
  const accepted = summary.rows - summary.rejected;
  const writes = summary.dryRun
    ? 'no writes'
    : `${summary.transactionCalls} TransactWriteItems calls, ${summary.throttledRetries} throttled and ${summary.conflictRetries} conflicting ones resent`;
  return (
    `${parts.join(', ')}, ${summary.dryRun ? 'leave' : 'left'} ${left} existing as they are, rejected ${summary.rejected}` +
    ` — ${accepted} rows in ${summary.seconds.toFixed(1)} s, ${summary.rowsPerSecond} rows/s (${writes})`
  );
}
