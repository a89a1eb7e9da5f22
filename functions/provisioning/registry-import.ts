/**
 * The registry as `gdp-admin import` uses it: which records exist (BatchGetItem), and new records
 * put only where none exists.
 *
 * The import must never overwrite a record: a device may provision, or another import run, between
 * the existence check and the write, and an overwritten record would say `unprovisioned` while the
 * device's certificate is live (the reconciler would then retire it). BatchWriteItem can't carry a
 * condition, so new records go in TransactWriteItems, each Put conditional on
 * `attribute_not_exists(thing_name)`, TRANSACTION_ITEMS per call: one round trip for many rows,
 * as a batch was, at twice the write units per item (DynamoDB's price for a transaction). A row
 * at a time (PutItem) would cost one round trip per row: 200 rows/s on the local stack, against
 * 4,000 for batches. A transaction is all or nothing: when some of its records exist, DynamoDB
 * cancels it and names them (CancellationReasons), and the rest is sent again without them.
 */
import {
  AttributeValue,
  BatchGetItemCommand,
  TransactionCanceledException,
  TransactWriteItemsCommand,
} from '@aws-sdk/client-dynamodb';
import { createHash, randomUUID } from 'node:crypto';
import { isThrottling } from './aws-errors';
import { AuditEntry, DeviceRecord, historyWith, PROV_STATUS, toDeviceRecord } from './device-record';
import { backoff, MAX_BATCH_ATTEMPTS, RegistryTable, translate } from './registry-table';

/** A device to put on the allowlist (gdp-admin import). */
export interface NewDevice {
  readonly thingName: string;
  readonly devicePublicKeyPem?: string;
  readonly regionPin?: string;
}

/** DynamoDB takes up to 100 items per transaction; more per call means fewer round trips. */
export const TRANSACTION_ITEMS = 100;

export interface ImportWriteReport {
  /** New records written by this import. */
  readonly written: number;
  /** Records that existed when their write was tried (a device or another import got there first): left as they are. */
  readonly alreadyThere: readonly string[];
  /** TransactWriteItems calls, retries included. */
  readonly calls: number;
  /** Transactions sent again after throttling (an error, or a cancellation for throughput). */
  readonly throttledRetries: number;
  /** Transactions sent again because a concurrent write touched one of their records. */
  readonly conflictRetries: number;
}

export interface ImportRegistry {
  /** Which of these thing names have a record (BatchGetItem, 100 at a time, consistent reads). */
  existingNames(thingNames: readonly string[], signal?: AbortSignal): Promise<Set<string>>;
  /**
   * What an import row can set (device key and pin) of the records that exist: enough to tell
   * which rows --update changes, at the cost of existingNames.
   */
  importedFields(
    thingNames: readonly string[],
    signal?: AbortSignal,
  ): Promise<Map<string, Pick<DeviceRecord, 'devicePublicKeyPem' | 'regionPin'>>>;
  /** The records of these thing names that exist, whole (BatchGetItem, 100 at a time, consistent reads). */
  existingRecords(thingNames: readonly string[], signal?: AbortSignal): Promise<Map<string, DeviceRecord>>;
  /**
   * Puts new unprovisioned records, never over an existing one (see the header), up to
   * TRANSACTION_ITEMS per TransactWriteItems call, `concurrency` calls at a time.
   */
  putNewDevices(
    devices: readonly NewDevice[],
    options: {
      readonly audit: AuditEntry;
      readonly concurrency?: number;
      readonly onWritten?: (count: number) => void;
      readonly signal?: AbortSignal;
    },
  ): Promise<ImportWriteReport>;
}

/** One new record and its name, as a transaction carries it. */
export interface NewItem {
  readonly thingName: string;
  readonly item: Record<string, AttributeValue>;
}

/**
 * Sends one transaction: resolves when every Put was applied; rejects with DynamoDB's error
 * (TransactionCanceledException names why, per item, in CancellationReasons).
 */
export type SendTransaction = (items: readonly NewItem[], clientRequestToken: string) => Promise<void>;

