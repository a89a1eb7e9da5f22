/**
 * `make chaos`: a larger chaos run than the one in `make test`, printing the figures the README
 * quotes. Starts the local stack if none runs (and stops it again).
 */
import '../../functions/cli-runtime';
import { Command, InvalidArgumentError } from 'commander';
import { startStack, stopStack } from '../local/stack';

function positive(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) throw new InvalidArgumentError('expected a whole number ≥ 1');
  return parsed;
}

function probability(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0 || parsed > 1) throw new InvalidArgumentError('expected 0…1');
  return parsed;
}

async function main(): Promise<void> {
  const program = new Command('chaos')
    .description(
      'Provision a fleet through the local stack under random AWS faults and kills, renew every certificate, reconcile, audit',
    )
    .option('-n, --devices <count>', 'devices', positive, 300)
    .option('-c, --concurrency <count>', 'devices provisioning at once', positive, 16)
    .option('--faults <p>', 'chance per AWS call of each kind of fault', probability, 0.015)
    .option('--kills <p>', 'chance per checkpoint of killing the function', probability, 0.01)
    .option('--lost <p>', 'chance that a device loses a 200 answer', probability, 0.1)
    .option(
      '--operators <count>',
      'devices an operator revokes, moves, resets, disables and enables while they provision',
      (value: string) => (value === '0' ? 0 : positive(value)),
      24,
    )
    .addHelpText('after', '\nExample:\n  make chaos ARGS="--devices 500 --kills 0.02"')
    .parse();
  const options = program.opts<{
    devices: number;
    concurrency: number;
    faults: number;
    kills: number;
    lost: number;
    operators: number;
  }>();
  const { started } = await startStack({ log: (line) => console.log(line), stopWithOwner: true });
  try {
    // Imported once the stack runs: the request helpers read .local/stack.json when they load.
    const { runChaos } = await import('./chaos');
    const report = await runChaos({
      devices: options.devices,
      concurrency: options.concurrency,
      faultProbability: options.faults,
      killProbability: options.kills,
      lostAnswerProbability: options.lost,
      operators: options.operators,
      log: (line) => console.log(line),
    });
    const { audit } = report;
    const rows: [string, string][] = [
      ['devices (v1/v2 × key/CSR)', String(report.devices)],
      ['requests', String(report.requests)],
      ['answers by status', JSON.stringify(report.answers)],
      ['faults injected', JSON.stringify(report.faults)],
      ['answers lost by devices', String(report.answersLostByDevices)],
      ['devices stopped at 409 (re-issue limit)', String(report.devicesStoppedAt409)],
      ['renewal: devices / requests', `${report.renewal.devices} / ${report.renewal.requests}`],
      ['renewal: answers by status (renew and status calls)', JSON.stringify(report.renewal.answers)],
      ['renewal: answers lost by devices', String(report.renewal.answersLostByDevices)],
      [
        'renewed exactly once (holds the only live certificate)',
        `${report.renewal.renewedExactlyOnce} of ${report.renewal.devices}`,
      ],
      ['renewal phase', `${(report.renewal.durationMs / 1000).toFixed(0)} s`],
      [
        'reconciler: stale claims / orphans quarantined / records reset',
        `${report.reconcile.staleClaimsReleased} / ${report.reconcile.orphanCertificatesQuarantined} / ${report.reconcile.recordsReset}`,
      ],
      [
        'operators: devices / actions done / commands re-run / given up',
        `${report.operators?.devices ?? 0} / ${JSON.stringify(report.operators?.done ?? {})} / ${report.operators?.reruns ?? 0} / ${report.operators?.gaveUp.length ?? 0}`,
      ],
      ['provisioned exactly once', `${audit.provisionedExactlyOnce} of ${report.devices}`],
      ['certificates of our CA unreferenced', String(audit.unreferencedCertificatesOfOurCa)],
      ['things with two live certificates', String(audit.thingsWithTwoLiveCertificates)],
      ['records pointing at missing certificates', String(audit.recordsPointingAtMissingCertificates)],
      ['duration', `${(report.durationMs / 1000).toFixed(0)} s`],
    ];
    console.log('\n| measure | value |\n|---|---|');
    for (const [name, value] of rows) console.log(`| ${name} | ${value} |`);
    for (const problem of audit.problems.slice(0, 20)) console.log(`PROBLEM ${problem}`);
    process.exitCode = audit.problems.length === 0 ? 0 : 1;
  } finally {
    if (started) await stopStack({ log: () => undefined });
  }
}

main().catch((error: unknown) => {
  console.error(`chaos: ${(error as Error).message}`);
  process.exit(2);
});
