/**
 * The storm: a fleet powers on in one region within a few seconds while AWS's control-plane
 * quotas bind (the AWS proxy's quota mode, scaled down so they bind before this machine does) and
 * the function scales out like Lambda (the edge's scale-out mode). At the same time a trickle of
 * devices provisions in two other regions. Devices behave as docs/protocol.md tells them: they
 * honour Retry-After on 429 (never sooner; gdp-device's rule, device/backoff.ts), back off with full jitter on 5xx and
 * network errors, stop on any other 4xx, and give up after a bounded time.
 *
 * The same storm is run against our built function (dist/provisioning) and against the 2018
 * sample's call pattern (tests/bench/sample-handler.ts), each after a short baseline of the
 * trickle alone. The account is audited after each run WITHOUT the reconciler: what a storm
 * leaves behind is what the reconciler would have to clean.
 *
 * Used by `make storm` (tests/storm/cli.ts, prints the figures) and by tests/storm/storm.test.ts
 * (a small storm in `make test`, asserts the audit only).
 */
import { randomBytes } from 'node:crypto';
import { relative, join } from 'node:path';
import { IoTClient, ListThingPrincipalsCommand } from '@aws-sdk/client-iot';
import { BUNDLE_ENTRY_FILE, bundleDir } from '../../functions/bundle-layout';
import { parseRetryAfter, retryDelayMs, type BackoffPolicy } from '../../device/backoff';
import { clearQuotas, getQuotas, setQuotas, type QuotaCount } from '../local/aws-proxy';
import { DEFAULT_QUOTA_RATES } from '../local/aws-quotas';
import { viewerHeaders, type Edge, type ViewerPlace } from '../local/edge';
import { addDevice, readStack, type LocalStack } from '../local/stack';
import { scaledRates } from '../../functions/provisioning/admission-budget';
import { addDevices, startFunctionEdge } from '../bench/edges';
import { mean, percentile, sortedCopy } from '../bench/stats';
import { auditDevice, certificatesOfOurCa, type CertificateOfOurs } from '../integration/audit';
import { makeCsr, registryRecord, v1Body, v2Body } from '../integration/requests';

const REPO_ROOT = join(__dirname, '..', '..');
export const OUR_HANDLER = relative(REPO_ROOT, join(bundleDir('provisioning'), BUNDLE_ENTRY_FILE));
export const SAMPLE_HANDLER = 'tests/bench/sample-handler.ts';

/** Frankfurt: the storm's region. */
export const STORM_PLACE: ViewerPlace & { region: string } = {
  latitude: 50.11,
  longitude: 8.68,
  country: 'DE',
  region: 'eu-central-1',
};
/** Tokyo and Portland: the trickle's regions. */
export const TRICKLE_PLACES: readonly (ViewerPlace & { region: string })[] = [
  { latitude: 35.68, longitude: 139.69, country: 'JP', region: 'ap-northeast-1' },
  { latitude: 45.52, longitude: -122.68, country: 'US', region: 'us-west-2' },
];

type Mode = { readonly protocol: 1 | 2; readonly csr: boolean };
/** Half in key mode, half with a CSR; v1 and v2 alike. */
const MODES: readonly Mode[] = [
  { protocol: 1, csr: false },
  { protocol: 2, csr: true },
  { protocol: 2, csr: false },
  { protocol: 1, csr: true },
];
/** The 2018 sample knows v1 only (and answers a CSR with a key of its own). */
const SAMPLE_MODES: readonly Mode[] = [
  { protocol: 1, csr: false },
  { protocol: 1, csr: true },
];

/** Backoff on 5xx and network errors, and on a 429 without Retry-After: full jitter (device/backoff.ts). */
const DEVICE_BACKOFF: BackoffPolicy = {
  maxAttempts: Number.POSITIVE_INFINITY,
  baseDelayMs: 500,
  maxDelayMs: 30_000,
};
/** How long a device waits for one answer before it counts as lost. */
const REQUEST_TIMEOUT_MS = 30_000;

