/**
 * gdp-admin: the operator's tool for the fleet (README, "Operating the fleet"). It talks to the
 * deployment of infra/deployment.json with your AWS credentials, or with --local to the running
 * local stack, through the same registry and IoT adapters the function and the reconciler use.
 */
import '../cli-runtime';
import { existsSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { SingleBar } from 'cli-progress';
import { awsCaller, MissingCredentialsError } from '../../infra/aws-credentials';
import { version } from '../../package.json';
import { progressLines } from '../cli-runtime';
import { ConfigError } from '../provisioning/config';
import { PROV_STATUS, type DeviceRecord } from '../provisioning/device-record';
import type { RecordFilter } from '../provisioning/registry';
import { loadReconcilerConfig, ReconcilerConfig } from '../reconciler/config';
import { deploymentEnvironment, localStackEnvironment, STACK_FILE } from '../reconciler/environments';
import { reconcileProgress } from '../reconciler/cli';
import { listQuarantine } from '../reconciler/quarantine';
import { reconcile } from '../reconciler/reconcile';
import { reconcilerDependencies } from '../reconciler/wiring';
import { AdminError, EXIT } from './exit-codes';
import { importDevices, summaryText } from './import-devices';
import { checkImportFile, formatOf } from './import-file';
import {
  ChangeResult,
  disable,
  enable,
  move,
  OperatorDependencies,
  reset,
  restoreFromQuarantine,
  revoke,
} from './operations';
import {
  addToCounts,
  Counts,
  countsTable,
  disagreements,
  LIST_HEADER,
  listRow,
  listTableRow,
  showText,
  certificateLifetime,
  StatsBuilder,
  statsText,
  table,
} from './reports';

interface GlobalOptions {
  readonly local?: boolean;
  readonly yes?: boolean;
  readonly wait: number;
}

interface Context {
  readonly config: ReconcilerConfig;
  readonly deps: ReturnType<typeof reconcilerDependencies>;
  readonly local: boolean;
  readonly operator: OperatorDependencies;
}

function wholeNumber(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0) throw new InvalidArgumentError('expected a whole number ≥ 0');
  return parsed;
}

function isoSeconds(value: string): number {
  const parsed = Date.parse(value);
  if (Number.isNaN(parsed))
    throw new InvalidArgumentError('expected a date such as 2026-01-31 or 2026-01-31T12:00:00Z');
  return Math.floor(parsed / 1000);
}

const err = (line: string) => process.stderr.write(`${line}\n`);

/**
 * The deployment's environment; when there is none but a local stack runs, say so and point at
 * --local (as `make reconcile` picks the local stack by itself) rather than name a missing file.
 */
function deploymentOrAdvice(): Record<string, string> {
  try {
    return deploymentEnvironment();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    throw new ConfigError(
      `no deployment is configured (${error.message})` +
        (existsSync(STACK_FILE)
          ? '. A local stack is running: add --local to use it, e.g. `gdp-admin --local list`'
          : '. Deploy first (docs/deploy.md), or start the local stack (`make local-up`) and add --local'),
    );
  }
}

function context(options: GlobalOptions): Context {
  const environment = options.local ? localStackEnvironment() : deploymentOrAdvice();
  // The local stack's endpoint and test credentials reach every SDK client through the environment.
  if (options.local) Object.assign(process.env, environment);
  const config = loadReconcilerConfig({ ...process.env, ...environment });
  const deps = reconcilerDependencies(config);
  let caller: Promise<string> | undefined;
  return {
    config,
    deps,
    local: options.local === true,
    operator: {
      registry: deps.registry,
      iot: deps.iot,
      regions: config.regions,
      caller: () =>
        (caller ??= awsCaller(config.registryRegion, process.env.AWS_ENDPOINT_URL).then((who) => who.arn)),
      waitSeconds: options.wait,
      log: err,
    },
  };
}

async function confirm(options: GlobalOptions, question: string): Promise<void> {
  if (options.yes) return;
  if (!process.stdin.isTTY) {
    throw new AdminError(`${question}: not on a terminal, so pass --yes to confirm`, EXIT.usage);
  }
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await prompt.question(`${question} [y/N] `);
  prompt.close();
  if (!/^y(es)?$/i.test(answer.trim())) throw new AdminError('not confirmed: nothing changed', EXIT.declined);
}

