/**
 * `make plan | deploy | destroy | outputs`: runs terraform in cdktf.out/stacks/<stack> after
 * checking what it needs (terraform on PATH, AWS credentials) and only then building and
 * synthesizing, so a missing prerequisite fails in one clear line within a second or two.
 * `outputs` of local state reads the state file and needs neither credentials nor terraform init.
 *
 * plan, deploy and destroy plan to a file, read it back as JSON and refuse to delete or replace
 * a device CA, a CA key or the registry table unless `--allow-destroy=<address>` names it
 * (infra/plan-check.ts); deploy and destroy then apply exactly the plan file that was checked.
 */
import '../functions/cli-runtime';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { Command } from 'commander';
import { GetPublicKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { awsCaller, MissingCredentialsError } from './aws-credentials';
import {
  BOOTSTRAP_OUTPUT,
  DeploymentConfig,
  loadDeploymentConfig,
  repoPath,
  REPO_ROOT,
  stackName,
} from './config';
import { checkPlan, describeRefusal, parsePlan, PlanUnreadableError } from './plan-check';

class PrerequisiteError extends Error {
  override readonly name = 'PrerequisiteError';
}

const progress = (message: string) => console.error(`▸ ${message}`);
/** `TERRAFORM=tofu make deploy` runs OpenTofu instead. */
const TERRAFORM = process.env.TERRAFORM || 'terraform';

function stackDir(config: DeploymentConfig): string {
  return join(REPO_ROOT, 'cdktf.out', 'stacks', stackName(config));
}

function requireSynthesizedStack(config: DeploymentConfig): string {
  const dir = stackDir(config);
  if (!existsSync(join(dir, 'cdk.tf.json'))) {
    throw new PrerequisiteError(`no synthesized stack in ${dir}: run \`make synth\` first`);
  }
  return dir;
}

function requireTerraform(): void {
  const version = spawnSync(TERRAFORM, ['version', '-json'], { encoding: 'utf8' });
  if (version.error || version.status !== 0) {
    throw new PrerequisiteError(
      `${TERRAFORM} is not on PATH: install Terraform ≥ 1.10 (or OpenTofu with TERRAFORM=tofu, docs/deploy.md)`,
    );
  }
  const parsed = JSON.parse(version.stdout) as { terraform_version?: string };
  progress(`${TERRAFORM} ${parsed.terraform_version ?? '(unknown version)'}`);
}

async function requireAwsCredentials(config: DeploymentConfig): Promise<void> {
  try {
    const caller = await awsCaller(config.homeRegion);
    progress(`AWS account ${caller.account} as ${caller.arn}`);
  } catch (error) {
    if (error instanceof MissingCredentialsError) throw new PrerequisiteError(error.message);
    throw error;
  }
}

/**
 * The bootstrap stack (no CA certificate yet) holds only the CA key and what `make init-ca` needs.
 * Applying it as is would delete everything else of a deployment that already exists (an upgrade,
 * a CA rotation), so plan and apply target its resources alone. Empty for the full stack.
 */
function bootstrapTargets(dir: string): string[] {
  const synthesized = JSON.parse(readFileSync(join(dir, 'cdk.tf.json'), 'utf8')) as {
    output?: Record<string, unknown>;
    resource?: Record<string, Record<string, unknown>>;
  };
  if (!synthesized.output?.[BOOTSTRAP_OUTPUT]) return [];
  const targets = Object.entries(synthesized.resource ?? {}).flatMap(([type, byName]) =>
    Object.keys(byName).map((name) => `-target=${type}.${name}`),
  );
  progress(
    'no CA certificate yet: applying only the CA key, its alias and the operator policy ' +
      '(-target; anything else already deployed is left alone). Then `make init-ca`.',
  );
  return targets;
}

/**
 * The CA certificate must have been made by the CA key the function will sign with; otherwise
 * AWS IoT refuses every device certificate (CertificateValidationException). Checked with the
 * deployer's credentials before apply.
 */
async function requireMatchingCaCertificate(config: DeploymentConfig): Promise<void> {
  const file = repoPath(config.caCertificateFile);
  const certificateKey = new X509Certificate(readFileSync(file, 'utf8')).publicKey.export({
    type: 'spki',
    format: 'der',
  });
  const kms = new KMSClient({ region: config.homeRegion });
  try {
    const answer = await kms.send(new GetPublicKeyCommand({ KeyId: config.caKmsKeyAlias }));
    if (!Buffer.from(answer.PublicKey ?? new Uint8Array()).equals(certificateKey)) {
      throw new PrerequisiteError(
        `${config.caCertificateFile} was not made by ${config.caKmsKeyAlias}: run \`make init-ca\` ` +
          '(or restore the right file from git); AWS IoT would refuse every device certificate',
      );
    }
    progress(`CA certificate ${config.caCertificateFile} matches ${config.caKmsKeyAlias}`);
  } catch (error) {
    if (error instanceof PrerequisiteError) throw error;
    const name = (error as Error).name;
    if (name === 'NotFoundException') {
      throw new PrerequisiteError(
        `${config.caKmsKeyAlias} does not exist, so ${config.caCertificateFile} cannot belong to this ` +
          'deployment: move it away and `make deploy` (creates the key), then `make init-ca`',
      );
    }
    progress(`could not check the CA certificate against ${config.caKmsKeyAlias} (${name}); continuing`);
  } finally {
    kms.destroy();
  }
}

/** Build and synth after the checks, so a missing credential costs a second, not a synth. */
function synthesize(): void {
  progress('make synth');
  const run = spawnSync('make', ['--no-print-directory', 'synth'], { cwd: REPO_ROOT, stdio: 'inherit' });
  if (run.status !== 0) throw new Error(`make synth failed (exit ${run.status ?? run.signal})`);
}

/** Local state's outputs, read from the file: no terraform init, so no provider registry needed. */
function printLocalOutputs(stateFile: string, json: boolean): void {
  if (!existsSync(stateFile)) {
    throw new PrerequisiteError(
      `nothing deployed from here yet: no Terraform state at ${stateFile} (make deploy)`,
    );
  }
  const state = JSON.parse(readFileSync(stateFile, 'utf8')) as {
    outputs?: Record<string, { value: unknown; sensitive?: boolean }>;
  };
  const outputs = Object.entries(state.outputs ?? {});
  if (json) return console.log(JSON.stringify(Object.fromEntries(outputs), null, 2));
  if (outputs.length === 0) return console.log(`no outputs in ${stateFile}`);
  for (const [name, output] of outputs)
    console.log(`${name} = ${output.sensitive ? '<sensitive>' : JSON.stringify(output.value)}`);
}

function terraform(dir: string, args: string[]): void {
  progress(`${TERRAFORM} ${args.join(' ')}`);
  const run = spawnSync(TERRAFORM, args, {
    cwd: dir,
    stdio: 'inherit',
    env: { ...process.env, CHECKPOINT_DISABLE: '1', TF_IN_AUTOMATION: process.env.TF_IN_AUTOMATION ?? '' },
  });
  if (run.status !== 0) throw new Error(`${TERRAFORM} ${args[0]} failed (exit ${run.status ?? run.signal})`);
}

/** The provider lock file, committed at the repository root; init runs in the stack directory. */
const LOCK_FILE = '.terraform.lock.hcl';
/** The plan file plan/deploy/destroy write and apply, in the stack directory. */
const PLAN_FILE = 'tfplan';

/**
 * terraform init with the committed provider lock file, read-only: a provider whose checksum
 * differs from the committed one fails init instead of being used. Without a committed lock file
 * (a new checkout of an old branch) init records one, and it is copied to the repository root to
 * be committed (docs/deploy.md, "Terraform state and providers").
 */
function init(dir: string): void {
  const committed = join(REPO_ROOT, LOCK_FILE);
  if (existsSync(committed)) {
    copyFileSync(committed, join(dir, LOCK_FILE));
    terraform(dir, ['init', '-input=false', '-lockfile=readonly']);
    return;
  }
  terraform(dir, ['init', '-input=false']);
  if (existsSync(join(dir, LOCK_FILE))) {
    copyFileSync(join(dir, LOCK_FILE), committed);
    progress(
      `recorded the providers' checksums in ${LOCK_FILE}: commit it (make deploy uses it from now on)`,
    );
  }
}

async function prepare(
  allowDestroy: readonly string[] = [],
): Promise<{ config: DeploymentConfig; dir: string }> {
  const config = loadDeploymentConfig();
  requireTerraform();
  await requireAwsCredentials(config);
  synthesize();
  const dir = requireSynthesizedStack(config);
  liftPreventDestroy(dir, allowDestroy);
  init(dir);
  return { config, dir };
}

/**
 * prevent_destroy makes Terraform refuse to even plan the replacement of a protected resource;
 * a resource the operator allowed by address gets it lifted in this synthesized copy only.
 */
function liftPreventDestroy(dir: string, allowDestroy: readonly string[]): void {
  if (allowDestroy.length === 0) return;
  const file = join(dir, 'cdk.tf.json');
  const synthesized = JSON.parse(readFileSync(file, 'utf8')) as {
    resource?: Record<string, Record<string, { lifecycle?: { prevent_destroy?: boolean } }>>;
  };
  const allowed = (address: string) =>
    allowDestroy.some((entry) =>
      entry.endsWith('*') ? address.startsWith(entry.slice(0, -1)) : address === entry,
    );
  for (const [type, byName] of Object.entries(synthesized.resource ?? {})) {
    for (const [name, resource] of Object.entries(byName)) {
      if (resource.lifecycle?.prevent_destroy && allowed(`${type}.${name}`)) {
        delete resource.lifecycle.prevent_destroy;
        progress(`--allow-destroy: ${type}.${name} may be deleted or replaced by this plan`);
      }
    }
  }
  writeFileSync(file, JSON.stringify(synthesized, null, 2));
}

/**
 * Plans to PLAN_FILE, reads it back with `terraform show -json` and checks it. A plan that
 * cannot be read or parsed stops here: nothing is applied on a guess.
 */
function planAndCheck(dir: string, planArgs: string[], allowDestroy: readonly string[]): void {
  terraform(dir, ['plan', '-input=false', `-out=${PLAN_FILE}`, ...planArgs]);
  const shown = spawnSync(TERRAFORM, ['show', '-json', PLAN_FILE], {
    cwd: dir,
    encoding: 'utf8',
    maxBuffer: 512 * 1024 * 1024,
    env: { ...process.env, CHECKPOINT_DISABLE: '1' },
  });
  if (shown.error || shown.status !== 0) {
    throw new PlanUnreadableError(
      `cannot read the plan back (${TERRAFORM} show -json ${PLAN_FILE}: ${shown.error?.message ?? `exit ${shown.status}`}): nothing applied`,
    );
  }
  const verdict = checkPlan(parsePlan(shown.stdout), allowDestroy);
  for (const destruction of verdict.allowed) {
    progress(`allowed by --allow-destroy: ${destruction.address}: ${destruction.consequence}`);
  }
  if (verdict.refused.length > 0) throw new PlanRefusedError(describeRefusal(verdict.refused));
  progress('plan checked: no device CA, CA key or registry table is deleted or replaced');
}

class PlanRefusedError extends Error {
  override readonly name = 'PlanRefusedError';
}

/** A saved plan applies without Terraform's own prompt, so the prompt is here. */
async function confirm(question: string, autoApprove: boolean | undefined): Promise<void> {
  if (autoApprove) return;
  if (!process.stdin.isTTY) {
    throw new PrerequisiteError(
      'no terminal to confirm on: review `make plan`, then run with --auto-approve',
    );
  }
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await prompt.question(`${question} Only 'yes' is accepted: `);
  prompt.close();
  if (answer.trim() !== 'yes') throw new Error('not confirmed: nothing applied');
}

/** `--allow-destroy a --allow-destroy b` or `--allow-destroy=a,b`. */
const collectAddresses = (value: string, previous: string[]) => [
  ...previous,
  ...value
    .split(',')
    .map((address) => address.trim())
    .filter(Boolean),
];
const ALLOW_DESTROY_HELP =
  'let the plan delete or replace this device CA / CA key / registry table address (repeat, or comma-separate; a trailing * matches a prefix)';

const program = new Command('ops')
  .description(
    'Deploy the global device provisioning stack (run through make: make plan|deploy|destroy|outputs)',
  )
  .showHelpAfterError();

program
  .command('plan')
  .description('show what deploy would change, and whether deploy would refuse it')
  .option('--allow-destroy <address>', ALLOW_DESTROY_HELP, collectAddresses, [])
  .action(async (options: { allowDestroy: string[] }) => {
    const { dir } = await prepare(options.allowDestroy);
    planAndCheck(dir, bootstrapTargets(dir), options.allowDestroy);
  });

program
  .command('deploy')
  .description('plan, check the plan, and apply that plan file (asks for confirmation unless --auto-approve)')
  .option('--auto-approve', 'apply without the interactive confirmation (CI)')
  .option('--allow-destroy <address>', ALLOW_DESTROY_HELP, collectAddresses, [])
  .action(async (options: { autoApprove?: boolean; allowDestroy: string[] }) => {
    const { config, dir } = await prepare(options.allowDestroy);
    const targets = bootstrapTargets(dir);
    if (targets.length === 0) await requireMatchingCaCertificate(config);
    planAndCheck(dir, targets, options.allowDestroy);
    await confirm('Apply the plan above?', options.autoApprove);
    terraform(dir, ['apply', '-input=false', PLAN_FILE]);
    terraform(dir, ['output']);
    progress(
      targets.length > 0
        ? `CA key created; next: \`make init-ca\`, commit ${config.caCertificateFile}, \`make deploy\``
        : 'deployed; store the ipstack key with `make rotate-ipstack-key` if you have not yet',
    );
  });

program
  .command('destroy')
  .description('delete the deployment (the table needs tableDeletionProtection=false deployed first)')
  .option('--auto-approve', 'destroy without the interactive confirmation')
  .option('--allow-destroy <address>', ALLOW_DESTROY_HELP, collectAddresses, [])
  .action(async (options: { autoApprove?: boolean; allowDestroy: string[] }) => {
    const { config, dir } = await prepare(options.allowDestroy);
    if (config.tableDeletionProtection) {
      progress('tableDeletionProtection is true: the registry table will refuse deletion (docs/deploy.md)');
    }
    planAndCheck(dir, ['-destroy'], options.allowDestroy);
    await confirm('Destroy everything in the plan above?', options.autoApprove);
    terraform(dir, ['apply', '-input=false', PLAN_FILE]);
  });

program
  .command('outputs')
  .description('print the provisioning URL, table name, key alias and other outputs')
  .option('--json', 'machine-readable')
  .action(async (options: { json?: boolean }) => {
    const config = loadDeploymentConfig();
    if (!config.terraformState) {
      printLocalOutputs(join(REPO_ROOT, `terraform.${stackName(config)}.tfstate`), options.json === true);
      return;
    }
    const { dir } = await prepare();
    terraform(dir, ['output', ...(options.json ? ['-json'] : [])]);
  });

program.parseAsync(process.argv).catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  const prefix =
    error instanceof PrerequisiteError
      ? 'missing prerequisite'
      : error instanceof PlanRefusedError
        ? 'refused'
        : error instanceof PlanUnreadableError
          ? 'stopped, plan unreadable'
          : 'failed';
  console.error(`${prefix}: ${message}`);
  process.exit(1);
});