const CANCELLED_AS_EXISTING = 'ConditionalCheckFailed';
const CANCELLED_BY_THROUGHPUT = new Set([
  'ThrottlingError',
  'ProvisionedThroughputExceeded',
  'RequestLimitExceeded',
]);
/** Reasons that say nothing against the item itself: cancelled with another, or by a concurrent write. */
const CANCELLED_FOR_ANOTHER = new Set(['None', 'TransactionConflict']);

/**
 * Writes every item exactly once or leaves its existing record alone. Exported for the unit test:
 * moto (the local AWS) neither throttles inside a transaction nor reports TransactionConflict.
 *
 * `isOurs` tells a record this import wrote (a transaction applied whose answer was lost, then sent
 * again after the idempotency token's window) from someone else's.
 */
export async function writeTransactions(
  send: SendTransaction,
  batches: readonly (readonly NewItem[])[],
  options: {
    readonly concurrency?: number;
    readonly onWritten?: (count: number) => void;
    readonly signal?: AbortSignal;
    readonly maxAttempts?: number;
    readonly isOurs?: (existing: Record<string, AttributeValue> | undefined) => boolean;
  },
): Promise<ImportWriteReport> {
  const maxAttempts = options.maxAttempts ?? MAX_BATCH_ATTEMPTS;
  // A token per import run and item set: DynamoDB answers a resend of an applied transaction
  // (its answer lost) as a success for 10 minutes instead of cancelling it.
  const run = randomUUID();
  const tokenFor = (items: readonly NewItem[]) =>
    createHash('sha256')
      .update(run)
      .update(items.map((entry) => entry.thingName).join('\n'))
      .digest('base64url')
      .slice(0, 36);
  let written = 0;
  let calls = 0;
  let throttledRetries = 0;
  let conflictRetries = 0;
  const alreadyThere: string[] = [];
  let next = 0;
  async function worker(): Promise<void> {
    while (next < batches.length) {
      let batch = batches[next++] as readonly NewItem[];
      for (let attempt = 0; batch.length > 0; attempt += 1) {
        if (attempt >= maxAttempts) {
          throw new Error(`TransactWriteItems still refused ${batch.length} items after ${attempt} attempts`);
        }
        if (attempt > 0) await backoff(attempt, options.signal);
        calls += 1;
        try {
          await send(batch, tokenFor(batch));
        } catch (error) {
          if (isThrottling(error) || (error as Error).name === 'TransactionInProgressException') {
            throttledRetries += 1;
            continue;
          }
          if (!(error instanceof TransactionCanceledException)) throw translate(error, 'import');
          const reasons = error.CancellationReasons ?? [];
          const codes = batch.map((_, index) => reasons[index]?.Code ?? 'None');
          const unknown = codes.find(
            (code) =>
              code !== CANCELLED_AS_EXISTING &&
              !CANCELLED_BY_THROUGHPUT.has(code) &&
              !CANCELLED_FOR_ANOTHER.has(code),
          );
          if (unknown)
            throw new Error(`TransactWriteItems cancelled: ${unknown} (${error.message})`, { cause: error });
          const existing = new Set<number>();
          codes.forEach((code, index) => {
            if (code !== CANCELLED_AS_EXISTING) return;
            existing.add(index);
            if (options.isOurs?.(reasons[index]?.Item)) {
              written += 1;
              options.onWritten?.(1);
            } else alreadyThere.push((batch[index] as NewItem).thingName);
          });
          if (existing.size === 0) {
            if (codes.some((code) => CANCELLED_BY_THROUGHPUT.has(code))) throttledRetries += 1;
            else conflictRetries += 1;
            continue;
          }
          // Only the records that exist leave the batch; the others were cancelled with them and
          // go again at once, as a new item set.
          batch = batch.filter((_, index) => !existing.has(index));
          attempt = -1;
          continue;
        }
        written += batch.length;
        options.onWritten?.(batch.length);
        batch = [];
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 4) }, worker));
  return { written, alreadyThere, calls, throttledRetries, conflictRetries };
}

