/**
 * The device registry in DynamoDB: the one adapter the function, the reconciler and the operator
 * tools use. Records mean what device-record.ts says. The adapter is split by who calls it, over
 * one table handle (registry-table.ts): the device path (registry-device.ts), operators
 * (registry-operator.ts), the import (registry-import.ts) and the reconciler
 * (registry-reconciler.ts). Every write is conditional.
 */
import type { KeyMode } from './device-record';
import { DeviceRegistry, deviceRegistry } from './registry-device';
import { ImportRegistry, importRegistry } from './registry-import';
import { OperatorRegistry, operatorRegistry } from './registry-operator';
import { ReconcilerRegistry, reconcilerRegistry } from './registry-reconciler';
import { registryTable } from './registry-table';

export { PROV_STATUS, provDatetime, toDeviceRecord } from './device-record';
export type { DeviceRecord } from './device-record';
export { ClaimLost } from './registry-device';
export type { Claim, ClaimRequest, DeviceRegistry, ProvisionedFacts, StatusCall } from './registry-device';
export { writeTransactions } from './registry-import';
export type { ImportRegistry, ImportWriteReport, NewDevice } from './registry-import';
export type { OperatorRegistry, RecordChange, RecordFilter } from './registry-operator';
export type { ReconcilerRegistry } from './registry-reconciler';

export type Registry = DeviceRegistry & OperatorRegistry & ImportRegistry & ReconcilerRegistry;

export function dynamoRegistry(settings: { region: string; tableName: string }): Registry {
  const table = registryTable(settings);
  return {
    ...deviceRegistry(table),
    ...operatorRegistry(table),
    ...importRegistry(table),
    ...reconcilerRegistry(table),
  };
}

export type { KeyMode };
