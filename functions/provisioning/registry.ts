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
  BatchGetItemCommand,
  BatchWriteItemCommand,
  ConditionalCheckFailedException,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  ScanCommand,
  UpdateItemCommand,
  WriteRequest,
} from '@aws-sdk/client-dynamodb';
import { awsClientSettings } from './aws-client-settings';
import { isThrottling, isTransient } from './aws-errors';
import {
  AuditEntry,
  DeviceRecord,
  historyWith,
  IN_FLIGHT_RETRY_AFTER_SECONDS,
  KeyMode,
  PendingCertificate,
  PreviousCertificate,
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
  /** The region's endpoint: recorded so a status call needs no IoT call. */
  readonly endpointAddress: string;
  /** A renewal: the certificate it replaces, kept ACTIVE for its grace period. Else none is kept. */
  readonly previous?: PreviousCertificate;
}

/** One answered status call: its nonce spent, its time recorded (the per-device interval). */
export interface StatusCall {
  readonly record: DeviceRecord;
  readonly nowSeconds: number;
  /** `timestamp.nonce` of this call. */
  readonly nonceEntry: string;
  /** status_nonces to keep, this call's included. */
  readonly statusNonces: readonly string[];
  /** The region the device said it connects to (advisory, for operators). */
  readonly reportedRegion?: string;
}

/** Which records a scan returns; every field optional (DynamoDB FilterExpression). */
export interface RecordFilter {
  readonly statuses?: readonly string[];
  readonly region?: string;
  readonly namePrefix?: string;
  /** prov_epoch at or after this (epoch seconds). */
  readonly provisionedSince?: number;
  /** prov_epoch before this (epoch seconds). */
  readonly provisionedBefore?: number;
  /** Read only these attributes (thing_name always): a count needs two, not the certificates. */
  readonly attributes?: readonly string[];
}

/** An operator's change to one record, with its audit entry. */
export interface RecordChange {
  readonly set?: Readonly<Record<string, AttributeValue>>;
  readonly remove?: readonly string[];
  readonly audit: AuditEntry;
}

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

export interface Registry {
  /** The record as it stands (strongly consistent), or undefined when the device is unknown. */
  read(thingName: string, signal?: AbortSignal): Promise<DeviceRecord | undefined>;
  /** Takes the lease and records the intent, if the record is still as read; else 429. */
  claim(request: ClaimRequest, signal?: AbortSignal): Promise<Claim>;
  /** Makes the pending certificate the live one and ends the claim. */
  markProvisioned(claim: Claim, facts: ProvisionedFacts, signal?: AbortSignal): Promise<void>;
  /**
   * Records an answered status call, if no other was recorded since the record was read: one
   * conditional write. False when another call got there first (the device is over its rate).
   */
  recordStatusCall(call: StatusCall, signal?: AbortSignal): Promise<boolean>;
  /**
   * Forgets a renewal's previous certificate once it is retired, if the record still names it.
   * False when the record moved on.
   */
  forgetPrevious(record: DeviceRecord, signal?: AbortSignal): Promise<boolean>;
  /** Ends the claim and drops its intent (after the undo); harmless when no longer ours. */
  release(claim: Claim, signal?: AbortSignal): Promise<void>;
  /** Every record, or those the filter selects, page by page (the reconciler and operator tools). */
  scan(signal?: AbortSignal, filter?: RecordFilter): AsyncIterable<DeviceRecord>;
  /** DynamoDB's item count (updated about every six hours in AWS): a progress bar's total. */
  approximateCount(signal?: AbortSignal): Promise<number>;
  /**
   * An operator's change, if the record is still exactly as read (version, status, claim): it
   * can't overwrite a provisioning request's claim or mark. Appends the audit entry to the
   * bounded history. False when the record moved on (read it again and decide again).
   */
  change(record: DeviceRecord, change: RecordChange, signal?: AbortSignal): Promise<boolean>;
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

const MOVE_ATTRIBUTES = 'move_to_region, move_started, moved_from_region, moved_at';

const PREVIOUS_ATTRIBUTES = 'previous_certificate_id, previous_region, previous_retire_after';

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

function scanQuery(filter: RecordFilter | undefined) {
  if (!filter) return {};
  const names: Record<string, string> = {};
  const values: Record<string, AttributeValue> = {};
  const conditions: string[] = [];
  if (filter.statuses && filter.statuses.length > 0) {
    names['#status'] = 'prov_status';
    const placeholders = filter.statuses.map((status, index) => {
      values[`:status${index}`] = { S: status };
      return `:status${index}`;
    });
    conditions.push(`#status IN (${placeholders.join(', ')})`);
  }
  if (filter.region) {
    names['#region'] = 'aws_region';
    values[':region'] = { S: filter.region };
    conditions.push('#region = :region');
  }
  if (filter.namePrefix) {
    names['#name'] = 'thing_name';
    values[':prefix'] = { S: filter.namePrefix };
    conditions.push('begins_with(#name, :prefix)');
  }
  if (filter.provisionedSince !== undefined) {
    names['#epoch'] = 'prov_epoch';
    values[':since'] = { N: String(filter.provisionedSince) };
    conditions.push('#epoch >= :since');
  }
  if (filter.provisionedBefore !== undefined) {
    names['#epoch'] = 'prov_epoch';
    values[':before'] = { N: String(filter.provisionedBefore) };
    conditions.push('#epoch < :before');
  }
  let projection: string | undefined;
  if (filter.attributes) {
    const attributes = [...new Set(['thing_name', ...filter.attributes])];
    projection = attributes
      .map((attribute, index) => {
        names[`#p${index}`] = attribute;
        return `#p${index}`;
      })
      .join(', ');
  }
  return {
    ...(conditions.length > 0 ? { FilterExpression: conditions.join(' AND ') } : {}),
    ...(projection ? { ProjectionExpression: projection } : {}),
    ...(Object.keys(names).length > 0 ? { ExpressionAttributeNames: names } : {}),
    ...(Object.keys(values).length > 0 ? { ExpressionAttributeValues: values } : {}),
  };
}

/** Items per scan page (1 MB would be about 4,500 records). */
const SCAN_PAGE_ITEMS = 1000;

/** How often one batch is sent again (UnprocessedItems or throttling) before the import fails. */
const MAX_BATCH_ATTEMPTS = 12;

/** Exponential backoff with full jitter: up to 50 ms · 2^attempt, at most 5 s. */
function backoff(attempt: number, signal?: AbortSignal): Promise<void> {
  const ceiling = Math.min(5_000, 50 * 2 ** attempt);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, Math.random() * ceiling);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
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

export function dynamoRegistry(settings: { region: string; tableName: string }): Registry {
  const dynamodb = new DynamoDBClient(awsClientSettings(settings.region));
  const key = (thingName: string) => ({ thing_name: { S: thingName } });
  const TableName = settings.tableName;

  /**
   * A conditional update that asked for the old item on failure: true when written, or when the
   * condition failed on our own write (applied with its answer lost, then retried by the SDK);
   * false when another write got there first.
   */
  async function updateRecognisingOwn(
    command: UpdateItemCommand,
    isOurs: (old: Record<string, AttributeValue> | undefined) => boolean,
    signal?: AbortSignal,
  ): Promise<boolean> {
    try {
      await dynamodb.send(command, { abortSignal: signal });
      return true;
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) return isOurs(error.Item);
      throw error;
    }
  }

