/**
 * The registry as the reconciler uses it: finish what a dead request left (a stale claim) and
 * reset a record whose certificate is gone. Each write is conditional on the record as judged:
 * its version (every write of ours adds one, so any device request, operator change or move in
 * between makes it fail) and its region, besides the attributes the decision read.
 */
import { AttributeValue, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { DeviceRecord, PROV_STATUS } from './device-record';
import {
  MOVE_ATTRIBUTES,
  PENDING_ATTRIBUTES,
  PREVIOUS_ATTRIBUTES,
  RegistryTable,
  unchanged,
  updateExpression,
} from './registry-table';

export interface ReconcilerRegistry {
  /**
   * Drops a stale claim and its intent, if the record still holds exactly that claim (the
   * reconciler, once the intent's certificate is retired). False when the record moved on.
   */
  dropStaleClaim(record: DeviceRecord, signal?: AbortSignal): Promise<boolean>;
  /**
   * Puts a provisioned record whose certificate no longer exists back to unprovisioned, if it
   * is still exactly as judged (version, region, status, certificate, no claim). False when the
   * record moved on.
   */
  resetMissingCertificate(record: DeviceRecord, signal?: AbortSignal): Promise<boolean>;
  /**
   * Removes a sealed key (answer-recovery.ts) whose window ended, if the record still holds the
   * one judged (the same sealed_key_until). False when the record moved on.
   */
  wipeExpiredSealedKey(record: DeviceRecord, signal?: AbortSignal): Promise<boolean>;
}

export function reconcilerRegistry(table: RegistryTable): ReconcilerRegistry {
  const { TableName, key, updateIfStill } = table;
  return {
    async dropStaleClaim(record, signal) {
      const values: Record<string, AttributeValue> = { ':zero': { N: '0' }, ':one': { N: '1' } };
      const condition = [
        unchanged(record, 'record_version', values),
        unchanged(record, 'aws_region', values),
        unchanged(record, 'claim_id', values),
        unchanged(record, 'pending_certificate_id', values),
      ].join(' AND ');
      return updateIfStill(
        new UpdateItemCommand({
          TableName,
          Key: key(record.thingName),
          ConditionExpression: condition,
          UpdateExpression: updateExpression({
            set: ['record_version = if_not_exists(record_version, :zero) + :one'],
            remove: ['claim_id, claim_expires', PENDING_ATTRIBUTES],
          }),
          ExpressionAttributeValues: values,
        }),
        signal,
      );
    },

    async resetMissingCertificate(record, signal) {
      const values: Record<string, AttributeValue> = {
        ':unprovisioned': { S: PROV_STATUS.unprovisioned },
        ':zero': { N: '0' },
        ':one': { N: '1' },
      };
      const condition = [
        unchanged(record, 'record_version', values),
        unchanged(record, 'aws_region', values),
        unchanged(record, 'prov_status', values),
        unchanged(record, 'certificate_id', values),
        'attribute_not_exists(claim_id)',
      ].join(' AND ');
      return updateIfStill(
        new UpdateItemCommand({
          TableName,
          Key: key(record.thingName),
          ConditionExpression: condition,
          UpdateExpression: updateExpression({
            set: [
              'prov_status = :unprovisioned, record_version = if_not_exists(record_version, :zero) + :one',
            ],
            remove: [
              'certificate_id, certificate_arn, certificate_pem, certificate_key_sha256, key_mode',
              `first_prov_epoch, reissue_count, endpoint_address, ${MOVE_ATTRIBUTES}, ${PREVIOUS_ATTRIBUTES}`,
            ],
          }),
          ExpressionAttributeValues: values,
        }),
        signal,
      );
    },

    async wipeExpiredSealedKey(record, signal) {
      const values: Record<string, AttributeValue> = {};
      // Only the seen window: a newer mark's sealed key has another until and stays. No
      // record_version bump: the device's state is unchanged, so no claim or operator change fails.
      const condition = `attribute_exists(thing_name) AND ${unchanged(record, 'sealed_key_until', values)}`;
      return updateIfStill(
        new UpdateItemCommand({
          TableName,
          Key: key(record.thingName),
          ConditionExpression: condition,
          UpdateExpression: updateExpression({}),
          ExpressionAttributeValues: Object.keys(values).length > 0 ? values : undefined,
        }),
        signal,
      );
    },
  };
}
