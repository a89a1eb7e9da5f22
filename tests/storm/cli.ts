/**
 * `make storm`: N devices power on in one region within a few seconds, under AWS's quotas (scaled)
 * and a function that scales out like Lambda, beside a trickle in two other regions; ours and the
 * 2018 sample's call pattern side by side. Prints the figures; asserts nothing. Starts the local
 * stack if none runs (and stops it again). Needs `make build` (the Makefile target does it).
 */
import { cpus, arch, platform, totalmem } from 'node:os';
import { Command, InvalidArgumentError } from 'commander';
import { startStack, stopStack } from '../local/stack';
import type { PhaseReport, StormReport } from './storm';

function positive(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) throw new InvalidArgumentError('expected a whole number ≥ 1');
  return parsed;
}

function wholeOrZero(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0) throw new InvalidArgumentError('expected a whole number ≥ 0');
  return parsed;
}

function positiveNumber(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed <= 0) throw new InvalidArgumentError('expected a number > 0');
  return parsed;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const percent = (part: number, whole: number) =>
  whole > 0 ? `${((100 * part) / whole).toFixed(0)} %` : 'n/a';
const fixed = (value: number, digits = 2) => (Number.isFinite(value) ? value.toFixed(digits) : 'n/a');

function statuses(counts: Readonly<Record<string, number>>): string {
  return Object.entries(counts)
    .sort(([a], [b]) => Number(a) - Number(b))
    .map(([status, times]) => `${times} × ${status === '0' ? 'no answer' : status}`)
    .join(', ');
}

function rows(report: StormReport): string[] {
  const contenders = [report.ours, ...(report.sample ? [report.sample] : [])];
  const storm = (pick: (phase: PhaseReport, baseline?: PhaseReport) => string) =>
    contenders.map((contender) => pick(contender.storm, contender.baseline));
  const line = (measure: string, cells: string[]) => `| ${measure} | ${cells.join(' | ')} |`;
  return [
    `| measure | ours (dist/provisioning) |${report.sample ? " the 2018 sample's calls |" : ''}`,
    `|---|---|${report.sample ? '---|' : ''}`,
    line(
      'storm devices provisioned',
      storm((phase) => `${phase.provisioned} of ${phase.devices}`),
    ),
    line(
      'storm devices provisioned, by the region they were placed in',
      storm((phase) =>
        Object.entries(phase.landed)
          .sort(([, a], [, b]) => b - a)
          .map(([region, count]) => `${region} ${count}`)
          .join(', '),
      ),
    ),
    line(
      'drain time ÷ the quota bound (N ÷ scaled certificate rate)',
      storm(
        (phase) =>
          `**${fixed(phase.drainMs / phase.quotaBoundMs)}** (${seconds(phase.drainMs)} ÷ ${seconds(phase.quotaBoundMs)})`,
      ),
    ),
    line(
      'AWS IoT calls answered ThrottlingException, all regions (storm region)',
      storm(
        (phase) =>
          `**${percent(phase.iotThrottled, phase.iotCalls)}** of ${phase.iotCalls} ` +
          `(${percent(phase.stormRegionIotThrottled, phase.stormRegionIotCalls)} of ${phase.stormRegionIotCalls})`,
      ),
    ),
    line(
      'requests per storm device, mean / max',
      storm((phase) => `**${fixed(phase.requestsPerDevice.mean, 1)} / ${phase.requestsPerDevice.max}**`),
    ),
    line(
      'certificate calls that reached AWS per provisioned device (RegisterCertificate; the sample: CreateKeysAndCertificate)',
      storm((phase) => `**${fixed(phase.certificateCallsPerDevice)}**`),
    ),
    line(
      'distinct certificates registered per provisioned device (RegisterCertificate bodies)',
      storm((phase) =>
        phase.certificateApi === 'RegisterCertificate' ? fixed(phase.certificatesPerDevice) : 'n/a',
      ),
    ),
    line(
      'time to provisioned, storm devices, p50 / p99',
      storm(
        (phase) => `${seconds(phase.timeToProvisionedMs.p50)} / ${seconds(phase.timeToProvisionedMs.p99)}`,
      ),
    ),
    line(
      'other regions (trickle) p50: during the storm / without it',
      storm(
        (phase, baseline) =>
          `${seconds(phase.trickleP50Ms)} (n = ${phase.trickleDevices}) / ` +
          (baseline ? `${seconds(baseline.trickleP50Ms)} (n = ${baseline.trickleDevices})` : 'not run'),
      ),
    ),
    line(
      'audit, no reconciler: ACTIVE certificates nothing references / things with two live certificates / records pointing at missing certificates',
      storm(
        (phase) =>
          `**${phase.audit.unreferencedActiveCertificates}** / ${phase.audit.thingsWithTwoLiveCertificates} / ${phase.audit.recordsPointingAtMissingCertificates}`,
      ),
    ),
    line(
      'storm answers by status',
      storm((phase) => statuses(phase.statuses)),
    ),
    line(
      'trickle answers by status',
      storm((phase) => statuses(phase.trickleStatuses)),
    ),
    line(
      'devices that gave up (storm and trickle)',
      storm((phase) => String(phase.gaveUp.length)),
    ),
    line(
      'most invocations running at once',
      storm((phase) => String(phase.maxConcurrent)),
    ),
  ];
}

