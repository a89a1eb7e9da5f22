/**
 * The registry table's one DynamoDB client and the helpers every part of the registry adapter
 * shares: key shape, conditional updates that recognise our own writes, error translation. The
 * parts are split by who calls them (registry-device, registry-operator, registry-import,
 * registry-reconciler); registry.ts puts them together as the one adapter.
 */
import {
  AttributeValue,
  ConditionalCheckFailedException,
  DynamoDBClient,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { awsClientSettings } from './aws-client-settings';
import { hasName, isThrottling, isTransient } from './aws-errors';
import type { DeviceRecord } from './device-record';
import { ProvisioningError, recordTooLarge, throttled, unavailable } from './errors';

export interface RegistryTable {
  readonly dynamodb: DynamoDBClient;
  readonly TableName: string;
  readonly key: (thingName: string) => Record<string, AttributeValue>;
  /**
   * A conditional update that asked for the old item on failure: true when written, or when the
   * condition failed on our own write (applied with its answer lost, then retried by the SDK);
   * false when another write got there first.
   */
  readonly updateRecognisingOwn: (
    command: UpdateItemCommand,
    isOurs: (old: Record<string, AttributeValue> | undefined) => boolean,
    signal?: AbortSignal,
  ) => Promise<boolean>;
  /** A conditional update: true when written, false when the record no longer matched. */
  readonly updateIfStill: (command: UpdateItemCommand, signal?: AbortSignal) => Promise<boolean>;
}

export function registryTable(settings: { region: string; tableName: string }): RegistryTable {
  const dynamodb = new DynamoDBClient(awsClientSettings(settings.region));
  const updateRecognisingOwn: RegistryTable['updateRecognisingOwn'] = async (command, isOurs, signal) => {
    try {
      await dynamodb.send(command, { abortSignal: signal });
      return true;
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) return isOurs(error.Item);
      throw error;
    }
  };
  return {
    dynamodb,
    TableName: settings.tableName,
    key: (thingName) => ({ thing_name: { S: thingName } }),
    updateRecognisingOwn,
    updateIfStill: (command, signal) => updateRecognisingOwn(command, () => false, signal),
  };
}

export const PENDING_ATTRIBUTES =
  'pending_certificate_id, pending_certificate_pem, pending_region, pending_key_sha256, pending_key_mode, pending_since';

export const MOVE_ATTRIBUTES = 'move_to_region, move_started, moved_from_region, moved_at';

export const PREVIOUS_ATTRIBUTES = 'previous_certificate_id, previous_region, previous_retire_after';

/**
 * Attributes earlier versions wrote and nothing reads any more: every update of ours removes them,
 * so a record an older version stuffed (the unbounded `used_nonces` set, up to DynamoDB's 400 KB
 * item limit) shrinks with the first write instead of failing it.
 */
export const LEGACY_ATTRIBUTES: readonly string[] = ['used_nonces'];

/**
 * A key-mode answer's sealed private key (answer-recovery.ts). Every write of ours removes it
 * (updateExpression) but the mark that writes it and the writes that leave the device's state
 * alone (a nonce spent, retired certificates forgotten): whatever else happens to a record, a
 * new certificate, a status call that proves the key, an operator's change, ends its recovery.
 */
export const SEALED_KEY_ATTRIBUTES: readonly string[] = ['sealed_key', 'sealed_key_until'];

/**
 * An UpdateExpression from its clauses, shedding LEGACY_ATTRIBUTES and, unless `keepSealedKey`,
 * SEALED_KEY_ATTRIBUTES. REMOVE comes first: DynamoDB
 * limits the item as it ends up, but moto applies the clauses in order and would refuse a SET that
 * grows a stuffed item before the REMOVE shrinks it.
 */
export function updateExpression(clauses: {
  readonly set?: readonly string[];
  readonly remove?: readonly string[];
  readonly add?: readonly string[];
  readonly delete?: readonly string[];
  readonly keepSealedKey?: boolean;
}): string {
  const shed = [...LEGACY_ATTRIBUTES, ...(clauses.keepSealedKey ? [] : SEALED_KEY_ATTRIBUTES)];
  const remove = [...(clauses.remove ?? []), ...shed.filter((name) => !clauses.remove?.includes(name))];
  return [
    `REMOVE ${remove.join(', ')}`,
    clauses.set?.length ? `SET ${clauses.set.join(', ')}` : '',
    clauses.add?.length ? `ADD ${clauses.add.join(', ')}` : '',
    clauses.delete?.length ? `DELETE ${clauses.delete.join(', ')}` : '',
  ]
    .filter((clause) => clause.length > 0)
    .join(' ');
}

export function translate(error: unknown, what: string): unknown {
  if (error instanceof ProvisioningError) return error;
  // "Item size has exceeded the maximum allowed size" / "Item size to update has exceeded ...".
  if (hasName(error, 'ValidationException') && /item size/i.test((error as Error).message)) {
    return recordTooLarge(what, error);
  }
  if (isThrottling(error)) return throttled(`registry is busy (${what}); retry shortly`, 1, error);
  if (isTransient(error) || (error as Error | undefined)?.name === 'AbortError') {
    return unavailable(`registry is unavailable (${what}); retry shortly`, error);
  }
  return error;
}

/** `name = :value` for the value as read, or `attribute_not_exists(name)` when it was absent. */
export function unchanged(
  record: DeviceRecord,
  attribute: string,
  values: Record<string, AttributeValue>,
): string {
  const seen = record.raw[attribute];
  if (seen === undefined) return `attribute_not_exists(${attribute})`;
  values[`:seen_${attribute}`] = seen;
  return `${attribute} = :seen_${attribute}`;
}

/** How often one batch is sent again (UnprocessedItems or throttling) before the import fails. */
export const MAX_BATCH_ATTEMPTS = 12;

/** Exponential backoff with full jitter: up to 50 ms · 2^attempt, at most 5 s. */
export function backoff(attempt: number, signal?: AbortSignal): Promise<void> {
  const ceiling = Math.min(5_000, 50 * 2 ** attempt);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, Math.random() * ceiling);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
}