export interface StormOptions {
  /** Devices that power on in the storm's region. */
  readonly devices: number;
  /** They all power on within this long. */
  readonly spreadMs: number;
  /** Factor on AWS's default rates (the proxy's quota mode). */
  readonly scale: number;
  /** One trickle device powers on in each other region this often. */
  readonly trickleIntervalMs: number;
  /** Trickle devices per region in the baseline run (0: no baseline). */
  readonly baselineDevices: number;
  /** A device gives up after this long. */
  readonly deviceBudgetMs: number;
  /** The edge scales out like Lambda; false: the default local edge (at most 8 sandboxes). */
  readonly scaleOut: boolean;
  /** Sandbox processes the scaled-out edge spreads invocations over. */
  readonly processes: number;
  /** Also run the 2018 sample's call pattern under the same storm. */
  readonly sample: boolean;
  /**
   * Spill-over on our function's edge (ADMISSION_SPILL_OVER), and no country override there: the
   * storm's devices send country DE, which the committed deployment places in eu-central-1 by
   * residency, and such a device never spills. Undefined: off, as deployed by default.
   */
  readonly spillOver?: { readonly afterWaitSeconds: number; readonly maxExtraKm: number };
  readonly log?: (line: string) => void;
}

/** One device's provisioning, as it saw it. */
interface DeviceRun {
  readonly thingName: string;
  readonly place: ViewerPlace & { region: string };
  readonly mode: Mode;
  poweredOnAt: number;
  provisionedAt?: number;
  requests: number;
  readonly statuses: number[];
  certificatePem?: string;
  /** The region the answer placed it in. */
  region?: string;
  gaveUp?: string;
}

export interface StormAudit {
  /** ACTIVE certificates of our CA, issued to this run's devices, that no record references. */
  readonly unreferencedActiveCertificates: number;
  readonly thingsWithTwoLiveCertificates: number;
  readonly recordsPointingAtMissingCertificates: number;
  readonly problems: readonly string[];
}

export interface PhaseReport {
  readonly devices: number;
  readonly provisioned: number;
  readonly gaveUp: readonly string[];
  /** First power-on to the last storm device provisioned (or given up). */
  readonly drainMs: number;
  /** N ÷ the scaled rate of the API that makes certificates: the least drain time the quota allows. */
  readonly quotaBoundMs: number;
  readonly requestsPerDevice: { readonly mean: number; readonly max: number };
  /** Provisioned storm devices by the region they were placed in (spill-over moves some). */
  readonly landed: Readonly<Record<string, number>>;
  /** Storm devices' answers by HTTP status (0: no answer). */
  readonly statuses: Readonly<Record<string, number>>;
  readonly trickleStatuses: Readonly<Record<string, number>>;
  /** Power-on to provisioned, storm devices. */
  readonly timeToProvisionedMs: { readonly p50: number; readonly p99: number };
  /** The trickle's time to provisioned, p50, and how many trickle devices it is over. */
  readonly trickleP50Ms: number;
  readonly trickleDevices: number;
  readonly iotCalls: number;
  readonly iotThrottled: number;
  readonly stormRegionIotCalls: number;
  readonly stormRegionIotThrottled: number;
  /** The API that creates certificates: RegisterCertificate (ours), CreateKeysAndCertificate (the sample). */
  readonly certificateApi: string;
  /** Its calls that reached AWS in the storm's region, per provisioned storm device. */
  readonly certificateCallsPerDevice: number;
  /** Distinct certificates registered in the storm's region per provisioned storm device (ours). */
  readonly certificatesPerDevice: number;
  readonly audit: StormAudit;
  readonly counts: readonly QuotaCount[];
  /** Most invocations running at once. */
  readonly maxConcurrent: number;
}

export interface ContenderReport {
  readonly label: string;
  readonly baseline?: PhaseReport;
  readonly storm: PhaseReport;
}

