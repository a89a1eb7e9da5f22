/**
 * The registry as operators use it (gdp-admin, reports): scan with filters, the table's
 * approximate size, and an audited change that is a compare-and-set on the record as read.
 */
import {
  AttributeValue,
  ConditionalCheckFailedException,
  DescribeTableCommand,
  ScanCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { AuditEntry, DeviceRecord, historyWith, toDeviceRecord } from './device-record';
import {
  LEGACY_ATTRIBUTES,
  RegistryTable,
  SEALED_KEY_ATTRIBUTES,
  translate,
  unchanged,
  updateExpression,
} from './registry-table';

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

export interface OperatorRegistry {
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

export function operatorRegistry(table: RegistryTable): OperatorRegistry {
  const { dynamodb, TableName, key } = table;
  return {
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
      // The legacy attributes and a sealed key are removed by every write already (updateExpression).
      const operatorRemoves = (change.remove ?? []).filter(
        (attribute) => !LEGACY_ATTRIBUTES.includes(attribute) && !SEALED_KEY_ATTRIBUTES.includes(attribute),
      );
      const removes = operatorRemoves.map((attribute, index) => {
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
            UpdateExpression: updateExpression({ set: sets, remove: removes }),
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
  };
}