async function batchGet(
  table: RegistryTable,
  thingNames: readonly string[],
  projection: string | undefined,
  signal: AbortSignal | undefined,
): Promise<Record<string, AttributeValue>[]> {
  const { dynamodb, TableName, key } = table;
  const found: Record<string, AttributeValue>[] = [];
  for (let start = 0; start < thingNames.length; start += 100) {
    let keys: Record<string, AttributeValue>[] = thingNames.slice(start, start + 100).map(key);
    for (let attempt = 0; keys.length > 0; attempt += 1) {
      if (attempt >= MAX_BATCH_ATTEMPTS) throw new Error(`BatchGetItem left ${keys.length} keys unprocessed`);
      if (attempt > 0) await backoff(attempt, signal);
      const answer = await dynamodb.send(
        new BatchGetItemCommand({
          RequestItems: {
            [TableName]: {
              Keys: keys,
              ConsistentRead: true,
              ...(projection ? { ProjectionExpression: projection } : {}),
            },
          },
        }),
        { abortSignal: signal },
      );
      found.push(...(answer.Responses?.[TableName] ?? []));
      keys = answer.UnprocessedKeys?.[TableName]?.Keys ?? [];
    }
  }
  return found;
}

export function importRegistry(table: RegistryTable): ImportRegistry {
  const { dynamodb, TableName } = table;
  return {
    async existingNames(thingNames, signal) {
      const items = await batchGet(table, thingNames, 'thing_name', signal);
      return new Set(items.flatMap((item) => (item.thing_name?.S ? [item.thing_name.S] : [])));
    },

    async importedFields(thingNames, signal) {
      const items = await batchGet(table, thingNames, 'thing_name, device_public_key, region_pin', signal);
      return new Map(
        items.flatMap((item) =>
          item.thing_name?.S
            ? [
                [
                  item.thing_name.S,
                  {
                    ...(item.device_public_key?.S ? { devicePublicKeyPem: item.device_public_key.S } : {}),
                    ...(item.region_pin?.S ? { regionPin: item.region_pin.S } : {}),
                  },
                ],
              ]
            : [],
        ),
      );
    },

    async existingRecords(thingNames, signal) {
      const items = await batchGet(table, thingNames, undefined, signal);
      return new Map(items.map((item) => toDeviceRecord(item)).map((record) => [record.thingName, record]));
    },

    async putNewDevices(devices, options) {
      const history = historyWith(undefined, options.audit);
      const items: NewItem[] = devices.map((device) => ({
        thingName: device.thingName,
        item: {
          thing_name: { S: device.thingName },
          prov_status: { S: PROV_STATUS.unprovisioned },
          ...(device.devicePublicKeyPem ? { device_public_key: { S: device.devicePublicKeyPem } } : {}),
          ...(device.regionPin ? { region_pin: { S: device.regionPin } } : {}),
          record_version: { N: '1' },
          history,
        },
      }));
      const batches: NewItem[][] = [];
      for (let start = 0; start < items.length; start += TRANSACTION_ITEMS)
        batches.push(items.slice(start, start + TRANSACTION_ITEMS));
      const ourHistory = JSON.stringify(history);
      return writeTransactions(
        async (batch, clientRequestToken) => {
          await dynamodb.send(
            new TransactWriteItemsCommand({
              ClientRequestToken: clientRequestToken,
              TransactItems: batch.map(({ item }) => ({
                Put: {
                  TableName,
                  Item: item,
                  ConditionExpression: 'attribute_not_exists(thing_name)',
                  ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
                },
              })),
            }),
            { abortSignal: options.signal },
          );
        },
        batches,
        {
          ...options,
          // Ours: written by this run (the same audit entry, to the millisecond) and untouched since.
          isOurs: (existing) =>
            existing?.record_version?.N === '1' && JSON.stringify(existing.history) === ourHistory,
        },
      );
    },
  };
}