export interface StormReport {
  readonly options: Omit<StormOptions, 'log'>;
  readonly rates: Readonly<Record<string, number>>;
  readonly ours: ContenderReport;
  readonly sample?: ContenderReport;
  readonly durationMs: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const now = () => performance.now();

function histogram(statuses: readonly (number | string)[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const status of statuses) counts[status] = (counts[status] ?? 0) + 1;
  return counts;
}

/** Provisions one device as firmware following docs/protocol.md would, until it is provisioned or gives up. */
async function provisionDevice(device: DeviceRun, url: string, budgetMs: number): Promise<void> {
  const csr = device.mode.csr ? await makeCsr(device.thingName) : undefined;
  const headers = { 'content-type': 'application/json', ...viewerHeaders(device.place) };
  const deadline = now() + budgetMs;
  for (let attempt = 1; ; attempt += 1) {
    const body =
      device.mode.protocol === 1
        ? v1Body(device.thingName, csr ? { CSR: csr.pem } : {})
        : v2Body(device.thingName, { csrPem: csr?.pem });
    device.requests += 1;
    let status = 0;
    let retryAfterMs: number | undefined;
    let answer: { status?: string; message?: string; certificatePem?: string; region?: string } = {};
    try {
      const response = await fetch(url, {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      status = response.status;
      retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
      answer = (await response.json().catch(() => ({}))) as typeof answer;
    } catch {
      // No answer (timed out, connection reset): status stays 0.
    }
    device.statuses.push(status);
    if (status === 200 && answer.status === 'success') {
      device.provisionedAt = now();
      device.certificatePem = answer.certificatePem;
      device.region = answer.region;
      return;
    }
    // The sample answers its errors with 200 and an error body; any other 4xx but 429 is final.
    if (status === 200 || (status >= 400 && status < 500 && status !== 429)) {
      device.gaveUp = `${status} ${answer.message ?? ''}`.trim();
      return;
    }
    // As gdp-device does (device/backoff.ts): exponential backoff with full jitter, never sooner
    // than Retry-After. The service spreads a wave of 429s itself: each refused device is told
    // its own slot in the region's queue, plus jitter (admission.ts).
    const delayMs = retryDelayMs(attempt, DEVICE_BACKOFF, retryAfterMs);
    if (now() + delayMs > deadline) {
      device.gaveUp = `no answer within ${Math.round(budgetMs / 1000)} s (last ${status})`;
      return;
    }
    await sleep(delayMs);
  }
}

interface PhasePlan {
  readonly label: string;
  readonly edge: Edge;
  readonly kind: 'ours' | 'sample';
  readonly stormDevices: number;
  /** Trickle devices per region at least; the trickle goes on while the storm runs. */
  readonly trickleAtLeast: number;
}

async function runPhase(stack: LocalStack, plan: PhasePlan, options: StormOptions): Promise<PhaseReport> {
  const log = options.log ?? (() => undefined);
  const prefix = `storm-${randomBytes(3).toString('hex')}-${plan.label}`;
  const modes = plan.kind === 'ours' ? MODES : SAMPLE_MODES;
  const modeOf = (index: number) => modes[index % modes.length] as Mode;
  const storm: DeviceRun[] = Array.from({ length: plan.stormDevices }, (_, index) => ({
    thingName: `${prefix}-${index}`,
    place: STORM_PLACE,
    mode: modeOf(index),
    poweredOnAt: 0,
    requests: 0,
    statuses: [],
  }));
  await addDevices(
    stack,
    storm.map((device) => device.thingName),
  );
  const stats = () => plan.edge.sandboxes?.stats();
  const concurrentBefore = stats()?.maxConcurrent ?? 0;
  await setQuotas(stack.faultsUrl, { scale: options.scale });

  const started = now();
  const stormRuns = storm.map(async (device) => {
    await sleep(Math.random() * options.spreadMs);
    device.poweredOnAt = now();
    await provisionDevice(device, plan.edge.provisioningUrl, options.deviceBudgetMs);
  });
  let stormDone = plan.stormDevices === 0;
  const stormFinished = Promise.all(stormRuns).then(() => {
    stormDone = true;
  });

  const trickle: DeviceRun[] = [];
  const trickleRuns: Promise<void>[] = [];
  const trickles = TRICKLE_PLACES.map(async (place) => {
    for (let index = 0; !stormDone || index < plan.trickleAtLeast; index += 1) {
      const device: DeviceRun = {
        thingName: `${prefix}-t-${place.region}-${index}`,
        place,
        mode: modeOf(index),
        poweredOnAt: 0,
        requests: 0,
        statuses: [],
      };
      trickle.push(device);
      await addDevice(stack, device.thingName);
      device.poweredOnAt = now();
      trickleRuns.push(provisionDevice(device, plan.edge.provisioningUrl, options.deviceBudgetMs));
      await Promise.race([
        sleep(options.trickleIntervalMs),
        stormDone ? sleep(options.trickleIntervalMs) : stormFinished,
      ]);
    }
  });
  let lastProgress = 0;
  const progress = setInterval(() => {
    const done = storm.filter((device) => device.provisionedAt !== undefined || device.gaveUp).length;
    if (done !== lastProgress)
      log(`  ${plan.label}: ${done}/${storm.length} storm devices done, ${trickle.length} trickle devices`);
    lastProgress = done;
  }, 5_000);
  await stormFinished;
  const stormEnded = Math.max(started, ...storm.map((device) => device.provisionedAt ?? now()));
  await Promise.all(trickles);
  await Promise.all(trickleRuns);
  clearInterval(progress);
  const quotas = await getQuotas(stack.faultsUrl);
  await clearQuotas(stack.faultsUrl);

  const provisioned = storm.filter((device) => device.provisionedAt !== undefined);
  const iot = quotas.counts.filter((count) => count.service === 'iot');
  const inStormRegion = iot.filter((count) => count.region === STORM_PLACE.region);
  const sum = (counts: readonly QuotaCount[], field: 'calls' | 'throttled') =>
    counts.reduce((total, count) => total + count[field], 0);
  const certificateApi = plan.kind === 'ours' ? 'RegisterCertificate' : 'CreateKeysAndCertificate';
  // Certificates of storm devices are registered where they landed: the storm's region, and the
  // regions spill-over placed some in (the trickle's regions are others).
  const landedRegions = new Set(provisioned.map((device) => device.region ?? STORM_PLACE.region));
  landedRegions.add(STORM_PLACE.region);
  const certificateCounts = iot.filter(
    (count) => landedRegions.has(count.region) && count.api === certificateApi,
  );
  const certificateCount = {
    calls: sum(certificateCounts, 'calls'),
    throttled: sum(certificateCounts, 'throttled'),
    distinctBodies: certificateCounts.reduce((total, count) => total + count.distinctBodies, 0),
  };
  const certificateRate = (DEFAULT_QUOTA_RATES[certificateApi] ?? NaN) * options.scale;
  const perDevice = (value: number) => (provisioned.length > 0 ? value / provisioned.length : NaN);
  const times = sortedCopy(
    provisioned.map((device) => (device.provisionedAt as number) - device.poweredOnAt),
  );
  const trickleTimes = sortedCopy(
    trickle
      .filter((device) => device.provisionedAt !== undefined)
      .map((device) => (device.provisionedAt as number) - device.poweredOnAt),
  );
  const everyDevice = [...storm, ...trickle];
  const audit =
    plan.kind === 'ours'
      ? await auditOurs(prefix, everyDevice)
      : await auditSample(stack, everyDevice, quotas.counts);
  return {
    devices: storm.length,
    provisioned: provisioned.length,
    gaveUp: everyDevice
      .filter((device) => device.gaveUp)
      .map((device) => `${device.thingName}: ${device.gaveUp}`),
    drainMs: stormEnded - started,
    quotaBoundMs: (storm.length / certificateRate) * 1000,
    requestsPerDevice: {
      mean: mean(storm.map((device) => device.requests)),
      max: Math.max(0, ...storm.map((device) => device.requests)),
    },
    landed: histogram(provisioned.map((device) => device.region ?? 'unknown')),
    statuses: histogram(storm.flatMap((device) => device.statuses)),
    trickleStatuses: histogram(trickle.flatMap((device) => device.statuses)),
    timeToProvisionedMs: { p50: percentile(times, 50), p99: percentile(times, 99) },
    trickleP50Ms: percentile(trickleTimes, 50),
    trickleDevices: trickle.length,
    iotCalls: sum(iot, 'calls'),
    iotThrottled: sum(iot, 'throttled'),
    stormRegionIotCalls: sum(inStormRegion, 'calls'),
    stormRegionIotThrottled: sum(inStormRegion, 'throttled'),
    certificateApi,
    certificateCallsPerDevice: perDevice(certificateCount.calls - certificateCount.throttled),
    certificatesPerDevice: perDevice(certificateCount.distinctBodies),
    audit,
    counts: quotas.counts,
    maxConcurrent: Math.max(concurrentBefore, stats()?.maxConcurrent ?? 0),
  };
}

/** The crash-safety audit (tests/integration/audit.ts) over this run's devices, without the reconciler. */
async function auditOurs(prefix: string, devices: readonly DeviceRun[]): Promise<StormAudit> {
  const regionOf = (device: DeviceRun) => device.region ?? device.place.region;
  const regions = [...new Set(devices.flatMap((device) => [device.place.region, regionOf(device)]))];
  const ours = new Map<string, CertificateOfOurs[]>();
  for (const region of regions) ours.set(region, await certificatesOfOurCa(region));
  const problems: string[] = [];
  const referenced = new Set<string>();
  let thingsWithTwoLiveCertificates = 0;
  let recordsPointingAtMissingCertificates = 0;
  for (const device of devices) {
    const record = await registryRecord(device.thingName);
    for (const attribute of ['certificate_id', 'previous_certificate_id', 'pending_certificate_id']) {
      const id = record?.[attribute]?.S;
      if (id) referenced.add(id);
    }
    const audit = await auditDevice(
      device.thingName,
      regionOf(device),
      device.certificatePem,
      ours.get(regionOf(device)),
    );
    if (audit.liveCertificates > 1 || audit.principals > 1) thingsWithTwoLiveCertificates += 1;
    if (audit.problems.some((problem) => problem.includes('not a live certificate')))
      recordsPointingAtMissingCertificates += 1;
    problems.push(...audit.problems.map((problem) => `${device.thingName}: ${problem}`));
  }
  const unreferenced = [...ours.values()]
    .flat()
    .filter(
      (certificate) => certificate.commonName.startsWith(`${prefix}-`) && certificate.status === 'ACTIVE',
    )
    .filter((certificate) => !referenced.has(certificate.certificateId));
  problems.push(
    ...unreferenced.map(
      (certificate) =>
        `unreferenced ACTIVE certificate ${certificate.certificateId} (${certificate.commonName})`,
    ),
  );
  return {
    unreferencedActiveCertificates: unreferenced.length,
    thingsWithTwoLiveCertificates,
    recordsPointingAtMissingCertificates,
    problems,
  };
}

/**
 * The sample keeps no certificate id in its records and never retires anything: what it leaves
 * is every certificate beyond one per provisioned device, and things with more than one.
 */
async function auditSample(
  stack: LocalStack,
  devices: readonly DeviceRun[],
  counts: readonly QuotaCount[],
): Promise<StormAudit> {
  const credentials = { accessKeyId: 'audit', secretAccessKey: 'audit' };
  const clients = new Map<string, IoTClient>();
  const iot = (region: string) => {
    const client = clients.get(region) ?? new IoTClient({ region, endpoint: stack.motoUrl, credentials });
    clients.set(region, client);
    return client;
  };
  let thingsWithTwoLiveCertificates = 0;
  for (const device of devices) {
    try {
      const { principals } = await iot(device.place.region).send(
        new ListThingPrincipalsCommand({ thingName: device.thingName }),
      );
      if ((principals ?? []).length > 1) thingsWithTwoLiveCertificates += 1;
    } catch (error) {
      if ((error as Error).name !== 'ResourceNotFoundException') throw error;
    }
  }
  for (const client of clients.values()) client.destroy();
  const created = counts
    .filter((count) => count.service === 'iot' && count.api === 'CreateKeysAndCertificate')
    .reduce((total, count) => total + count.calls - count.throttled, 0);
  const provisioned = devices.filter((device) => device.provisionedAt !== undefined).length;
  return {
    unreferencedActiveCertificates: Math.max(0, created - provisioned),
    thingsWithTwoLiveCertificates,
    recordsPointingAtMissingCertificates: 0,
    problems: [],
  };
}

/** Waits until every sandbox of a scaled-out edge has loaded the handler: cold starts are not the storm. */
async function warm(edge: Edge, processes: number): Promise<void> {
  const init = await edge.sandboxes?.firstInit();
  if (init && !init.ok) throw new Error(`the handler failed to load: ${init.message.split('\n')[0]}`);
  for (
    let waited = 0;
    (edge.sandboxes?.stats().coldStartsMs.length ?? 0) < processes && waited < 600;
    waited += 1
  )
    await sleep(100);
}

async function runContender(
  stack: LocalStack,
  kind: 'ours' | 'sample',
  options: StormOptions,
): Promise<ContenderReport> {
  const log = options.log ?? (() => undefined);
  const label = kind === 'ours' ? 'ours' : 'sample';
  const edge = await startFunctionEdge(stack, {
    handlerModule: kind === 'ours' ? OUR_HANDLER : SAMPLE_HANDLER,
    label: `storm-${label}`,
    ...(options.scaleOut ? { scaleOut: true, maxSandboxes: options.processes } : {}),
    // Our function budgets AWS IoT's quotas as the proxy enforces them: scaled alike.
    environment: {
      ADMISSION_RATES: JSON.stringify(scaledRates(options.scale)),
      ADMISSION_REGION_RATES: '{}',
      ...(kind === 'ours' && options.spillOver
        ? { ADMISSION_SPILL_OVER: JSON.stringify(options.spillOver), COUNTRY_REGION_OVERRIDES: '{}' }
        : {}),
    },
  });
  try {
    await warm(edge, options.scaleOut ? options.processes : 1);
    let baseline: PhaseReport | undefined;
    if (options.baselineDevices > 0) {
      log(
        `${label}: baseline, ${options.baselineDevices} trickle devices in each of ${TRICKLE_PLACES.map((place) => place.region).join(', ')}…`,
      );
      baseline = await runPhase(
        stack,
        { label: `${label}-base`, edge, kind, stormDevices: 0, trickleAtLeast: options.baselineDevices },
        options,
      );
    }
    log(
      `${label}: storm, ${options.devices} devices in ${STORM_PLACE.region} within ${options.spreadMs / 1000} s, and the trickle…`,
    );
    const storm = await runPhase(
      stack,
      { label, edge, kind, stormDevices: options.devices, trickleAtLeast: 2 },
      options,
    );
    return { label, baseline, storm };
  } finally {
    await edge.close();
  }
}

export async function runStorm(options: StormOptions): Promise<StormReport> {
  const stack = readStack();
  const started = now();
  const ours = await runContender(stack, 'ours', options);
  const sample = options.sample ? await runContender(stack, 'sample', options) : undefined;
  const { log: _log, ...printable } = options;
  const rates: Record<string, number> = {};
  for (const [api, rate] of Object.entries(DEFAULT_QUOTA_RATES)) rates[api] = rate * options.scale;
  return { options: printable, rates, ours, sample, durationMs: now() - started };
}