  /** A conditional update: true when written, false when the record no longer matched. */
  const updateIfStill = (command: UpdateItemCommand, signal?: AbortSignal) =>
    updateRecognisingOwn(command, () => false, signal);

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
      let written: boolean;
      try {
        written = await updateRecognisingOwn(
          new UpdateItemCommand({
            TableName,
            Key: key(record.thingName),
            ConditionExpression: condition,
            UpdateExpression: update,
            ExpressionAttributeValues: values,
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
          (old) => old?.claim_id?.S === request.claimId,
          signal,
        );
      } catch (error) {
        throw translate(error, 'claim');
      }
      if (!written) {
        throw throttled(
          `another request for ${record.thingName} is in progress; retry shortly`,
          IN_FLIGHT_RETRY_AFTER_SECONDS,
        );
      }
      return claim;
    },

    async markProvisioned(claim, facts, signal) {
      const certificateId = claim.pending.certificateId;
      const values: Record<string, AttributeValue> = {
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
        ':endpoint': { S: facts.endpointAddress },
        ':zero': { N: '0' },
        ':one': { N: '1' },
      };
      let set =
        'SET prov_status = :provisioned, aws_region = :region, prov_datetime = :datetime, prov_epoch = :epoch,' +
        ' first_prov_epoch = :firstEpoch, reissue_count = :reissues,' +
        ' certificate_id = :certificateId, certificate_arn = :certificateArn, certificate_pem = :certificatePem,' +
        ' certificate_key_sha256 = :keySha, key_mode = :keyMode, thing_arn = :thingArn, geo_source = :geoSource,' +
        ' endpoint_address = :endpoint, record_version = if_not_exists(record_version, :zero) + :one';
      // A move's copies were of the previous certificate: the function retires them (decide).
      let remove = `REMOVE claim_id, claim_expires, ${PENDING_ATTRIBUTES}, ${MOVE_ATTRIBUTES}`;
      if (facts.previous) {
        set +=
          ', previous_certificate_id = :previousId, previous_region = :previousRegion,' +
          ' previous_retire_after = :retireAfter';
        values[':previousId'] = { S: facts.previous.certificateId };
        values[':previousRegion'] = { S: facts.previous.region };
        values[':retireAfter'] = { N: String(facts.previous.retireAfter) };
      } else {
        remove += `, ${PREVIOUS_ATTRIBUTES}`;
      }
      try {
        await dynamodb.send(
          new UpdateItemCommand({
            TableName,
            Key: key(claim.thingName),
            // The second half recognises our own mark when the SDK retries one whose answer was lost.
            ConditionExpression:
              'claim_id = :claim OR (prov_status = :provisioned AND certificate_id = :certificateId)',
            UpdateExpression: `${set} ${remove}`,
            ExpressionAttributeValues: values,
          }),
          { abortSignal: signal },
        );
      } catch (error) {
        if (error instanceof ConditionalCheckFailedException) throw new ClaimLost(claim.thingName, error);
        throw translate(error, 'mark provisioned');
      }
    },

    async recordStatusCall(call, signal) {
      const { record } = call;
      const values: Record<string, AttributeValue> = {
        ':epoch': { N: String(call.nowSeconds) },
        ':nonces': { SS: [...call.statusNonces] },
      };
      // Only status calls write these two: comparing status_epoch orders them without touching
      // record_version, so status calls never make a provisioning claim or an operator retry.
      const condition = [unchanged(record, 'status_epoch', values), 'attribute_exists(thing_name)'].join(
        ' AND ',
      );
      let update = 'SET status_epoch = :epoch, status_nonces = :nonces';
      if (call.reportedRegion) {
        values[':reported'] = { S: call.reportedRegion };
        update += ', status_region = :reported';
      }
      try {
        return await updateRecognisingOwn(
          new UpdateItemCommand({
            TableName,
            Key: key(record.thingName),
            ConditionExpression: condition,
            UpdateExpression: update,
            ExpressionAttributeValues: values,
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
          (old) => old?.status_nonces?.SS?.includes(call.nonceEntry) ?? false,
          signal,
        );
      } catch (error) {
        throw translate(error, 'status');
      }
    },

    async forgetPrevious(record, signal) {
      const values: Record<string, AttributeValue> = { ':zero': { N: '0' }, ':one': { N: '1' } };
      return updateIfStill(
        new UpdateItemCommand({
          TableName,
          Key: key(record.thingName),
          ConditionExpression: unchanged(record, 'previous_certificate_id', values),
          UpdateExpression: `SET record_version = if_not_exists(record_version, :zero) + :one REMOVE ${PREVIOUS_ATTRIBUTES}`,
          ExpressionAttributeValues: values,
        }),
        signal,
      ).catch((error: unknown) => {
        throw translate(error, 'forget previous certificate');
      });
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

    async *scan(signal, filter) {
      const query = scanQuery(filter);
      let startKey: Record<string, AttributeValue> | undefined;
      do {
        const page = await dynamodb.send(
          new ScanCommand({
            TableName,
            ExclusiveStartKey: startKey,
            ConsistentRead: true,
            // Short pages: a full 1 MB page takes moto ~4 s, past AWS_CALL_TIMEOUT_MS.
            Limit: SCAN_PAGE_ITEMS,
            ...query,
          }),
          { abortSignal: signal },
        );
        for (const item of page.Items ?? []) yield toDeviceRecord(item);
        startKey = page.LastEvaluatedKey;
      } while (startKey);
    },

    async approximateCount(signal) {
      const answer = await dynamodb.send(new DescribeTableCommand({ TableName }), { abortSignal: signal });
      return answer.Table?.ItemCount ?? 0;
    },

    async change(record, change, signal) {
      const values: Record<string, AttributeValue> = {
        ':version': { N: String(record.version + 1) },
        ':history': historyWith(record, change.audit),
      };
      const names: Record<string, string> = {};
      const sets = ['record_version = :version', 'history = :history'];
      Object.entries(change.set ?? {}).forEach(([attribute, value], index) => {
        names[`#s${index}`] = attribute;
        values[`:s${index}`] = value;
        sets.push(`#s${index} = :s${index}`);
      });
      const removes = (change.remove ?? []).map((attribute, index) => {
        names[`#r${index}`] = attribute;
        return `#r${index}`;
      });
      // The same compare-and-set a claim makes: a claim or mark in between makes this one fail.
      const condition = [
        'attribute_exists(thing_name)',
        unchanged(record, 'record_version', values),
        unchanged(record, 'prov_status', values),
        unchanged(record, 'claim_id', values),
      ].join(' AND ');
      try {
        await dynamodb.send(
          new UpdateItemCommand({
            TableName,
            Key: key(record.thingName),
            ConditionExpression: condition,
            UpdateExpression: `SET ${sets.join(', ')}${removes.length > 0 ? ` REMOVE ${removes.join(', ')}` : ''}`,
            ExpressionAttributeValues: values,
            ...(Object.keys(names).length > 0 ? { ExpressionAttributeNames: names } : {}),
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
          { abortSignal: signal },
        );
        return true;
      } catch (error) {
        if (error instanceof ConditionalCheckFailedException) {
          // Our own write, applied with its answer lost and retried by the SDK: it carries our entry.
          const history = error.Item ? toDeviceRecord(error.Item).history : [];
          const last = history[history.length - 1];
          if (error.Item && last && last.at === change.audit.at && last.what === change.audit.what)
            return true;
          return false;
        }
        throw translate(error, 'operator change');
      }
    },

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
            ` first_prov_epoch, reissue_count, endpoint_address, ${MOVE_ATTRIBUTES}, ${PREVIOUS_ATTRIBUTES}`,
          ExpressionAttributeValues: values,
        }),
        signal,
      );
    },
  };
}

export type { KeyMode };
