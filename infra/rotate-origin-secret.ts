/**
 * `make rotate-origin-secret`: walks an origin secret rotation one step at a time, without an
 * outage. The function updates in seconds and CloudFront in minutes, so neither may ever send or
 * expect a value the other does not have:
 *   1. accept-next  the next secret is created; the function accepts the current and the next
 *   2. send-next    CloudFront sends the next one (make deploy waits until CloudFront has it)
 *   3. finish       generation + 1: the old secret is deleted, the function accepts only the new
 * Each run shows where the rotation is; `--step` writes the next step into the deployment
 * config, and `make deploy` carries it out. Run it again after each deploy.
 */
import '../functions/cli-runtime';
import { readFileSync, writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { DEFAULT_DEPLOYMENT_FILE, DeploymentConfig, loadDeploymentConfig } from './config';

export type OriginSecretState = DeploymentConfig['originSecret'];

export interface RotationStep {
  readonly next: OriginSecretState;
  /** What deploying `next` changes, for the operator. */
  readonly explanation: string;
}

/** The step after `state`. Pure: tests/infra/rotate-origin-secret.test.ts walks a rotation with it. */
export function nextRotationStep(state: OriginSecretState): RotationStep {
  const { generation } = state;
  switch (state.rotation) {
    case 'none':
      return {
        next: { generation, rotation: 'accept-next' },
        explanation:
          `step 1 of 3: creates secret generation ${generation + 1}; the function accepts it beside ` +
          `generation ${generation}. CloudFront still sends generation ${generation}.`,
      };
    case 'accept-next':
      return {
        next: { generation, rotation: 'send-next' },
        explanation:
          `step 2 of 3: CloudFront sends generation ${generation + 1} (make deploy returns once every ` +
          `edge has it); the function still accepts both.`,
      };
    case 'send-next':
      return {
        next: { generation: generation + 1, rotation: 'none' },
        explanation:
          `step 3 of 3: deletes generation ${generation}; the function accepts only generation ` +
          `${generation + 1}, which CloudFront already sends.`,
      };
  }
}

export function describeState(state: OriginSecretState): string {
  switch (state.rotation) {
    case 'none':
      return `no rotation under way: generation ${state.generation} is sent and accepted`;
    case 'accept-next':
      return `rotation under way: the function accepts generations ${state.generation} and ${state.generation + 1}; CloudFront sends ${state.generation}`;
    case 'send-next':
      return `rotation under way: CloudFront sends generation ${state.generation + 1}; the function still accepts ${state.generation} too`;
  }
}

function main(): void {
  const program = new Command('rotate-origin-secret')
    .description(
      'Rotate the secret CloudFront sends to the API (x-origin-verify) in three deploys, without an outage:\n' +
        '  1. accept-next: the function accepts the current and the next secret   → make deploy\n' +
        '  2. send-next:   CloudFront sends the next secret                        → make deploy\n' +
        '  3. finish:      the old secret is deleted                               → make deploy\n' +
        'Without --step it prints where the rotation is and what the next step does.\n' +
        'The config file is DEPLOYMENT_CONFIG or infra/deployment.json.',
    )
    .option('--step', 'write the next step into the deployment config (then run make deploy)')
    .showHelpAfterError()
    .parse(process.argv);
  const options = program.opts<{ step?: boolean }>();
  const file = process.env.DEPLOYMENT_CONFIG || DEFAULT_DEPLOYMENT_FILE;
  const config = loadDeploymentConfig(file);
  const step = nextRotationStep(config.originSecret);
  console.log(describeState(config.originSecret));
  if (!options.step) {
    console.log(`next: ${step.explanation}`);
    console.log('run `make rotate-origin-secret ARGS=--step`, then `make deploy`');
    return;
  }
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  raw.originSecret = step.next;
  writeFileSync(file, `${JSON.stringify(raw, null, 2)}\n`);
  console.log(`wrote originSecret ${JSON.stringify(step.next)} to ${file}: ${step.explanation}`);
  console.log('now: `make deploy` (and commit the config change)');
}

if (require.main === module) {
  try {
    main();
  } catch (error) {
    console.error(`rotate-origin-secret: ${(error as Error).message}`);
    process.exit(1);
  }
}
