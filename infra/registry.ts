/**
 * The allowlist/state table: a DynamoDB global table (version 2019.11.21, `replica` blocks) in the
 * home region, replicated to every other enabled IoT region. Key schema is the 2018 sample's.
 */
import { Construct } from 'constructs';
import type { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { DynamodbTable } from '@cdktf/provider-aws/lib/dynamodb-table';
import type { DeploymentConfig } from './config';

/** Epoch-seconds attribute DynamoDB TTL deletes expired nonces and leases by. */
export const REGISTRY_TTL_ATTRIBUTE = 'expires_at';
export const REGISTRY_HASH_KEY = 'thing_name';

export interface RegistryTableProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
}

export class RegistryTable extends Construct {
  readonly table: DynamodbTable;

  constructor(scope: Construct, id: string, { config, provider }: RegistryTableProps) {
    super(scope, id);
    this.table = new DynamodbTable(this, 'table', {
      provider,
      name: config.tableName,
      billingMode: 'PAY_PER_REQUEST',
      hashKey: REGISTRY_HASH_KEY,
      attribute: [{ name: REGISTRY_HASH_KEY, type: 'S' }],
      ttl: { attributeName: REGISTRY_TTL_ATTRIBUTE, enabled: true },
      pointInTimeRecovery: { enabled: true },
      // KMS encryption with the AWS managed key (aws/dynamodb) in each replica's region: a customer
      // managed key would need one key per replica region for no gain here.
      serverSideEncryption: { enabled: true },
      deletionProtectionEnabled: config.tableDeletionProtection,
      // Global table replicas require the stream.
      streamEnabled: true,
      streamViewType: 'NEW_AND_OLD_IMAGES',
      replica: config.iotRegions
        .filter((region) => region !== config.homeRegion)
        .map((region) => ({
          regionName: region,
          pointInTimeRecovery: true,
          propagateTags: true,
          deletionProtectionEnabled: config.tableDeletionProtection,
        })),
      // Every device's record: never deleted or replaced by a deploy (infra/plan-check.ts).
      lifecycle: { preventDestroy: true },
    });
  }
}
