/**
 * CloudWatch alarms on what an operator must act on: server errors, throttling (IoT quotas, Lambda
 * concurrency, API Gateway's stage limits), client errors, slow invocations, ipstack failures and
 * a missing ipstack key, a rising share of v1 signatures, undo steps left unfinished, anything
 * the reconciler found, a reconciler that stopped running or refused a run, and WAF blocks.
 *
 * Every alarm notifies an encrypted SNS topic that always exists (a person subscribes by e-mail,
 * or alarms.alarmTopicArns adds existing topics): an alarm nobody receives protects nothing.
 *
 * Both functions publish their own metrics with Powertools (EMF log lines, no PutMetricData) in
 * POWERTOOLS_METRICS_NAMESPACE with the default `service` dimension: `<appName>` for the
 * provisioning function, `<appName>-reconciler` for the reconciler.
 *
 * Missing data: an alarm on a count of bad events treats it as OK (no events, nothing wrong). The
 * heartbeat treats it as breaching: a reconciler that stopped running emits nothing at all.
 */
import { Construct } from 'constructs';
import type { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import {
  CloudwatchMetricAlarm,
  CloudwatchMetricAlarmMetricQuery,
} from '@cdktf/provider-aws/lib/cloudwatch-metric-alarm';
import { CloudwatchLogMetricFilter } from '@cdktf/provider-aws/lib/cloudwatch-log-metric-filter';
import { KmsKey } from '@cdktf/provider-aws/lib/kms-key';
import { SnsTopic } from '@cdktf/provider-aws/lib/sns-topic';
import { SnsTopicPolicy } from '@cdktf/provider-aws/lib/sns-topic-policy';
import { SnsTopicSubscription } from '@cdktf/provider-aws/lib/sns-topic-subscription';
import { DeploymentConfig, RECONCILER_HEARTBEAT_SECONDS } from './config';

/** Custom metric the function emits when ipstack fails (error body, timeout, HTTP error). */
export const IPSTACK_FAILURE_METRIC = 'IpstackFailure';
/** Custom metric the function emits for each request it answers 429 (IoT ThrottlingException). */
export const THROTTLED_METRIC = 'Throttled';
/** Emitted by the provisioning function when an undo step could not finish (the reconciler will). */
export const ROLLBACK_INCOMPLETE_METRIC = 'RollbackIncomplete';
/** Emitted by the reconciler: problems it repaired, and problems it could not repair. */
export const RECONCILER_FIXED_METRIC = 'ReconcilerFixed';
export const RECONCILER_FAILED_METRIC = 'ReconcilerFailed';
/** Emitted by the reconciler once per completed run (its heartbeat). */
export const RECONCILER_RUN_METRIC = 'ReconcilerRun';
/** Emitted by the reconciler when its circuit breaker refused a run. */
export const RECONCILER_ABORTED_METRIC = 'ReconcilerAborted';
/** Emitted by the function when the ipstack key parameter holds no key (UNSET). */
export const IPSTACK_KEY_MISSING_METRIC = 'IpstackKeyMissing';
/** Emitted by the function for each request signed with the fleet key (v1). */
export const V1_SIGNATURE_METRIC = 'V1SignatureUsed';
/** The function's provisioning outcomes: together, the provisionings v1's share is taken of. */
export const PROVISIONING_OUTCOME_METRICS = [
  'Provisioned',
  'Reprovisioned',
  'Resumed',
  'SameCertificate',
  'AnswerRecovered',
];
/** Counted from the API's access log: requests API Gateway itself answered 429 (stage throttle). */
export const API_THROTTLED_METRIC = 'ApiGatewayThrottled';
/** Slow invocations: the longest one in 5 minutes above this share of the timeout. */
export const DURATION_ALARM_PERCENT_OF_TIMEOUT = 80;

/**
 * Admission control (functions/provisioning/admission.ts), each with a Region dimension beside
 * `service`; IotThrottled with Api and Region: every attempt AWS IoT throttled.
 */
export const ADMISSION_METRICS = {
  admitted: 'Admitted',
  refused: 'AdmissionRefused',
  backlogSeconds: 'AdmissionBacklogSeconds',
  iotThrottled: 'IotThrottled',
  /** Spill-over (dimensions Region = the backlogged region, To = where the device went). */
  spilledOver: 'SpilledOver',
} as const;

const FIVE_MINUTES = 300;
const FIFTEEN_MINUTES = 900;

export interface AlarmsProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  /** us-east-1: where CloudFront's WAF metrics are, and so the WAF alarms and their topic. */
  readonly edgeProvider: AwsProvider;
  readonly accountId: string;
  readonly apiId: string;
  readonly stageName: string;
  /** The API's access log group: the 429s API Gateway answers itself are counted from it. */
  readonly accessLogGroupName: string;
  readonly functionName: string;
  readonly reconcilerFunctionName: string;
  /** The reconciler's Powertools service name (its metrics' `service` dimension). */
  readonly reconcilerServiceName: string;
  /** The WAF web ACL's name and its per-IP rate rule's metric name. */
  readonly webAclName: string;
  readonly rateRuleMetricName: string;
}

