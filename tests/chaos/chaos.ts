/**
 * The chaos run: a fleet provisions through the local stack while AWS calls lose their answers,
 * reset, fail, throttle and hang at random, the function is killed at random checkpoints and
 * devices lose answers on their side. Devices retry as firmware does. Then, a day later (the
 * records' clocks are moved), every device renews its certificate under the same faults and proves
 * the new key with a status call. Then the reconciler runs (with the renewals' grace periods
 * ended), and the whole local account is audited against the promise of docs/protocol.md.
 *
 * Used by tests/chaos/chaos.test.ts (in `make test`) and by `make chaos` (larger, prints figures).
 */
import { randomBytes } from 'node:crypto';
import { progressIntervalMs, progressLines } from '../../functions/cli-runtime';
import { CHECKPOINTS } from '../../functions/provisioning/checkpoints';
import type { ReconcileReport } from '../../functions/reconciler/reconcile';
import { clearFaults, getFaults, setFaults, type FaultRule } from '../local/aws-proxy';
import { addDevice, readStack } from '../local/stack';
import { auditDevice, certificatesOfOurCa, CertificateOfOurs } from '../integration/audit';
import { auditOperated, OperatorsReport, runOperators } from './operators';
import {
  Answer,
  DeviceCredentials,
  lifecycleBody,
  localReconcile,
  makeCsr,
  post,
  postRenew,
  postStatus,
  moveRecordClock,
  registryRecord,
  v1Body,
  v2Body,
} from '../integration/requests';

export interface ChaosOptions {
  readonly devices: number;
  /** Devices provisioning at the same time. */
  readonly concurrency: number;
  /** Chance that a matching AWS call meets each kind of fault. */
  readonly faultProbability: number;
  /** Chance that the function is killed at each checkpoint it passes. */
  readonly killProbability: number;
  /** Chance that a device loses a 200 answer and asks again. */
  readonly lostAnswerProbability: number;
  /** How many of the provisioned devices renew afterwards (default: all). */
  readonly renewals?: number;
  /** A cohort of devices an operator revokes, moves, resets, disables and enables meanwhile (operators.ts). */
  readonly operators?: number;
  /** A device gives up after this long (a stranded device fails the audit). */
  readonly deviceBudgetMs?: number;
  readonly log?: (line: string) => void;
}

export interface ChaosReport {
  readonly devices: number;
  readonly requests: number;
  readonly answers: Readonly<Record<string, number>>;
  readonly faults: Readonly<Record<string, number>>;
  readonly answersLostByDevices: number;
  /** Devices that ended on 409 (re-issue limit reached after lost answers): provisioned, keys lost. */
  readonly devicesStoppedAt409: number;
  /** The renewal phase: /device-renew then a status call with the new certificate, per device. */
  readonly renewal: {
    readonly requests: number;
    readonly answers: Readonly<Record<string, number>>;
    readonly answersLostByDevices: number;
    /** Devices that hold the record's current certificate, the only live one, and not the first. */
    readonly renewedExactlyOnce: number;
    /** Devices that tried to renew. */
    readonly devices: number;
    readonly durationMs: number;
  };
  readonly reconcile: ReconcileReport;
  readonly operators?: OperatorsReport;
  readonly audit: {
    readonly provisionedExactlyOnce: number;
    readonly notProvisioned: number;
    readonly unreferencedCertificatesOfOurCa: number;
    readonly thingsWithTwoLiveCertificates: number;
    readonly recordsPointingAtMissingCertificates: number;
    readonly problems: readonly string[];
  };
  readonly durationMs: number;
}

type Mode = { readonly protocol: 1 | 2; readonly csr: boolean };
const MODES: readonly Mode[] = [
  { protocol: 1, csr: false },
  { protocol: 1, csr: true },
  { protocol: 2, csr: false },
  { protocol: 2, csr: true },
];

/** Cities the fleet is spread over, so every region meets faults. */
const CITIES: readonly [number, number][] = [
  [35.68, 139.69],
  [-33.87, 151.21],
  [-23.55, -46.63],
  [19.08, 72.88],
  [50.11, 8.68],
  [39.96, -83.0],
  [45.52, -122.68],
  [53.35, -6.26],
  [1.35, 103.82],
];

