/**
 * Admission under a burst, without the proxy's quota mode: N devices power on in one region at
 * once and every request runs at the same time (the built-in handler in this process, as a
 * Lambda that scales out would run it; each device sends a CSR), with AWS IoT's default rates scaled by a factor so the
 * budget binds. Devices wait Retry-After on 429 and back off on 5xx, as docs/protocol.md says.
 * Prints drain time ÷ the budget's bound, requests per device, the Retry-After spread, and
 * RegisterCertificate calls per device (from the AWS proxy's log).
 *
 *   make local-up && LOCAL_PORT_BASE=… npx tsx tests/bench/admission-burst.ts [devices, default 40] [rate factor, default 0.2]
 */
import '../support/quiet-powertools';
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { requestsPerSecond, scaledRates } from '../../functions/provisioning/admission-budget';
import { loadConfig } from '../../functions/provisioning/config';
import { awsDependencies, createHandler } from '../../functions/provisioning/http';
import { getCalls } from '../local/aws-proxy';
import { addDevice } from '../local/stack';
import { readStack, useLocalStack } from '../local/stack-state';
import { makeCsr, registryClient, v1Body } from '../integration/requests';

const stack = readStack();
useLocalStack(stack);
// Stockholm: no test provisions there.
const REGION = 'eu-north-1';
const STOCKHOLM = { 'cloudfront-viewer-latitude': '59.33', 'cloudfront-viewer-longitude': '18.07' };

async function main(): Promise<void> {
  const devices = Number(process.argv[2] ?? 40);
  const factor = Number(process.argv[3] ?? 0.2);
  const rates = scaledRates(factor);
  // ADMISSION_MAX_WAIT_MS and ADMISSION_JITTER_SECONDS set in this shell win over the stack's.
  const tuning = Object.fromEntries(
    ['ADMISSION_MAX_WAIT_MS', 'ADMISSION_JITTER_SECONDS'].flatMap((name) =>
      process.env[name] ? [[name, process.env[name] as string]] : [],
    ),
  );
  const environment: Record<string, string | undefined> = {
    ...process.env,
    ...stack.functionEnvironment,
    ...tuning,
    ADMISSION_RATES: JSON.stringify(rates),
  };
  const handler = createHandler(awsDependencies(loadConfig(environment)));
  const table = environment.ADMISSION_TABLE_NAME as string;
  await registryClient().send(new PutItemCommand({ TableName: table, Item: { region: { S: REGION } } }));
  const names = Array.from({ length: devices }, (_, index) => `burst-${process.pid}-${index}`);
  // With a CSR each: the keys are made before the burst, as on a device, not by this one process.
  const csrs = new Map<string, string>();
  for (const name of names) {
    await addDevice(stack, name);
    csrs.set(name, (await makeCsr(name)).pem);
  }
  const firstCall = (await getCalls(stack.faultsUrl)).at(-1)?.seq ?? 0;

  const retryAfters: number[] = [];
  const statuses = new Map<number, number>();
  const failures = new Set<string>();
  const started = performance.now();
  const requests = await Promise.all(
    names.map(async (thingName) => {
      for (let attempt = 1; ; attempt += 1) {
        const answer = await handler({
          headers: {
            'content-type': 'application/json',
            'x-origin-verify': stack.functionEnvironment.ORIGIN_VERIFY_SECRET as string,
            ...STOCKHOLM,
          },
          body: JSON.stringify(v1Body(thingName, { CSR: csrs.get(thingName) })),
          isBase64Encoded: false,
          requestContext: { http: { method: 'POST', sourceIp: '203.0.113.7' } },
        } as unknown as Parameters<typeof handler>[0]);
        statuses.set(answer.statusCode ?? 0, (statuses.get(answer.statusCode ?? 0) ?? 0) + 1);
        if (answer.statusCode === 200) return { attempt, ms: performance.now() - started };
        if ((answer.statusCode ?? 0) >= 500) failures.add(String(answer.body));
        const retryAfter = Number(answer.headers?.['retry-after'] ?? NaN);
        if (answer.statusCode === 429 && Number.isFinite(retryAfter)) {
          retryAfters.push(retryAfter);
          await new Promise((resolve) => setTimeout(resolve, retryAfter * 1000));
        } else {
          await new Promise((resolve) =>
            setTimeout(resolve, Math.random() * Math.min(60_000, 1000 * 2 ** attempt)),
          );
        }
      }
    }),
  );
  const drainMs = Math.max(...requests.map((request) => request.ms));
  const boundMs = (devices / requestsPerSecond(rates)) * 1000;
  const calls = await getCalls(stack.faultsUrl, firstCall);
  const registrations = calls.filter(
    (call) => call.what.includes(`iot ${REGION}`) && call.what.includes('/certificate/register'),
  );
  const attempts = requests.map((request) => request.attempt);
  const sortedRetry = [...retryAfters].sort((a, b) => a - b);
  console.log(
    `${devices} devices in ${REGION} at once, AWS IoT default rates × ${factor} (${requestsPerSecond(rates)} requests/s), ` +
      `maxWaitMs ${environment.ADMISSION_MAX_WAIT_MS}, jitterSeconds ${environment.ADMISSION_JITTER_SECONDS}`,
  );
  console.log(
    `| drain ÷ bound | requests per device, mean / max | RegisterCertificate per device | Retry-After min / median / max | answers |`,
  );
  console.log('|---|---|---|---|---|');
  console.log(
    `| ${(drainMs / boundMs).toFixed(2)} (${(drainMs / 1000).toFixed(1)} s ÷ ${(boundMs / 1000).toFixed(1)} s) | ` +
      `${(attempts.reduce((a, b) => a + b, 0) / devices).toFixed(2)} / ${Math.max(...attempts)} | ` +
      `${(registrations.length / devices).toFixed(2)} | ` +
      `${sortedRetry[0] ?? '-'} / ${sortedRetry[Math.floor(sortedRetry.length / 2)] ?? '-'} / ${sortedRetry.at(-1) ?? '-'} | ` +
      `${[...statuses].map(([status, count]) => `${status}×${count}`).join(', ')} |`,
  );
  for (const failure of failures) console.log(`5xx: ${failure}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