/**
 * An SNS topic encrypted with its own KMS key (CloudWatch and EventBridge cannot publish to a
 * topic encrypted with the AWS managed aws/sns key), with the configured e-mail subscribers.
 */
export class AlarmTopic extends Construct {
  readonly topic: SnsTopic;

  constructor(
    scope: Construct,
    id: string,
    config: DeploymentConfig,
    provider: AwsProvider,
    accountId: string,
  ) {
    super(scope, id);
    const key = new KmsKey(this, 'key', {
      provider,
      description: `${config.appName}: encrypts the alarm topic`,
      enableKeyRotation: true,
      deletionWindowInDays: 7,
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            Sid: 'AccountAdministersThroughIam',
            Effect: 'Allow',
            Principal: { AWS: accountId },
            Action: 'kms:*',
            Resource: '*',
          },
          {
            Sid: 'AlarmsAndEventsPublish',
            Effect: 'Allow',
            Principal: { Service: ['cloudwatch.amazonaws.com', 'events.amazonaws.com'] },
            Action: ['kms:GenerateDataKey*', 'kms:Decrypt'],
            Resource: '*',
          },
        ],
      }),
    });
    this.topic = new SnsTopic(this, 'topic', {
      provider,
      name: `${config.appName}-alarms`,
      kmsMasterKeyId: key.arn,
    });
    new SnsTopicPolicy(this, 'policy', {
      provider,
      arn: this.topic.arn,
      policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          {
            Sid: 'AlarmsAndEventsOfThisAccountPublish',
            Effect: 'Allow',
            Principal: { Service: ['cloudwatch.amazonaws.com', 'events.amazonaws.com'] },
            Action: 'sns:Publish',
            Resource: this.topic.arn,
            Condition: { StringEquals: { 'aws:SourceAccount': accountId } },
          },
        ],
      }),
    });
    const emails = [...new Set([config.alarms.alarmEmail, ...config.alarms.alarmEmails].filter(Boolean))];
    emails.forEach((email, index) => {
      new SnsTopicSubscription(this, index === 0 ? 'email' : `email-${index}`, {
        provider,
        topicArn: this.topic.arn,
        protocol: 'email',
        endpoint: email as string,
      });
    });
  }
}

export class Alarms extends Construct {
  /** The home region's alarm topic (the CA key watch publishes here too). */
  readonly topic: SnsTopic;
  /** us-east-1's, for the WAF alarms (the same topic when the home region is us-east-1). */
  readonly edgeTopic: SnsTopic;

