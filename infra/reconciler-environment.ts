/**
 * The reconciler's environment, derived from the deployment config: the contract with
 * functions/reconciler/config.ts (RECONCILER_ENVIRONMENT). The stack sets it on the scheduled
 * Lambda; `make reconcile` on the local stack can build it the same way. No cdktf imports.
 */
import type { ReconcilerEnvironmentName } from '../functions/reconciler/config';
import type { DeploymentConfig } from './config';
import { oneLinePem } from './function-environment';

export interface ReconcilerEnvironmentInputs {
  /** PEM of the CA whose certificates the reconciler may retire (ListCertificatesByCA). */
  readonly caCertificatePem: string;
}

/** The reconciler's Powertools service name: the `service` dimension of its metrics. */
export function reconcilerServiceName(config: DeploymentConfig): string {
  return `${config.appName}-reconciler`;
}

export type ReconcilerEnvironment = Partial<Record<ReconcilerEnvironmentName, string>>;

export function reconcilerEnvironment(
  config: DeploymentConfig,
  inputs: ReconcilerEnvironmentInputs,
): ReconcilerEnvironment {
  return {
    TABLE_NAME: config.tableName,
    REGISTRY_REGION: config.homeRegion,
    IOT_REGIONS: config.iotRegions.join(','),
    IOT_POLICY_NAME: config.iotPolicyName,
    CA_CERTIFICATE_PEM: oneLinePem(inputs.caCertificatePem),
    // The same lease the provisioning function holds: a claim older than this is stale.
    LEASE_SECONDS: String(config.leaseSeconds),
    RECONCILE_GRACE_SECONDS: String(config.reconciler.graceSeconds),
    RECONCILE_QUARANTINE_DAYS: String(config.reconciler.quarantineDays),
    RECONCILE_BREAKER_MINIMUM: String(config.reconciler.breakerMinimum),
    RECONCILE_BREAKER_PERCENT: String(config.reconciler.breakerPercent),
    CERTIFICATE_VALIDITY_DAYS: String(config.certificates.validityDays),
    RENEW_AT_PERCENT: String(config.certificates.renewAtPercent),
    RENEW_GRACE_SECONDS: String(config.certificates.renewGraceSeconds),
    POWERTOOLS_SERVICE_NAME: reconcilerServiceName(config),
    POWERTOOLS_METRICS_NAMESPACE: config.metricsNamespace,
  };
}
