/**
 * The device registry in DynamoDB: the one adapter the function, the reconciler and the operator
 * tools use. Records mean what device-record.ts says; this module reads and writes them.
 *
 * Every write is conditional, and every write is recognisable as done when its answer was lost
 * and the SDK's retry finds the condition false: the claim carries our claim id, the mark our
 * certificate id. So "applied, answer lost" never turns into a refusal or an undo.
 */
import {
  AttributeValue,
  ConditionalCheckFailedException,
  DynamoDBClient,
  GetItemCommand,
  ScanCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { awsClientSettings } from './aws-client-settings';
import { isThrottling, isTransient } from './aws-errors';
import {
  DeviceRecord,
  IN_FLIGHT_RETRY_AFTER_SECONDS,
  KeyMode,
  PendingCertificate,
  provDatetime,
  PROV_STATUS,
  toDeviceRecord,
} from './device-record';
import { ProvisioningError, throttled, unavailable } from './errors';

export { PROV_STATUS, provDatetime, toDeviceRecord } from './device-record';
export type { DeviceRecord } from './device-record';

/** A lease on one device's record, with the certificate it intends to make live. */
export interface Claim {
  readonly thingName: string;
  readonly claimId: string;
  readonly pending: PendingCertificate;
}

export interface ClaimRequest {
  readonly record: DeviceRecord;
  readonly claimId: string;
  readonly nowSeconds: number;
  readonly leaseSeconds: number;
  readonly pending: PendingCertificate;
  /** v2: the nonces to keep, this request's included. */
  readonly recentNonces?: readonly string[];
}

export interface ProvisionedFacts {
  readonly region: string;
  readonly certificateArn: string;
  readonly thingArn: string;
  readonly geoSource: string;
  readonly nowSeconds: number;
  readonly firstProvisionedAtEpoch: number;
  readonly reissueCount: number;
}

export interface Registry {
  /** The record as it stands (strongly consistent), or undefined when the device is unknown. */
  read(thingName: string, signal?: AbortSignal): Promise<DeviceRecord | undefined>;
  /** Takes the lease and records the intent, if the record is still as read; else 429. */
  claim(request: ClaimRequest, signal?: AbortSignal): Promise<Claim>;
  /** Makes the pending certificate the live one and ends the claim. */
  markProvisioned(claim: Claim, facts: ProvisionedFacts, signal?: AbortSignal): Promise<void>;
  /** Ends the claim and drops its intent (after the undo); harmless when no longer ours. */
  release(claim: Claim, signal?: AbortSignal): Promise<void>;
  /** Every record, page by page (the reconciler and operator tools). */
  scan(signal?: AbortSignal): AsyncIterable<DeviceRecord>;
  /**
   * Drops a stale claim and its intent, if the record still holds exactly that claim (the
   * reconciler, once the intent's certificate is retired). False when the record moved on.
   */
  dropStaleClaim(record: DeviceRecord, signal?: AbortSignal): Promise<boolean>;
  /**
   * Puts a provisioned record whose certificate no longer exists back to unprovisioned, if it
   * still points at that certificate. False when the record moved on.
   */
  resetMissingCertificate(record: DeviceRecord, signal?: AbortSignal): Promise<boolean>;
}

/** Our claim is no longer on the record: another request took it over after our lease. */
export class ClaimLost extends ProvisioningError {
  constructor(thingName: string, cause?: unknown) {
    super('unavailable', `the claim on ${thingName} was taken over before provisioning finished; retry`, 2, {
      cause,
    });
  }
}

const PENDING_ATTRIBUTES =
  'pending_certificate_id, pending_certificate_pem, pending_region, pending_key_sha256, pending_key_mode, pending_since';

function translate(error: unknown, what: string): unknown {
  if (error instanceof ProvisioningError) return error;
  if (isThrottling(error)) return throttled(`registry is busy (${what}); retry shortly`, 1, error);
  if (isTransient(error) || (error as Error | undefined)?.name === 'AbortError') {
    return unavailable(`registry is unavailable (${what}); retry shortly`, error);
  }
  return error;
}

/** `name = :value` for the value as read, or `attribute_not_exists(name)` when it was absent. */
function unchanged(record: DeviceRecord, attribute: string, values: Record<string, AttributeValue>): string {
  const seen = record.raw[attribute];
  if (seen === undefined) return `attribute_not_exists(${attribute})`;
  values[`:seen_${attribute}`] = seen;
  return `${attribute} = :seen_${attribute}`;
}

export function dynamoRegistry(settings: { region: string; tableName: string }): Registry {
  const dynamodb = new DynamoDBClient(awsClientSettings(settings.region));
  const key = (thingName: string) => ({ thing_name: { S: thingName } });
  const TableName = settings.tableName;

  /** A conditional update: true when written, false when the record no longer matched. */
  async function updateIfStill(command: UpdateItemCommand, signal?: AbortSignal): Promise<boolean> {
    try {
      await dynamodb.send(command, { abortSignal: signal });
      return true;
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) return false;
      throw error;
    }
  }

  return {
    async read(thingName, signal) {
      try {
        const answer = await dynamodb.send(
          new GetItemCommand({ TableName, Key: key(thingName), ConsistentRead: true }),
          { abortSignal: signal },
        );
        return answer.Item ? toDeviceRecord(answer.Item) : undefined;
      } catch (error) {
        throw translate(error, 'read');
      }
    },

    async claim(request, signal) {
      const { record, pending } = request;
      const values: Record<string, AttributeValue> = {
        ':claim': { S: request.claimId },
        ':expires': { N: String(request.nowSeconds + request.leaseSeconds) },
        ':pendingId': { S: pending.certificateId },
        ':pendingPem': { S: pending.certificatePem },
        ':pendingRegion': { S: pending.region },
        ':pendingKey': { S: pending.keySha256 },
        ':pendingMode': { S: pending.keyMode },
        ':pendingSince': { N: String(pending.since) },
        ':version': { N: String(record.version + 1) },
      };
      // Compare-and-set against the record we decided on: any write in between (another
      // request's claim, an operator's change of status) makes this one fail.
      const condition = [
        unchanged(record, 'record_version', values),
        unchanged(record, 'prov_status', values),
        unchanged(record, 'claim_id', values),
      ].join(' AND ');
      let update =
        'SET claim_id = :claim, claim_expires = :expires, pending_certificate_id = :pendingId,' +
        ' pending_certificate_pem = :pendingPem, pending_region = :pendingRegion,' +
        ' pending_key_sha256 = :pendingKey, pending_key_mode = :pendingMode, pending_since = :pendingSince,' +
        ' record_version = :version';
      if (request.recentNonces && request.recentNonces.length > 0) {
        values[':nonces'] = { SS: [...request.recentNonces] };
        // used_nonces was the unbounded set of an earlier version.
        update += ', recent_nonces = :nonces REMOVE used_nonces';
      }
      const claim: Claim = { thingName: record.thingName, claimId: request.claimId, pending };
      try {
        await dynamodb.send(
          new UpdateItemCommand({
            TableName,
            Key: key(record.thingName),
            ConditionExpression: condition,
            UpdateExpression: update,
            ExpressionAttributeValues: values,
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
          { abortSignal: signal },
        );
        return claim;
      } catch (error) {
        if (error instanceof ConditionalCheckFailedException) {
          // Our own write, applied with its answer lost, then retried by the SDK.
          if (error.Item?.claim_id?.S === request.claimId) return claim;
          throw throttled(
            `another request for ${record.thingName} is in progress; retry shortly`,
            IN_FLIGHT_RETRY_AFTER_SECONDS,
            error,
          );
        }
        throw translate(error, 'claim');
      }
    },

    async markProvisioned(claim, facts, signal) {
      const certificateId = claim.pending.certificateId;
      try {
        await dynamodb.send(
          new UpdateItemCommand({
            TableName,
            Key: key(claim.thingName),
            // The second half recognises our own mark when the SDK retries one whose answer was lost.
            ConditionExpression:
              'claim_id = :claim OR (prov_status = :provisioned AND certificate_id = :certificateId)',
            UpdateExpression:
              'SET prov_status = :provisioned, aws_region = :region, prov_datetime = :datetime, prov_epoch = :epoch,' +
              ' first_prov_epoch = :firstEpoch, reissue_count = :reissues,' +
              ' certificate_id = :certificateId, certificate_arn = :certificateArn, certificate_pem = :certificatePem,' +
              ' certificate_key_sha256 = :keySha, key_mode = :keyMode, thing_arn = :thingArn, geo_source = :geoSource,' +
              ' record_version = if_not_exists(record_version, :zero) + :one' +
              ` REMOVE claim_id, claim_expires, ${PENDING_ATTRIBUTES}`,
            ExpressionAttributeValues: {
              ':claim': { S: claim.claimId },
              ':provisioned': { S: PROV_STATUS.provisioned },
              ':region': { S: facts.region },
              ':datetime': { S: provDatetime(facts.nowSeconds) },
              ':epoch': { N: String(facts.nowSeconds) },
              ':firstEpoch': { N: String(facts.firstProvisionedAtEpoch) },
              ':reissues': { N: String(facts.reissueCount) },
              ':certificateId': { S: certificateId },
              ':certificateArn': { S: facts.certificateArn },
              ':certificatePem': { S: claim.pending.certificatePem },
              ':keySha': { S: claim.pending.keySha256 },
              ':keyMode': { S: claim.pending.keyMode },
              ':thingArn': { S: facts.thingArn },
              ':geoSource': { S: facts.geoSource },
              ':zero': { N: '0' },
              ':one': { N: '1' },
            },
          }),
          { abortSignal: signal },
        );
      } catch (error) {
        if (error instanceof ConditionalCheckFailedException) throw new ClaimLost(claim.thingName, error);
        throw translate(error, 'mark provisioned');
      }
    },

    async release(claim, signal) {
      try {
        await dynamodb.send(
          new UpdateItemCommand({
            TableName,
            Key: key(claim.thingName),
            ConditionExpression: 'claim_id = :claim',
            UpdateExpression: `SET record_version = if_not_exists(record_version, :zero) + :one REMOVE claim_id, claim_expires, ${PENDING_ATTRIBUTES}`,
            ExpressionAttributeValues: {
              ':claim': { S: claim.claimId },
              ':zero': { N: '0' },
              ':one': { N: '1' },
            },
          }),
          { abortSignal: signal },
        );
      } catch (error) {
        // Released already (a retried call), or taken over since: nothing of ours to release.
        if (error instanceof ConditionalCheckFailedException) return;
        throw translate(error, 'release');
      }
    },

    async *scan(signal) {
      let startKey: Record<string, AttributeValue> | undefined;
      do {
        const page = await dynamodb.send(
          new ScanCommand({ TableName, ExclusiveStartKey: startKey, ConsistentRead: true }),
          { abortSignal: signal },
        );
        for (const item of page.Items ?? []) yield toDeviceRecord(item);
        startKey = page.LastEvaluatedKey;
      } while (startKey);
    },

    async dropStaleClaim(record, signal) {
      const values: Record<string, AttributeValue> = { ':zero': { N: '0' }, ':one': { N: '1' } };
      const condition = [
        unchanged(record, 'claim_id', values),
        unchanged(record, 'pending_certificate_id', values),
      ].join(' AND ');
      return updateIfStill(
        new UpdateItemCommand({
          TableName,
          Key: key(record.thingName),
          ConditionExpression: condition,
          UpdateExpression: `SET record_version = if_not_exists(record_version, :zero) + :one REMOVE claim_id, claim_expires, ${PENDING_ATTRIBUTES}`,
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
        unchanged(record, 'prov_status', values),
        unchanged(record, 'certificate_id', values),
        'attribute_not_exists(claim_id)',
      ].join(' AND ');
      return updateIfStill(
        new UpdateItemCommand({
          TableName,
          Key: key(record.thingName),
          ConditionExpression: condition,
          UpdateExpression:
            'SET prov_status = :unprovisioned, record_version = if_not_exists(record_version, :zero) + :one' +
            ' REMOVE certificate_id, certificate_arn, certificate_pem, certificate_key_sha256, key_mode,' +
            ' first_prov_epoch, reissue_count',
          ExpressionAttributeValues: values,
        }),
        signal,
      );
    },
  };
}

export type { KeyMode };
