/**
 * The deployment configuration: infra/deployment.json (or the file named by DEPLOYMENT_CONFIG),
 * validated once. The same region list feeds the stack, the function (IOT_REGIONS) and the
 * local stack, so the function can never pick a region that was not deployed.
 *
 * No cdktf imports here: the rotate tool and the local stack read this too.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { enabledRegionSites } from '../functions/provisioning/regions';
import {
  ApiRates,
  budgetProblems,
  budgetsFor,
  IotApi,
  requestsPerSecond,
} from '../functions/provisioning/admission-budget';
import { spillOverProblems } from '../functions/provisioning/spill-over';

export const REPO_ROOT = resolve(__dirname, '..');
export const DEFAULT_DEPLOYMENT_FILE = resolve(__dirname, 'deployment.json');

const regionName = z
  .string()
  .regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'expected an AWS region name like eu-central-1');
const positiveInt = z.number().int().positive();
const kmsAlias = z
  .string()
  .regex(/^alias\/[\w/-]+$/)
  .refine((alias) => !alias.startsWith('alias/aws/'), {
    message: 'alias/aws/ is reserved for AWS managed keys',
  });
const roleArn = z
  .string()
  .regex(
    /^arn:aws[\w-]*:iam::\d{12}:role\/[\w+=,.@/-]+$/,
    'expected an IAM role ARN like arn:aws:iam::123456789012:role/ca-operator',
  );
const topicArn = z
  .string()
  .regex(
    /^arn:aws[\w-]*:sns:[a-z0-9-]+:\d{12}:[\w-]+$/,
    'expected an SNS topic ARN like arn:aws:sns:us-east-2:123456789012:oncall',
  );
/** EventBridge Scheduler expressions: rate(…) or cron(…); at(…) would run once only. */
const scheduleExpression = z
  .string()
  .regex(
    /^(rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\(.+\))$/,
    'expected rate(15 minutes) or cron(…) (EventBridge Scheduler syntax)',
  );

