/**
 * `make synth`: synthesizes the Terraform JSON into cdktf.out/stacks/<appName>/ offline.
 * Same output as `cdktf synth`, without the CLI's start-up cost.
 *
 * Without the CA certificate (caCertificateFile) it synthesizes the bootstrap stack, which holds
 * only the CA key: `make deploy` applies just that, `make init-ca` then writes the certificate.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App } from 'cdktf';
import { DeploymentConfig, loadDeploymentConfig, repoPath, REPO_ROOT, stackName } from './config';
import { DeviceCaFiles, ProvisioningStack } from './stack';
import { BUNDLE_ENTRY_FILE, bundleDir } from '../functions/bundle-layout';

process.env.CHECKPOINT_DISABLE ??= '1';

export const BUNDLE_DIR = bundleDir('provisioning');
export const RECONCILER_BUNDLE_DIR = bundleDir('reconciler');
export const OUT_DIR = join(REPO_ROOT, 'cdktf.out');

function main(): void {
  const started = Date.now();
  const config = loadDeploymentConfig();
  for (const dir of [BUNDLE_DIR, RECONCILER_BUNDLE_DIR]) {
    if (!existsSync(join(dir, BUNDLE_ENTRY_FILE))) {
      throw new Error(`${dir}/${BUNDLE_ENTRY_FILE} is missing: run \`make build\` first (make synth does)`);
    }
  }
  const fleetKeyFile = repoPath(config.fleetPublicKeyFile);
  if (!existsSync(fleetKeyFile)) {
    throw new Error(`fleetPublicKeyFile ${fleetKeyFile} is missing (docs/deploy.md, "Fleet key")`);
  }
  const deviceCa = readDeviceCaFiles(config);
  const app = new App({ outdir: OUT_DIR });
  new ProvisioningStack(app, {
    config,
    bundleDir: BUNDLE_DIR,
    reconcilerBundleDir: RECONCILER_BUNDLE_DIR,
    fleetPublicKeyPem: readFileSync(fleetKeyFile, 'utf8'),
    deviceCa,
  });
  app.synth();
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const what = deviceCa ? '' : 'the CA bootstrap stack ';
  console.log(
    `synthesized ${what}${join(OUT_DIR, 'stacks', stackName(config), 'cdk.tf.json')} in ${seconds} s`,
  );
}

/** The CA certificate files, or undefined (bootstrap) when caCertificateFile does not exist yet. */
function readDeviceCaFiles(config: DeploymentConfig): DeviceCaFiles | undefined {
  const current = repoPath(config.caCertificateFile);
  if (!existsSync(current)) {
    console.warn(
      `caCertificateFile ${config.caCertificateFile} does not exist: synthesizing the bootstrap stack ` +
        '(the CA key only; no function, no CA registration). `make deploy` creates just the key; then ' +
        `\`make init-ca\`, commit ${config.caCertificateFile}, and \`make deploy\` again (docs/deploy.md, "Device CA").`,
    );
    return undefined;
  }
  return {
    certificatePem: readFileSync(current, 'utf8'),
    source: config.caCertificateFile,
    previous: config.caPreviousCertificates.map(({ file, active }) => {
      if (!existsSync(repoPath(file))) {
        throw new Error(
          `caPreviousCertificates: ${file} is missing (restore it from git, or remove the entry)`,
        );
      }
      return { pem: readFileSync(repoPath(file), 'utf8'), active, source: file };
    }),
  };
}

try {
  main();
} catch (error) {
  console.error(`synth failed: ${(error as Error).message}`);
  process.exit(1);
}
