/**
 * The function's configuration: read and validated once at cold start. A missing or bad
 * setting fails the cold start with a message naming the variable, never a request later.
 *
 * FUNCTION_ENVIRONMENT is the contract with infra/ (which sets these on the Lambda) and with
 * the local stack (which sets them on the local edge); a test pins that all three agree.
 */
import { createPublicKey, KeyObject } from 'node:crypto';
import * as z from 'zod/mini';
import './zod-messages';
import { CaCertificate, parseCaCertificate } from './ca-certificate';
import { enabledRegionSites, RegionSite } from './regions';
import type { AdmissionSettings } from './admission';
import { ApiRates, budgetProblems, budgetsFor, IotApi } from './admission-budget';
import { parseIotEndpoints } from './iot-endpoints';
import { spillOverProblems, spillOverSettings } from './spill-over';

/** Variables the function reads, and whether the deployment must set them. */
export const FUNCTION_ENVIRONMENT = {
  TABLE_NAME: 'required',
  REGISTRY_REGION: 'required',
  IOT_REGIONS: 'required',
  DEFAULT_REGION: 'required',
  COUNTRY_REGION_OVERRIDES: 'optional',
  IOT_POLICY_NAME: 'required',
  IOT_ENDPOINTS: 'optional',
  IOT_POLICY_MANAGED: 'optional',
  FLEET_PUBLIC_KEY: 'required',
  ACCEPT_V1_SIGNATURES: 'optional',
  ORIGIN_VERIFY_SECRET: 'required',
  ORIGIN_VERIFY_SECRET_NEXT: 'optional',
  IPSTACK_URL: 'optional',
  IPSTACK_KEY_PARAMETER: 'optional',
  IPSTACK_KEY_CACHE_SECONDS: 'optional',
  KMS_KEY_ID: 'optional',
  LEASE_SECONDS: 'optional',
  REPROVISION_WINDOW_SECONDS: 'optional',
  V2_MAX_CLOCK_SKEW_SECONDS: 'optional',
  CA_KMS_KEY_ID: 'required',
  CA_CERTIFICATE_PEM: 'required',
  CERTIFICATE_VALIDITY_DAYS: 'optional',
  GENERATED_KEY_TYPE: 'optional',
  REISSUE_LIMIT: 'optional',
  ANSWER_RECOVERY_SECONDS: 'optional',
  ANSWER_SEAL_KEY_ID: 'optional',
  RENEW_AT_PERCENT: 'optional',
  RENEW_GRACE_SECONDS: 'optional',
  RENEW_MIN_INTERVAL_SECONDS: 'optional',
  STATUS_MIN_INTERVAL_SECONDS: 'optional',
  ADMISSION_TABLE_NAME: 'optional',
  ADMISSION_RATES: 'optional',
  ADMISSION_REGION_RATES: 'optional',
  ADMISSION_MAX_WAIT_MS: 'optional',
  ADMISSION_JITTER_SECONDS: 'optional',
  ADMISSION_MAX_RETRY_AFTER_SECONDS: 'optional',
  ADMISSION_WHEN_UNAVAILABLE: 'optional',
  ADMISSION_SPILL_OVER: 'optional',
  POWERTOOLS_SERVICE_NAME: 'optional',
  POWERTOOLS_METRICS_NAMESPACE: 'optional',
} as const;

export type FunctionEnvironmentName = keyof typeof FUNCTION_ENVIRONMENT;

/** Header CloudFront adds to every origin request; its value is ORIGIN_VERIFY_SECRET. */
export const ORIGIN_VERIFY_HEADER = 'x-origin-verify';

/**
 * KMS encryption context bound to the ipstack key ciphertext. The rotate tool encrypts with it
 * and the function decrypts with it; the IAM policy conditions kms:Decrypt on it.
 */
