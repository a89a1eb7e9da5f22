/**
 * The device registry (DynamoDB, sample-compatible schema). Every transition is a conditional
 * write, so two concurrent requests for one device can never both provision it.
 *
 * Sample attributes, kept as operators script against them: thing_name, prov_status
 * (unprovisioned → provisioned), aws_region, prov_datetime (YYYY-MM-DDTHH:MM:SS UTC).
 * Added: claim_id/claim_expires (the in-flight lease; prov_status stays "unprovisioned" while
 * claimed so existing scripts see no new value), certificate_id, certificate_arn, thing_arn,
 * geo_source, prov_epoch, record_version, used_nonces (v2), device_public_key (optional, v2).
 */
import {
  AttributeValue,
  ConditionalCheckFailedException,
  DynamoDBClient,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { forbidden, ProvisioningError, throttled, unauthenticated, unavailable } from './errors';
import { awsClientSettings } from './aws-client-settings';
import { isThrottling, isTransient } from './aws-errors';

export const PROV_STATUS = { unprovisioned: 'unprovisioned', provisioned: 'provisioned' } as const;

export interface DeviceRecord {
  readonly thingName: string;
  readonly provStatus: string;
  readonly region?: string;
  readonly provisionedAtEpoch?: number;
  readonly certificateId?: string;
  readonly certificateArn?: string;
  readonly devicePublicKeyPem?: string;
}

export interface Claim {
  readonly thingName: string;
  readonly claimId: string;
  /** The record as it stands with the claim taken. */
  readonly record: DeviceRecord;
  /** True when the device was already provisioned and is inside its re-provisioning window. */
  readonly reprovision: boolean;
}

export interface ClaimRequest {
  readonly thingName: string;
  readonly claimId: string;
  readonly nowSeconds: number;
  readonly leaseSeconds: number;
  readonly reprovisionWindowSeconds: number;
  /** v2 nonce: recorded in the same write, refused if seen before. */
  readonly nonce?: string;
}

export interface ProvisionedFacts {
  readonly region: string;
  readonly certificateId: string;
  readonly certificateArn: string;
  readonly thingArn: string;
  readonly geoSource: string;
  readonly nowSeconds: number;
}

export interface Registry {
  claim(request: ClaimRequest): Promise<Claim>;
  markProvisioned(claim: Claim, facts: ProvisionedFacts): Promise<void>;
  release(claim: Claim): Promise<void>;
}

/** The sample's prov_datetime format: `YYYY-MM-DDTHH:MM:SS` in UTC. */
export function provDatetime(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().slice(0, 19);
}

function text(item: Record<string, AttributeValue> | undefined, name: string): string | undefined {
  return item?.[name]?.S;
}

function number(item: Record<string, AttributeValue> | undefined, name: string): number | undefined {
  const value = item?.[name]?.N;
  return value === undefined ? undefined : Number(value);
}

export function toDeviceRecord(item: Record<string, AttributeValue>): DeviceRecord {
  return {
    thingName: text(item, 'thing_name') ?? '',
    provStatus: text(item, 'prov_status') ?? '',
    region: text(item, 'aws_region'),
    provisionedAtEpoch: number(item, 'prov_epoch'),
    certificateId: text(item, 'certificate_id'),
    certificateArn: text(item, 'certificate_arn'),
    devicePublicKeyPem: text(item, 'device_public_key'),
  };
}

/**
 * Why a claim was refused, decided from the record as it stood (ALL_OLD). Pure, so the
 * precedence (unknown > nonce replay > in flight > provisioned) is testable without DynamoDB.
 */
export function claimRefusal(
  old: Record<string, AttributeValue> | undefined,
  request: ClaimRequest,
): ProvisioningError {
  if (!old) return forbidden(`thing ${request.thingName} is not on the allowlist`);
  if (request.nonce && old.used_nonces?.SS?.includes(request.nonce)) {
    return unauthenticated('nonce was already used; sign a new request');
  }
  const leaseEnds = number(old, 'claim_expires');
  if (leaseEnds !== undefined && leaseEnds > request.nowSeconds) {
    return throttled(
      `another request for ${request.thingName} is in progress; retry shortly`,
      Math.max(1, Math.min(leaseEnds - request.nowSeconds, request.leaseSeconds)),
    );
  }
  const status = text(old, 'prov_status');
  if (status === PROV_STATUS.provisioned) {
    const region = text(old, 'aws_region');
    const at = text(old, 'prov_datetime');
    return new ProvisioningError(
      'already-provisioned',
      `thing ${request.thingName} is already provisioned${region ? ` in ${region}` : ''}${at ? ` since ${at}Z` : ''}`,
    );
  }
  return forbidden(`thing ${request.thingName} has prov_status "${status ?? ''}" and cannot be provisioned`);
}

function translate(error: unknown, what: string): unknown {
  if (error instanceof ProvisioningError) return error;
  if (isThrottling(error)) return throttled(`registry is busy (${what}); retry shortly`, 1, error);
  if (isTransient(error)) return unavailable(`registry is unavailable (${what}); retry shortly`, error);
  return error;
}

export function dynamoRegistry(settings: { region: string; tableName: string }): Registry {
  const dynamodb = new DynamoDBClient(awsClientSettings(settings.region));
  const key = (thingName: string) => ({ thing_name: { S: thingName } });

  return {
    async claim(request) {
      const values: Record<string, AttributeValue> = {
        ':claim': { S: request.claimId },
        ':expires': { N: String(request.nowSeconds + request.leaseSeconds) },
        ':now': { N: String(request.nowSeconds) },
        ':unprovisioned': { S: PROV_STATUS.unprovisioned },
      };
      let claimable = 'prov_status = :unprovisioned';
      if (request.reprovisionWindowSeconds > 0) {
        // Inside the re-provisioning window a provisioned device may claim again (lost answer).
        values[':provisioned'] = { S: PROV_STATUS.provisioned };
        values[':windowStart'] = { N: String(request.nowSeconds - request.reprovisionWindowSeconds) };
        claimable = `(${claimable} OR (prov_status = :provisioned AND prov_epoch >= :windowStart))`;
      }
      let condition =
        'attribute_exists(thing_name)' +
        ' AND (attribute_not_exists(claim_expires) OR claim_expires <= :now)' +
        ` AND ${claimable}`;
      let update = 'SET claim_id = :claim, claim_expires = :expires';
      if (request.nonce) {
        values[':nonce'] = { S: request.nonce };
        values[':nonces'] = { SS: [request.nonce] };
        condition += ' AND (attribute_not_exists(used_nonces) OR NOT contains(used_nonces, :nonce))';
        update += ' ADD used_nonces :nonces';
      }
      try {
        const result = await dynamodb.send(
          new UpdateItemCommand({
            TableName: settings.tableName,
            Key: key(request.thingName),
            ConditionExpression: condition,
            UpdateExpression: update,
            ExpressionAttributeValues: values,
            ReturnValues: 'ALL_NEW',
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
        );
        const record = toDeviceRecord(result.Attributes ?? {});
        return {
          thingName: request.thingName,
          claimId: request.claimId,
          record,
          reprovision: record.provStatus === PROV_STATUS.provisioned,
        };
      } catch (error) {
        if (error instanceof ConditionalCheckFailedException) throw claimRefusal(error.Item, request);
        throw translate(error, 'claim');
      }
    },

    async markProvisioned(claim, facts) {
      try {
        await dynamodb.send(
          new UpdateItemCommand({
            TableName: settings.tableName,
            Key: key(claim.thingName),
            ConditionExpression: 'claim_id = :claim',
            UpdateExpression:
              'SET prov_status = :provisioned, aws_region = :region, prov_datetime = :datetime, prov_epoch = :epoch,' +
              ' certificate_id = :certificateId, certificate_arn = :certificateArn, thing_arn = :thingArn,' +
              ' geo_source = :geoSource, record_version = if_not_exists(record_version, :zero) + :one' +
              ' REMOVE claim_id, claim_expires',
            ExpressionAttributeValues: {
              ':claim': { S: claim.claimId },
              ':provisioned': { S: PROV_STATUS.provisioned },
              ':region': { S: facts.region },
              ':datetime': { S: provDatetime(facts.nowSeconds) },
              ':epoch': { N: String(facts.nowSeconds) },
              ':certificateId': { S: facts.certificateId },
              ':certificateArn': { S: facts.certificateArn },
              ':thingArn': { S: facts.thingArn },
              ':geoSource': { S: facts.geoSource },
              ':zero': { N: '0' },
              ':one': { N: '1' },
            },
          }),
        );
      } catch (error) {
        if (error instanceof ConditionalCheckFailedException) {
          throw unavailable(
            `the claim on ${claim.thingName} expired before provisioning finished; retry`,
            error,
          );
        }
        throw translate(error, 'mark provisioned');
      }
    },

    async release(claim) {
      try {
        await dynamodb.send(
          new UpdateItemCommand({
            TableName: settings.tableName,
            Key: key(claim.thingName),
            ConditionExpression: 'claim_id = :claim',
            UpdateExpression: 'REMOVE claim_id, claim_expires',
            ExpressionAttributeValues: { ':claim': { S: claim.claimId } },
          }),
        );
      } catch (error) {
        // Someone else holds it now (our lease expired): nothing of ours to release.
        if (error instanceof ConditionalCheckFailedException) return;
        throw error;
      }
    },
  };
}
