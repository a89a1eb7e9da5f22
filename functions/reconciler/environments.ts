/**
 * Where the operator tools (`make reconcile`, `gdp-admin`) point: the running local stack, or a
 * deployment described by infra/deployment.json reached with the caller's AWS credentials. Both
 * give the reconciler's environment (RECONCILER_ENVIRONMENT), which names the table, the regions,
 * the policy and the CA: everything the registry and IoT adapters need.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { loadDeploymentConfig, repoPath } from '../../infra/config';
import { reconcilerEnvironment } from '../../infra/reconciler-environment';
import { ConfigError } from '../provisioning/config';

export const STACK_FILE = path.resolve(__dirname, '..', '..', '.local', 'stack.json');

/** The local stack's function environment (endpoint, credentials, table, regions, CA). */
export function localStackEnvironment(): Record<string, string> {
  if (!existsSync(STACK_FILE)) {
    throw new ConfigError(
      `the local stack is not running (${STACK_FILE} missing): run \`make local-up\` first`,
    );
  }
  const stack = JSON.parse(readFileSync(STACK_FILE, 'utf8')) as {
    functionEnvironment?: Record<string, string>;
  };
  if (!stack.functionEnvironment) throw new ConfigError(`${STACK_FILE} has no functionEnvironment`);
  return stack.functionEnvironment;
}

/**
 * The environment the scheduled reconciler gets, built from infra/deployment.json (or
 * DEPLOYMENT_CONFIG) and its CA certificate file; AWS credentials come from the usual chain.
 */
export function deploymentEnvironment(): Record<string, string> {
  let config;
  try {
    config = loadDeploymentConfig();
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
  const caFile = repoPath(config.caCertificateFile);
  if (!existsSync(caFile)) {
    throw new ConfigError(
      `${config.caCertificateFile} is missing: the deployment has no device CA yet (docs/deploy.md, "Device CA")`,
    );
  }
  const environment = reconcilerEnvironment(config, { caCertificatePem: readFileSync(caFile, 'utf8') });
  return Object.fromEntries(
    Object.entries(environment).filter((entry): entry is [string, string] => entry[1] !== undefined),
  );
}
