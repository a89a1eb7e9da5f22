/**
 * CloudWatch alarms on what an operator must act on: server errors, throttling (IoT quotas or
 * Lambda concurrency), ipstack failures, function errors, undo steps left unfinished, and anything
 * the reconciler found. Optional e-mail notifications via SNS.
 *
 * Both functions publish their own metrics with Powertools (EMF log lines, no PutMetricData) in
 * POWERTOOLS_METRICS_NAMESPACE with the default `service` dimension: `<appName>` for the
 * provisioning function, `<appName>-reconciler` for the reconciler.
 */
import { Construct } from 'constructs';
import type { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import {
  CloudwatchMetricAlarm,
  CloudwatchMetricAlarmMetricQuery,
} from '@cdktf/provider-aws/lib/cloudwatch-metric-alarm';
import { SnsTopic } from '@cdktf/provider-aws/lib/sns-topic';
import { SnsTopicSubscription } from '@cdktf/provider-aws/lib/sns-topic-subscription';
import type { DeploymentConfig } from './config';

/** Custom metric the function emits when ipstack fails (error body, timeout, HTTP error). */
export const IPSTACK_FAILURE_METRIC = 'IpstackFailure';
/** Custom metric the function emits for each request it answers 429 (IoT ThrottlingException). */
export const THROTTLED_METRIC = 'Throttled';
/** Emitted by the provisioning function when an undo step could not finish (the reconciler will). */
export const ROLLBACK_INCOMPLETE_METRIC = 'RollbackIncomplete';
/** Emitted by the reconciler: problems it repaired, and problems it could not repair. */
export const RECONCILER_FIXED_METRIC = 'ReconcilerFixed';
export const RECONCILER_FAILED_METRIC = 'ReconcilerFailed';

/**
 * Admission control (functions/provisioning/admission.ts), each with a Region dimension beside
 * `service`; IotThrottled with Api and Region: every attempt AWS IoT throttled.
 */
export const ADMISSION_METRICS = {
  admitted: 'Admitted',
  refused: 'AdmissionRefused',
  backlogSeconds: 'AdmissionBacklogSeconds',
  iotThrottled: 'IotThrottled',
} as const;

const FIVE_MINUTES = 300;
const FIFTEEN_MINUTES = 900;

export interface AlarmsProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  readonly apiId: string;
  readonly stageName: string;
  readonly functionName: string;
  readonly reconcilerFunctionName: string;
  /** The reconciler's Powertools service name (its metrics' `service` dimension). */
  readonly reconcilerServiceName: string;
}

export class Alarms extends Construct {
  readonly topic?: SnsTopic;

  constructor(scope: Construct, id: string, props: AlarmsProps) {
    super(scope, id);
    const { config, provider } = props;
    const thresholds = config.alarms;

    if (thresholds.alarmEmail) {
      // Unencrypted on purpose: CloudWatch cannot publish to a topic encrypted with aws/sns.
      this.topic = new SnsTopic(this, 'topic', { provider, name: `${config.appName}-alarms` });
      new SnsTopicSubscription(this, 'email', {
        provider,
        topicArn: this.topic.arn,
        protocol: 'email',
        endpoint: thresholds.alarmEmail,
      });
    }
    const actions = this.topic ? { alarmActions: [this.topic.arn], okActions: [this.topic.arn] } : {};
    const common = {
      provider,
      comparisonOperator: 'GreaterThanOrEqualToThreshold',
      evaluationPeriods: 1,
      treatMissingData: 'notBreaching',
      ...actions,
    };
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

    new CloudwatchMetricAlarm(this, 'api-5xx-rate', {
      ...common,
      alarmName: `${config.appName}-api-5xx-rate`,
      alarmDescription: `More than ${thresholds.fiveXxRatePercent}% of requests (provisioning, status, renewal) answered 5xx in 5 minutes`,
      threshold: thresholds.fiveXxRatePercent,
      metricQuery: [
        metric('errors', 'AWS/ApiGateway', '5xx', apiDimensions),
        metric('requests', 'AWS/ApiGateway', 'Count', apiDimensions),
        {
          id: 'rate',
          expression: 'IF(requests > 0, 100 * errors / requests, 0)',
          label: '5xx %',
          returnData: true,
        },
      ],
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
  }
}
