/**
 * HTTP API (payload 2.0) event → typed request → provision(...) → HTTP answer, and the wiring
 * of the real AWS adapters. The Lambda entry point is handler.ts.
 */
import { timingSafeEqual } from 'node:crypto';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { Deadline, RemainingTime } from './deadline';
import { ORIGIN_VERIFY_HEADER, ProvisioningConfig } from './config';
import { asProvisioningError, forbidden } from './errors';
import { awsDeviceIot } from './iot';
import { ipstackGeolocator } from './ipstack';
import { viewerFromHeaders } from './locate';
import { provision, ProvisioningDependencies } from './provision';
import { dynamoRegistry } from './registry';
import { deviceKeyPool } from './device-key';
import { keyRegion, kmsClient, kmsSigner } from './kms';
import { kmsSecretSource } from './secrets';
import { countMetric, countMetricFor, logger, metrics, MetricUnit } from './telemetry';
import { dynamoAdmissionState } from './admission-state';
import {
  LifecycleRequest,
  parseLifecycleRequest,
  parseProvisioningRequest,
  ProvisioningRequest,
} from './request';
import { deviceStatus } from './status';
import { renewCertificate } from './renew';
import {
  ErrorAnswer,
  LifecycleOperation,
  RENEW_PATH,
  RenewAnswer,
  STATUS_PATH,
  StatusAnswer,
  SuccessAnswer,
} from './wire';

export type ProvisioningHandler = (
  event: APIGatewayProxyEventV2,
  context?: RemainingTime,
) => Promise<APIGatewayProxyStructuredResultV2>;

/** Wires the real adapters for a configuration. */
export function awsDependencies(config: ProvisioningConfig): ProvisioningDependencies {
  const secrets = config.ipstack
    ? kmsSecretSource({
        region: config.registryRegion,
        parameterName: config.ipstack.keyParameter,
        cacheSeconds: config.ipstack.keyCacheSeconds,
        kmsKeyId: config.ipstack.kmsKeyId,
      })
    : undefined;
  return {
    config,
    registry: dynamoRegistry({ region: config.registryRegion, tableName: config.tableName }),
    iot: awsDeviceIot({
      policyName: config.iotPolicyName,
      caCertificatePem: config.caCertificate.pem,
      caCertificateId: config.caCertificate.id,
      endpoints: config.iotEndpoints,
      policyManaged: config.iotPolicyManaged,
      onThrottle: (api, region) => countMetricFor('IotThrottled', { Api: api, Region: region }),
    }),
    admission: config.admission
      ? {
          settings: config.admission,
          state: dynamoAdmissionState({
            region: config.registryRegion,
            tableName: config.admission.tableName,
          }),
        }
      : undefined,
    deviceKeys: deviceKeyPool(config.generatedKeyType),
    signer: kmsSigner(kmsClient(keyRegion(config.caKmsKeyId, config.registryRegion)), config.caKmsKeyId),
    geolocator: config.ipstack && secrets ? ipstackGeolocator(config.ipstack.baseUrl, secrets) : undefined,
  };
}

function respond(
  statusCode: number,
  body: SuccessAnswer | StatusAnswer | RenewAnswer | ErrorAnswer,
  retryAfterSeconds?: number,
): APIGatewayProxyStructuredResultV2 {
  return {
    statusCode,
    headers: {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      ...(retryAfterSeconds !== undefined ? { 'retry-after': String(Math.ceil(retryAfterSeconds)) } : {}),
    },
    body: JSON.stringify(body),
  };
}

/** Compares with every accepted secret, each in constant time, without stopping at a match. */
function cameThroughCloudFront(
  headers: APIGatewayProxyEventV2['headers'],
  secrets: readonly string[],
): boolean {
  const presented = Buffer.from(headers?.[ORIGIN_VERIFY_HEADER] ?? '', 'utf8');
  let matched = false;
  for (const secret of secrets) {
    const expected = Buffer.from(secret, 'utf8');
    const same = presented.length === expected.length && timingSafeEqual(presented, expected);
    matched = matched || same;
  }
  return matched;
}

const OUTCOME_METRIC = {
  provisioned: 'Provisioned',
  reprovisioned: 'Reprovisioned',
  resumed: 'Resumed',
  'same-certificate': 'SameCertificate',
  recovered: 'AnswerRecovered',
} as const;

/** Which operation an API route is: the API sends all three paths to this one function. */
function lifecycleOperation(event: APIGatewayProxyEventV2): LifecycleOperation | undefined {
  // routeKey is "POST /device-status"; rawPath carries a stage prefix on a named stage.
  const path = event.routeKey?.split(' ')[1] ?? event.rawPath;
  if (path === STATUS_PATH) return 'status';
  if (path === RENEW_PATH) return 'renew';
  return undefined;
}

