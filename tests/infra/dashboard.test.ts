/** The operators' dashboard, as synthesized: every metric the function and reconciler emit. */
import { loadDeploymentConfig } from '../../infra/config';
import { only, synthesize } from './synth';

const config = loadDeploymentConfig();
const dashboard = only(synthesize().json, 'aws_cloudwatch_dashboard') as {
  dashboard_name: string;
  dashboard_body: string;
};
const body = JSON.parse(dashboard.dashboard_body) as {
  widgets: {
    x: number;
    y: number;
    width: number;
    height: number;
    properties: { title: string; region: string; metrics: unknown[][] };
  }[];
};
const metricsOf = (title: string) =>
  (body.widgets.find((widget) => widget.properties.title === title)?.properties.metrics ?? []).map(
    (line) => line[1],
  );

it('is one dashboard in the home region named after the app', () => {
  expect(dashboard.dashboard_name).toBe(config.appName);
  expect(new Set(body.widgets.map((widget) => widget.properties.region))).toEqual(
    new Set([config.homeRegion]),
  );
});

it('charts provisionings, refusals by status, geo source, latency p50/p99, throttles and reconciler findings', () => {
  expect(metricsOf('Provisioned and re-provisioned')).toEqual([
    'Provisioned',
    'Reprovisioned',
    'Resumed',
    'SameCertificate',
    'AnswerRecovered',
  ]);
  expect(metricsOf('Refused, by status')).toEqual(
    expect.arrayContaining(['Status403', 'Status409', 'Status429', 'Status503']),
  );
  expect(metricsOf('Geo source')).toEqual(['GeoSource_cloudfront', 'GeoSource_ipstack', 'GeoSource_default']);
  const latency =
    body.widgets.find((widget) => widget.properties.title === 'Latency (ms)')?.properties.metrics ?? [];
  expect(latency.map((line) => (line[4] as { stat: string }).stat)).toEqual(['p50', 'p99']);
  expect(metricsOf('Throttles')).toEqual(['Throttled', 'Throttles']);
  expect(metricsOf('Undo and reconciler findings')).toEqual([
    'RolledBack',
    'RollbackIncomplete',
    'PreviousCertificateRetireFailed',
    'ReconcilerFixed',
    'ReconcilerFailed',
    'ReconcilerGracePeriodsEnded',
  ]);
});

it('charts status calls, renewals, retired previous certificates and status latency p50/p99', () => {
  expect(metricsOf('Status and renewal')).toEqual([
    'StatusAnswered',
    'Renewed',
    'PreviousCertificateRetired',
    'DeviceRateLimited',
  ]);
  const latency =
    body.widgets.find((widget) => widget.properties.title === 'Status latency (ms)')?.properties.metrics ??
    [];
  expect(latency.map((line) => line[1])).toEqual(['StatusLatency', 'StatusLatency']);
  expect(latency.map((line) => (line[4] as { stat: string }).stat)).toEqual(['p50', 'p99']);
  for (const line of [
    ...(body.widgets.find((widget) => widget.properties.title === 'Status and renewal')?.properties.metrics ??
      []),
    ...latency,
  ]) {
    expect(line.slice(0, 4)).toEqual([config.metricsNamespace, line[1], 'service', config.appName]);
  }
});

it('charts what status told devices to do, by action', () => {
  expect(metricsOf('Status answers, by action')).toEqual([
    'StatusAction_none',
    'StatusAction_renew',
    'StatusAction_move',
    'StatusAction_reprovision',
  ]);
});

it('lays the widgets out without overlap', () => {
  const cells = new Set<string>();
  for (const widget of body.widgets) {
    for (let x = widget.x; x < widget.x + widget.width; x += 1)
      for (let y = widget.y; y < widget.y + widget.height; y += 1) {
        expect(cells.has(`${x},${y}`)).toBe(false);
        cells.add(`${x},${y}`);
      }
  }
});

it('reads the function metrics under the function service and the reconciler under its own', () => {
  const findings =
    body.widgets.find((widget) => widget.properties.title === 'Undo and reconciler findings')?.properties
      .metrics ?? [];
  expect(findings.map((line) => line[3])).toEqual([
    config.appName,
    config.appName,
    config.appName,
    `${config.appName}-reconciler`,
    `${config.appName}-reconciler`,
    `${config.appName}-reconciler`,
  ]);
  expect(findings.every((line) => line[0] === config.metricsNamespace)).toBe(true);
});

it('charts spill-over beside admission, by the region refused and the region it went to', () => {
  const admission = body.widgets.find((widget) => widget.properties.title === 'Admission, by region');
  expect(JSON.stringify(admission?.properties.metrics)).toContain(',Region,To} MetricName=\\"SpilledOver\\"');
});
