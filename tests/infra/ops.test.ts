/**
 * make plan / make deploy around the device CA, with a stand-in terraform that records its
 * arguments (the real one needs the provider registry) and moto as STS and KMS:
 *   - the bootstrap stack is planned and applied with -target on its own resources only, so an
 *     existing deployment is never touched by it;
 *   - the full stack is refused before apply when the CA certificate was not made by the CA key;
 *   - every plan goes to a file that is read back (`show -json`) and checked: a plan deleting a
 *     CA registration is refused unless --allow-destroy names it, an unreadable plan stops, and
 *     deploy applies the plan file it checked.
 * Skipped when moto_server is not installed.
 */
import { ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateAliasCommand, CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { synthesize } from './synth';
import { describeIfMoto, startPrivateMoto } from './support/private-moto';

const REPO_ROOT = join(__dirname, '..', '..');
const TSX = join(REPO_ROOT, 'node_modules', '.bin', 'tsx');
const APP_NAME = `ops-ca-test-${process.pid}`;
const STACK_DIR = join(REPO_ROOT, 'cdktf.out', 'stacks', APP_NAME);
const credentials = { accessKeyId: 'testing', secretAccessKey: 'testing' };

const describeWithMoto = describeIfMoto('ops CA test');

describeWithMoto('make plan / deploy with the device CA (stand-in terraform, moto)', () => {
  let moto: ChildProcess;
  let endpoint: string;
  let work: string;
  let terraformLog: string;
  let terraformScript: string;
  let deploymentFile: string;
  let bootstrapDeploymentFile: string;

  beforeAll(async () => {
    ({ endpoint, process: moto } = await startPrivateMoto());
    work = mkdtempSync(join(tmpdir(), 'ops-ca-'));
    terraformLog = join(work, 'terraform.log');
    terraformScript = join(work, 'terraform');
    writeFileSync(
      terraformScript,
      `#!/bin/sh\necho "$*" >> "${terraformLog}"\n[ "$1" = version ] && echo '{"terraform_version":"1.11.0"}'\n` +
        `[ "$1" = show ] && cat "$PLAN_JSON"\nexit 0\n`,
    );
    chmodSync(terraformScript, 0o755);
    const deployment = JSON.parse(
      readFileSync(join(REPO_ROOT, 'infra', 'deployment.json'), 'utf8'),
    ) as Record<string, unknown>;
    deploymentFile = join(work, 'deployment.json');
    writeFileSync(
      deploymentFile,
      JSON.stringify({
        ...deployment,
        appName: APP_NAME,
        caKmsKeyAlias: 'alias/ops-ca-test',
        caCertificateFile: join(REPO_ROOT, 'tests', 'infra', 'fixtures', 'device-ca.pem'),
      }),
    );
    // No CA certificate yet: the bootstrap stack.
    bootstrapDeploymentFile = join(work, 'deployment-bootstrap.json');
    writeFileSync(
      bootstrapDeploymentFile,
      JSON.stringify({
        ...deployment,
        appName: APP_NAME,
        caKmsKeyAlias: 'alias/ops-ca-test',
        caCertificateFile: join(work, 'no-ca-yet.pem'),
      }),
    );
    // A CA key that did not make the fixture certificate.
    const kms = new KMSClient({ region: String(deployment.homeRegion), endpoint, credentials });
    const key = await kms.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' }));
    await kms.send(
      new CreateAliasCommand({ AliasName: 'alias/ops-ca-test', TargetKeyId: key.KeyMetadata!.KeyId! }),
    );
    kms.destroy();
  }, 30_000);

  afterAll(() => {
    moto?.kill('SIGTERM');
    rmSync(STACK_DIR, { recursive: true, force: true });
    if (work) rmSync(work, { recursive: true, force: true });
  });

  /** ops synthesizes the stack itself (after its checks), from the deployment file it is given. */
  function runOps(
    args: string[],
    deployment: string = deploymentFile,
    planFixture = 'no-destroy.json',
  ): Promise<{ status: number | null; output: string; calls: string[] }> {
    writeFileSync(terraformLog, '');
    return new Promise((resolveRun) => {
      const child = spawn(TSX, [join(REPO_ROOT, 'infra', 'ops.ts'), ...args], {
        cwd: REPO_ROOT,
        env: {
          ...process.env,
          DEPLOYMENT_CONFIG: deployment,
          TERRAFORM: terraformScript,
          PLAN_JSON: join(__dirname, 'fixtures', 'plans', planFixture),
          AWS_ENDPOINT_URL: endpoint,
          AWS_ACCESS_KEY_ID: credentials.accessKeyId,
          AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.on('close', (status) =>
        resolveRun({ status, output, calls: readFileSync(terraformLog, 'utf8').split('\n').filter(Boolean) }),
      );
    });
  }

  it('plans and applies the bootstrap stack with -target on the CA key, alias and operator policy only', async () => {
    const bootstrap = synthesize({ appName: APP_NAME, caKmsKeyAlias: 'alias/ops-ca-test' }, null);
    const targets = Object.entries(bootstrap.json.resource).flatMap(([type, byName]) =>
      Object.keys(byName).map((name) => `-target=${type}.${name}`),
    );
    expect(targets).toHaveLength(3);

    const plan = await runOps(['plan'], bootstrapDeploymentFile);
    expect(plan.status).toBe(0);
    expect(plan.calls).toContain(`plan -input=false -out=tfplan ${targets.join(' ')}`);
    expect(plan.calls).toContain('show -json tfplan');

    const deploy = await runOps(['deploy', '--auto-approve'], bootstrapDeploymentFile);
    expect(deploy.status).toBe(0);
    // The plan file that was shown and checked is what gets applied.
    const planAt = deploy.calls.indexOf(`plan -input=false -out=tfplan ${targets.join(' ')}`);
    const shownAt = deploy.calls.indexOf('show -json tfplan');
    const appliedAt = deploy.calls.indexOf('apply -input=false tfplan');
    expect([planAt >= 0, planAt < shownAt, shownAt < appliedAt]).toEqual([true, true, true]);
    expect(deploy.output).toMatch(/next: `make init-ca`/);
  });

  it('plans the full stack without targets', async () => {
    const plan = await runOps(['plan']);
    expect(plan.status).toBe(0);
    expect(plan.calls).toContain('plan -input=false -out=tfplan');
  });

  const removedCa = 'aws_iot_ca_certificate.device-ca_eu-west-1-5c2d7e0a19b3f4a1_1A2B3C4D';

  it('refuses a plan that deletes a CA registration, naming it and what it does to devices', async () => {
    const plan = await runOps(['plan'], bootstrapDeploymentFile, 'region-removed.json');
    expect(plan.status).toBe(1);
    expect(plan.output).toContain(`refused: this plan deletes or replaces 1 resource(s) devices depend on`);
    expect(plan.output).toContain(`${removedCa} would be deleted`);
    expect(plan.output).toMatch(/stops connecting there/);
    expect(plan.calls.some((call) => call.startsWith('apply'))).toBe(false);
  });

  it('lets it through when --allow-destroy names the address', async () => {
    const plan = await runOps(
      ['plan', `--allow-destroy=${removedCa}`],
      bootstrapDeploymentFile,
      'region-removed.json',
    );
    expect(plan.status).toBe(0);
    expect(plan.output).toContain(`allowed by --allow-destroy: ${removedCa}`);
  });

  it('stops when the plan cannot be read back as JSON', async () => {
    const deploy = await runOps(['deploy', '--auto-approve'], bootstrapDeploymentFile, 'not-a-plan.json');
    expect(deploy.status).toBe(1);
    expect(deploy.output).toMatch(/stopped, plan unreadable: the plan JSON has no format_version/);
    expect(deploy.calls.some((call) => call.startsWith('apply'))).toBe(false);
  });

  it('refuses to deploy a CA certificate the CA key did not make, before terraform apply', async () => {
    const deploy = await runOps(['deploy', '--auto-approve']);
    expect(deploy.status).toBe(1);
    expect(deploy.output).toMatch(/was not made by alias\/ops-ca-test: run `make init-ca`/);
    expect(deploy.calls.some((call) => call.startsWith('apply'))).toBe(false);
  });
});