export const IPSTACK_KEY_ENCRYPTION_CONTEXT: Readonly<Record<string, string>> = {
  purpose: 'ipstack-access-key',
  service: 'global-device-provisioning',
};

/** Value the ipstack key parameter holds until a security engineer stores the first key. */
export const IPSTACK_KEY_UNSET = 'UNSET';

export interface ProvisioningConfig {
  readonly tableName: string;
  readonly registryRegion: string;
  readonly regions: readonly RegionSite[];
  readonly defaultRegion: string;
  readonly countryRegionOverrides: Readonly<Record<string, string>>;
  readonly iotPolicyName: string;
  /**
   * Region → AWS IoT data endpoint, as the deployment learned them (IOT_ENDPOINTS): a cold
   * container asks DescribeEndpoint only for a region missing here.
   */
  readonly iotEndpoints: Readonly<Record<string, string>>;
  /** The deployment creates the device policy in every region: the function never checks it. */
  readonly iotPolicyManaged: boolean;
  readonly fleetPublicKey: KeyObject;
  readonly acceptV1Signatures: boolean;
  /**
   * Values CloudFront may send in x-origin-verify: the current one, and during a rotation the
   * next one too (CloudFront switches minutes after the function does, docs/deploy.md).
   */
  readonly originVerifySecrets: readonly string[];
  readonly ipstack?: {
    readonly baseUrl: string;
    readonly keyParameter: string;
    readonly keyCacheSeconds: number;
    /** When set, decrypt insists the ciphertext was made with this key. */
    readonly kmsKeyId?: string;
  };
  readonly leaseSeconds: number;
  readonly reprovisionWindowSeconds: number;
  readonly v2MaxClockSkewSeconds: number;
  /** The CA key in KMS (ARN, or id/alias in the registry region). */
  readonly caKmsKeyId: string;
  readonly caCertificate: CaCertificate;
  readonly certificateValidityDays: number;
  /** Key pair the service generates for devices that send no CSR. */
  readonly generatedKeyType: GeneratedKeyType;
  /** Re-issues allowed inside the re-provisioning window (lost answers in key mode). */
  readonly reissueLimit: number;
  /**
   * Key mode: how long a lost answer can be recovered (answer-recovery.ts), and the symmetric KMS
   * key that seals the generated key meanwhile. Undefined (no key, or 0 s): a retry is re-issued.
   */
  readonly answerRecovery?: { readonly seconds: number; readonly sealKeyId: string };
  /** After day one: /device-status and /device-renew (docs/protocol.md). */
  readonly lifecycle: LifecycleSettings;
  /** Admission control per region (admission.ts); undefined when ADMISSION_TABLE_NAME is unset. */
  readonly admission?: AdmissionSettings & { readonly tableName: string };
}

export interface LifecycleSettings {
  /** Share of a certificate's lifetime after which status answers `renew` (1–99). */
  readonly renewAtPercent: number;
  /** How long a renewed device's previous certificate stays ACTIVE unless the new key is proven first. */
  readonly renewGraceSeconds: number;
  /** Least time between renewals signed with the current certificate. */
  readonly renewMinIntervalSeconds: number;
  /** Least time between two status calls of one device. */
  readonly statusMinIntervalSeconds: number;
}

export type GeneratedKeyType = 'rsa-2048' | 'ec-p256';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

const regionName = z
  .string()
  .check(z.regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'expected an AWS region name like eu-central-1'));
const boolean = (fallback: boolean) =>
  z._default(
    z.pipe(
      z.enum(['true', 'false']),
      z.transform((value: 'true' | 'false') => value === 'true'),
    ),
    fallback,
  );
export const wholeNumber = (fallback: number, minimum = 1) =>
  z._default(
    z.coerce.number().check(
      z.refine((value: number) => Number.isInteger(value), { message: 'expected a whole number' }),
      z.gte(minimum, `expected at least ${minimum}`),
    ),
    fallback,
  );
