/**
 * The reconciler's environment: the contract with infra/ (which sets these on the scheduled
 * Lambda) and with the local stack (`make reconcile`). Parsed by loadReconcilerConfig (to come).
 */
export const RECONCILER_ENVIRONMENT = {
  TABLE_NAME: 'required',
  REGISTRY_REGION: 'required',
  IOT_REGIONS: 'required',
  IOT_POLICY_NAME: 'required',
  CA_CERTIFICATE_PEM: 'required',
  LEASE_SECONDS: 'optional',
  RECONCILE_GRACE_SECONDS: 'optional',
  POWERTOOLS_SERVICE_NAME: 'optional',
  POWERTOOLS_METRICS_NAMESPACE: 'optional',
} as const;

export type ReconcilerEnvironmentName = keyof typeof RECONCILER_ENVIRONMENT;