/** Maps a failure to its answer once: metrics, one log line, the `{status, message}` body. */
function refusal(
  thrown: unknown,
  what: string,
  fields: Record<string, unknown>,
  started: number,
): APIGatewayProxyStructuredResultV2 {
  const error = asProvisioningError(thrown);
  countMetric(`Status${error.status}`);
  // The throttle alarm (infra/alarms.ts) watches this one: AWS throttling and contention, not
  // a device calling more often than its own limit (that is DeviceRateLimited).
  if (error.kind === 'throttled') countMetric('Throttled');
  if (error.kind === 'rate-limited') countMetric('DeviceRateLimited');
  const logged = {
    ...fields,
    status: error.status,
    kind: error.kind,
    reason: error.message,
    causeClass: (error.cause as Error | undefined)?.name,
    latencyMs: Math.round(performance.now() - started),
  };
  if (error.status >= 500)
    logger.error(`${what} failed`, {
      ...logged,
      cause: String((error.cause as Error | undefined)?.message ?? ''),
    });
  else logger.warn(`${what} refused`, logged);
  return respond(error.status, { status: 'error', message: error.message }, error.retryAfterSeconds);
}

/** POST /device-status and /device-renew. */
async function lifecycle(
  operation: LifecycleOperation,
  event: APIGatewayProxyEventV2,
  deps: ProvisioningDependencies,
  deadline: Deadline,
  started: number,
): Promise<APIGatewayProxyStructuredResultV2> {
  let request: LifecycleRequest | undefined;
  try {
    if (!cameThroughCloudFront(event.headers ?? {}, deps.config.originVerifySecrets)) {
      throw forbidden('requests must come through the provisioning URL');
    }
    request = parseLifecycleRequest(operation, event.body, event.isBase64Encoded);
    if (operation === 'status') {
      const outcome = await deviceStatus(request, deps, deadline);
      const latencyMs = Math.round(performance.now() - started);
      countMetric('StatusAnswered');
      countMetric(`StatusAction_${outcome.answer.action}`);
      metrics.addMetric('StatusLatency', MetricUnit.Milliseconds, latencyMs);
      logger.info('status answered', {
        thingName: request.thingName,
        action: outcome.answer.action,
        region: outcome.answer.region,
        retiredPrevious: outcome.retiredPrevious,
        latencyMs,
      });
      return respond(200, outcome.answer);
    }
    const outcome = await renewCertificate(request, deps, deadline);
    logger.info('renewal answered', {
      thingName: request.thingName,
      region: outcome.answer.region,
      outcome: outcome.outcome,
      keyMode: request.csrPem ? 'csr' : 'aws-generated',
      stagesMs: outcome.stages,
      latencyMs: Math.round(performance.now() - started),
    });
    return respond(200, outcome.answer);
  } catch (thrown) {
    return refusal(
      thrown,
      operation === 'status' ? 'status' : 'renewal',
      { thingName: request?.thingName },
      started,
    );
  }
}

export function createHandler(deps: ProvisioningDependencies): ProvisioningHandler {
  return async (event, context) => {
    const started = performance.now();
    const deadline = Deadline.from(context);
    const headers = event.headers ?? {};
    const operation = lifecycleOperation(event);
    if (operation) {
      try {
        return await lifecycle(operation, event, deps, deadline, started);
      } finally {
        metrics.publishStoredMetrics();
      }
    }
    // Logged as the name the request was processed as (the last of duplicate keys, as JSON.parse
    // reads it), and only once it passed validation: arbitrary input never reaches the logs.
    let request: ProvisioningRequest | undefined;
    try {
      if (!cameThroughCloudFront(headers, deps.config.originVerifySecrets)) {
        throw forbidden('requests must come through the provisioning URL');
      }
      request = parseProvisioningRequest(event.body, event.isBase64Encoded);
      const outcome = await provision(request, viewerFromHeaders(headers), deps, deadline);
      const latencyMs = Math.round(performance.now() - started);
      countMetric(OUTCOME_METRIC[outcome.outcome]);
      countMetric(`GeoSource_${outcome.placement.geoSource}`);
      metrics.addMetric('ProvisioningLatency', MetricUnit.Milliseconds, latencyMs);
      logger.info('provisioned', {
        thingName: request.thingName,
        region: outcome.placement.region,
        geoSource: outcome.placement.geoSource,
        countryOverride: outcome.placement.overridden,
        distanceKm: outcome.placement.distanceKm,
        ...(outcome.spill
          ? {
              spilledFrom: outcome.spill.from,
              spilledTo: outcome.spill.to,
              backlogSeconds: Math.round(outcome.spill.backlogMs / 1000),
            }
          : {}),
        protocol: `v${request.proof.version}`,
        keyMode: request.csrPem ? 'csr' : 'aws-generated',
        outcome: outcome.outcome,
        stagesMs: outcome.stages,
        latencyMs,
      });
      return respond(200, outcome.answer);
    } catch (thrown) {
      return refusal(thrown, 'provisioning', { thingName: request?.thingName }, started);
    } finally {
      metrics.publishStoredMetrics();
    }
  };
}
