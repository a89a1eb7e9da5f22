/**
 * `make reconcile`: runs the reconciler once, against the local stack (`--local`, the default when
 * .local/stack.json exists) or against AWS with the environment the scheduled function gets
 * (RECONCILER_ENVIRONMENT in config.ts, plus your AWS credentials).
 *
 * Exit codes: 0 done (whatever it fixed), 1 some fixes failed (see the lines marked FAILED),
 * 2 bad usage or configuration, 3 stopped by the circuit breaker (nothing changed; breaker.ts):
 * check the table, then confirm with --allow-large.
 */
import '../cli-runtime';
import { existsSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { progressLines } from '../cli-runtime';
import { ConfigError } from '../provisioning/config';
import type { Registry } from '../provisioning/registry';
import { loadReconcilerConfig } from './config';
import { localStackEnvironment, STACK_FILE } from './environments';
import { reconcile, type ReconcileDependencies } from './reconcile';
import { reconcilerDependencies } from './wiring';

export function wholeSeconds(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0) throw new InvalidArgumentError('expected whole seconds ≥ 0');
  return parsed;
}

/**
 * Progress lines on stderr while the reconciler scans the registry and lists certificates, every
 * few seconds (GDP_PROGRESS_SECONDS), so a long run off a terminal is not silent. The record total
 * is DynamoDB's item count, an estimate; certificates have no total.
 */
export async function reconcileProgress(
  registry: Pick<Registry, 'approximateCount'>,
): Promise<NonNullable<ReconcileDependencies['onProgress']>> {
  const total = await registry.approximateCount().catch(() => 0);
  const records = progressLines('reconcile: registry scan', { total });
  const certificates = new Map<string, ReturnType<typeof progressLines>>();
  return (step, region) => {
    if (step === 'records') return records.add();
    const key = region ?? '';
    let listed = certificates.get(key);
    if (!listed) {
      listed = progressLines(`reconcile: certificates of our CA in ${key}`, { unit: 'certificates' });
      certificates.set(key, listed);
    }
    listed.add();
  };
}

export async function main(argv: readonly string[]): Promise<number> {
  const program = new Command('reconcile')
    .description(
      'Finish what dead provisioning requests left: release stale claims, quarantine (and a week later delete) certificates of our CA that no record references, reset records whose certificate is gone; a circuit breaker stops a run that would take too much.',
    )
    .option('--local', 'use the running local stack (default when .local/stack.json exists)')
    .option('--aws', 'use the environment and your AWS credentials, even when a local stack runs')
    .option('--grace <seconds>', 'leave certificates registered less than this long ago alone', wholeSeconds)
    .option(
      '--allow-large',
      'confirm a run larger than the circuit breaker allows (after checking the table is the right one)',
    )
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      '\nExit codes: 0 done, 1 some fixes failed, 2 usage or configuration, 3 stopped by the circuit breaker (nothing changed).\n' +
        '\nExamples:\n  make reconcile\n  npm run reconcile -- --local --grace 0 --json\n  make reconcile ARGS=--allow-large',
    )
    .exitOverride();
  program.parse([...argv]);
  const options = program.opts<{
    local?: boolean;
    aws?: boolean;
    grace?: number;
    allowLarge?: boolean;
    json?: boolean;
  }>();
  const useLocal = options.local === true || (options.aws !== true && existsSync(STACK_FILE));
  if (useLocal) Object.assign(process.env, localStackEnvironment());
  else if (!process.env.TABLE_NAME) {
    throw new ConfigError(
      'no local stack is running and the reconciler environment is not set: run `make local-up` for the local' +
        ' stack, or set TABLE_NAME, REGISTRY_REGION, IOT_REGIONS, IOT_POLICY_NAME and CA_CERTIFICATE_PEM as the' +
        ' scheduled function has them (`aws lambda get-function-configuration --function-name' +
        ' <appName>-reconciler` prints them) with your AWS credentials',
    );
  }
  if (options.grace !== undefined) process.env.RECONCILE_GRACE_SECONDS = String(options.grace);
  const config = loadReconcilerConfig();
  const log = options.json ? () => undefined : (line: string) => console.log(line);
  log(
    `reconciling ${config.tableName} in ${config.regions.length} regions${useLocal ? ' (local stack)' : ''}`,
  );
  const deps = reconcilerDependencies(config);
  const report = await reconcile({
    ...deps,
    allowLarge: options.allowLarge === true,
    log,
    onProgress: await reconcileProgress(deps.registry),
  });
  if (options.json) console.log(JSON.stringify(report, null, 2));
  if (report.aborted) {
    console.error(
      `reconcile: the circuit breaker stopped this run, nothing changed: ${report.breaker.reasons.join('; ')}. ` +
        'Check the table, then `make reconcile ARGS=--allow-large`',
    );
    return 3;
  }
  return report.failures.length > 0 ? 1 : 0;
}

if (require.main === module) {
  main(process.argv).then(
    (code) => process.exit(code),
    (error: unknown) => {
      const commander = error as { code?: string; exitCode?: number };
      if (commander.code?.startsWith('commander.')) {
        process.exit(
          commander.code === 'commander.helpDisplayed' || commander.code === 'commander.version' ? 0 : 2,
        );
      }
      console.error(`reconcile: ${(error as Error).message}`);
      process.exit(error instanceof ConfigError ? 2 : 1);
    },
  );
}
