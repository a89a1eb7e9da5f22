/**
 * What admission control costs a request when there is no storm: the built-in handler, in this
 * process, provisions devices one at a time with admission on and off (alternating), on the
 * running local stack. Prints AWS calls per request by kind, dependent AWS stages (critical path
 * with a delay before every AWS call) and p50 latency, plain and delayed.
 *
 *   make local-up && LOCAL_PORT_BASE=… npx tsx tests/bench/admission-cost.ts [requests per mode, default 15] [delay ms, default 50]
 */
import '../support/quiet-powertools';
import { loadConfig } from '../../functions/provisioning/config';
import { awsDependencies, createHandler } from '../../functions/provisioning/http';
import { clearFaults, getCalls, setFaults } from '../local/aws-proxy';
import { addDevice } from '../local/stack';
import { readStack, useLocalStack } from '../local/stack-state';
import { criticalPath } from './critical-path';
import { callsPerRequest } from './aws-calls';
import { v1Body } from '../integration/requests';

const stack = readStack();
useLocalStack(stack);
const FRANKFURT = { 'cloudfront-viewer-latitude': '50.11', 'cloudfront-viewer-longitude': '8.68' };

interface Mode {
  readonly label: string;
  readonly handler: ReturnType<typeof createHandler>;
  readonly plain: number[];
  readonly delayed: number[];
  readonly paths: number[];
  readonly calls: string[];
}

function mode(label: string, admission: boolean): Mode {
  const environment = { ...process.env, ...stack.functionEnvironment };
  if (!admission) delete environment.ADMISSION_TABLE_NAME;
  return {
    label,
    handler: createHandler(awsDependencies(loadConfig(environment))),
    plain: [],
    delayed: [],
    paths: [],
    calls: [],
  };
}

async function provisionOnce(which: Mode, delayed: boolean): Promise<void> {
  const thingName = `admission-cost-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  await addDevice(stack, thingName);
  const after = (await getCalls(stack.faultsUrl)).at(-1)?.seq ?? 0;
  const started = performance.now();
  const answer = await which.handler({
    headers: {
      'content-type': 'application/json',
      'x-origin-verify': stack.functionEnvironment.ORIGIN_VERIFY_SECRET as string,
      ...FRANKFURT,
    },
    body: JSON.stringify(v1Body(thingName)),
    isBase64Encoded: false,
    requestContext: { http: { method: 'POST', sourceIp: '203.0.113.7' } },
  } as unknown as Parameters<typeof which.handler>[0]);
  const ms = performance.now() - started;
  if (answer.statusCode !== 200)
    throw new Error(`${which.label}: ${answer.statusCode} ${String(answer.body)}`);
  (delayed ? which.delayed : which.plain).push(ms);
  if (!delayed) return;
  const calls = await getCalls(stack.faultsUrl, after);
  which.paths.push(criticalPath(calls));
  which.calls.push(...calls.map((call) => call.what));
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
};

async function main(): Promise<void> {
  const perMode = Number(process.argv[2] ?? 15);
  const delayMs = Number(process.argv[3] ?? 50);
  const modes = [mode('without admission', false), mode('with admission', true)];
  // Warm both containers (policy, endpoint, clients) before measuring.
  for (const which of modes) await provisionOnce(which, false);
  for (const which of modes) which.plain.length = 0;
  for (const delayed of [false, true]) {
    if (delayed) await setFaults(stack.faultsUrl, { delayMs });
    for (let i = 0; i < perMode; i += 1) for (const which of modes) await provisionOnce(which, delayed);
    await clearFaults(stack.faultsUrl);
  }
  console.log(
    `| ${perMode} provisionings each, one at a time | p50 ms | p50 ms, ${delayMs} ms before every AWS call | dependent AWS stages (median) | AWS calls per request |`,
  );
  console.log('|---|---|---|---|---|');
  for (const which of modes) {
    console.log(
      `| ${which.label} | ${median(which.plain).toFixed(0)} | ${median(which.delayed).toFixed(0)} | ${median(which.paths)} | ${callsPerRequest(which.calls, which.delayed.length)} |`,
    );
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