function faultRules(prefix: string, probability: number): FaultRule[] {
  // Registry calls carry the thing name in their body: only this run's devices meet faults there.
  // IoT and KMS calls don't; the chaos run is alone on the stack (jest runs one file at a time).
  const matches = [
    { service: 'dynamodb', body: prefix },
    { service: 'iot' },
    { service: 'kms', target: 'TrentService.Sign' },
  ];
  return matches.flatMap((match): FaultRule[] => [
    { match, action: 'drop', probability },
    { match, action: 'reset-after', probability },
    { match, action: 'reset-before', probability },
    { match, action: 'error', error: 'InternalFailure', probability },
    { match, action: 'error', error: 'ThrottlingException', probability },
    { match, action: 'delay', delayMs: 4_000, probability: probability / 2 },
  ]);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One phase of the run: a line when it starts, one every few seconds while it lasts (items done,
 * rate, ETA when the total is known; GDP_PROGRESS_SECONDS) and one when it ends, so `make chaos`
 * is never silent for minutes between its figures.
 */
async function phase<T>(
  log: (line: string) => void,
  what: string,
  total: number | undefined,
  work: (tick: () => void) => Promise<T>,
): Promise<T> {
  const started = Date.now();
  let done = 0;
  log(`${what}…`);
  const seconds = () => (Date.now() - started) / 1000;
  const heartbeat = setInterval(() => {
    const rate = done / Math.max(0.001, seconds());
    const eta = total && rate > 0 ? `, ETA ${Math.ceil((total - done) / rate)} s` : '';
    log(`  ${what}: ${done}${total ? `/${total}` : ''} after ${seconds().toFixed(0)} s${eta}`);
  }, progressIntervalMs() || 1000);
  heartbeat.unref();
  try {
    return await work(() => void (done += 1));
  } finally {
    clearInterval(heartbeat);
    log(`${what}: done in ${seconds().toFixed(0)} s`);
  }
}

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const stack = readStack();
  const log = options.log ?? (() => undefined);
  const started = Date.now();
  const prefix = `chaos-${randomBytes(3).toString('hex')}`;
  const devices = Array.from({ length: options.devices }, (_, index) => ({
    thingName: `${prefix}-${index}`,
    mode: MODES[index % MODES.length] as Mode,
    city: CITIES[index % CITIES.length] as [number, number],
  }));
  await phase(log, 'putting the devices on the allowlist', devices.length, async (tick) => {
    for (const device of devices) {
      await addDevice(stack, device.thingName);
      tick();
    }
  });
  log(`${devices.length} devices ${prefix}-0…${devices.length - 1} on the allowlist`);

  await setFaults(stack.faultsUrl, {
    rules: faultRules(prefix, options.faultProbability),
    kills: CHECKPOINTS.map((point) => ({
      point,
      // The fleet (`${prefix}-n`) and the operated cohort (`${prefix}op-n`).
      thingNamePattern: `^${prefix}`,
      probability: options.killProbability,
    })),
  });

  const operating = options.operators ? runOperators(prefix, options.operators) : undefined;

  const answers: Record<string, number> = {};
  let requests = 0;
  let answersLostByDevices = 0;
  let devicesStoppedAt409 = 0;
  let done = 0;
  const budget = options.deviceBudgetMs ?? 240_000;

  const credentials = new Map<string, DeviceCredentials>();
  const failed = (): Answer => ({ status: 0, headers: new Headers(), body: {} });
  const backoff = (answer: Answer, attempt: number) =>
    sleep(
      Math.max(
        Number(answer.headers.get('retry-after') ?? 0) * 1000,
        Math.min(2_000, 100 * 2 ** attempt) * (0.5 + Math.random() / 2),
      ),
    );

  async function provisionDevice(device: (typeof devices)[number]): Promise<void> {
    const csr = device.mode.csr ? await makeCsr(device.thingName) : undefined;
    const headers = {
      'X-Local-Viewer-Latitude': String(device.city[0]),
      'X-Local-Viewer-Longitude': String(device.city[1]),
    };
    const deadline = Date.now() + budget;
    for (let attempt = 1; Date.now() < deadline; attempt += 1) {
      const body =
        device.mode.protocol === 1
          ? v1Body(device.thingName, csr ? { CSR: csr.pem } : {})
          : v2Body(device.thingName, { csrPem: csr?.pem });
      requests += 1;
      const answer = await post(body, headers).catch((): Answer => ({
        status: 0,
        headers: new Headers(),
        body: {},
      }));
      answers[answer.status] = (answers[answer.status] ?? 0) + 1;
      if (answer.status === 200) {
        if (Math.random() >= options.lostAnswerProbability) {
          credentials.set(device.thingName, {
            certificatePem: String(answer.body.certificatePem),
            privateKeyPem: String(answer.body.PrivateKey ?? csr?.privateKeyPem),
          });
          return;
        }
        answersLostByDevices += 1;
      } else if (answer.status === 409) {
        devicesStoppedAt409 += 1;
        return;
      } else if (answer.status >= 400 && answer.status < 500 && answer.status !== 429) {
        throw new Error(`${device.thingName}: unexpected ${answer.status} ${JSON.stringify(answer.body)}`);
      }
      await backoff(answer, attempt);
    }
  }

  async function eachDevice(work: (device: (typeof devices)[number]) => Promise<void>, what: string) {
    const queue = [...devices];
    done = 0;
    await phase(log, `devices ${what}`, devices.length, (tick) =>
      Promise.all(
        Array.from({ length: options.concurrency }, async () => {
          for (let device = queue.shift(); device; device = queue.shift()) {
            await work(device);
            done += 1;
            tick();
            if (done % 20 === 0 || done === devices.length)
              log(`  ${done}/${devices.length} devices ${what}`);
          }
        }),
      ),
    );
  }
  await eachDevice(provisionDevice, 'provisioned');
  log(`provisioning phase: ${((Date.now() - started) / 1000).toFixed(0)} s`);

  // A day later: renewals are allowed again (RENEW_MIN_INTERVAL_SECONDS).
  await phase(log, 'moving the records a day back', devices.length, async (tick) => {
    for (const device of devices) {
      await moveRecordClock(device.thingName, 'prov_epoch', { earlierBy: 86_400 });
      tick();
    }
  });
  const renewal = {
    requests: 0,
    answers: {} as Record<string, number>,
    answersLostByDevices: 0,
  };
  const renewed = new Map<string, DeviceCredentials>();
  // Stopped at 409 while provisioning, a device holds no certificate to renew with.
  const renewing = new Set(
    devices
      .filter((device) => credentials.has(device.thingName))
      .slice(0, options.renewals ?? devices.length)
      .map((device) => device.thingName),
  );
  const renewalStarted = Date.now();
  async function renewDevice(device: (typeof devices)[number]): Promise<void> {
    const old = credentials.get(device.thingName);
    if (!old || !renewing.has(device.thingName)) return;
    const csr = device.mode.csr ? await makeCsr(device.thingName) : undefined;
    const deadline = Date.now() + budget;
    let fresh: DeviceCredentials | undefined;
    // Renew, signed with the old certificate until an answer is kept.
    for (let attempt = 1; !fresh && Date.now() < deadline; attempt += 1) {
      renewal.requests += 1;
      const answer = await postRenew(
        lifecycleBody('renew', device.thingName, old, { csrPem: csr?.pem }),
      ).catch(failed);
      renewal.answers[answer.status] = (renewal.answers[answer.status] ?? 0) + 1;
      if (answer.status === 200) {
        if (Math.random() >= options.lostAnswerProbability) {
          fresh = {
            certificatePem: String(answer.body.certificatePem),
            privateKeyPem: String(answer.body.PrivateKey ?? csr?.privateKeyPem),
          };
          break;
        }
        renewal.answersLostByDevices += 1;
      } else if (answer.status >= 400 && answer.status < 500 && answer.status !== 429) {
        throw new Error(
          `${device.thingName}: renewal answered ${answer.status} ${JSON.stringify(answer.body)}`,
        );
      }
      await backoff(answer, attempt);
    }
    if (!fresh) return;
    renewed.set(device.thingName, fresh);
    // Prove the new key: the status call retires the old certificate.
    for (let attempt = 1; Date.now() < deadline; attempt += 1) {
      renewal.requests += 1;
      const answer = await postStatus(lifecycleBody('status', device.thingName, fresh)).catch(failed);
      renewal.answers[answer.status] = (renewal.answers[answer.status] ?? 0) + 1;
      if (answer.status === 200) return;
      if (answer.status >= 400 && answer.status < 500 && answer.status !== 429) {
        throw new Error(
          `${device.thingName}: status answered ${answer.status} ${JSON.stringify(answer.body)}`,
        );
      }
      await backoff(answer, attempt);
    }
  }
  await eachDevice(renewDevice, 'renewed');
  const renewalMs = Date.now() - renewalStarted;
  log(`renewal phase: ${renewing.size} devices in ${(renewalMs / 1000).toFixed(0)} s`);

  const operators = await operating;
  if (operators) log(`operators: ${JSON.stringify(operators.done)}, ${operators.reruns} commands re-run`);
  const faultState = await getFaults(stack.faultsUrl);
  await clearFaults(stack.faultsUrl);
  const faults: Record<string, number> = { ...faultState.byAction };
  log(`faults injected: ${JSON.stringify(faults)}`);

  // The grace periods end: whatever a status call could not retire, the reconciler does.
  const past = Math.floor(Date.now() / 1000) - 1;
  await phase(log, 'ending the renewals’ grace periods', devices.length, async (tick) => {
    for (const device of devices) {
      await moveRecordClock(device.thingName, 'previous_retire_after', { at: past });
      tick();
    }
  });
  // A chaos run makes more orphans in minutes than a deployment in a day: confirmed, as an
  // operator would (--allow-large). The breaker has its own tests (tests/integration/quarantine.test.ts).
  const reconcile = await phase(log, 'reconciling', undefined, () =>
    localReconcile({ thingNamePrefix: prefix, allowLarge: true }),
  );
  log(
    `reconciler: ${reconcile.staleClaimsReleased} stale claims, ${reconcile.orphanCertificatesQuarantined} orphans quarantined, ` +
      `${reconcile.recordsReset} records reset, ${reconcile.failures.length} failures`,
  );

  // The audit, over every region.
  const problems: string[] = [];
  const ours = new Map<string, CertificateOfOurs[]>();
  await phase(log, 'listing the certificates of our CA', stack.regions.length, async (tick) => {
    for (const region of stack.regions) {
      ours.set(region, await certificatesOfOurCa(region));
      tick();
    }
  });
  let provisionedExactlyOnce = 0;
  let notProvisioned = 0;
  let thingsWithTwoLiveCertificates = 0;
  let recordsPointingAtMissingCertificates = 0;
  let renewedExactlyOnce = 0;
  const referenced = new Set<string>();
  const auditTick = progressLines('auditing devices', {
    total: devices.length,
    unit: 'devices',
    write: log,
  });
  for (const device of devices) {
    auditTick.add();
    const record = await registryRecord(device.thingName);
    const held = renewed.get(device.thingName);
    if (
      held &&
      record?.certificate_pem?.S?.trim() === held.certificatePem.trim() &&
      !record.previous_certificate_id
    ) {
      renewedExactlyOnce += 1;
    } else if (held) {
      problems.push(`${device.thingName}: holds a renewed certificate the record does not name`);
    }
    const region = record?.aws_region?.S ?? '';
    if (record?.certificate_id?.S) referenced.add(record.certificate_id.S);
    const audit = await auditDevice(
      device.thingName,
      region || stack.defaultRegion,
      undefined,
      ours.get(region),
    );
    if (audit.provisioned && audit.problems.length === 0 && audit.liveCertificates === 1)
      provisionedExactlyOnce += 1;
    if (!audit.provisioned) notProvisioned += 1;
    if (audit.liveCertificates > 1 || audit.principals > 1) thingsWithTwoLiveCertificates += 1;
    if (audit.problems.some((problem) => problem.includes('not a live certificate'))) {
      recordsPointingAtMissingCertificates += 1;
    }
    problems.push(...audit.problems.map((problem) => `${device.thingName}: ${problem}`));
    if (!audit.provisioned) problems.push(`${device.thingName}: not provisioned`);
  }
  const unreferenced = [...ours.values()]
    .flat()
    .filter((certificate) => certificate.commonName.startsWith(`${prefix}-`))
    .filter((certificate) => !referenced.has(certificate.certificateId))
    // Quarantined (INACTIVE, deleted after the quarantine period) is where orphans are meant to be.
    .filter((certificate) => certificate.status === 'ACTIVE');
  problems.push(
    ...unreferenced.map((certificate) => `unreferenced certificate ${certificate.certificateId}`),
  );
  if (options.operators) problems.push(...(await auditOperated(prefix, options.operators, ours)));

  return {
    devices: devices.length,
    requests,
    answers,
    faults,
    answersLostByDevices,
    devicesStoppedAt409,
    renewal: { ...renewal, renewedExactlyOnce, devices: renewing.size, durationMs: renewalMs },
    reconcile,
    operators,
    audit: {
      provisionedExactlyOnce,
      notProvisioned,
      unreferencedCertificatesOfOurCa: unreferenced.length,
      thingsWithTwoLiveCertificates,
      recordsPointingAtMissingCertificates,
      problems,
    },
    durationMs: Date.now() - started,
  };
}
