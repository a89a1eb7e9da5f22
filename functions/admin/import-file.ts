/**
 * Reading and checking an import file: CSV (header row) or NDJSON, with `thing_name`, optional
 * `device_public_key` (PEM SubjectPublicKeyInfo, v2 per-device keys) and optional `region` (a
 * pin). Pure: text in, rows and rejections with line numbers out.
 */
import { toPem } from '../provisioning/ca-certificate';
import { checkPublicKeyPem } from '../provisioning/key-soundness';
import { THING_NAME_PATTERN } from '../provisioning/request';
import type { NewDevice } from '../provisioning/registry';

export interface ImportRow extends NewDevice {
  /** Line of the file where the row starts (1-based). */
  readonly line: number;
}

export interface Rejection {
  readonly line: number;
  readonly reason: string;
}

export interface CheckedFile {
  readonly rows: readonly ImportRow[];
  readonly rejected: readonly Rejection[];
}

export type ImportFormat = 'csv' | 'ndjson';

const COLUMNS = ['thing_name', 'device_public_key', 'region'] as const;

/** RFC 4180 records (quoted fields may hold commas, quotes and line breaks), with start lines. */
function csvRecords(text: string): { line: number; fields: string[] }[] {
  const records: { line: number; fields: string[] }[] = [];
  let fields: string[] = [];
  let field = '';
  let quoted = false;
  let line = 1;
  let recordLine = 1;
  let touched = false;
  for (let index = 0; index < text.length; index += 1) {
    const char = text[index] as string;
    if (quoted) {
      if (char === '"' && text[index + 1] === '"') {
        field += '"';
        index += 1;
      } else if (char === '"') quoted = false;
      else {
        if (char === '\n') line += 1;
        field += char;
      }
      continue;
    }
    if (char === '"') {
      quoted = true;
      touched = true;
    } else if (char === ',') {
      fields.push(field);
      field = '';
      touched = true;
    } else if (char === '\n' || char === '\r') {
      if (char === '\r' && text[index + 1] === '\n') index += 1;
      if (touched || field.length > 0) records.push({ line: recordLine, fields: [...fields, field] });
      fields = [];
      field = '';
      touched = false;
      line += 1;
      recordLine = line;
    } else {
      field += char;
      touched = true;
    }
  }
  if (touched || field.length > 0) records.push({ line: recordLine, fields: [...fields, field] });
  return records;
}

/** Raw rows as objects keyed by column, each with its line; format errors become rejections. */
function rawRows(
  text: string,
  format: ImportFormat,
): { rows: { line: number; values: Record<string, unknown> }[]; rejected: Rejection[] } {
  const rejected: Rejection[] = [];
  const rows: { line: number; values: Record<string, unknown> }[] = [];
  if (format === 'ndjson') {
    text.split(/\r?\n/).forEach((content, index) => {
      if (content.trim() === '') return;
      try {
        const value: unknown = JSON.parse(content);
        if (typeof value !== 'object' || value === null || Array.isArray(value))
          throw new Error('not a JSON object');
        rows.push({ line: index + 1, values: value as Record<string, unknown> });
      } catch (error) {
        rejected.push({ line: index + 1, reason: `not a JSON object: ${(error as Error).message}` });
      }
    });
    return { rows, rejected };
  }
  const [header, ...records] = csvRecords(text);
  if (!header) return { rows, rejected };
  const columns = header.fields.map((name) => name.trim());
  const unknown = columns.filter((name) => !(COLUMNS as readonly string[]).includes(name));
  if (!columns.includes('thing_name') || unknown.length > 0) {
    rejected.push({
      line: header.line,
      reason: `the header must name thing_name and may name device_public_key and region${unknown.length > 0 ? ` (unknown: ${unknown.join(', ')})` : ''}`,
    });
    return { rows, rejected };
  }
  for (const record of records) {
    if (record.fields.length !== columns.length) {
      rejected.push({
        line: record.line,
        reason: `expected ${columns.length} fields, found ${record.fields.length}`,
      });
      continue;
    }
    rows.push({
      line: record.line,
      values: Object.fromEntries(columns.map((name, index) => [name, record.fields[index]])),
    });
  }
  return { rows, rejected };
}

/**
 * The device key of a row as the registry will hold it (one SubjectPublicKeyInfo PEM block), or
 * why it can't be a device key. The function checks the record's key the same way
 * (key-soundness.ts), so a key refused here would only ever be refused later, with a 401.
 */
export function devicePublicKey(pem: string): { pem: string } | { problem: string } {
  const verdict = checkPublicKeyPem(pem);
  if (!verdict.sound) return { problem: `device_public_key refused: ${verdict.problem}` };
  return { pem: toPem(verdict.spki, 'PUBLIC KEY') };
}

/** A cell's value for a message: quoted, control characters escaped, cut short when long. */
function shownValue(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}…` : text;
}

export function formatOf(fileName: string, explicit?: string): ImportFormat {
  if (explicit === 'csv' || explicit === 'ndjson') return explicit;
  return /\.(nd)?jsonl?$/i.test(fileName) || /\.ndjson$/i.test(fileName) ? 'ndjson' : 'csv';
}

export function checkImportFile(
  text: string,
  format: ImportFormat,
  enabledRegions: readonly string[],
): CheckedFile {
  const { rows: raw, rejected } = rawRows(text, format);
  const rows: ImportRow[] = [];
  const seen = new Map<string, number>();
  for (const { line, values } of raw) {
    const reject = (reason: string) => rejected.push({ line, reason });
    const thingName = values.thing_name;
    const keyText = values.device_public_key ?? '';
    const region = values.region ?? '';
    if (typeof thingName !== 'string' || !THING_NAME_PATTERN.test(thingName)) {
      reject(
        thingName === undefined || thingName === ''
          ? 'thing_name is missing'
          : `thing_name must be 1–128 characters of letters, digits, ':', '_' or '-'; got ${shownValue(thingName)}`,
      );
      continue;
    }
    if (typeof keyText !== 'string' || typeof region !== 'string') {
      reject('device_public_key and region must be strings');
      continue;
    }
    const first = seen.get(thingName);
    if (first !== undefined) {
      reject(`${thingName} is already on line ${first}`);
      continue;
    }
    // A PEM in one CSV cell or JSON string may carry its line breaks as \n.
    const pem = keyText.trim().replace(/\\n/g, '\n');
    const key = pem ? devicePublicKey(pem) : undefined;
    if (key && 'problem' in key) {
      reject(key.problem);
      continue;
    }
    if (region && !enabledRegions.includes(region)) {
      reject(`region ${region} is not enabled in this deployment (${enabledRegions.join(', ')})`);
      continue;
    }
    seen.set(thingName, line);
    rows.push({
      line,
      thingName,
      ...(key ? { devicePublicKeyPem: key.pem } : {}),
      ...(region ? { regionPin: region } : {}),
    });
  }
  if (raw.length === 0 && rejected.length === 0) {
    rejected.push({
      line: 1,
      reason: `no devices: the file is empty${format === 'csv' ? ' or holds only its header row' : ''}`,
    });
  }
  rejected.sort((a, b) => a.line - b.line);
  return { rows, rejected };
}