async function main(): Promise<void> {
  const program = new Command('storm')
    .description(
      'N devices power on in eu-central-1 within a few seconds, under scaled AWS quotas and a Lambda-like ' +
        'scaled-out function, beside a trickle in two other regions; ours and the 2018 sample side by side; ' +
        'prints drain time, throttles, requests and certificates per device, latencies and the audit',
    )
    .option('-n, --devices <count>', 'devices in the storm', positive, 300)
    .option('--spread <seconds>', 'they all power on within this long', positiveNumber, 5)
    .option('--scale <factor>', "factor on AWS's default rates", positiveNumber, 0.2)
    .option(
      '--trickle-interval <seconds>',
      'one trickle device per other region this often',
      positiveNumber,
      5,
    )
    .option('--baseline <count>', 'trickle devices per region in the baseline run (0: none)', wholeOrZero, 10)
    .option('--budget <seconds>', 'a device gives up after this long', positiveNumber, 600)
    .option('--capped', 'the default local edge (at most 8 sandboxes) instead of Lambda-like scale-out')
    .option(
      '--processes <count>',
      'sandbox processes the scaled-out edge spreads invocations over',
      positive,
      2,
    )
    .option('--no-sample', "skip the 2018 sample's call pattern")
    .option(
      '--spill-over',
      "spill-over on our function's edge (ADMISSION_SPILL_OVER; the DE → eu-central-1 country override dropped there, or no storm device could spill)",
    )
    .option('--spill-after <seconds>', 'with --spill-over: afterWaitSeconds', positiveNumber, 30)
    .option('--spill-km <km>', 'with --spill-over: maxExtraKm', positiveNumber, 1500)
    .option('--json', 'print the whole report as JSON too')
    .addHelpText(
      'after',
      '\nExamples:\n  make storm\n  make storm ARGS="--devices 100 --spread 10"\n  make storm ARGS="--capped --no-sample"\n  make storm ARGS="--spill-over --spill-after 30 --no-sample"',
    )
    .parse();
  const options = program.opts<{
    devices: number;
    spread: number;
    scale: number;
    trickleInterval: number;
    baseline: number;
    budget: number;
    capped?: boolean;
    processes: number;
    sample: boolean;
    json?: boolean;
    spillOver?: boolean;
    spillAfter: number;
    spillKm: number;
  }>();
  const log = (line: string) => console.log(line);
  const { started } = await startStack({ log, stopWithOwner: true });
  try {
    // Imported once the stack runs: the request and audit helpers read .local/stack.json when they load.
    const { runStorm } = await import('./storm');
    const report = await runStorm({
      devices: options.devices,
      spreadMs: options.spread * 1000,
      scale: options.scale,
      trickleIntervalMs: options.trickleInterval * 1000,
      baselineDevices: options.baseline,
      deviceBudgetMs: options.budget * 1000,
      scaleOut: options.capped !== true,
      processes: options.processes,
      sample: options.sample,
      spillOver: options.spillOver
        ? { afterWaitSeconds: options.spillAfter, maxExtraKm: options.spillKm }
        : undefined,
      log,
    });
    const cores = cpus();
    log('');
    log(
      `${new Date().toISOString().slice(0, 10)}, ${cores.length} × ${(cores[0]?.model ?? 'CPU').trim()}, ` +
        `${Math.round(totalmem() / 2 ** 30)} GiB, ${platform()} ${arch()}, Node ${process.version}; ` +
        `${options.devices} devices in eu-central-1 within ${options.spread} s, quotas × ${options.scale} ` +
        `(RegisterCertificate ${fixed(report.rates.RegisterCertificate ?? NaN, 1)}/s), ` +
        `${options.capped ? 'local edge capped at 8 sandboxes' : `Lambda-like scale-out (${options.processes} processes)`}; ` +
        `trickle: one device every ${options.trickleInterval} s in each of ap-northeast-1 and us-west-2; ` +
        (options.spillOver
          ? `spill-over after ${options.spillAfter} s within ${options.spillKm} km (no country override); `
          : '') +
        `storm took ${seconds(report.durationMs)} in all`,
    );
    log('');
    for (const row of rows(report)) log(row);
    const problems = [report.ours, report.sample]
      .flatMap((contender) => (contender ? [contender.storm, contender.baseline] : []))
      .flatMap((phase) => [...(phase?.audit.problems ?? []), ...(phase?.gaveUp ?? [])]);
    if (problems.length > 0) {
      log('');
      for (const problem of problems.slice(0, 20)) log(`NOTE ${problem}`);
      if (problems.length > 20) log(`… and ${problems.length - 20} more`);
    }
    if (options.json) log(JSON.stringify(report, null, 2));
  } finally {
    if (started) await stopStack({ log: () => undefined });
  }
}

main().catch((error: unknown) => {
  console.error(`storm: ${(error as Error).message}`);
  process.exit(2);
});
