/**
 * Synthesizes the stack for infra tests without a Lambda build: the assets point at a temporary
 * directory holding a stub index.mjs and a chunk, laid out as `make build` lays out a package. The CA certificate is a fixture whose key was discarded.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Testing } from 'cdktf';
import { DeploymentConfig, loadDeploymentConfig } from '../../infra/config';
import { DeviceCaFiles, ProvisioningStack } from '../../infra/stack';
import { BUNDLE_ENTRY_FILE } from '../../functions/bundle-layout';

export const TEST_FLEET_PUBLIC_KEY = readFileSync(
  join(__dirname, 'fixtures', 'fleet-public-key.pem'),
  'utf8',
);

export const TEST_CA_CERTIFICATE = readFileSync(join(__dirname, 'fixtures', 'device-ca.pem'), 'utf8');
export const TEST_PREVIOUS_CA_CERTIFICATE = readFileSync(
  join(__dirname, 'fixtures', 'device-ca-previous.pem'),
  'utf8',
);
export const TEST_DEVICE_CA: DeviceCaFiles = {
  certificatePem: TEST_CA_CERTIFICATE,
  source: 'tests/infra/fixtures/device-ca.pem',
};

export interface TerraformJson {
  terraform: Record<string, unknown> & { required_providers: Record<string, { source: string }> };
  provider: { aws: Array<{ region: string; alias?: string }> };
  resource: Record<string, Record<string, Record<string, unknown>>>;
  output: Record<string, { value: unknown }>;
  data: Record<string, Record<string, Record<string, unknown>>>;
}

export interface Synthesized {
  readonly text: string;
  readonly json: TerraformJson;
  readonly stack: ProvisioningStack;
}

export function stubBundleDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'provisioning-bundle-'));
  mkdirSync(join(dir, 'chunks'));
  writeFileSync(join(dir, 'chunks', 'answer.mjs'), 'export const answer = { statusCode: 503 };\n');
  writeFileSync(
    join(dir, BUNDLE_ENTRY_FILE),
    "import { answer } from './chunks/answer.mjs';\nexport const handler = async () => answer;\n",
  );
  return dir;
}

export function synthesize(
  overrides: Partial<DeploymentConfig> = {},
  /** null: no CA certificate yet (the bootstrap stack). */
  deviceCa: DeviceCaFiles | null = TEST_DEVICE_CA,
): Synthesized {
  const config = { ...loadDeploymentConfig(), ...overrides };
  const app = Testing.app();
  const bundleDir = stubBundleDir();
  const stack = new ProvisioningStack(app, {
    config,
    bundleDir,
    reconcilerBundleDir: bundleDir,
    fleetPublicKeyPem: TEST_FLEET_PUBLIC_KEY,
    deviceCa: deviceCa ?? undefined,
  });
  const text = Testing.synth(stack);
  return { text, json: JSON.parse(text) as TerraformJson, stack };
}

/** The single resource of a type (fails the test if there are several or none). */
export function only(json: TerraformJson, type: string): Record<string, unknown> {
  const all = Object.values(json.resource[type] ?? {});
  if (all.length !== 1) throw new Error(`expected exactly one ${type}, found ${all.length}`);
  return all[0] as Record<string, unknown>;
}

export function all(json: TerraformJson, type: string): Record<string, unknown>[] {
  return Object.values(json.resource[type] ?? {});
}

/** The single resource of a type whose logical id (its construct path) starts with `prefix`. */
export function byId(json: TerraformJson, type: string, prefix: string): Record<string, unknown> {
  const matching = Object.entries(json.resource[type] ?? {}).filter(([id]) => id.startsWith(prefix));
  if (matching.length !== 1) {
    throw new Error(`expected exactly one ${type} named ${prefix}…, found ${matching.length}`);
  }
  return matching[0]![1];
}

/** One statement of an IAM policy document, as the synthesized JSON carries it. */
export interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: string | string[];
  Principal?: { AWS?: string; Service?: string };
  Condition?: Record<string, Record<string, string | string[]>>;
}

/** The statements of a policy document given as JSON text. */
export const statements = (policy: unknown): Statement[] =>
  (JSON.parse(policy as string) as { Statement: Statement[] }).Statement;

/** IAM allows one value or a list: always a list. */
export const list = <T>(value: T | T[]): T[] => (Array.isArray(value) ? value : [value]);

/** A cache behaviour of a CloudFront distribution, as the synthesized JSON carries it. */
export interface CacheBehaviour {
  path_pattern?: string;
  target_origin_id: string;
  viewer_protocol_policy: string;
  allowed_methods: string[];
  cache_policy_id?: string;
  origin_request_policy_id?: string;
}

/** The ordered behaviours, in order, then the default one (which has no path pattern). */
export function distributionBehaviours(distribution: Record<string, unknown>): CacheBehaviour[] {
  const ordered = (distribution.ordered_cache_behavior as CacheBehaviour[] | undefined) ?? [];
  return [...ordered, distribution.default_cache_behavior as CacheBehaviour];
}

/**
 * The behaviour CloudFront applies to a request path: the first ordered behaviour whose pattern
 * matches (`*` any run of characters, `?` one character, case-sensitive), else the default.
 */
export function behaviourFor(behaviours: readonly CacheBehaviour[], path: string): CacheBehaviour {
  const matches = (pattern: string) => {
    const anchored = pattern.startsWith('/') ? pattern : `/${pattern}`;
    const expression = anchored
      .split('')
      .map((character) =>
        character === '*' ? '.*' : character === '?' ? '.' : character.replace(/[.+^${}()|[\]\\]/g, '\\$&'),
      )
      .join('');
    return new RegExp(`^${expression}$`).test(path);
  };
  const found = behaviours.find((behaviour) => !behaviour.path_pattern || matches(behaviour.path_pattern));
  if (!found) throw new Error(`no cache behaviour serves ${path}`);
  return found;
}
