/**
 * What a lost key-mode answer costs, with answer recovery on and off: N devices with no CSR are
 * provisioned, each answer is "lost" (thrown away here), and each device asks again with a new v2
 * request, as firmware that timed out would. Prints, per device, RegisterCertificate and all AWS
 * IoT calls in the devices' region, and KMS calls by operation (from the AWS proxy's log), and
 * whether every retry got a working key; and the dependent AWS stages of the first request and of
 * the retry (median critical path from the proxy's call log, with DELAY_MS in front of every AWS
 * call so that overlapping calls show as parallel). The built-in handler runs in this process twice: with
 * the local stack's environment (recovery on: ANSWER_SEAL_KEY_ID set) and without the seal key.
 *
 *   make local-up && LOCAL_PORT_BASE=… npx tsx tests/bench/lost-answers.ts [devices, default 20]
 *
 * Nothing else may use the local stack meanwhile: KMS calls are counted for the whole stack.
 */
import '../support/quiet-powertools';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { loadConfig } from '../../functions/provisioning/config';
import { awsDependencies, createHandler } from '../../functions/provisioning/http';
import { clearFaults, getCalls, setFaults } from '../local/aws-proxy';
import { criticalPath } from './critical-path';
import { median } from './stats';
import { addDevice } from '../local/stack';
import { readStack, useLocalStack } from '../local/stack-state';
import { registryClient, v2Body } from '../integration/requests';

const stack = readStack();
useLocalStack(stack);
// Stockholm: no test provisions there, so IoT calls can be counted by region.
const REGION = 'eu-north-1';
const STOCKHOLM = { 'cloudfront-viewer-latitude': '59.33', 'cloudfront-viewer-longitude': '18.07' };

type Handler = ReturnType<typeof createHandler>;
/** Injected before every AWS call: parallel calls overlap, dependent ones chain. */
const DELAY_MS = 30;

/**
 * One request, the dependent AWS stages it took (nothing else runs meanwhile), and whether the
 * seal's KMS Encrypt lengthened them (the same chain without it is shorter).
 */
async function staged<T>(
  request: () => Promise<T>,
): Promise<{ answer: T; stages: number; sealLengthened: boolean }> {
  const before = (await getCalls(stack.faultsUrl)).at(-1)?.seq ?? 0;
  const answer = await request();
  const calls = await getCalls(stack.faultsUrl, before);
  const stages = criticalPath(calls);
  const withoutSeal = criticalPath(calls.filter((call) => !call.what.endsWith('.Encrypt')));
  return { answer, stages, sealLengthened: withoutSeal < stages };
}

async function ask(
  handler: Handler,
  thingName: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const answer = await handler({
    headers: {
      'content-type': 'application/json',
      'x-origin-verify': stack.functionEnvironment.ORIGIN_VERIFY_SECRET as string,
      ...STOCKHOLM,
    },
    body: JSON.stringify(v2Body(thingName)),
    isBase64Encoded: false,
    requestContext: { http: { method: 'POST', sourceIp: '203.0.113.7' } },
  } as unknown as Parameters<Handler>[0]);
  return { status: answer.statusCode ?? 0, body: JSON.parse(String(answer.body)) as Record<string, unknown> };
}

async function run(label: string, recovery: boolean, devices: number): Promise<void> {
  const environment: Record<string, string | undefined> = { ...process.env, ...stack.functionEnvironment };
  if (!recovery) delete environment.ANSWER_SEAL_KEY_ID;
  const handler = createHandler(awsDependencies(loadConfig(environment)));
  const names = Array.from({ length: devices }, (_, index) => `lost-${label}-${process.pid}-${index}`);
  for (const name of names) await addDevice(stack, name);
  const firstCall = (await getCalls(stack.faultsUrl)).at(-1)?.seq ?? 0;

  let working = 0;
  let recovered = 0;
  const firstStages: number[] = [];
  const retryStages: number[] = [];
  let sealLengthened = 0;
  for (const thingName of names) {
    const {
      answer: lost,
      stages: first,
      sealLengthened: longer,
    } = await staged(() => ask(handler, thingName));
    if (longer) sealLengthened += 1;
    if (lost.status !== 200) throw new Error(`${thingName}: first answer ${lost.status}`);
    const { answer: retry, stages: again } = await staged(() => ask(handler, thingName));
    firstStages.push(first);
    retryStages.push(again);
    if (retry.status !== 200) throw new Error(`${thingName}: retry answered ${retry.status}`);
    const certificate = new X509Certificate(String(retry.body.certificatePem));
    if (certificate.checkPrivateKey(createPrivateKey(String(retry.body.PrivateKey)))) working += 1;
    if (retry.body.PrivateKey === lost.body.PrivateKey) recovered += 1;
  }

  // The stage counting's own calls to the proxy are not AWS calls; the log has only AWS calls.
  const calls = (await getCalls(stack.faultsUrl, firstCall)).map((call) => call.what);
  const per = (count: number) => (count / devices).toFixed(2);
  const iot = calls.filter((what) => what.startsWith(`iot ${REGION} `));
  const registrations = iot.filter((what) => what.includes('/certificate/register')).length;
  const kms = (operation: string) =>
    calls.filter((what) => what.startsWith('kms ') && what.endsWith(`.${operation}`)).length;
  console.log(
    `recovery ${label.padEnd(3)}: ${devices} devices, provision + lost answer + retry each: ` +
      `RegisterCertificate ${per(registrations)}, AWS IoT calls ${per(iot.length)}, ` +
      `KMS Sign ${per(kms('Sign'))}, Encrypt ${per(kms('Encrypt'))}, Decrypt ${per(kms('Decrypt'))} per device; ` +
      `retries with the same key ${recovered}/${devices}, with a working key ${working}/${devices}; ` +
      `dependent AWS stages first request ${spread(firstStages)}, retry ${spread(retryStages)} ` +
      `(min/median/max); first requests the seal's Encrypt made longer: ${sealLengthened}/${devices}`,
  );
}

const spread = (values: readonly number[]) =>
  `${Math.min(...values)}/${median(values)}/${Math.max(...values)}`;

async function main(): Promise<void> {
  const devices = Number(process.argv[2] ?? 20);
  const admissionTable = stack.functionEnvironment.ADMISSION_TABLE_NAME;
  if (admissionTable) {
    // A fresh schedule for the region: earlier runs' slots don't make these devices wait.
    await registryClient().send(
      new PutItemCommand({ TableName: admissionTable, Item: { region: { S: REGION } } }),
    );
  }
  await setFaults(stack.faultsUrl, { delayMs: DELAY_MS });
  try {
    await run('on', true, devices);
    await run('off', false, devices);
  } finally {
    await clearFaults(stack.faultsUrl);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
