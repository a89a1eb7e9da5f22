/**
 * The ipstack key must never land in the synthesized Terraform (and so never in state): plant a
 * canary key everywhere a careless change might read one from, synthesize the whole output
 * directory, and look for it. Likewise no private key of any kind: the CA key lives in KMS.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Testing } from 'cdktf';
import { loadDeploymentConfig } from '../../infra/config';
import { ProvisioningStack } from '../../infra/stack';
import { stubBundleDir, TEST_DEVICE_CA, TEST_FLEET_PUBLIC_KEY } from './synth';

const CANARY = 'c0ffee00canary1234567890abcdef42';
const CANARY_VARIABLES = ['IPSTACK_KEY', 'IPSTACK_ACCESS_KEY', 'IPSTACK_API_KEY', 'TF_VAR_ipstack_key'];

let files: string[] = [];

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

  beforeAll(() => {
    for (const name of CANARY_VARIABLES) process.env[name] = CANARY;
    const bundleDir = stubBundleDir();
    const stack = new ProvisioningStack(Testing.app(), {
      config: loadDeploymentConfig(),
      bundleDir,
      reconcilerBundleDir: bundleDir,
      fleetPublicKeyPem: TEST_FLEET_PUBLIC_KEY,
      deviceCa: TEST_DEVICE_CA,
    });
    files = filesUnder(Testing.fullSynth(stack));
  });

  it('appears nowhere in the synthesized output, even with a key in the environment', () => {
    expect(files.some((file) => file.endsWith('cdk.tf.json'))).toBe(true);
    for (const file of files) {
      expect({ file, hasCanary: readFileSync(file).includes(CANARY) }).toEqual({ file, hasCanary: false });
    }
  });
});

describe('private keys', () => {
  it('appear nowhere in the synthesized output: only certificates and public keys do', () => {
    const labels = new Set<string>();
    for (const file of files) {
      const text = readFileSync(file, 'latin1');
      expect({ file, privateKey: /PRIVATE KEY/.test(text) }).toEqual({ file, privateKey: false });
      for (const match of text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----/g)) labels.add(match[1]!);
    }
    expect([...labels].sort()).toEqual(['CERTIFICATE', 'PUBLIC KEY']);
  });
});