const deploymentSchema = z
  .object({
    /**
     * A throwaway deployment (a developer's account, the local stack): local state, no alarm
     * destination and no named CA roles are allowed. Anything else is production and must name
     * them (checked below).
     */
    sandbox: z.boolean().default(false),
    /** The AWS account this deployment belongs to: every provider refuses any other. */
    expectedAccountId: z
      .string()
      .regex(/^\d{12}$/, 'a 12-digit AWS account id')
      .nullable()
      .default(null),
    appName: z.string().regex(/^[a-z][a-z0-9-]{2,40}$/, 'lower-case letters, digits and dashes'),
    homeRegion: regionName,
    iotRegions: z.array(regionName).min(1),
    defaultRegion: regionName,
    countryRegionOverrides: z.record(z.string().regex(/^[A-Z]{2}$/), regionName).default({}),
    tableName: z.string().regex(/^[a-zA-Z0-9_.-]{3,255}$/),
    iotPolicyName: z.string().regex(/^[\w+=,.@-]{1,128}$/),
    fleetPublicKeyFile: z.string().min(1),
    acceptV1Signatures: z.boolean(),
    ipstackUrl: z.url().nullable(),
    ipstackKeyParameter: z.string().regex(/^\/[\w./-]+$/, 'an SSM parameter name starting with /'),
    ipstackKeyCacheSeconds: positiveInt.max(3600),
    kmsKeyAlias: kmsAlias,
    caKmsKeyAlias: kmsAlias,
    caCertificateFile: z.string().min(1),
    /**
     * Aliases of earlier CA keys (CA rotation): kept in the stack, disabled once the function signs
     * with the current key, never deleted while certificates issued under them may be valid.
     */
    caRetiredKmsKeyAliases: z.array(kmsAlias).default([]),
    /** Who may use the CA key besides the provisioning function (docs/deploy.md, "Who can use the CA key"). */
    caKeyAccess: z
      .object({
        /** Roles that run `make init-ca`: may Sign (RAW, ECDSA_SHA_256) and read the public key. */
        operatorRoleArns: z.array(roleArn).default([]),
        /** Roles that may disable, re-enable, schedule deletion of, or change the policy of the key. */
        breakGlassRoleArns: z.array(roleArn).default([]),
      })
      .strict()
      .default({ operatorRoleArns: [], breakGlassRoleArns: [] }),
    caPreviousCertificates: z
      .array(z.object({ file: z.string().min(1), active: z.boolean() }).strict())
      .default([]),
    certificates: z
      .object({
        validityDays: positiveInt.max(36500),
        caValidityDays: positiveInt.max(36500),
        generatedKeyType: z.enum(['rsa-2048', 'ec-p256']),
        reissueLimit: z.number().int().min(0).max(100),
        /**
         * Key mode: how long a lost answer is recovered from its sealed key instead of re-issued
         * (functions/provisioning/answer-recovery.ts); 0 = off. A short window: the sealed key is
         * a copy of the device's key, kept only to spare AWS IoT a second registration.
         */
        answerRecoverySeconds: z.number().int().min(0).max(3600).default(300),
        /** After day one (docs/protocol.md): status says `renew` past this share of the lifetime. */
        renewAtPercent: z.number().int().min(1).max(99).default(80),
        /** The previous certificate stays ACTIVE this long after a renewal, unless the new key is proven first. */
        renewGraceSeconds: z
          .number()
          .int()
          .min(60)
          .default(7 * 86_400),
        renewMinIntervalSeconds: z.number().int().min(0).default(86_400),
        statusMinIntervalSeconds: z.number().int().min(0).default(5),
      })
      .strict(),
    leaseSeconds: positiveInt.max(900),
    metricsNamespace: z.string().min(1).max(255),
    tableDeletionProtection: z.boolean(),
    cloudFrontPriceClass: z.enum(['PriceClass_All', 'PriceClass_200', 'PriceClass_100']),
    function: z.object({
      memoryMb: z.number().int().min(128).max(10240),
      timeoutSeconds: z.number().int().min(1).max(29, 'API Gateway HTTP APIs wait at most 30 s'),
      reservedConcurrency: positiveInt.nullable(),
      logRetentionDays: positiveInt,
    }),
    reconciler: z
      .object({
        schedule: scheduleExpression,
        graceSeconds: positiveInt,
        /** Days an orphan stays deactivated before it is deleted (functions/reconciler/quarantine.ts). */
        quarantineDays: positiveInt.default(7),
        /** The circuit breaker (functions/reconciler/breaker.ts): a run may take max(N, X % of our certificates). */
        breakerMinimum: z.number().int().min(0).default(25),
        breakerPercent: z.number().int().min(0).max(100).default(2),
        timeoutSeconds: z.number().int().min(30).max(900, 'Lambda runs at most 900 s'),
        memoryMb: z.number().int().min(128).max(10240),
      })
      .strict(),
    api: z.object({
      throttleRatePerSecond: z.number().positive(),
      throttleBurst: positiveInt,
      /**
       * POST /device-status's own limits: every device checks at start and then now and then, so
       * it is the busiest route and its bursts (a region's devices rebooting together) must not
       * spend the budget of provisioning and renewal.
       */
      statusThrottleRatePerSecond: z.number().positive().default(100),
      statusThrottleBurst: positiveInt.default(200),
    }),
    /** Admission control per region (functions/provisioning/admission.ts; docs/deploy.md). */
    admission: z
      .object({
        tableName: z.string().regex(/^[a-zA-Z0-9_.-]{3,255}$/),
        /** Calls per second per AWS IoT API in every region: AWS's defaults unless raised. */
        rates: z.record(z.string(), z.unknown()).default({}),
        /** Per region overrides, for quotas raised in Service Quotas. */
        regionRates: z.record(z.string(), z.unknown()).default({}),
        maxWaitMs: z.number().int().min(0).max(10_000).default(2_000),
        jitterSeconds: z.number().int().min(0).max(60).default(1),
        maxRetryAfterSeconds: positiveInt.max(86_400).default(900),
        whenUnavailable: z.enum(['open', 'closed']).default('open'),
        /** API Gateway admits at least this many times what the budgets can serve (refusals are cheap). */
        apiHeadroom: z.number().min(1).default(3),
        /** The backlog alarm fires when a region's backlog stays above this. */
        backlogAlarmSeconds: positiveInt.default(60),
        /** Spill-over (functions/provisioning/spill-over.ts): null = off; checked by spillOverProblems. */
        spillOver: z.unknown().default(null),
      })
      .strict()
      .default({
        tableName: 'global-device-provisioning-admission',
        rates: {},
        regionRates: {},
        maxWaitMs: 2_000,
        jitterSeconds: 1,
        maxRetryAfterSeconds: 900,
        whenUnavailable: 'open',
        apiHeadroom: 3,
        backlogAlarmSeconds: 60,
        spillOver: null,
      }),
    alarms: z.object({
      fiveXxRatePercent: z.number().positive().max(100),
      throttledRequestsPerFiveMinutes: positiveInt,
      ipstackFailuresPerFiveMinutes: positiveInt,
      lambdaErrorsPerFiveMinutes: positiveInt,
      alarmEmail: z.email().nullable(),
      /** More e-mail subscribers of the alarm topic(s). */
      alarmEmails: z.array(z.email()).default([]),
      /**
       * Existing SNS topics (on-call, chat) every alarm of the same region also notifies: CloudWatch
       * only publishes to a topic in the alarm's region (the home region; us-east-1 for WAF).
       */
      alarmTopicArns: z.array(topicArn).default([]),
      /** Rate alarms only judge periods with at least this many requests (5 minutes). */
      minimumRequestsForRate: positiveInt.default(50),
      fourXxRatePercent: z.number().positive().max(100).default(25),
      apiThrottledRatePercent: z.number().positive().max(100).default(5),
      /** Blocked requests (all WAF rules) in 5 minutes before alarming. */
      wafBlockedRequestsPerFiveMinutes: positiveInt.default(500),
    }),
    /**
     * The WAF web ACL on CloudFront. The per-IP limit must let a factory behind one NAT through
     * (docs/deploy.md, "Per-client limits").
     */
    waf: z
      .object({
        requestsPerFiveMinutesPerIp: z.number().int().min(10).max(2_000_000_000).default(3000),
        /** CloudFront lets WAF inspect the first 16 KiB of a body; anything longer is blocked. */
        maxBodyBytes: z.number().int().min(1024).max(16_384).default(16_384),
      })
      .strict()
      .default({ requestsPerFiveMinutesPerIp: 3000, maxBodyBytes: 16_384 }),
    /**
     * The origin secret CloudFront sends and the function checks. A rotation goes through
     * accept-next (the function accepts both) and send-next (CloudFront sends the new one), then
     * generation + 1 (`make rotate-origin-secret`).
     */
    originSecret: z
      .object({
        generation: positiveInt,
        rotation: z.enum(['none', 'accept-next', 'send-next']),
      })
      .strict()
      .default({ generation: 1, rotation: 'none' }),
    customDomain: z
      .object({
        domainName: z.string().regex(/^([a-z0-9-]+\.)+[a-z]{2,}$/, 'a lower-case DNS name'),
        hostedZoneId: z.string().regex(/^Z[A-Z0-9]+$/, 'a Route 53 hosted zone id'),
        /**
         * A second name in the same zone for the API itself (API Gateway custom domain, CloudFront's
         * origin): with it the default execute-api endpoint is disabled.
         */
        originDomainName: z
          .string()
          .regex(/^([a-z0-9-]+\.)+[a-z]{2,}$/, 'a lower-case DNS name')
          .optional(),
      })
      .nullable(),
    terraformState: z
      .object({
        bucket: z.string().min(3),
        key: z.string().min(1),
        region: regionName,
        dynamodbTable: z.string().min(1).optional(),
      })
      .nullable(),
  })
  .strict();

