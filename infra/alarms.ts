/**
 * CloudWatch alarms on what an operator must act on: server errors, throttling (IoT quotas or
 * Lambda concurrency), ipstack failures, function errors. Optional e-mail notifications via SNS.
 *
 * The function publishes its own metrics with Powertools (EMF log lines, no PutMetricData) in
 * POWERTOOLS_METRICS_NAMESPACE with the default `service` dimension.
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

const FIVE_MINUTES = 300;

export interface AlarmsProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  readonly apiId: string;
  readonly stageName: string;
  readonly functionName: string;
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
      alarmDescription: `More than ${thresholds.fiveXxRatePercent}% of provisioning requests answered 5xx in 5 minutes`,
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
        'Requests answered 429 (AWS IoT control-plane quota) plus Lambda throttles in 5 minutes: ' +
        'raise the IoT quotas of the busy region or the function concurrency',
      threshold: thresholds.throttledRequestsPerFiveMinutes,
      metricQuery: [
        metric('throttled', config.metricsNamespace, THROTTLED_METRIC, serviceDimensions),
        metric('lambdaThrottles', 'AWS/Lambda', 'Throttles', { FunctionName: props.functionName }),
        {
          id: 'total',
          expression: 'FILL(throttled, 0) + FILL(lambdaThrottles, 0)',
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
  }
}
