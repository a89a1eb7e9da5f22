/**
 * Powertools wired once: structured JSON logs and CloudWatch EMF metrics. Logs carry thing
 * name, region, geo source, timings and error class — never keys, certificates, signatures or
 * the ipstack key.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';

const serviceName = process.env.POWERTOOLS_SERVICE_NAME ?? 'global-device-provisioning';

export const logger = new Logger({ serviceName });
export const metrics = new Metrics({
  serviceName,
  namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'GlobalDeviceProvisioning',
});

export { MetricUnit };

/** Counts one event under its own metric name (no extra dimensions). */
export function countMetric(name: string, value = 1): void {
  metrics.addMetric(name, MetricUnit.Count, value);
}

/**
 * One value of a metric under its own dimensions (Region, Api), emitted at once: the request's
 * other metrics keep the service dimension only, so a per-region series stays per region.
 */
export function countMetricFor(
  name: string,
  dimensions: Readonly<Record<string, string>>,
  value = 1,
  unit: (typeof MetricUnit)[keyof typeof MetricUnit] = MetricUnit.Count,
): void {
  const single = metrics.singleMetric();
  for (const [dimension, dimensionValue] of Object.entries(dimensions))
    single.addDimension(dimension, dimensionValue);
  single.addMetric(name, unit, value);
}

/** Records how long each stage of a request took, for logs and metrics. */
export class StageTimer {
  private readonly started = performance.now();
  readonly stages: Record<string, number> = {};

  async time<T>(stage: string, work: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await work();
    } finally {
      this.stages[stage] = Math.round(performance.now() - start);
    }
  }

  elapsedMs(): number {
    return Math.round(performance.now() - this.started);
  }
}
