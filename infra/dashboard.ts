/**
 * The operators' CloudWatch dashboard: what the provisioning function and the reconciler report
 * as EMF metrics (README, "Logs and metrics"), beside API Gateway's request counts. One screen to
 * watch a factory batch provision (`gdp-admin stats` is the same from the registry's side).
 */
import { Construct } from 'constructs';
import type { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { CloudwatchDashboard } from '@cdktf/provider-aws/lib/cloudwatch-dashboard';
import type { DeploymentConfig } from './config';
import type { DeviceAction } from '../functions/provisioning/wire';
import {
  RECONCILER_FAILED_METRIC,
  RECONCILER_FIXED_METRIC,
  ROLLBACK_INCOMPLETE_METRIC,
  ADMISSION_METRICS,
  THROTTLED_METRIC,
} from './alarms';

export interface DashboardProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  readonly functionName: string;
  readonly reconcilerServiceName: string;
}

/** The function's refusals and errors worth a line each (Status<code>). */
const STATUSES = [400, 401, 403, 409, 413, 429, 500, 503];
/** GeoSource_<source>, as locate.ts names them. */
const GEO_SOURCES = ['cloudfront', 'ipstack', 'default'];
/**
 * After day one (/device-status, /device-renew): answered status calls, renewals, and previous
 * certificates retired (after a renewal once the new key is proven, or on re-provisioning).
 */
export const LIFECYCLE_METRICS = [
  'StatusAnswered',
  'Renewed',
  'PreviousCertificateRetired',
  // 429s for a device calling more often than its own limit: not the throttle alarm's business.
  'DeviceRateLimited',
] as const;
/** The reconciler's routine work: renewals whose grace period ended (not an alarm). */
export const RECONCILER_GRACE_METRIC = 'ReconcilerGracePeriodsEnded';
/** Milliseconds the function took to answer a status call. */
export const STATUS_LATENCY_METRIC = 'StatusLatency';
/** StatusAction_<action>: what status told devices to do (wire.ts DeviceAction). */
export const STATUS_ACTIONS = [
  'none',
  'renew',
  'move',
  'reprovision',
] as const satisfies readonly DeviceAction[];

type MetricLine = (string | Record<string, string>)[];

export class Dashboard extends Construct {
  readonly dashboard: CloudwatchDashboard;

  constructor(scope: Construct, id: string, props: DashboardProps) {
    super(scope, id);
    const { config } = props;
    const region = config.homeRegion;
    const namespace = config.metricsNamespace;
    const service = config.appName;
    const ours = (metric: string, options: Record<string, string> = {}): MetricLine => [
      namespace,
      metric,
      'service',
      service,
      { stat: 'Sum', ...options },
    ];
    const reconciler = (metric: string): MetricLine => [
      namespace,
      metric,
      'service',
      props.reconcilerServiceName,
      { stat: 'Sum' },
    ];
    // Per region and per API series: a search finds whichever regions and APIs reported.
    const search = (metric: string, dimensions: string[], stat: string, queryId: string): MetricLine => [
      {
        expression: `SEARCH('{${namespace},service,${dimensions.join(',')}} MetricName="${metric}" service="${service}"', '${stat}', 300)`,
        id: queryId,
      },
    ];
    const widget = (
      title: string,
      metrics: MetricLine[],
      x: number,
      y: number,
      extra: Record<string, unknown> = {},
    ) => ({
      type: 'metric',
      x,
      y,
      width: 12,
      height: 6,
      properties: { title, region, view: 'timeSeries', stacked: false, period: 300, metrics, ...extra },
    });
    const body = {
      widgets: [
        widget(
          'Provisioned and re-provisioned',
          [
            ours('Provisioned'),
            ours('Reprovisioned'),
            ours('Resumed'),
            ours('SameCertificate'),
            ours('AnswerRecovered'),
          ],
          0,
          0,
        ),
        widget(
          'Refused, by status',
          STATUSES.map((status) => ours(`Status${status}`)),
          12,
          0,
        ),
        widget(
          'Geo source',
          GEO_SOURCES.map((source) => ours(`GeoSource_${source}`)),
          0,
          6,
        ),
        widget(
          'Latency (ms)',
          [
            ours('ProvisioningLatency', { stat: 'p50', label: 'p50' }),
            ours('ProvisioningLatency', { stat: 'p99', label: 'p99' }),
          ],
          12,
          6,
        ),
        widget(
          'Throttles',
          [
            ours(THROTTLED_METRIC),
            ['AWS/Lambda', 'Throttles', 'FunctionName', props.functionName, { stat: 'Sum' }],
          ],
          0,
          12,
        ),
        widget(
          'Undo and reconciler findings',
          [
            ours('RolledBack'),
            ours(ROLLBACK_INCOMPLETE_METRIC),
            ours('PreviousCertificateRetireFailed'),
            reconciler(RECONCILER_FIXED_METRIC),
            reconciler(RECONCILER_FAILED_METRIC),
            reconciler(RECONCILER_GRACE_METRIC),
          ],
          12,
          12,
        ),
        widget(
          'Status and renewal',
          LIFECYCLE_METRICS.map((metric) => ours(metric)),
          0,
          18,
        ),
        widget(
          'Status latency (ms)',
          [
            ours(STATUS_LATENCY_METRIC, { stat: 'p50', label: 'p50' }),
            ours(STATUS_LATENCY_METRIC, { stat: 'p99', label: 'p99' }),
          ],
          12,
          18,
        ),
        widget(
          'Status answers, by action',
          STATUS_ACTIONS.map((action) => ours(`StatusAction_${action}`)),
          0,
          24,
        ),
        widget(
          'Admission, by region',
          [
            search(ADMISSION_METRICS.admitted, ['Region'], 'Sum', 'a'),
            search(ADMISSION_METRICS.refused, ['Region'], 'Sum', 'r'),
            search(ADMISSION_METRICS.spilledOver, ['Region', 'To'], 'Sum', 's'),
          ],
          12,
          24,
        ),
        widget(
          'Admission backlog (s), by region',
          [search(ADMISSION_METRICS.backlogSeconds, ['Region'], 'Maximum', 'b')],
          0,
          30,
        ),
        widget(
          'AWS IoT throttles, by API and region',
          [search(ADMISSION_METRICS.iotThrottled, ['Api', 'Region'], 'Sum', 't')],
          12,
          30,
        ),
      ],
    };
    this.dashboard = new CloudwatchDashboard(this, 'dashboard', {
      provider: props.provider,
      dashboardName: config.appName,
      dashboardBody: JSON.stringify(body),
    });
  }
}
