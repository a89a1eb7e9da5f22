/**
 * `make bench`: prints the numbers behind the speed goals. Not a test: nothing here asserts.
 *
 * - p50/p99 end-to-end latency through the local edge (moto as AWS);
 * - the same with a fixed delay in front of every AWS call; the growth divided by the delay is
 *   the number of dependent AWS round trips on the request path (goal ≤ 4; the 2018 sample: 8 AWS calls in series, 9 with the ipstack lookup);
 * - bundle size, and the cold start of the bundled handler (module init in a fresh process).
 */
import { spawnSync } from 'node:child_process';
import { statSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Command, InvalidArgumentError } from 'commander';
import { addDevice, readStack, startStack, stopStack } from '../local/stack';

// Loaded after the stack is up: the request helpers read .local/stack.json when imported.
type Requests = typeof import('../integration/requests');
let requests: Requests;

function percentile(sorted: number[], p: number): number {
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] ?? NaN;
}

async function forwardedCalls(faultsUrl: string): Promise<number> {
  const state = (await (await fetch(faultsUrl)).json()) as { forwarded: number };
  return state.forwarded;
}

async function measure(
  label: string,
  count: number,
  progress: (line: string) => void,
): Promise<{ p50: number; p99: number; awsCallsPerRequest: number }> {
  const stack = readStack();
  let awsCalls = 0;
  const { post, uniqueThingName, v1Body, PLACES } = requests;
  const latencies: number[] = [];
  for (let i = 0; i < count; i += 1) {
    const thingName = uniqueThingName('bench');
    await addDevice(stack, thingName);
    const callsBefore = await forwardedCalls(stack.faultsUrl);
    const started = performance.now();
    const answer = await post(v1Body(thingName), PLACES.tokyo);
    latencies.push(performance.now() - started);
    awsCalls += (await forwardedCalls(stack.faultsUrl)) - callsBefore;
    if (answer.status !== 200)
      throw new Error(`${label}: request ${i} answered ${answer.status} ${JSON.stringify(answer.body)}`);
    if ((i + 1) % 20 === 0) progress(`  ${label}: ${i + 1}/${count}`);
  }
  latencies.sort((a, b) => a - b);
  return {
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    awsCallsPerRequest: awsCalls / count,
  };
}

function coldStart(bundle: string, environment: Record<string, string>, runs: number): number[] {
  const script = `const t=process.hrtime.bigint();require(${JSON.stringify(bundle)});process.stdout.write(String(Number(process.hrtime.bigint()-t)/1e6))`;
  const times: number[] = [];
  for (let i = 0; i < runs; i += 1) {
    const run = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, ...environment },
      encoding: 'utf8',
    });
    if (run.status !== 0) throw new Error(`bundle failed to load: ${run.stderr}`);
    times.push(Number(run.stdout));
  }
  return times.sort((a, b) => a - b);
}

function positiveInteger(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) throw new InvalidArgumentError('must be a whole number ≥ 1');
  return parsed;
}

async function main(): Promise<void> {
  const options = new Command('bench')
    .description(
      'Latency, dependent AWS round trips, bundle size and cold start of the provisioning function',
    )
    .option('-n, --requests <count>', 'requests per measurement', positiveInteger, 60)
    .option('-d, --delay <ms>', 'delay injected in front of every AWS call', positiveInteger, 50)
    .parse()
    .opts<{ requests: number; delay: number }>();
  const count = options.requests;
  const delayMs = options.delay;
  const log = (line: string) => process.stdout.write(`${line}\n`);

  const { started } = await startStack({ log, stopWithOwner: true });
  requests = await import('../integration/requests');
  const { clearFaults, setFaults } = requests;
  try {
    const stack = readStack();
    log('warming up (first request learns the endpoint and ensures the policy per region)…');
    await measure('warm-up', 3, log);
    await clearFaults();
    log(`measuring ${count} provisioning requests through the local edge…`);
    const plain = await measure('no delay', count, log);
    await setFaults({ delayMs });
    log(`measuring ${count} requests with ${delayMs} ms before every AWS call…`);
    const delayed = await measure(`+${delayMs} ms`, count, log);
    await clearFaults();
    const roundTrips = (delayed.p50 - plain.p50) / delayMs;

    const bundle = join(__dirname, '..', '..', 'dist', 'provisioning', 'index.js');
    const bytes = statSync(bundle).size;
    const gzipped = gzipSync(readFileSync(bundle)).length;
    const cold = coldStart(bundle, stack.functionEnvironment, 7);

    log('');
    log('| measure | value |');
    log('|---|---|');
    log(
      `| end-to-end latency p50 / p99 (local edge → handler → moto) | ${plain.p50.toFixed(1)} ms / ${plain.p99.toFixed(1)} ms |`,
    );
    log(
      `| same with ${delayMs} ms per AWS call, p50 / p99 | ${delayed.p50.toFixed(1)} ms / ${delayed.p99.toFixed(1)} ms |`,
    );
    log(
      `| dependent AWS round trips on the request path ((p50 delayed − p50) / ${delayMs} ms) | ${roundTrips.toFixed(2)} (goal ≤ 4, the 2018 sample: 8 AWS calls in series, 9 with ipstack; each injected delay overshoots by ~1–2 ms) |`,
    );
    log(`| AWS calls per request (dependent or not) | ${plain.awsCallsPerRequest.toFixed(2)} |`);
    log(
      `| bundle dist/provisioning/index.js | ${(bytes / 1024).toFixed(0)} KiB (${(gzipped / 1024).toFixed(0)} KiB gzipped) |`,
    );
    log(
      `| cold start: loading the bundle and the config, median / max of ${cold.length} | ${percentile(cold, 50).toFixed(0)} ms / ${(cold[cold.length - 1] ?? NaN).toFixed(0)} ms |`,
    );
  } finally {
    await requests.clearFaults().catch(() => undefined);
    if (started) await stopStack({ log });
  }
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${(error as Error).message}`);
  process.exit(1);
});