  constructor(scope: Construct, id: string, props: AlarmsProps) {
    super(scope, id);
    const { config, provider } = props;
    const thresholds = config.alarms;

    this.topic = new AlarmTopic(this, 'home-topic', config, provider, props.accountId).topic;
    this.edgeTopic =
      config.homeRegion === 'us-east-1'
        ? this.topic
        : new AlarmTopic(this, 'edge-topic', config, props.edgeProvider, props.accountId).topic;
    const actionsIn = (topic: SnsTopic, region: string) => {
      const topics = [topic.arn, ...thresholds.alarmTopicArns.filter((arn) => arn.split(':')[3] === region)];
      return { alarmActions: topics, okActions: topics };
    };
    const common = {
      provider,
      comparisonOperator: 'GreaterThanOrEqualToThreshold',
      evaluationPeriods: 1,
      treatMissingData: 'notBreaching',
      ...actionsIn(this.topic, config.homeRegion),
    };
    /** Rates: judged only over enough requests, and only when M of the last N periods agree. */
    const rateVotes = { evaluationPeriods: 3, datapointsToAlarm: 2 };
    const minimum = thresholds.minimumRequestsForRate;
    const apiDimensions = { ApiId: props.apiId, Stage: props.stageName };
    const serviceDimensions = { service: config.appName };
    const metric = (
      queryId: string,
      namespace: string,
      metricName: string,
      dimensions: Record<string, string>,
    ): CloudwatchMetricAlarmMetricQuery => ({
      id: queryId,
      returnData: false,
      metric: { namespace, metricName, dimensions, period: FIVE_MINUTES, stat: 'Sum' },
    });
    /** errors as a % of the API's requests, 0 in a period with fewer than `minimum` requests. */
    const rateOf = (label: string, errors: CloudwatchMetricAlarmMetricQuery) => [
      errors,
      metric('requests', 'AWS/ApiGateway', 'Count', apiDimensions),
      {
        id: 'rate',
        expression: `IF(requests >= ${minimum}, 100 * FILL(errors, 0) / requests, 0)`,
        label: `${label} %`,
        returnData: true,
      },
    ];
    new CloudwatchMetricAlarm(this, 'api-5xx-rate', {
      ...common,
      alarmName: `${config.appName}-api-5xx-rate`,
      ...rateVotes,
      alarmDescription:
        `${thresholds.fiveXxRatePercent}% or more of requests (provisioning, status, renewal) answered 5xx, ` +
        `in 2 of 3 five-minute periods with at least ${minimum} requests`,
      threshold: thresholds.fiveXxRatePercent,
      metricQuery: rateOf('5xx', metric('errors', 'AWS/ApiGateway', '5xx', apiDimensions)),
    });
    new CloudwatchMetricAlarm(this, 'api-4xx-rate', {
      ...common,
      ...rateVotes,
      alarmName: `${config.appName}-api-4xx-rate`,
      alarmDescription:
        `${thresholds.fourXxRatePercent}% or more of requests answered 4xx (bad signatures, unknown devices, ` +
        `throttling) in 2 of 3 five-minute periods: a broken device release or a probe`,
      threshold: thresholds.fourXxRatePercent,
      metricQuery: rateOf('4xx', metric('errors', 'AWS/ApiGateway', '4xx', apiDimensions)),
    });
    new CloudwatchLogMetricFilter(this, 'api-throttled-filter', {
      provider,
      name: `${config.appName}-api-throttled`,
      logGroupName: props.accessLogGroupName,
      // A 429 the stage throttle answered never reached the function: no integration latency
      // ("-"). The function's own 429s (IoT quotas, a device calling too often) have one.
      pattern: '{ $.status = "429" && $.integrationLatency = "-" }',
      metricTransformation: {
        name: API_THROTTLED_METRIC,
        namespace: config.metricsNamespace,
        value: '1',
        defaultValue: '0',
      },
    });
    new CloudwatchMetricAlarm(this, 'api-429-rate', {
      ...common,
      ...rateVotes,
      alarmName: `${config.appName}-api-429-rate`,
      alarmDescription:
        `${thresholds.apiThrottledRatePercent}% or more of requests answered 429 by API Gateway's stage ` +
        'limits in 2 of 3 five-minute periods: the shared budget is spent (a flood, or api.throttle* too low)',
      threshold: thresholds.apiThrottledRatePercent,
      metricQuery: rateOf('429', metric('errors', config.metricsNamespace, API_THROTTLED_METRIC, {})),
    });

    new CloudwatchMetricAlarm(this, 'throttled', {
      ...common,
      alarmName: `${config.appName}-throttled`,
      alarmDescription:
        'Requests answered 429 (AWS IoT control-plane quota, not admission) plus Lambda throttles in 5 minutes: ' +
        'raise the IoT quotas of the busy region or the function concurrency',
      threshold: thresholds.throttledRequestsPerFiveMinutes,
      metricQuery: [
        metric('throttled', config.metricsNamespace, THROTTLED_METRIC, serviceDimensions),
        // Admission's refusals are 429s by design during a storm: the backlog alarms watch them.
        metric('admissionRefused', config.metricsNamespace, ADMISSION_METRICS.refused, serviceDimensions),
        metric('lambdaThrottles', 'AWS/Lambda', 'Throttles', { FunctionName: props.functionName }),
        {
          id: 'total',
          expression: 'FILL(throttled, 0) - FILL(admissionRefused, 0) + FILL(lambdaThrottles, 0)',
          label: 'throttled',
          returnData: true,
        },
      ],
    });

    new CloudwatchMetricAlarm(this, 'ipstack-failures', {
      ...common,
      alarmName: `${config.appName}-ipstack-failures`,
      alarmDescription:
        'ipstack lookups failing (invalid/rotated key, usage limit, outage); devices fall back to the default region',
      namespace: config.metricsNamespace,
      metricName: IPSTACK_FAILURE_METRIC,
      dimensions: serviceDimensions,
      statistic: 'Sum',
      period: FIVE_MINUTES,
      threshold: thresholds.ipstackFailuresPerFiveMinutes,
    });

    new CloudwatchMetricAlarm(this, 'lambda-errors', {
      ...common,
      alarmName: `${config.appName}-lambda-errors`,
      alarmDescription:
        'Provisioning function invocations that failed (crash, timeout, cold-start config error)',
      namespace: 'AWS/Lambda',
      metricName: 'Errors',
      dimensions: { FunctionName: props.functionName },
      statistic: 'Sum',
      period: FIVE_MINUTES,
      threshold: thresholds.lambdaErrorsPerFiveMinutes,
    });

    // A backlog that stays: devices wait minutes to provision. Normal for a factory batch larger
    // than the quota serves at once; sustained, the region's quotas want raising (docs/deploy.md).
    for (const region of config.iotRegions) {
      new CloudwatchMetricAlarm(this, `admission-backlog-${region}`, {
        ...common,
        alarmName: `${config.appName}-admission-backlog-${region}`,
        alarmDescription:
          `Devices in ${region} wait more than ${config.admission.backlogAlarmSeconds} s for AWS IoT quota, ` +
          "for 15 minutes: raise the region's IoT quotas and its admission budget (docs/deploy.md)",
        namespace: config.metricsNamespace,
        metricName: ADMISSION_METRICS.backlogSeconds,
        dimensions: { ...serviceDimensions, Region: region },
        statistic: 'Maximum',
        period: FIVE_MINUTES,
        evaluationPeriods: 3,
        threshold: config.admission.backlogAlarmSeconds,
      });
    }

    // Each of these should be 0 in a healthy deployment: alarm on the first one.
    const anyAtAll = { comparisonOperator: 'GreaterThanThreshold', threshold: 0 };
    const reconcilerDimensions = { service: props.reconcilerServiceName };
    new CloudwatchMetricAlarm(this, 'rollback-incomplete', {
      ...common,
      ...anyAtAll,
      alarmName: `${config.appName}-rollback-incomplete`,
      alarmDescription:
        'A failed provisioning left undo steps unfinished (certificate or thing still live); ' +
        'the reconciler finishes them on its next run: check that it did',
      namespace: config.metricsNamespace,
      metricName: ROLLBACK_INCOMPLETE_METRIC,
      dimensions: serviceDimensions,
      statistic: 'Sum',
      period: FIVE_MINUTES,
    });
    new CloudwatchMetricAlarm(this, 'reconciler-fixed', {
      ...common,
      ...anyAtAll,
      alarmName: `${config.appName}-reconciler-fixed`,
      alarmDescription:
        'The reconciler repaired something (stale claim, orphan certificate of our CA, thing with two ' +
        'live certificates, record pointing at a missing certificate): its log says what and why',
      namespace: config.metricsNamespace,
      metricName: RECONCILER_FIXED_METRIC,
      dimensions: reconcilerDimensions,
      statistic: 'Sum',
      period: FIFTEEN_MINUTES,
    });
    new CloudwatchMetricAlarm(this, 'reconciler-failed', {
      ...common,
      ...anyAtAll,
      alarmName: `${config.appName}-reconciler-failed`,
      alarmDescription:
        'The reconciler found something it could not repair: operator action needed (see its log)',
      namespace: config.metricsNamespace,
      metricName: RECONCILER_FAILED_METRIC,
      dimensions: reconcilerDimensions,
      statistic: 'Sum',
      period: FIFTEEN_MINUTES,
    });
    new CloudwatchMetricAlarm(this, 'reconciler-errors', {
      ...common,
      ...anyAtAll,
      alarmName: `${config.appName}-reconciler-errors`,
      alarmDescription:
        'Reconciler runs that failed (crash, timeout, configuration): nothing is being repaired',
      namespace: 'AWS/Lambda',
      metricName: 'Errors',
      dimensions: { FunctionName: props.reconcilerFunctionName },
      statistic: 'Sum',
      period: FIFTEEN_MINUTES,
    });

    new CloudwatchMetricAlarm(this, 'reconciler-heartbeat', {
      ...common,
      alarmName: `${config.appName}-reconciler-heartbeat`,
      alarmDescription:
        'No reconciler run completed in the last hour (stopped schedule, crashing, timing out, or ' +
        'refused): stale claims and orphan certificates are piling up',
      comparisonOperator: 'LessThanThreshold',
      threshold: 1,
      namespace: config.metricsNamespace,
      metricName: RECONCILER_RUN_METRIC,
      dimensions: reconcilerDimensions,
      statistic: 'Sum',
      period: RECONCILER_HEARTBEAT_SECONDS,
      // A reconciler that does not run emits nothing: no data is the failure itself.
      treatMissingData: 'breaching',
    });
    new CloudwatchMetricAlarm(this, 'reconciler-aborted', {
      ...common,
      alarmName: `${config.appName}-reconciler-aborted`,
      alarmDescription:
        'The reconciler refused a run that would retire an unusually large share of certificates ' +
        '(emptied, restored or wrong table?): check the table, then `gdp-admin reconcile --allow-large`',
      threshold: 1,
      namespace: config.metricsNamespace,
      metricName: RECONCILER_ABORTED_METRIC,
      dimensions: reconcilerDimensions,
      statistic: 'Sum',
      period: FIFTEEN_MINUTES,
    });
    new CloudwatchMetricAlarm(this, 'ipstack-key-missing', {
      ...common,
      alarmName: `${config.appName}-ipstack-key-missing`,
      alarmDescription:
        'The ipstack key parameter holds no key: every lookup without a CloudFront location falls back ' +
        'to the default region. Store one with `make rotate-ipstack-key`',
      threshold: 1,
      namespace: config.metricsNamespace,
      metricName: IPSTACK_KEY_MISSING_METRIC,
      dimensions: serviceDimensions,
      statistic: 'Sum',
      period: FIVE_MINUTES,
    });
    new CloudwatchMetricAlarm(this, 'duration-near-timeout', {
      ...common,
      ...rateVotes,
      alarmName: `${config.appName}-duration-near-timeout`,
      alarmDescription:
        `The slowest provisioning invocation took ${DURATION_ALARM_PERCENT_OF_TIMEOUT}% of the ` +
        `${config.function.timeoutSeconds} s timeout in 2 of 3 five-minute periods: slow AWS calls, or ` +
        'timeouts (and undo work for the reconciler) are next',
      threshold: Math.round(config.function.timeoutSeconds * 10 * DURATION_ALARM_PERCENT_OF_TIMEOUT),
      namespace: 'AWS/Lambda',
      metricName: 'Duration',
      dimensions: { FunctionName: props.functionName },
      statistic: 'Maximum',
      period: FIVE_MINUTES,
    });
    const outcomes = PROVISIONING_OUTCOME_METRICS.map((name, index) =>
      metric(`outcome${index}`, config.metricsNamespace, name, serviceDimensions),
    );
    new CloudwatchMetricAlarm(this, 'v1-signature-share', {
      ...common,
      ...rateVotes,
      alarmName: `${config.appName}-v1-signature-share`,
      alarmDescription:
        'The share of provisionings signed with the fleet key (v1) rose above its usual band: old ' +
        "firmware coming back, or the shared fleet key in someone else's hands",
      comparisonOperator: 'GreaterThanUpperThreshold',
      threshold: undefined,
      thresholdMetricId: 'band',
      metricQuery: [
        metric('v1', config.metricsNamespace, V1_SIGNATURE_METRIC, serviceDimensions),
        ...outcomes,
        {
          id: 'share',
          expression:
            `IF((${outcomes.map((query) => `FILL(${query.id}, 0)`).join(' + ')}) >= ${minimum}, ` +
            `100 * FILL(v1, 0) / (${outcomes.map((query) => `FILL(${query.id}, 0)`).join(' + ')}), 0)`,
          label: 'v1 share %',
          returnData: true,
        },
        { id: 'band', expression: 'ANOMALY_DETECTION_BAND(share, 3)', label: 'usual', returnData: true },
      ],
    });

    // CloudFront's WAF reports in us-east-1, so these alarms and their topic live there.
    const edgeCommon = {
      ...common,
      provider: props.edgeProvider,
      ...actionsIn(this.edgeTopic, 'us-east-1'),
      namespace: 'AWS/WAFV2',
      metricName: 'BlockedRequests',
      statistic: 'Sum',
      period: FIVE_MINUTES,
    };
    new CloudwatchMetricAlarm(this, 'waf-blocked', {
      ...edgeCommon,
      alarmName: `${config.appName}-waf-blocked`,
      alarmDescription: `WAF blocked ${thresholds.wafBlockedRequestsPerFiveMinutes} or more requests in 5 minutes (any rule)`,
      threshold: thresholds.wafBlockedRequestsPerFiveMinutes,
      dimensions: { WebACL: props.webAclName, Rule: 'ALL' },
    });
    new CloudwatchMetricAlarm(this, 'waf-rate-limited', {
      ...edgeCommon,
      alarmName: `${config.appName}-waf-rate-limited`,
      alarmDescription:
        `A source IP went over ${config.waf.requestsPerFiveMinutesPerIp} requests in 5 minutes and is ` +
        'being refused: a flood, or a factory behind one NAT that needs waf.requestsPerFiveMinutesPerIp raised',
      threshold: 1,
      dimensions: { WebACL: props.webAclName, Rule: props.rateRuleMetricName },
    });
  }
}
