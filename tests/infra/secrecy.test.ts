/**
 * The ipstack key must never land in the synthesized Terraform (and so never in state): plant a
 * canary key everywhere a careless change might read one from, synthesize the whole output
 * directory, and look for it.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Testing } from 'cdktf';
import { loadDeploymentConfig } from '../../infra/config';
import { ProvisioningStack } from '../../infra/stack';
import { stubBundleDir, TEST_FLEET_PUBLIC_KEY } from './synth';

const CANARY = 'c0ffee00canary1234567890abcdef42';
const CANARY_VARIABLES = ['IPSTACK_KEY', 'IPSTACK_ACCESS_KEY', 'IPSTACK_API_KEY', 'TF_VAR_ipstack_key'];

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

describe('ipstack key plaintext', () => {
  const saved = Object.fromEntries(CANARY_VARIABLES.map((name) => [name, process.env[name]]));
  afterAll(() => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  it('appears nowhere in the synthesized output, even with a key in the environment', () => {
    for (const name of CANARY_VARIABLES) process.env[name] = CANARY;
    const stack = new ProvisioningStack(Testing.app(), {
      config: loadDeploymentConfig(),
      bundleDir: stubBundleDir(),
      fleetPublicKeyPem: TEST_FLEET_PUBLIC_KEY,
    });
    const outdir = Testing.fullSynth(stack);
    const files = filesUnder(outdir);
    expect(files.some((file) => file.endsWith('cdk.tf.json'))).toBe(true);
    for (const file of files) {
      expect({ file, hasCanary: readFileSync(file).includes(CANARY) }).toEqual({ file, hasCanary: false });
    }
  });
});