const nonEmpty = (minimum = 1, message?: string) => z.string().check(z.minLength(minimum, message));
/** A variable holding JSON (`{}` when unset), parsed; what it must hold is piped after it. */
const jsonText = z.pipe(
  z._default(z.string(), '{}'),
  z.transform((text: string, ctx) => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      ctx.issues.push({ code: 'custom', message: 'not valid JSON', input: text });
      return z.NEVER;
    }
  }),
);
/** A JSON object in a variable; its content is checked after parsing (budgetProblems). */
const jsonObject = z.pipe(jsonText, z.record(z.string(), z.unknown()));

export const environmentSchema = z.object({
  TABLE_NAME: nonEmpty(3),
  REGISTRY_REGION: regionName,
  IOT_REGIONS: z.pipe(
    z.pipe(
      z.string(),
      z.transform((list: string) =>
        list
          .split(',')
          .map((region) => region.trim())
          .filter(Boolean),
      ),
    ),
    z.array(regionName).check(z.minLength(1)),
  ),
  DEFAULT_REGION: regionName,
  COUNTRY_REGION_OVERRIDES: z.pipe(
    jsonText,
    z.record(
      z.string().check(z.regex(/^[A-Z]{2}$/, 'expected ISO 3166-1 alpha-2 country codes')),
      regionName,
    ),
  ),
  IOT_POLICY_NAME: z.string().check(z.regex(/^[\w+=,.@-]{1,128}$/, 'expected an IoT policy name')),
  IOT_ENDPOINTS: z._default(z.string(), ''),
  IOT_POLICY_MANAGED: boolean(false),
  FLEET_PUBLIC_KEY: nonEmpty(),
  ACCEPT_V1_SIGNATURES: boolean(true),
  ORIGIN_VERIFY_SECRET: nonEmpty(16, 'must be at least 16 characters'),
  ORIGIN_VERIFY_SECRET_NEXT: z.optional(nonEmpty(16, 'must be at least 16 characters')),
  IPSTACK_URL: z.optional(z.url()),
  IPSTACK_KEY_PARAMETER: z.optional(nonEmpty()),
  IPSTACK_KEY_CACHE_SECONDS: wholeNumber(300),
  KMS_KEY_ID: z.optional(nonEmpty()),
  LEASE_SECONDS: wholeNumber(60),
  REPROVISION_WINDOW_SECONDS: wholeNumber(300, 0),
  V2_MAX_CLOCK_SKEW_SECONDS: wholeNumber(300),
  CA_KMS_KEY_ID: nonEmpty(),
  CA_CERTIFICATE_PEM: nonEmpty(),
  CERTIFICATE_VALIDITY_DAYS: wholeNumber(3650),
  GENERATED_KEY_TYPE: z._default(z.enum(['rsa-2048', 'ec-p256']), 'rsa-2048'),
  REISSUE_LIMIT: wholeNumber(3, 0),
  ANSWER_RECOVERY_SECONDS: wholeNumber(300, 0),
  ANSWER_SEAL_KEY_ID: z.optional(nonEmpty()),
  RENEW_AT_PERCENT: z._default(
    z.coerce.number().check(
      z.refine((value: number) => Number.isInteger(value), { message: 'expected a whole number' }),
      z.gte(1, 'expected 1–99'),
      z.lte(99, 'expected 1–99'),
    ),
    80,
  ),
  RENEW_GRACE_SECONDS: wholeNumber(7 * 86_400, 60),
  RENEW_MIN_INTERVAL_SECONDS: wholeNumber(86_400, 0),
  STATUS_MIN_INTERVAL_SECONDS: wholeNumber(5, 0),
  ADMISSION_TABLE_NAME: z.optional(nonEmpty(3)),
  ADMISSION_RATES: jsonObject,
  ADMISSION_REGION_RATES: jsonObject,
  ADMISSION_MAX_WAIT_MS: wholeNumber(2_000, 0),
  ADMISSION_JITTER_SECONDS: wholeNumber(1, 0),
  ADMISSION_MAX_RETRY_AFTER_SECONDS: wholeNumber(900),
  ADMISSION_WHEN_UNAVAILABLE: z._default(z.enum(['open', 'closed']), 'open'),
  /** JSON: null (off) or { afterWaitSeconds, maxExtraKm }; checked by spillOverProblems. */
  ADMISSION_SPILL_OVER: z.optional(z.string()),
});

