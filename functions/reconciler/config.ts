/**
 * The reconciler's environment, read once at cold start: the contract with infra/ (which sets
 * these on the scheduled Lambda) and with the local stack (`make reconcile`). The variables it
 * shares with the provisioning function are validated by the same rules.
 */
import * as z from 'zod/mini';
import type { CaCertificate } from '../provisioning/certificate-authority';
import {
  caCertificateFrom,
  ConfigError,
  environmentSchema,
  parseEnvironment,
  wholeNumber,
} from '../provisioning/config';
import { enabledRegionSites } from '../provisioning/regions';
import { BreakerLimits, DEFAULT_BREAKER } from './breaker';
import { DEFAULT_QUARANTINE_DAYS } from './quarantine';

export const RECONCILER_ENVIRONMENT = {
  TABLE_NAME: 'required',
  REGISTRY_REGION: 'required',
  IOT_REGIONS: 'required',
  IOT_POLICY_NAME: 'required',
  CA_CERTIFICATE_PEM: 'required',
  LEASE_SECONDS: 'optional',
  RECONCILE_GRACE_SECONDS: 'optional',
  RECONCILE_QUARANTINE_DAYS: 'optional',
  RECONCILE_BREAKER_MINIMUM: 'optional',
  RECONCILE_BREAKER_PERCENT: 'optional',
  CERTIFICATE_VALIDITY_DAYS: 'optional',
  RENEW_AT_PERCENT: 'optional',
  RENEW_GRACE_SECONDS: 'optional',
  POWERTOOLS_SERVICE_NAME: 'optional',
  POWERTOOLS_METRICS_NAMESPACE: 'optional',
} as const;

export type ReconcilerEnvironmentName = keyof typeof RECONCILER_ENVIRONMENT;

/** Certificates younger than this are left alone: well past the function timeout. */
export const DEFAULT_GRACE_SECONDS = 900;

export interface ReconcilerConfig {
  readonly tableName: string;
  readonly registryRegion: string;
  readonly regions: readonly string[];
  readonly iotPolicyName: string;
  readonly caCertificate: CaCertificate;
  readonly leaseSeconds: number;
  readonly graceSeconds: number;
  /** How long an orphan stays deactivated before it is deleted (quarantine.ts). */
  readonly quarantineSeconds: number;
  /** The circuit breaker's N and X (breaker.ts). */
  readonly breaker: BreakerLimits;
  /** The deployment's certificate policy, as the function applies it (gdp-admin show prints it). */
  readonly certificates: {
    readonly validityDays: number;
    readonly renewAtPercent: number;
    readonly renewGraceSeconds: number;
  };
}

const reconcilerSchema = z.extend(
  z.pick(environmentSchema, {
    TABLE_NAME: true,
    REGISTRY_REGION: true,
    IOT_REGIONS: true,
    IOT_POLICY_NAME: true,
    CA_CERTIFICATE_PEM: true,
    LEASE_SECONDS: true,
    CERTIFICATE_VALIDITY_DAYS: true,
    RENEW_AT_PERCENT: true,
    RENEW_GRACE_SECONDS: true,
  }),
  {
    RECONCILE_GRACE_SECONDS: wholeNumber(DEFAULT_GRACE_SECONDS, 0),
    RECONCILE_QUARANTINE_DAYS: wholeNumber(DEFAULT_QUARANTINE_DAYS, 1),
    RECONCILE_BREAKER_MINIMUM: wholeNumber(DEFAULT_BREAKER.minimum, 0),
    RECONCILE_BREAKER_PERCENT: z._default(
      z.coerce.number().check(
        z.refine((value: number) => Number.isInteger(value), { message: 'expected a whole number' }),
        z.gte(0, 'expected 0–100'),
        z.lte(100, 'expected 0–100'),
      ),
      DEFAULT_BREAKER.percent,
    ),
  },
);

export function loadReconcilerConfig(env: NodeJS.ProcessEnv = process.env): ReconcilerConfig {
  const settings = parseEnvironment(reconcilerSchema, env, 'reconciler');
  let regions: string[];
  try {
    regions = enabledRegionSites(settings.IOT_REGIONS).map((site) => site.region);
  } catch (error) {
    throw new ConfigError(`invalid reconciler configuration: IOT_REGIONS: ${(error as Error).message}`);
  }
  return {
    tableName: settings.TABLE_NAME,
    registryRegion: settings.REGISTRY_REGION,
    regions,
    iotPolicyName: settings.IOT_POLICY_NAME,
    caCertificate: caCertificateFrom(settings.CA_CERTIFICATE_PEM, 'reconciler'),
    leaseSeconds: settings.LEASE_SECONDS,
    graceSeconds: settings.RECONCILE_GRACE_SECONDS,
    quarantineSeconds: settings.RECONCILE_QUARANTINE_DAYS * 86_400,
    breaker: {
      minimum: settings.RECONCILE_BREAKER_MINIMUM,
      percent: settings.RECONCILE_BREAKER_PERCENT,
    },
    certificates: {
      validityDays: settings.CERTIFICATE_VALIDITY_DAYS,
      renewAtPercent: settings.RENEW_AT_PERCENT,
      renewGraceSeconds: settings.RENEW_GRACE_SECONDS,
    },
  };
}
