/**
 * The provisioning function's environment, derived from the deployment config. The stack sets it
 * on the Lambda; the local stack can call this too with its own secret and key, so infra, local
 * stack and function (FUNCTION_ENVIRONMENT) agree on one set of names. No cdktf imports.
 */
import type { FunctionEnvironmentName } from '../functions/provisioning/config';
import { formatIotEndpoints } from '../functions/provisioning/iot-endpoints';
import type { DeploymentConfig } from './config';

export interface FunctionEnvironmentInputs {
  /** PEM text of the fleet's public key. */
  readonly fleetPublicKeyPem: string;
  /** Value CloudFront sends in x-origin-verify (a Terraform reference in the stack). */
  readonly originVerifySecret: string;
  /** During an origin secret rotation: the next value, accepted too. */
  readonly originVerifySecretNext?: string;
  /** ARN or id of the KMS key the ipstack key ciphertext was made with. */
  readonly kmsKeyId: string;
  /**
   * The device CA: the asymmetric KMS key that signs (its ARN) and the CA certificate's PEM. The
   * stack always passes it; the local stack may leave it out until it runs its own CA.
   */
  readonly ca?: { readonly kmsKeyId: string; readonly certificatePem: string };
  /**
   * What the deployment made in every IoT region, so that a cold container asks AWS IoT for
   * neither: each region's data endpoint (the stack: Terraform references, already shortened
   * to their prefix; the local stack: its addresses), and whether it created the device policy.
   */
  readonly iot?: {
    readonly endpoints: Readonly<Record<string, string>>;
    readonly policyManaged: boolean;
  };
  /** The symmetric KMS key that seals generated keys for answer recovery; without it, no recovery. */
  readonly answerSealKeyId?: string;
}

/** Lambda environment values are easier to inspect on one line; the functions turn \n back. */
export function oneLinePem(pem: string): string {
  return pem.trim().replace(/\r?\n/g, '\\n');
}

export type FunctionEnvironment = Partial<Record<FunctionEnvironmentName, string>>;

export function functionEnvironment(
  config: DeploymentConfig,
  inputs: FunctionEnvironmentInputs,
): FunctionEnvironment {
  const environment: FunctionEnvironment = {
    TABLE_NAME: config.tableName,
    REGISTRY_REGION: config.homeRegion,
    IOT_REGIONS: config.iotRegions.join(','),
    DEFAULT_REGION: config.defaultRegion,
    COUNTRY_REGION_OVERRIDES: JSON.stringify(config.countryRegionOverrides),
    IOT_POLICY_NAME: config.iotPolicyName,
    FLEET_PUBLIC_KEY: oneLinePem(inputs.fleetPublicKeyPem),
    ACCEPT_V1_SIGNATURES: String(config.acceptV1Signatures),
    ORIGIN_VERIFY_SECRET: inputs.originVerifySecret,
    KMS_KEY_ID: inputs.kmsKeyId,
    LEASE_SECONDS: String(config.leaseSeconds),
    CERTIFICATE_VALIDITY_DAYS: String(config.certificates.validityDays),
    GENERATED_KEY_TYPE: config.certificates.generatedKeyType,
    REISSUE_LIMIT: String(config.certificates.reissueLimit),
    ANSWER_RECOVERY_SECONDS: String(config.certificates.answerRecoverySeconds),
    RENEW_AT_PERCENT: String(config.certificates.renewAtPercent),
    RENEW_GRACE_SECONDS: String(config.certificates.renewGraceSeconds),
    RENEW_MIN_INTERVAL_SECONDS: String(config.certificates.renewMinIntervalSeconds),
    STATUS_MIN_INTERVAL_SECONDS: String(config.certificates.statusMinIntervalSeconds),
    ADMISSION_TABLE_NAME: config.admission.tableName,
    ADMISSION_RATES: JSON.stringify(config.admission.rates),
    ADMISSION_REGION_RATES: JSON.stringify(config.admission.regionRates),
    ADMISSION_MAX_WAIT_MS: String(config.admission.maxWaitMs),
    ADMISSION_JITTER_SECONDS: String(config.admission.jitterSeconds),
    ADMISSION_MAX_RETRY_AFTER_SECONDS: String(config.admission.maxRetryAfterSeconds),
    ADMISSION_WHEN_UNAVAILABLE: config.admission.whenUnavailable,
    ADMISSION_SPILL_OVER: JSON.stringify(config.admission.spillOver),
    POWERTOOLS_SERVICE_NAME: config.appName,
    POWERTOOLS_METRICS_NAMESPACE: config.metricsNamespace,
  };
  if (inputs.answerSealKeyId) environment.ANSWER_SEAL_KEY_ID = inputs.answerSealKeyId;
  if (inputs.originVerifySecretNext) environment.ORIGIN_VERIFY_SECRET_NEXT = inputs.originVerifySecretNext;
  if (inputs.ca) {
    environment.CA_KMS_KEY_ID = inputs.ca.kmsKeyId;
    environment.CA_CERTIFICATE_PEM = oneLinePem(inputs.ca.certificatePem);
  }
  if (inputs.iot) {
    environment.IOT_ENDPOINTS = formatIotEndpoints(inputs.iot.endpoints);
    if (inputs.iot.policyManaged) environment.IOT_POLICY_MANAGED = 'true';
  }
  if (config.ipstackUrl) {
    environment.IPSTACK_URL = config.ipstackUrl;
    environment.IPSTACK_KEY_PARAMETER = config.ipstackKeyParameter;
    environment.IPSTACK_KEY_CACHE_SECONDS = String(config.ipstackKeyCacheSeconds);
  }
  return environment;
}
