/**
 * `make plan | deploy | destroy | outputs`: runs terraform in cdktf.out/stacks/<stack> after
 * checking what it needs (terraform on PATH, AWS credentials) and only then building and
 * synthesizing, so a missing prerequisite fails in one clear line within a second or two.
 * `outputs` of local state reads the state file and needs neither credentials nor terraform init.
 */
import '../functions/cli-runtime';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
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

async function prepare(): Promise<{ config: DeploymentConfig; dir: string }> {
  const config = loadDeploymentConfig();
  requireTerraform();
  await requireAwsCredentials(config);
  synthesize();
  const dir = requireSynthesizedStack(config);
  terraform(dir, ['init', '-input=false']);
  return { config, dir };
}

const program = new Command('ops')
  .description(
    'Deploy the global device provisioning stack (run through make: make plan|deploy|destroy|outputs)',
  )
  .showHelpAfterError();

program
  .command('plan')
  .description('show what deploy would change')
  .action(async () => {
    const { dir } = await prepare();
    terraform(dir, ['plan', '-input=false', ...bootstrapTargets(dir)]);
  });

program
  .command('deploy')
  .description('create or update everything in AWS (asks for confirmation unless --auto-approve)')
  .option('--auto-approve', 'apply without the interactive confirmation (CI)')
  .action(async (options: { autoApprove?: boolean }) => {
    const { config, dir } = await prepare();
    const targets = bootstrapTargets(dir);
    if (targets.length === 0) await requireMatchingCaCertificate(config);
    terraform(dir, ['apply', '-input=false', ...targets, ...(options.autoApprove ? ['-auto-approve'] : [])]);
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
  .action(async (options: { autoApprove?: boolean }) => {
    const { config, dir } = await prepare();
    if (config.tableDeletionProtection) {
      progress('tableDeletionProtection is true: the registry table will refuse deletion (docs/deploy.md)');
    }
    terraform(dir, ['destroy', '-input=false', ...(options.autoApprove ? ['-auto-approve'] : [])]);
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
  console.error(
    error instanceof PrerequisiteError ? `missing prerequisite: ${message}` : `failed: ${message}`,
  );
  process.exit(1);
});
