/**
 * The registry as the device path uses it (provisioning, status, renewal): read the record, claim
 * it with an intent, mark it provisioned, record a status call, spend a refused request's nonce,
 * forget a retired previous certificate or retiring ones, release a claim. Every write is conditional and recognisable as ours when its
 * answer was lost and the SDK's retry finds the condition false: the claim carries our claim id,
 * the mark our certificate id. So "applied, answer lost" never turns into a refusal or an undo.
 */
import {
  AttributeValue,
  ConditionalCheckFailedException,
  GetItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import {
  CertificateRef,
  DeviceRecord,
  IN_FLIGHT_RETRY_AFTER_SECONDS,
  PendingCertificate,
  nextRecentNonces,
  nonceSpent,
  PreviousCertificate,
  provDatetime,
  PROV_STATUS,
  retiringEntry,
  toDeviceRecord,
} from './device-record';
import { ProvisioningError, throttled } from './errors';
import {
  MOVE_ATTRIBUTES,
  PENDING_ATTRIBUTES,
  PREVIOUS_ATTRIBUTES,
  RegistryTable,
  translate,
  unchanged,
  updateExpression,
} from './registry-table';

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
  /** What the new certificate replaces, named as retiring in the same write until it is gone. */
  readonly retiring?: readonly CertificateRef[];
  /** Key mode: the generated key sealed for answer recovery, and until when (answer-recovery.ts). */
  readonly sealedKey?: { readonly ciphertext: Uint8Array; readonly until: number };
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

/** Where a verified request's nonce is remembered: status calls keep their own list. */
export type NonceList = 'recent_nonces' | 'status_nonces';

/** A verified request's nonce, to be spent on the record as read. */
export interface NonceSpend {
  readonly record: DeviceRecord;
  readonly list: NonceList;
  /** `timestamp.nonce`. */
  readonly entry: string;
  readonly nowSeconds: number;
  readonly maxClockSkewSeconds: number;
}

/** Attempts at spending a nonce while other writes keep changing the list (each sees the newer list). */
const SPEND_ATTEMPTS = 3;

export interface DeviceRegistry {
  /** The record as it stands (strongly consistent), or undefined when the device is unknown. */
  read(thingName: string, signal?: AbortSignal): Promise<DeviceRecord | undefined>;
  /** Takes the lease and records the intent, if the record is still as read; else 429. */
  claim(request: ClaimRequest, signal?: AbortSignal): Promise<Claim>;
  /**
   * Moves our claim's intent to another region (spill-over, before anything exists in AWS IoT).
   * ClaimLost when the claim is no longer ours.
   */
  repoint(claim: Claim, region: string, signal?: AbortSignal): Promise<Claim>;
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
  /**
   * Adds a verified request's nonce to its list, if the list is still as read (else again on the
   * list as it now is): the one write a refusal costs. False when the nonce was spent already (a
   * replay, or this request's own claim or status write) or the record is gone: nothing written.
   */
  spendNonce(spend: NonceSpend, signal?: AbortSignal): Promise<boolean>;
  /**
   * Ends the claim and drops its intent (after the undo); harmless when no longer ours. What the
   * undo could not retire (`leftovers`) is named as retiring in the same write: the lease goes
   * back, and nothing live goes unnamed. With `keepIntent` the intent stays the record's: a claim
   * that resumed a dead request's intent and made nothing gives only the lease back, so the
   * device's next try resumes that intent again.
   */
  release(
    claim: Claim,
    signal?: AbortSignal,
    leftovers?: readonly CertificateRef[],
    options?: { readonly keepIntent?: boolean },
  ): Promise<void>;
  /** Stops naming certificates as retiring, once they are gone. */
  forgetRetiring(thingName: string, gone: readonly CertificateRef[], signal?: AbortSignal): Promise<void>;
}

/** Our claim is no longer on the record: another request took it over after our lease. */
export class ClaimLost extends ProvisioningError {
  constructor(thingName: string, cause?: unknown) {
    super('unavailable', `the claim on ${thingName} was taken over before provisioning finished; retry`, 2, {
      cause,
    });
  }
}

export function deviceRegistry(table: RegistryTable): DeviceRegistry {
  const { dynamodb, TableName, key, updateRecognisingOwn, updateIfStill } = table;
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
      const conditions = [
        unchanged(record, 'record_version', values),
        unchanged(record, 'prov_status', values),
        unchanged(record, 'claim_id', values),
      ];
      const set = [
        'claim_id = :claim, claim_expires = :expires, pending_certificate_id = :pendingId',
        'pending_certificate_pem = :pendingPem, pending_region = :pendingRegion',
        'pending_key_sha256 = :pendingKey, pending_key_mode = :pendingMode, pending_since = :pendingSince',
        'record_version = :version',
      ];
      if (request.recentNonces && request.recentNonces.length > 0) {
        values[':nonces'] = { SS: [...request.recentNonces] };
        set.push('recent_nonces = :nonces');
        // A refused request's nonce spent since the read (it leaves record_version alone) must not
        // be overwritten by this list.
        conditions.push(unchanged(record, 'recent_nonces', values));
      }
      const condition = conditions.join(' AND ');
      const update = updateExpression({ set });
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

    async repoint(claim, region, signal) {
      try {
        // Setting the same region again is harmless: the SDK's retry of a write whose answer was
        // lost finds our claim and writes the same, so "applied, answer lost" is no failure.
        await dynamodb.send(
          new UpdateItemCommand({
            TableName,
            Key: key(claim.thingName),
            ConditionExpression: 'claim_id = :claim AND pending_certificate_id = :pendingId',
            // Like every write of ours, it counts in record_version: an operator who read the
            // record before it can't write over the region it names.
            UpdateExpression: updateExpression({
              set: [
                'pending_region = :region',
                'record_version = if_not_exists(record_version, :zero) + :one',
              ],
            }),
            ExpressionAttributeValues: {
              ':claim': { S: claim.claimId },
              ':pendingId': { S: claim.pending.certificateId },
              ':region': { S: region },
              ':zero': { N: '0' },
              ':one': { N: '1' },
            },
          }),
          { abortSignal: signal },
        );
      } catch (error) {
        if (error instanceof ConditionalCheckFailedException) throw new ClaimLost(claim.thingName, error);
        throw translate(error, 'repoint claim');
      }
      return { ...claim, pending: { ...claim.pending, region } };
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
      const set = [
        'prov_status = :provisioned, aws_region = :region, prov_datetime = :datetime, prov_epoch = :epoch',
        'first_prov_epoch = :firstEpoch, reissue_count = :reissues',
        'certificate_id = :certificateId, certificate_arn = :certificateArn, certificate_pem = :certificatePem',
        'certificate_key_sha256 = :keySha, key_mode = :keyMode, thing_arn = :thingArn, geo_source = :geoSource',
        'endpoint_address = :endpoint, record_version = if_not_exists(record_version, :zero) + :one',
      ];
      // A move's copies were of the previous certificate: the function retires them (decide).
      const remove = ['claim_id, claim_expires', PENDING_ATTRIBUTES, MOVE_ATTRIBUTES];
      if (facts.previous) {
        set.push(
          'previous_certificate_id = :previousId, previous_region = :previousRegion, previous_retire_after = :retireAfter',
        );
        values[':previousId'] = { S: facts.previous.certificateId };
        values[':previousRegion'] = { S: facts.previous.region };
        values[':retireAfter'] = { N: String(facts.previous.retireAfter) };
      } else {
        remove.push(PREVIOUS_ATTRIBUTES);
      }
      // A set: adding is idempotent, so the SDK's retry of a mark whose answer was lost adds nothing.
      const add: string[] = [];
      if (facts.retiring && facts.retiring.length > 0) {
        values[':retiring'] = { SS: [...new Set(facts.retiring.map(retiringEntry))] };
        add.push('retiring :retiring');
      }
      // Without one, a sealed key of an earlier certificate goes (updateExpression removes it).
      if (facts.sealedKey) {
        set.push('sealed_key = :sealedKey, sealed_key_until = :sealedUntil');
        values[':sealedKey'] = { B: facts.sealedKey.ciphertext };
        values[':sealedUntil'] = { N: String(facts.sealedKey.until) };
      }
      try {
        await dynamodb.send(
          new UpdateItemCommand({
            TableName,
            Key: key(claim.thingName),
            // The second half recognises our own mark when the SDK retries one whose answer was lost.
            ConditionExpression:
              'claim_id = :claim OR (prov_status = :provisioned AND certificate_id = :certificateId)',
            UpdateExpression: updateExpression({ set, remove, add, keepSealedKey: !!facts.sealedKey }),
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
      // status_nonces too: a refused call's nonce spent since the read must not be overwritten.
      const condition = [
        unchanged(record, 'status_epoch', values),
        unchanged(record, 'status_nonces', values),
        'attribute_exists(thing_name)',
      ].join(' AND ');
      const set = ['status_epoch = :epoch, status_nonces = :nonces'];
      if (call.reportedRegion) {
        values[':reported'] = { S: call.reportedRegion };
        set.push('status_region = :reported');
      }
      try {
        return await updateRecognisingOwn(
          new UpdateItemCommand({
            TableName,
            Key: key(record.thingName),
            ConditionExpression: condition,
            UpdateExpression: updateExpression({ set }),
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
          UpdateExpression: updateExpression({
            set: ['record_version = if_not_exists(record_version, :zero) + :one'],
            remove: [PREVIOUS_ATTRIBUTES],
          }),
          ExpressionAttributeValues: values,
        }),
        signal,
      ).catch((error: unknown) => {
        throw translate(error, 'forget previous certificate');
      });
    },

    async spendNonce(spend, signal) {
      const { list, entry } = spend;
      let record = spend.record;
      for (let attempt = 1; attempt <= SPEND_ATTEMPTS; attempt += 1) {
        const kept = list === 'status_nonces' ? record.statusNonces : record.recentNonces;
        if (nonceSpent(kept, entry)) return false;
        const values: Record<string, AttributeValue> = {
          ':nonces': {
            SS: nextRecentNonces(record, entry, spend.nowSeconds, spend.maxClockSkewSeconds, kept),
          },
        };
        // Only the list: record_version and status_epoch stay, so a spent nonce never makes a
        // claim, a status call or an operator's change fail for anything but the list itself.
        const condition = [unchanged(record, list, values), 'attribute_exists(thing_name)'].join(' AND ');
        try {
          await dynamodb.send(
            new UpdateItemCommand({
              TableName,
              Key: key(record.thingName),
              ConditionExpression: condition,
              // A recovery spends its nonce beside the unsealing: the sealed key stays for a retry.
              UpdateExpression: updateExpression({ set: [`${list} = :nonces`], keepSealedKey: true }),
              ExpressionAttributeValues: values,
              ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
            }),
            { abortSignal: signal },
          );
          return true;
        } catch (error) {
          if (!(error instanceof ConditionalCheckFailedException)) throw translate(error, 'spend nonce');
          // Gone, or the list changed (our own write retried by the SDK included): judge it again.
          if (!error.Item) return false;
          record = toDeviceRecord(error.Item);
        }
      }
      throw throttled(`the nonces of ${record.thingName} kept changing; retry shortly`, 1);
    },

    async release(claim, signal, leftovers = [], options = {}) {
      const values: Record<string, AttributeValue> = {
        ':claim': { S: claim.claimId },
        ':zero': { N: '0' },
        ':one': { N: '1' },
      };
      const add: string[] = [];
      if (leftovers.length > 0) {
        values[':leftovers'] = { SS: [...new Set(leftovers.map(retiringEntry))] };
        add.push('retiring :leftovers');
      }
      try {
        await dynamodb.send(
          new UpdateItemCommand({
            TableName,
            Key: key(claim.thingName),
            ConditionExpression: 'claim_id = :claim',
            UpdateExpression: updateExpression({
              set: ['record_version = if_not_exists(record_version, :zero) + :one'],
              remove: options.keepIntent
                ? ['claim_id, claim_expires']
                : ['claim_id, claim_expires', PENDING_ATTRIBUTES],
              add,
            }),
            ExpressionAttributeValues: values,
          }),
          { abortSignal: signal },
        );
      } catch (error) {
        // Released already (a retried call), or taken over since: nothing of ours to release. A
        // taker may have resumed our intent, so our leftovers are not named: the reconciler's sweep
        // retires them once nothing references them.
        if (error instanceof ConditionalCheckFailedException) return;
        throw translate(error, 'release');
      }
    },

    async forgetRetiring(thingName, gone, signal) {
      if (gone.length === 0) return;
      try {
        await dynamodb.send(
          new UpdateItemCommand({
            TableName,
            Key: key(thingName),
            // Unconditional but for the record's existence: a certificate that is gone stays gone.
            ConditionExpression: 'attribute_exists(thing_name)',
            // Runs right after the mark that sealed a key (the re-issue's old certificate retired).
            UpdateExpression: updateExpression({ delete: ['retiring :gone'], keepSealedKey: true }),
            ExpressionAttributeValues: { ':gone': { SS: [...new Set(gone.map(retiringEntry))] } },
          }),
          { abortSignal: signal },
        );
      } catch (error) {
        if (error instanceof ConditionalCheckFailedException) return;
        throw translate(error, 'forget retired certificates');
      }
    },
  };
}
