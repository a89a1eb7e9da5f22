/**
 * `make synth`: synthesizes the Terraform JSON into cdktf.out/stacks/<appName>/ offline.
 * Same output as `cdktf synth`, without the CLI's start-up cost.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App } from 'cdktf';
import { loadDeploymentConfig, repoPath, REPO_ROOT, stackName } from './config';
import { ProvisioningStack } from './stack';

process.env.CHECKPOINT_DISABLE ??= '1';

export const BUNDLE_DIR = join(REPO_ROOT, 'dist', 'provisioning');
export const OUT_DIR = join(REPO_ROOT, 'cdktf.out');

function main(): void {
  const started = Date.now();
  const config = loadDeploymentConfig();
  if (!existsSync(join(BUNDLE_DIR, 'index.js'))) {
    throw new Error(`${BUNDLE_DIR}/index.js is missing: run \`make build\` first (make synth does)`);
  }
  const fleetKeyFile = repoPath(config.fleetPublicKeyFile);
  if (!existsSync(fleetKeyFile)) {
    throw new Error(`fleetPublicKeyFile ${fleetKeyFile} is missing (docs/deploy.md, "Fleet key")`);
  }
  const app = new App({ outdir: OUT_DIR });
  new ProvisioningStack(app, {
    config,
    bundleDir: BUNDLE_DIR,
    fleetPublicKeyPem: readFileSync(fleetKeyFile, 'utf8'),
  });
  app.synth();
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`synthesized ${join(OUT_DIR, 'stacks', stackName(config), 'cdk.tf.json')} in ${seconds} s`);
}

try {
  main();
} catch (error) {
  console.error(`synth failed: ${(error as Error).message}`);
  process.exit(1);
}
