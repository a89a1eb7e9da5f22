/**
 * The admission table (functions/provisioning/admission-state.ts): one item per IoT region
 * holding that region's schedule. A plain table in the home region, beside the function that
 * writes it: not global (replicas would resolve concurrent admissions last-writer-wins), not the
 * registry (operator scans read every item there as a device). Its items are a few seconds of
 * state each; losing them costs one burst of admissions, so no backups.
 */
import { Construct } from 'constructs';
import type { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { DynamodbTable } from '@cdktf/provider-aws/lib/dynamodb-table';
import type { DeploymentConfig } from './config';

export const ADMISSION_HASH_KEY = 'region';
export const ADMISSION_ACTIONS = ['dynamodb:GetItem', 'dynamodb:UpdateItem'] as const;

export class AdmissionTable extends Construct {
  readonly table: DynamodbTable;

  constructor(scope: Construct, id: string, props: { config: DeploymentConfig; provider: AwsProvider }) {
    super(scope, id);
    this.table = new DynamodbTable(this, 'table', {
      provider: props.provider,
      name: props.config.admission.tableName,
      billingMode: 'PAY_PER_REQUEST',
      hashKey: ADMISSION_HASH_KEY,
      attribute: [{ name: ADMISSION_HASH_KEY, type: 'S' }],
      serverSideEncryption: { enabled: true },
    });
  }
}