/** Parses an environment with `schema`; throws ConfigError naming each bad variable. */
export function parseEnvironment<T extends z.ZodMiniType>(
  schema: T,
  env: NodeJS.ProcessEnv,
  what: string,
): z.output<T> {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map(
      (issue) => `${issue.path.join('.') || '(environment)'}: ${issue.message}`,
    );
    throw new ConfigError(`invalid ${what} configuration: ${problems.join('; ')}`);
  }
  return parsed.data;
}

/** CA_CERTIFICATE_PEM (newlines may come escaped as \n); throws ConfigError naming it. */
export function caCertificateFrom(value: string, what = 'function'): CaCertificate {
  try {
    return parseCaCertificate(value.replace(/\\n/g, '\n'));
  } catch (error) {
    throw new ConfigError(
      `invalid ${what} configuration: CA_CERTIFICATE_PEM: not a PEM certificate (${(error as Error).message})`,
    );
  }
}

/** Parses the environment; throws ConfigError naming each bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): ProvisioningConfig {
  const settings = parseEnvironment(environmentSchema, env, 'function');
  const fail = (variable: string, message: string): never => {
    throw new ConfigError(`invalid function configuration: ${variable}: ${message}`);
  };

  let regions: RegionSite[] = [];
  try {
    regions = enabledRegionSites(settings.IOT_REGIONS);
  } catch (error) {
    fail('IOT_REGIONS', (error as Error).message);
  }
  const enabled = new Set(regions.map((site) => site.region));
  if (!enabled.has(settings.DEFAULT_REGION))
    fail('DEFAULT_REGION', `${settings.DEFAULT_REGION} is not in IOT_REGIONS`);
  for (const [country, region] of Object.entries(settings.COUNTRY_REGION_OVERRIDES)) {
    if (!enabled.has(region))
      fail('COUNTRY_REGION_OVERRIDES', `${country} → ${region} is not in IOT_REGIONS`);
  }

  let fleetPublicKey: KeyObject | undefined;
  try {
    fleetPublicKey = createPublicKey(settings.FLEET_PUBLIC_KEY.replace(/\\n/g, '\n'));
  } catch (error) {
    fail('FLEET_PUBLIC_KEY', `not a PEM public key (${(error as Error).message})`);
  }

  const caCertificate = caCertificateFrom(settings.CA_CERTIFICATE_PEM);

  let iotEndpoints: Record<string, string> = {};
  try {
    iotEndpoints = parseIotEndpoints(settings.IOT_ENDPOINTS);
  } catch (error) {
    fail('IOT_ENDPOINTS', (error as Error).message);
  }
  for (const region of Object.keys(iotEndpoints)) {
    if (!enabled.has(region)) fail('IOT_ENDPOINTS', `${region} is not in IOT_REGIONS`);
  }

  if (settings.IPSTACK_URL && !settings.IPSTACK_KEY_PARAMETER) {
    fail('IPSTACK_KEY_PARAMETER', 'required when IPSTACK_URL is set');
  }

  const problems = budgetProblems(
    settings.ADMISSION_RATES,
    settings.ADMISSION_REGION_RATES,
    regions.map((site) => site.region),
    { rates: 'ADMISSION_RATES', regionRates: 'ADMISSION_REGION_RATES' },
  );
  if (problems.length > 0) throw new ConfigError(`invalid function configuration: ${problems.join('; ')}`);
  let spillOver: unknown = null;
  try {
    spillOver = JSON.parse(settings.ADMISSION_SPILL_OVER ?? 'null');
  } catch {
    fail('ADMISSION_SPILL_OVER', 'not valid JSON');
  }
  const spillProblems = spillOverProblems(spillOver, 'ADMISSION_SPILL_OVER');
  if (spillProblems.length > 0)
    throw new ConfigError(`invalid function configuration: ${spillProblems.join('; ')}`);
  const admissionRates: Record<string, ApiRates> = budgetsFor(
    regions.map((site) => site.region),
    settings.ADMISSION_RATES as Partial<Record<IotApi, number>>,
    settings.ADMISSION_REGION_RATES as Record<string, Partial<Record<IotApi, number>>>,
  );

  return {
    tableName: settings.TABLE_NAME,
    registryRegion: settings.REGISTRY_REGION,
    regions,
    defaultRegion: settings.DEFAULT_REGION,
    countryRegionOverrides: settings.COUNTRY_REGION_OVERRIDES,
    iotPolicyName: settings.IOT_POLICY_NAME,
    iotEndpoints,
    iotPolicyManaged: settings.IOT_POLICY_MANAGED,
    fleetPublicKey: fleetPublicKey as KeyObject,
    acceptV1Signatures: settings.ACCEPT_V1_SIGNATURES,
    originVerifySecrets: [
      settings.ORIGIN_VERIFY_SECRET,
      ...(settings.ORIGIN_VERIFY_SECRET_NEXT ? [settings.ORIGIN_VERIFY_SECRET_NEXT] : []),
    ],
    ipstack:
      settings.IPSTACK_URL && settings.IPSTACK_KEY_PARAMETER
        ? {
            baseUrl: settings.IPSTACK_URL.replace(/\/+$/, ''),
            keyParameter: settings.IPSTACK_KEY_PARAMETER,
            keyCacheSeconds: settings.IPSTACK_KEY_CACHE_SECONDS,
            kmsKeyId: settings.KMS_KEY_ID,
          }
        : undefined,
    leaseSeconds: settings.LEASE_SECONDS,
    reprovisionWindowSeconds: settings.REPROVISION_WINDOW_SECONDS,
    v2MaxClockSkewSeconds: settings.V2_MAX_CLOCK_SKEW_SECONDS,
    caKmsKeyId: settings.CA_KMS_KEY_ID,
    caCertificate,
    certificateValidityDays: settings.CERTIFICATE_VALIDITY_DAYS,
    generatedKeyType: settings.GENERATED_KEY_TYPE,
    reissueLimit: settings.REISSUE_LIMIT,
    answerRecovery:
      settings.ANSWER_SEAL_KEY_ID && settings.ANSWER_RECOVERY_SECONDS > 0
        ? { seconds: settings.ANSWER_RECOVERY_SECONDS, sealKeyId: settings.ANSWER_SEAL_KEY_ID }
        : undefined,
    lifecycle: {
      renewAtPercent: settings.RENEW_AT_PERCENT,
      renewGraceSeconds: settings.RENEW_GRACE_SECONDS,
      renewMinIntervalSeconds: settings.RENEW_MIN_INTERVAL_SECONDS,
      statusMinIntervalSeconds: settings.STATUS_MIN_INTERVAL_SECONDS,
    },
    admission: settings.ADMISSION_TABLE_NAME
      ? {
          tableName: settings.ADMISSION_TABLE_NAME,
          rates: admissionRates,
          maxWaitMs: settings.ADMISSION_MAX_WAIT_MS,
          jitterSeconds: settings.ADMISSION_JITTER_SECONDS,
          maxRetryAfterSeconds: settings.ADMISSION_MAX_RETRY_AFTER_SECONDS,
          whenUnavailable: settings.ADMISSION_WHEN_UNAVAILABLE,
          spillOver: spillOverSettings(spillOver),
        }
      : undefined,
  };
}