export type DeploymentConfig = z.infer<typeof deploymentSchema>;

export class DeploymentConfigError extends Error {
  override readonly name = 'DeploymentConfigError';
}

/** Validates a parsed deployment.json; throws naming every problem. */
export function parseDeploymentConfig(raw: unknown, source = 'deployment config'): DeploymentConfig {
  const parsed = deploymentSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map(
      (issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`,
    );
    throw new DeploymentConfigError(`${source}: ${problems.join('; ')}`);
  }
  const config = parsed.data;
  const fail = (message: string): never => {
    throw new DeploymentConfigError(`${source}: ${message}`);
  };
  try {
    enabledRegionSites([config.homeRegion]);
    enabledRegionSites(config.iotRegions);
  } catch (error) {
    fail((error as Error).message);
  }
  if (new Set(config.iotRegions).size !== config.iotRegions.length) fail('iotRegions lists a region twice');
  const enabled = new Set(config.iotRegions);
  if (!enabled.has(config.defaultRegion)) fail(`defaultRegion ${config.defaultRegion} is not in iotRegions`);
  for (const [country, region] of Object.entries(config.countryRegionOverrides)) {
    if (!enabled.has(region)) fail(`countryRegionOverrides.${country}: ${region} is not in iotRegions`);
  }
  if (config.caKmsKeyAlias === config.kmsKeyAlias) {
    fail('caKmsKeyAlias must differ from kmsKeyAlias (the CA key signs; the ipstack key encrypts)');
  }
  if (config.certificates.validityDays > config.certificates.caValidityDays) {
    fail(
      `certificates.validityDays (${config.certificates.validityDays}) exceeds caValidityDays ` +
        `(${config.certificates.caValidityDays}): a device certificate cannot outlive its CA`,
    );
  }
  if (config.leaseSeconds <= config.function.timeoutSeconds) {
    fail(
      `leaseSeconds (${config.leaseSeconds}) must exceed function.timeoutSeconds ` +
        `(${config.function.timeoutSeconds}): a claim must outlive the invocation holding it`,
    );
  }
  if (config.reconciler.graceSeconds < config.leaseSeconds) {
    fail(
      `reconciler.graceSeconds (${config.reconciler.graceSeconds}) must be at least leaseSeconds ` +
        `(${config.leaseSeconds}): the reconciler must not undo a request that still holds its claim`,
    );
  }
  const budgetErrors = budgetProblems(
    config.admission.rates,
    config.admission.regionRates,
    config.iotRegions,
    {
      rates: 'admission.rates',
      regionRates: 'admission.regionRates',
    },
  );
  if (budgetErrors.length > 0) fail(budgetErrors.join('; '));
  const spillErrors = spillOverProblems(config.admission.spillOver, 'admission.spillOver');
  if (spillErrors.length > 0) fail(spillErrors.join('; '));
  if (config.admission.tableName === config.tableName) fail('admission.tableName must differ from tableName');
  if (config.reconciler.schedule.startsWith('rate(')) {
    const [amount, unit] = config.reconciler.schedule.slice(5, -1).split(' ') as [string, string];
    const seconds =
      Number(amount) * (unit.startsWith('minute') ? 60 : unit.startsWith('hour') ? 3600 : 86_400);
    if (seconds > RECONCILER_HEARTBEAT_SECONDS) {
      fail(
        `reconciler.schedule ${config.reconciler.schedule} runs less than once an hour: the heartbeat ` +
          'alarm (no completed run in an hour) would always fire; use rate(15 minutes) to rate(1 hour)',
      );
    }
  }
  const caAliases = [config.caKmsKeyAlias, ...config.caRetiredKmsKeyAliases];
  if (new Set(caAliases).size !== caAliases.length) {
    fail('caRetiredKmsKeyAliases repeats an alias or lists caKmsKeyAlias (the current key is not retired)');
  }
  if (config.customDomain?.originDomainName === config.customDomain?.domainName && config.customDomain) {
    fail(
      'customDomain.originDomainName must differ from customDomain.domainName (one is CloudFront, one the API)',
    );
  }
  const roles = [...config.caKeyAccess.operatorRoleArns, ...config.caKeyAccess.breakGlassRoleArns];
  const foreign = roles.filter(
    (arn) => config.expectedAccountId && arn.split(':')[4] !== config.expectedAccountId,
  );
  if (foreign.length > 0) {
    fail(
      `caKeyAccess names roles outside expectedAccountId ${config.expectedAccountId}: ${foreign.join(', ')}`,
    );
  }
  const problems = config.sandbox ? [] : productionRequirements(config);
  if (problems.length > 0) fail(problems.join('; '));
  const caFiles = [config.caCertificateFile, ...config.caPreviousCertificates.map((ca) => ca.file)];
  if (new Set(caFiles.map(repoPath)).size !== caFiles.length) {
    fail('caCertificateFile and caPreviousCertificates name the same file twice');
  }
  return config;
}

/** Each enabled region's admission budget: AWS's defaults, admission.rates, its own overrides. */
export function admissionBudgets(config: DeploymentConfig): Record<string, ApiRates> {
  return budgetsFor(
    config.iotRegions,
    config.admission.rates as Partial<Record<IotApi, number>>,
    config.admission.regionRates as Record<string, Partial<Record<IotApi, number>>>,
  );
}

/**
 * API Gateway's throttle for provisioning and renewal: the configured one, raised to what every
 * region's budget can serve times admission.apiHeadroom, so that admission, which knows the
 * region, decides, and API Gateway only stops what no budget could serve.
 */
export function apiThrottle(config: DeploymentConfig): { ratePerSecond: number; burst: number } {
  const served = Object.values(admissionBudgets(config)).reduce(
    (sum, rates) => sum + requestsPerSecond(rates),
    0,
  );
  const ratePerSecond = Math.max(
    config.api.throttleRatePerSecond,
    Math.ceil(served * config.admission.apiHeadroom),
  );
  return { ratePerSecond, burst: Math.max(config.api.throttleBurst, 2 * ratePerSecond) };
}

/** No completed reconciler run in this long raises the heartbeat alarm. */
export const RECONCILER_HEARTBEAT_SECONDS = 3600;

/**
 * What a production deployment (not `"sandbox": true`) must name: shared, locked state; a person
 * the alarms reach; who may use the CA key; the account it belongs to. Each problem names the
 * field and shows an example.
 */
function productionRequirements(config: DeploymentConfig): string[] {
  const problems: string[] = [];
  const sandboxHint = ' (or "sandbox": true for a throwaway deployment)';
  if (!config.terraformState) {
    problems.push(
      'terraformState is required for a production deployment: shared state with a lock, e.g. ' +
        `"terraformState": { "bucket": "acme-terraform-state", "key": "${config.appName}.tfstate", ` +
        `"region": "${config.homeRegion}" }${sandboxHint}`,
    );
  }
  const alarms = config.alarms;
  if (!alarms.alarmEmail && alarms.alarmEmails.length === 0 && alarms.alarmTopicArns.length === 0) {
    problems.push(
      'alarms.alarmEmails (or alarms.alarmTopicArns) is required for a production deployment: ' +
        `alarms must reach a person, e.g. "alarmEmails": ["oncall@example.com"]${sandboxHint}`,
    );
  }
  if (config.caKeyAccess.operatorRoleArns.length === 0) {
    problems.push(
      'caKeyAccess.operatorRoleArns is required for a production deployment: the roles that run ' +
        'make init-ca, e.g. "operatorRoleArns": ["arn:aws:iam::123456789012:role/ca-operator"]' +
        sandboxHint,
    );
  }
  if (config.caKeyAccess.breakGlassRoleArns.length === 0) {
    problems.push(
      'caKeyAccess.breakGlassRoleArns is required for a production deployment: the roles that may ' +
        'disable the CA key or change its policy, e.g. "breakGlassRoleArns": ' +
        `["arn:aws:iam::123456789012:role/ca-break-glass"]${sandboxHint}`,
    );
  }
  if (!config.expectedAccountId) {
    problems.push(
      'expectedAccountId is required for a production deployment: the account every provider ' +
        `must be in, e.g. "expectedAccountId": "123456789012"${sandboxHint}`,
    );
  }
  return problems;
}

/** Reads DEPLOYMENT_CONFIG (if set) or infra/deployment.json. */
export function loadDeploymentConfig(
  file = process.env.DEPLOYMENT_CONFIG || DEFAULT_DEPLOYMENT_FILE,
): DeploymentConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new DeploymentConfigError(`cannot read ${file}: ${(error as Error).message}`);
  }
  return parseDeploymentConfig(raw, file);
}

/** Repo-relative paths in the config resolve against the repository root. */
export function repoPath(path: string): string {
  return isAbsolute(path) ? path : resolve(REPO_ROOT, path);
}

/** The stack directory name under cdktf.out/stacks. */
export function stackName(config: DeploymentConfig): string {
  return config.appName;
}

/**
 * Output that only the bootstrap stack has (no CA certificate yet): `make plan|deploy` then
 * target its resources alone, so a deployment that already exists is never touched by it.
 */
export const BOOTSTRAP_OUTPUT = 'device_ca_bootstrap';
