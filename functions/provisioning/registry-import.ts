/**
 * The registry as `gdp-admin import` uses it: which names exist, and batch puts of new records.
 */
import {
  AttributeValue,
  BatchGetItemCommand,
  BatchWriteItemCommand,
  WriteRequest,
} from '@aws-sdk/client-dynamodb';
import { isThrottling } from './aws-errors';
import { AuditEntry, historyWith, PROV_STATUS } from './device-record';
import { backoff, MAX_BATCH_ATTEMPTS, RegistryTable, translate } from './registry-table';

/** A device to put on the allowlist (gdp-admin import). */
export interface NewDevice {
  readonly thingName: string;
  readonly devicePublicKeyPem?: string;
  readonly regionPin?: string;
}

export interface BatchWriteReport {
  readonly written: number;
  /** BatchWriteItem calls, retries included. */
  readonly calls: number;
  /** Items DynamoDB handed back as UnprocessedItems and that were sent again. */
  readonly unprocessedRetried: number;
  /** Whole batches sent again after a throttling error outlived the SDK's own retries. */
  readonly throttledRetries: number;
}

export interface ImportRegistry {
  /** Which of these thing names have a record (BatchGetItem, 100 at a time). */
  existingNames(thingNames: readonly string[], signal?: AbortSignal): Promise<Set<string>>;
  /**
   * Puts new unprovisioned records with BatchWriteItem, 25 per call, `concurrency` calls at a
   * time, sending UnprocessedItems again with backoff. Only for records that don't exist: a
   * batch put can't be conditional.
   */
  putNewDevices(
    devices: readonly NewDevice[],
    options: {
      readonly audit: AuditEntry;
      readonly concurrency?: number;
      readonly onWritten?: (count: number) => void;
      readonly signal?: AbortSignal;
    },
  ): Promise<BatchWriteReport>;
}

/**
 * Sends every batch until DynamoDB has taken every item: UnprocessedItems go again with backoff,
 * and so does a whole batch whose throttling error outlived the SDK's retries (a rejected batch
 * wrote nothing). Exported for the unit test: moto never answers UnprocessedItems.
 */
export async function writeBatches(
  send: (batch: WriteRequest[]) => Promise<{ UnprocessedItems?: Record<string, WriteRequest[]> }>,
  tableName: string,
  batches: readonly WriteRequest[][],
  options: {
    readonly concurrency?: number;
    readonly onWritten?: (count: number) => void;
    readonly signal?: AbortSignal;
    readonly maxAttempts?: number;
  },
): Promise<BatchWriteReport> {
  const maxAttempts = options.maxAttempts ?? MAX_BATCH_ATTEMPTS;
  let written = 0;
  let calls = 0;
  let unprocessedRetried = 0;
  let throttledRetries = 0;
  let next = 0;
  async function worker(): Promise<void> {
    while (next < batches.length) {
      let batch = batches[next++] as WriteRequest[];
      for (let attempt = 0; batch.length > 0; attempt += 1) {
        if (attempt >= maxAttempts) {
          throw new Error(`BatchWriteItem still refused ${batch.length} items after ${attempt} attempts`);
        }
        if (attempt > 0) await backoff(attempt, options.signal);
        calls += 1;
        let left: WriteRequest[];
        try {
          left = (await send(batch)).UnprocessedItems?.[tableName] ?? [];
        } catch (error) {
          if (!isThrottling(error)) throw translate(error, 'import');
          throttledRetries += 1;
          continue;
        }
        const done = batch.length - left.length;
        written += done;
        if (done > 0) options.onWritten?.(done);
        unprocessedRetried += left.length;
        batch = left;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 4) }, worker));
  return { written, calls, unprocessedRetried, throttledRetries };
}

export function importRegistry(table: RegistryTable): ImportRegistry {
  const { dynamodb, TableName, key } = table;
  return {
    async existingNames(thingNames, signal) {
      const found = new Set<string>();
      for (let start = 0; start < thingNames.length; start += 100) {
        let keys: Record<string, AttributeValue>[] = thingNames.slice(start, start + 100).map(key);
        for (let attempt = 0; keys.length > 0; attempt += 1) {
          if (attempt > 0) await backoff(attempt, signal);
          const answer = await dynamodb.send(
            new BatchGetItemCommand({
              RequestItems: {
                [TableName]: { Keys: keys, ProjectionExpression: 'thing_name', ConsistentRead: true },
              },
            }),
            { abortSignal: signal },
          );
          for (const item of answer.Responses?.[TableName] ?? []) {
            if (item.thing_name?.S) found.add(item.thing_name.S);
          }
          keys = answer.UnprocessedKeys?.[TableName]?.Keys ?? [];
          if (attempt >= MAX_BATCH_ATTEMPTS)
            throw new Error(`BatchGetItem left ${keys.length} keys unprocessed`);
        }
      }
      return found;
    },

    async putNewDevices(devices, options) {
      const history = historyWith(undefined, options.audit);
      const requests: WriteRequest[] = devices.map((device) => ({
        PutRequest: {
          Item: {
            thing_name: { S: device.thingName },
            prov_status: { S: PROV_STATUS.unprovisioned },
            ...(device.devicePublicKeyPem ? { device_public_key: { S: device.devicePublicKeyPem } } : {}),
            ...(device.regionPin ? { region_pin: { S: device.regionPin } } : {}),
            record_version: { N: '1' },
            history,
          },
        },
      }));
      const batches: WriteRequest[][] = [];
      for (let start = 0; start < requests.length; start += 25)
        batches.push(requests.slice(start, start + 25));
      return writeBatches(
        (batch) =>
          dynamodb.send(new BatchWriteItemCommand({ RequestItems: { [TableName]: batch } }), {
            abortSignal: options.signal,
          }),
        TableName,
        batches,
        options,
      );
    },
  };
}