/** A progress bar on stderr when it is a terminal; nothing otherwise (logs, CI, pipes). */
function progress(label: string, total: number) {
  if (!process.stderr.isTTY || total <= 0)
    return { increment: (_by: number) => undefined, stop: () => undefined };
  const bar = new SingleBar({
    format: `${label} [{bar}] {percentage}% | {value}/{total} | {rate}/s | ETA {eta_formatted}`,
    stream: process.stderr,
    hideCursor: true,
  });
  const started = Date.now();
  let done = 0;
  bar.start(total, 0, { rate: '0' });
  return {
    increment: (by: number) => {
      done += by;
      bar.update(Math.min(done, total), {
        rate: Math.round(done / Math.max(0.001, (Date.now() - started) / 1000)),
      });
    },
    stop: () => bar.stop(),
  };
}

function printResult(result: ChangeResult, json: boolean, verb: string): void {
  if (json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  console.log(
    result.changed
      ? `${verb} ${result.thingName} (by ${result.audit?.by}, at ${result.audit?.at})`
      : `${result.thingName}: nothing to change`,
  );
  for (const note of result.notes) console.log(`  ${note}`);
}

async function runImport(
  file: string,
  options: GlobalOptions & {
    update?: boolean;
    dryRun?: boolean;
    format?: string;
    json?: boolean;
    concurrency: number;
  },
): Promise<number> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const reason =
      (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message;
    throw new AdminError(`cannot read ${file}: ${reason}`, EXIT.usage);
  }
  const ctx = context(options);
  const checked = checkImportFile(text, formatOf(file, options.format), ctx.config.regions);
  for (const rejection of checked.rejected) err(`${file}:${rejection.line}: ${rejection.reason}`);
  let bar: ReturnType<typeof progress> | undefined;
  let shown = 0;
  let summary;
  try {
    summary = await importDevices(
      {
        registry: ctx.deps.registry,
        caller: ctx.operator.caller,
        confirm: (question) => confirm(options, question),
        log: err,
      },
      checked,
      {
        file,
        update: options.update === true,
        dryRun: options.dryRun === true,
        concurrency: options.concurrency,
        tableName: ctx.config.tableName,
        onProgress: (done, total) => {
          bar ??= progress('import', total);
          bar.increment(done - shown);
          shown = done;
        },
      },
    );
  } finally {
    bar?.stop();
  }
  if (options.json) console.log(JSON.stringify(summary, null, 2));
  else console.log(summaryText(summary, options.update === true));
  if (checked.rejected.length > 0) return EXIT.rejectedRows;
  return summary.updateLost > 0 ? EXIT.failed : EXIT.ok;
}

function filterFrom(options: {
  status?: string[];
  region?: string;
  prefix?: string;
  since?: number;
  before?: number;
}): RecordFilter {
  return {
    ...(options.status ? { statuses: options.status } : {}),
    ...(options.region ? { region: options.region } : {}),
    ...(options.prefix ? { namePrefix: options.prefix } : {}),
    ...(options.since !== undefined ? { provisionedSince: options.since } : {}),
    ...(options.before !== undefined ? { provisionedBefore: options.before } : {}),
  };
}

/**
 * Scans with a progress bar on a terminal, and progress lines on stderr elsewhere (every few
 * seconds; GDP_PROGRESS_SECONDS). The total is DynamoDB's item count, an estimate: with a filter
 * the matches are fewer, so no ETA is claimed then.
 */
async function scanWithProgress(
  ctx: Context,
  label: string,
  filter: RecordFilter,
  each: (record: DeviceRecord) => void,
) {
  const filtered = Object.keys(filter).some((key) => key !== 'attributes');
  const total = await ctx.deps.registry.approximateCount().catch(() => 0);
  const bar = progress(label, process.stderr.isTTY ? total : 0);
  const lines = process.stderr.isTTY
    ? undefined
    : progressLines(label, { unit: filtered ? 'matching records' : 'records', total: filtered ? 0 : total });
  let scanned = 0;
  try {
    for await (const record of ctx.deps.registry.scan(undefined, filter)) {
      scanned += 1;
      each(record);
      lines?.add();
      if (scanned % 500 === 0) bar.increment(500);
    }
  } finally {
    bar.stop();
  }
  return scanned;
}

