/**
 * The scheduled reconciler (EventBridge Scheduler, infra/). Logs what it fixed and emits
 * `ReconcilerFixed` / `ReconcilerFailed`, which the infra alarms on, and from the run itself
 * `ReconcilerRun` (a heartbeat, every run) and `ReconcilerAborted` (the circuit breaker tripped).
 */
import { countMetric, logger, metrics } from '../provisioning/telemetry';
import { loadReconcilerConfig } from './config';
import { reconcile, ReconcileReport } from './reconcile';
import { reconcilerDependencies } from './wiring';

const dependencies = reconcilerDependencies(loadReconcilerConfig());

/** Stops a little before the Lambda timeout, so the report is always written. */
const STOP_BEFORE_TIMEOUT_MS = 10_000;

export async function handler(
  _event: unknown,
  context?: { getRemainingTimeInMillis(): number },
): Promise<ReconcileReport> {
  const budget = (context?.getRemainingTimeInMillis() ?? 300_000) - STOP_BEFORE_TIMEOUT_MS;
  try {
    const report = await reconcile({
      ...dependencies,
      signal: AbortSignal.timeout(Math.max(1_000, budget)),
      log: (line) => logger.info(line),
      count: countMetric,
    });
    countMetric('ReconcilerFixed', report.fixed);
    countMetric('ReconcilerGracePeriodsEnded', report.previousCertificatesRetired);
    countMetric('ReconcilerFailed', report.failures.length);
    countMetric('ReconcilerQuarantined', report.orphanCertificatesQuarantined);
    logger.info('reconciled', { ...report, failures: report.failures.slice(0, 20) });
    return report;
  } finally {
    metrics.publishStoredMetrics();
  }
}
