/**
 * Audit entries for operator changes: when, who (the STS caller), what, and the attributes it
 * changed, before and after. Certificate bodies stay out (they are in the record already and
 * would fill the bounded history); ids are enough to trace them.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import type { AuditEntry, DeviceRecord } from '../provisioning/device-record';

const NOT_AUDITED = new Set(['certificate_pem', 'pending_certificate_pem', 'device_public_key', 'history']);

function shown(value: AttributeValue | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (value.S !== undefined) return value.S;
  if (value.N !== undefined) return value.N;
  if (value.SS !== undefined) return `[${value.SS.length} values]`;
  return '[set]';
}

export function auditEntry(
  record: DeviceRecord,
  what: string,
  by: string,
  change: { readonly set?: Readonly<Record<string, AttributeValue>>; readonly remove?: readonly string[] },
  at: Date = new Date(),
): AuditEntry {
  const before: Record<string, string> = {};
  const after: Record<string, string> = {};
  for (const [attribute, value] of Object.entries(change.set ?? {})) {
    if (NOT_AUDITED.has(attribute)) {
      after[attribute] = record.raw[attribute] === undefined ? '(added)' : '(changed)';
      continue;
    }
    const old = shown(record.raw[attribute]);
    if (old !== undefined) before[attribute] = old;
    after[attribute] = shown(value) ?? '';
  }
  for (const attribute of change.remove ?? []) {
    const old = shown(record.raw[attribute]);
    if (old === undefined) continue;
    before[attribute] = NOT_AUDITED.has(attribute) ? '(present)' : old;
  }
  return { at: at.toISOString(), by, what, before, after };
}