export function program(): Command {
  const cli = new Command('gdp-admin')
    .description(
      'Operate the fleet: the allowlist, device status, revocation, resets, moves and the reconciler.',
    )
    .option(
      '--local',
      'use the running local stack (make local-up) instead of infra/deployment.json and your AWS credentials',
    )
    .option('-y, --yes', 'do not ask before changing anything (required off a terminal)')
    .option(
      '--wait <seconds>',
      'how long a change waits for a provisioning request in flight',
      wholeNumber,
      30,
    )
    .addHelpText(
      'after',
      '\nExit codes: 0 ok, 1 failed, 2 usage or configuration, 3 thing not found, 4 refused (state, or a request in flight), 5 import rows rejected, 6 not confirmed, 7 reconcile stopped by its circuit breaker.\n' +
        '\nExamples:\n  npm run admin -- --local import devices.csv --yes\n  make admin ARGS="--local list --status provisioned"',
    )
    .version(version, '-V, --version')
    // Subcommand help lists --local, --yes and --wait too: they go before the command.
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError()
    .exitOverride();
  const globals = () => cli.opts<GlobalOptions>();
  const example = (command: Command, ...lines: string[]) =>
    command.addHelpText(
      'after',
      `\nExample${lines.length > 1 ? 's' : ''}:\n${lines.map((line) => `  ${line}`).join('\n')}\n`,
    );
  let exitCode: number = EXIT.ok;
  const setExit = (code: number) => {
    exitCode = code;
  };

  example(
    cli
      .command('import <file>')
      .description(
        'Put devices on the allowlist from CSV or NDJSON (thing_name, device_public_key, region); existing records stay as they are',
      )
      .option('--update', 'also update device_public_key and region of existing records')
      .option('--dry-run', 'check every row and count what would change; write nothing')
      .addOption(
        new Option('--format <format>', 'file format (default: from the file name)').choices([
          'csv',
          'ndjson',
        ]),
      )
      .option('--concurrency <n>', 'TransactWriteItems calls (100 rows each) in flight', wholeNumber, 4)
      .option('--json', 'print the summary as JSON')
      .action(async (file: string, options) => setExit(await runImport(file, { ...globals(), ...options }))),
    'gdp-admin --local import factory-batch-17.csv --dry-run',
    'gdp-admin import devices.ndjson --yes --json',
  );

  example(
    cli
      .command('list')
      .description('List records, filtered; a table, --json, --ndjson, or --count by status × region')
      .addOption(new Option('--status <status...>', 'prov_status values').choices(Object.values(PROV_STATUS)))
      .option('--region <region>', 'aws_region')
      .option('--prefix <prefix>', 'thing names starting with this')
      .option('--since <date>', 'provisioned at or after (ISO date/time, UTC)', isoSeconds)
      .option('--before <date>', 'provisioned before', isoSeconds)
      .option('--count', 'only count, by status × region')
      .option('--json', 'one JSON array')
      .option('--ndjson', 'one JSON object per line (streams)')
      .action(async (options) => {
        const ctx = context(globals());
        const filter = filterFrom(options);
        if (options.count) {
          const counts: Counts = {};
          const started = Date.now();
          await scanWithProgress(
            ctx,
            'count',
            { ...filter, attributes: ['prov_status', 'aws_region'] },
            (record) => addToCounts(counts, record),
          );
          if (options.json) console.log(JSON.stringify(counts, null, 2));
          else console.log(`${countsTable(counts)}\n(${((Date.now() - started) / 1000).toFixed(1)} s)`);
          return;
        }
        const rows: string[][] = [];
        const all: ReturnType<typeof listRow>[] = [];
        await scanWithProgress(ctx, 'list', filter, (record) => {
          const row = listRow(record);
          if (options.ndjson) console.log(JSON.stringify(row));
          else if (options.json) all.push(row);
          else rows.push(listTableRow(row));
        });
        if (options.json) console.log(JSON.stringify(all, null, 2));
        else if (!options.ndjson)
          console.log(
            table(
              LIST_HEADER,
              rows.sort((a, b) => (a[0] ?? '').localeCompare(b[0] ?? '')),
            ),
          );
      }),
    'gdp-admin list --status provisioned --region eu-central-1 --since 2026-01-01',
    'gdp-admin list --prefix wm1 --ndjson | jq .thingName',
    'gdp-admin list --count',
  );

  example(
    cli
      .command('show <thing>')
      .description('The record, its history, what AWS IoT says in its region(s), and where they disagree')
      .option('--json', 'print as JSON')
      .action(async (thingName: string, options) => {
        const ctx = context(globals());
        const record = await ctx.deps.registry.read(thingName);
        if (!record) throw new AdminError(`${thingName} is not in the registry`, EXIT.notFound);
        const regions = [
          ...new Set(
            [
              record.region,
              record.movedFrom?.region,
              record.moveTo?.region,
              record.pending?.region,
              record.previous?.region,
            ].filter((r): r is string => !!r),
          ),
        ];
        const reports = await Promise.all(
          regions.map((region) => ctx.deps.iot.inspectThing(region, thingName)),
        );
        const warnings = disagreements(record, reports, Math.floor(Date.now() / 1000));
        if (options.json) {
          const { raw: _raw, certificatePem: _pem, devicePublicKeyPem, pending, ...shown } = record;
          console.log(
            JSON.stringify(
              {
                record: {
                  ...shown,
                  hasDeviceKey: devicePublicKeyPem !== undefined,
                  pending: pending && { ...pending, certificatePem: undefined },
                  certificateLifetime: certificateLifetime(record, ctx.config.certificates),
                },
                certificatePolicy: ctx.config.certificates,
                acceptedIn:
                  record.movedFrom && record.region
                    ? [record.region, record.movedFrom.region]
                    : record.region
                      ? [record.region]
                      : [],
                iot: reports,
                warnings,
              },
              null,
              2,
            ),
          );
        } else console.log(showText(record, reports, warnings, ctx.config.certificates));
      }),
    'gdp-admin show wm101',
  );

  const mutation = (
    name: string,
    description: string,
    run: (ctx: Context, thing: string, options: Record<string, unknown>) => Promise<ChangeResult>,
    question: (thing: string, options: Record<string, unknown>) => string,
    verb: string,
    exampleLine: string,
    extra: (command: Command) => Command = (command) => command,
  ) =>
    example(
      extra(cli.command(`${name} <thing>`).description(description))
        .option('--json', 'print the result as JSON')
        .action(async (thing: string, options: Record<string, unknown>) => {
          const ctx = context(globals());
          await confirm(globals(), question(thing, options));
          printResult(await run(ctx, thing, options), options.json === true, verb);
        }),
      exampleLine,
    );

  mutation(
    'disable',
    'Refuse the device (403) until enabled again; --revoke also deactivates its certificate',
    (ctx, thing, options) => disable(ctx.operator, thing, { revoke: options.revoke === true }),
    (thing, options) => `disable ${thing}${options.revoke ? ' and deactivate its certificate' : ''}?`,
    'disabled',
    'gdp-admin disable wm101 --revoke --yes',
    (command) => command.option('--revoke', 'also deactivate its live certificate'),
  );
  mutation(
    'enable',
    'Undo disable: the device may provision (or stays provisioned) again',
    (ctx, thing) => enable(ctx.operator, thing),
    (thing) => `enable ${thing}?`,
    'enabled',
    'gdp-admin enable wm101 --yes',
  );
  mutation(
    'revoke',
    'Deactivate the device certificate(s) and set status revoked (403); --delete also deletes certificate and thing',
    (ctx, thing, options) => revoke(ctx.operator, thing, { delete: options.delete === true }),
    (thing, options) => `revoke ${thing}${options.delete ? ' and delete its certificate and thing' : ''}?`,
    'revoked',
    'gdp-admin revoke wm101 --delete --yes',
    (command) => command.option('--delete', 'also detach and delete the certificate(s) and the thing'),
  );
  mutation(
    'reset',
    'Retire certificate(s) and thing and put the record back to unprovisioned, so the device can provision again',
    (ctx, thing) => reset(ctx.operator, thing),
    (thing) => `reset ${thing} (its certificate stops working)?`,
    'reset',
    'gdp-admin reset wm101 --yes',
  );
  mutation(
    'move',
    'Re-home a device to another region with the same certificate; both regions accept it until --finish',
    async (ctx, thing, options) => {
      if (options.to === undefined && options.finish !== true) {
        throw new AdminError('move needs --to <region> or --finish', EXIT.usage);
      }
      return move(ctx.operator, thing, {
        to: options.to as string | undefined,
        finish: options.finish === true,
      });
    },
    (thing, options) =>
      options.to ? `move ${thing} to ${String(options.to)}?` : `retire the old region's copy of ${thing}?`,
    'moved',
    'gdp-admin move wm101 --to eu-central-1 --yes   # later, once the device uses it: gdp-admin move wm101 --finish --yes',
    (command) =>
      command
        .option('--to <region>', 'the region to move it to')
        .option('--finish', "retire the old region's copy (also: the same move run again)"),
  );

  example(
    cli
      .command('stats')
      .description(
        'Counts per status and region, provisionings per hour over the last day, the oldest claims in flight',
      )
      .option('--json', 'print as JSON')
      .action(async (options) => {
        const ctx = context(globals());
        const stats = new StatsBuilder(Math.floor(Date.now() / 1000));
        await scanWithProgress(
          ctx,
          'stats',
          { attributes: ['prov_status', 'aws_region', 'prov_epoch', 'claim_id', 'claim_expires'] },
          (record) => stats.add(record),
        );
        const built = stats.build();
        console.log(options.json ? JSON.stringify(built, null, 2) : statsText(built));
      }),
    'gdp-admin stats',
  );

  example(
    cli
      .command('reconcile')
      .description('Run the reconciler once (what the scheduled function does every 15 minutes)')
      .option('--grace <seconds>', 'leave certificates registered less than this long ago alone', wholeNumber)
      .option(
        '--prefix <prefix>',
        'only records whose thing name starts with this (the orphan sweep stays account-wide)',
      )
      .option(
        '--allow-large',
        'confirm a run larger than the circuit breaker allows (after checking the table is the right one)',
      )
      .option('--json', 'print the report as JSON')
      .action(async (options) => {
        const ctx = context(globals());
        const report = await reconcile({
          ...ctx.deps,
          ...(options.grace !== undefined ? { graceSeconds: options.grace as number } : {}),
          ...(options.prefix ? { thingNamePrefix: options.prefix as string } : {}),
          allowLarge: options.allowLarge === true,
          log: options.json ? () => undefined : (line) => console.log(line),
          onProgress: await reconcileProgress(ctx.deps.registry),
        });
        if (options.json) console.log(JSON.stringify(report, null, 2));
        if (report.aborted) {
          err(
            'gdp-admin: the circuit breaker stopped this run, nothing changed: ' +
              `${report.breaker.reasons.join('; ')}. Check the table, then \`gdp-admin reconcile --allow-large\``,
          );
          setExit(EXIT.aborted);
        } else if (report.failures.length > 0) setExit(EXIT.failed);
      }),
    'gdp-admin --local reconcile --grace 0',
    'gdp-admin reconcile --allow-large   # after ReconcilerAborted, once the table is known good',
  );

  const quarantine = example(
    cli
      .command('quarantine')
      .description(
        'Certificates the reconciler quarantined (ours, INACTIVE, no record names them): deleted after the quarantine period; `quarantine restore` reactivates one',
      )
      .option('--json', 'print as JSON')
      .action(async (options) => {
        const ctx = context(globals());
        const entries = await listQuarantine(ctx.deps);
        if (options.json) {
          console.log(JSON.stringify(entries, null, 2));
          return;
        }
        const days = ctx.config.quarantineSeconds / 86_400;
        console.log(
          table(
            ['CERTIFICATE', 'REGION', 'SINCE', 'THING'],
            entries.map((entry) => [
              entry.certificateId,
              entry.region,
              entry.since ?? 'unknown (never deleted)',
              entry.things.join(',') || '-',
            ]),
          ),
        );
        console.log(`${entries.length} certificates in quarantine; deleted ${days} days after SINCE`);
      }),
    'gdp-admin quarantine',
    'gdp-admin quarantine restore 3f0c…e1 --region eu-central-1 --yes',
  );
  example(
    quarantine
      .command('restore <certificateId>')
      .description('Reactivate a quarantined certificate (its thing attachments were kept)')
      .option('--region <region>', 'only in this region (default: every region where it is quarantined)')
      .option('--json', 'print the result as JSON')
      .action(async (certificateId: string, options) => {
        const ctx = context(globals());
        await confirm(
          globals(),
          `reactivate certificate ${certificateId}${options.region ? ` in ${String(options.region)}` : ''}?`,
        );
        printResult(
          await restoreFromQuarantine(ctx.operator, certificateId, {
            region: options.region as string | undefined,
          }),
          options.json === true,
          'restored',
        );
      }),
    'gdp-admin quarantine restore 3f0c…e1 --yes',
  );

  cli.hook('postAction', () => {
    process.exitCode = exitCode;
  });
  return cli;
}

export async function main(argv: readonly string[]): Promise<number> {
  const cli = program();
  try {
    await cli.parseAsync([...argv]);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (error) {
    const commander = error as { code?: string; exitCode?: number };
    if (commander.code?.startsWith('commander.')) {
      // commander.help with exit code 1 is the help shown because no command was given: a usage error.
      return commander.code === 'commander.helpDisplayed' ||
        commander.code === 'commander.version' ||
        (commander.code === 'commander.help' && commander.exitCode === 0)
        ? EXIT.ok
        : EXIT.usage;
    }
    if (error instanceof AdminError) {
      err(`gdp-admin: ${error.message}`);
      return error.exitCode;
    }
    if (error instanceof ConfigError || error instanceof MissingCredentialsError) {
      err(`gdp-admin: ${error.message}`);
      return EXIT.usage;
    }
    err(`gdp-admin: ${(error as Error).name}: ${(error as Error).message}`);
    return EXIT.failed;
  }
}

/** `tsx functions/admin/cli.ts …`, `npm run admin`, and the `gdp-admin` bin (bin/gdp-admin.js). */
export function runCommandLine(): void {
  main(process.argv).then((code) => process.exit(code));
}

if (require.main === module) runCommandLine();
