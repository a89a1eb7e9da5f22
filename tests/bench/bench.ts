/**
 * `make bench`: prints the numbers behind the speed goals. Not a test: nothing here asserts.
 *
 * Ours is the built package (dist/provisioning/index.mjs, `make build`), run in a local sandbox
 * behind a private local edge; beside it, in the same run, the 2018 sample's call pattern
 * (sample-handler.ts) behind another edge. Both talk to the same moto through the stack's AWS
 * proxy and get the same injected delay. Rounds alternate ours and the sample, plain and delayed,
 * so drift on a busy machine hits both alike.
 *
 * - Latency p50/p99 end to end (edge → handler → moto), plain and with a fixed delay in front of
 *   every AWS call; the sample/ours ratio with the delay.
 * - Dependent AWS stages per request, two ways: the critical path rebuilt from the proxy's call
 *   log (calls that overlap in time ran in parallel; the longest chain of calls each starting after
 *   the previous one finished), and the latency growth per round divided by the delay. Each
 *   printed as min / median / max across rounds.
 * - The package: entry chunk, what the init loads, cold start (module init in a fresh process),
 *   RSS after the init and after 100 requests.
 * - /device-status (status.ts): devices provisioned in key mode, then status calls signed with
 *   each device's certificate key, one at a time; latency p50/p99 and the AWS calls each makes.
 */
import '../../functions/cli-runtime';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, platform, arch, tmpdir, totalmem } from 'node:os';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { Command, InvalidArgumentError } from 'commander';
import { BUNDLE_ENTRY_FILE, bundleDir, bundleLayout, metafilePath } from '../../functions/bundle-layout';
import { clearFaults, getCalls, setFaults } from '../local/aws-proxy';
import { criticalPath } from './critical-path';
import { callsPerRequest } from './aws-calls';
import { BenchDevice, measureStatus, provisionForStatus, StatusRun } from './status';
import { buildEvent, Edge, ROUTE_PATH } from '../local/edge';
import { addDevices, startFunctionEdge } from './edges';
import { median, percentile, sortedCopy } from './stats';
import { LocalStack, readStack, startStack, stopStack } from '../local/stack';

const REPO_ROOT = join(__dirname, '..', '..');
const ENTRY = join(bundleDir('provisioning'), BUNDLE_ENTRY_FILE);
const SAMPLE_HANDLER = 'tests/bench/sample-handler.ts';
// Tokyo, as CloudFront would place the device: both services provision into ap-northeast-1.
const VIEWER = {
  'x-local-viewer-latitude': '35.6895',
  'x-local-viewer-longitude': '139.6917',
  'x-local-viewer-country': 'JP',
};

// Loaded after the stack is up: the request helpers read .local/stack.json when imported.
type Requests = typeof import('../integration/requests');
let requests: Requests;

interface Contender {
  readonly label: string;
  readonly edge: Edge;
  readonly thingNames: string[];
  readonly plain: number[];
  readonly delayed: number[];
  /** Per round: critical path of each delayed request, latencies plain and delayed. */
  readonly rounds: { paths: number[]; plain: number[]; delayed: number[] }[];
  calls: number;
  callRequests: number;
}

async function provisionOnce(contender: Contender, delayed: boolean): Promise<{ ms: number; path?: number }> {
  const stack = readStack();
  const thingName = contender.thingNames.pop();
  if (!thingName) throw new Error(`${contender.label}: ran out of seeded devices`);
  const lastSeq = delayed ? ((await getCalls(stack.faultsUrl)).at(-1)?.seq ?? 0) : 0;
  const started = performance.now();
  const response = await fetch(contender.edge.provisioningUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...VIEWER },
    body: JSON.stringify(requests.v1Body(thingName)),
  });
  const body = (await response.json()) as { status?: string; message?: string };
  const ms = performance.now() - started;
  if (response.status !== 200 || body.status !== 'success')
    throw new Error(`${contender.label}: ${thingName} answered ${response.status} ${JSON.stringify(body)}`);
  if (!delayed) return { ms };
  // Calls that finished after we read the answer are not this request's (there are none: one
  // request at a time, and the bench's own calls happen outside the window).
  const calls = await getCalls(stack.faultsUrl, lastSeq);
  contender.calls += calls.length;
  contender.callRequests += 1;
  return { ms, path: criticalPath(calls) };
}

async function runBatch(contender: Contender, count: number, delayed: boolean): Promise<void> {
  const round = contender.rounds.at(-1) as Contender['rounds'][number];
  for (let i = 0; i < count; i += 1) {
    const { ms, path } = await provisionOnce(contender, delayed);
    (delayed ? contender.delayed : contender.plain).push(ms);
    (delayed ? round.delayed : round.plain).push(ms);
    if (path !== undefined) round.paths.push(path);
  }
}

function coldStarts(environment: Record<string, string>, runs: number): number[] {
  const script =
    `const t=performance.now();await import(${JSON.stringify(pathToFileURL(ENTRY).href)});` +
    'process.stdout.write(String(performance.now()-t))';
  const times: number[] = [];
  for (let i = 0; i < runs; i += 1) {
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, ...environment },
      encoding: 'utf8',
    });
    if (run.status !== 0) throw new Error(`bundle failed to load: ${run.stderr}`);
    times.push(Number(run.stdout));
  }
  return sortedCopy(times);
}

/**
 * RSS of a fresh process that imports the package (the init), then serves `thingNames.length`
 * requests in-process, one at a time, as a Lambda sandbox would: no tsx, no edge in that process.
 */
function residentSetSize(stack: LocalStack, thingNames: readonly string[]): { init: number; after: number } {
  const dir = mkdtempSync(join(tmpdir(), 'bench-rss-'));
  try {
    const events = thingNames.map((thingName) =>
      buildEvent(
        {
          method: 'POST',
          url: ROUTE_PATH,
          rawHeaders: ['content-type', 'application/json', ...Object.entries(VIEWER).flat()],
          body: Buffer.from(JSON.stringify(requests.v1Body(thingName))),
        },
        {
          accountId: stack.accountId,
          apiId: 'bench',
          region: stack.homeRegion,
          originVerifySecret: stack.originVerifySecret,
        },
      ),
    );
    const eventsFile = join(dir, 'events.json');
    writeFileSync(eventsFile, JSON.stringify(events));
    const script = [
      `import { readFileSync } from 'node:fs';`,
      `const events = JSON.parse(readFileSync(${JSON.stringify(eventsFile)}, 'utf8'));`,
      `const { handler } = await import(${JSON.stringify(pathToFileURL(ENTRY).href)});`,
      `const init = process.memoryUsage().rss;`,
      `for (const event of events) {`,
      `  const answer = await handler(event, { getRemainingTimeInMillis: () => 10000 });`,
      `  if (answer.statusCode !== 200) throw new Error(answer.statusCode + ' ' + answer.body);`,
      `}`,
      `process.stdout.write('\\n' + JSON.stringify({ init, after: process.memoryUsage().rss }) + '\\n');`,
    ].join('\n');
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, ...stack.functionEnvironment },
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    if (run.status !== 0) throw new Error(`RSS probe failed: ${run.stderr.slice(-2000)}`);
    // The last line; the function's own log lines (one per request, as in Lambda) come before it.
    return JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '') as { init: number; after: number };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function positiveInteger(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) throw new InvalidArgumentError('must be a whole number ≥ 1');
  return parsed;
}

const ms = (value: number) => `${value.toFixed(1)} ms`;
const kib = (bytes: number) => `${(bytes / 1024).toFixed(0)} KiB`;
const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
const spread = (values: readonly number[]) => {
  const sorted = sortedCopy(values);
  return `${(sorted[0] ?? NaN).toFixed(2)} / ${median(sorted).toFixed(2)} / ${(sorted.at(-1) ?? NaN).toFixed(2)}`;
};

interface Options {
  requests: number;
  rounds: number;
  delay: number;
  statusDevices: number;
  statusCalls: number;
  statusOnly?: boolean;
}

type Log = (line: string) => void;
type EdgeFor = (handlerModule: string, label: string) => Promise<Edge>;

/** Seeds `how` new unprovisioned devices named after `prefix`, 16 writes at a time. */
async function seed(stack: LocalStack, prefix: string, how: number): Promise<string[]> {
  const names = Array.from({ length: how }, () => requests.uniqueThingName(prefix));
  await addDevices(stack, names);
  return names;
}

/** Ours beside the 2018 sample's pattern, the package, cold start and memory: the table lines. */
async function comparison(stack: LocalStack, ours: Edge, edgeFor: EdgeFor, options: Options, log: Log) {
  const { rounds, delay: delayMs } = options;
  const perRound = Math.ceil(options.requests / rounds);
  const count = perRound * rounds;
  const contender = async (label: string, edge: Edge): Promise<Contender> => ({
    label,
    edge,
    thingNames: [],
    plain: [],
    delayed: [],
    rounds: [],
    calls: 0,
    callRequests: 0,
  });
  const oursContender = await contender('ours', ours);
  const sample = await contender('2018 sample', await edgeFor(SAMPLE_HANDLER, 'sample'));
  const contenders = [oursContender, sample];

  const warmUp = 3;
  const rssRequests = 100;
  log(`seeding ${2 * (2 * count + warmUp) + rssRequests} devices…`);
  for (const each of contenders)
    each.thingNames.push(
      ...(await seed(stack, `bench-${each === oursContender ? 'ours' : 'sample'}`, 2 * count + warmUp)),
    );
  const rssDevices = await seed(stack, 'bench-rss', rssRequests);

  log('warming up (the first requests learn the endpoint and the policy, and fill the key pool)…');
  for (const each of contenders) {
    each.rounds.push({ paths: [], plain: [], delayed: [] });
    await runBatch(each, warmUp, false);
    each.rounds.pop();
    each.plain.length = 0;
  }

  for (let round = 1; round <= rounds; round += 1) {
    log(
      `round ${round}/${rounds}: ${perRound} requests each, plain, then with ${delayMs} ms before every AWS call…`,
    );
    for (const each of contenders) each.rounds.push({ paths: [], plain: [], delayed: [] });
    for (const each of contenders) await runBatch(each, perRound, false);
    await setFaults(stack.faultsUrl, { delayMs });
    try {
      for (const each of contenders) await runBatch(each, perRound, true);
    } finally {
      await clearFaults(stack.faultsUrl);
    }
  }

  log('cold starts and memory of the package…');
  const cold = coldStarts(stack.functionEnvironment, 11);
  const rss = residentSetSize(stack, rssDevices);
  const layout = bundleLayout(JSON.parse(readFileSync(metafilePath('provisioning'), 'utf8')), 'provisioning');
  const packageGzip = layout.files.reduce(
    (sum, file) => sum + gzipSync(readFileSync(join(bundleDir('provisioning'), file))).length,
    0,
  );

  const stats = (each: Contender) => {
    const plain = sortedCopy(each.plain);
    const delayed = sortedCopy(each.delayed);
    return {
      plain,
      delayed,
      paths: each.rounds.map((round) => round.paths.reduce((a, b) => a + b, 0) / round.paths.length),
      fromLatency: each.rounds.map((round) => (median(round.delayed) - median(round.plain)) / delayMs),
      callsPerRequest: each.calls / each.callRequests,
    };
  };
  const [o, s] = [stats(oursContender), stats(sample)];
  const cell = (values: readonly number[]) => `${ms(percentile(values, 50))} / ${ms(percentile(values, 99))}`;
  const histogram = (each: Contender) => {
    const counts = new Map<number, number>();
    for (const path of each.rounds.flatMap((round) => round.paths))
      counts.set(path, (counts.get(path) ?? 0) + 1);
    return [...counts.entries()]
      .sort(([a], [b]) => a - b)
      .map(([path, requestsWithIt]) => `${path} stages: ${requestsWithIt}`)
      .join(', ');
  };

  return {
    about: `${count} requests per row and contender (p99 is the ${Math.ceil(0.99 * count)}th of ${count}), ${rounds} rounds`,
    lines: [
      "| measure | ours (dist/provisioning) | the 2018 sample's calls |",
      '|---|---|---|',
      `| latency p50 / p99, local edge → handler → moto (n = ${count} each) | ${cell(o.plain)} | ${cell(s.plain)} |`,
      `| same with ${delayMs} ms before every AWS call (n = ${count} each) | ${cell(o.delayed)} | ${cell(s.delayed)} |`,
      `| sample ÷ ours, p50 with ${delayMs} ms / without | ${(percentile(s.delayed, 50) / percentile(o.delayed, 50)).toFixed(2)} / ` +
        `${(percentile(s.plain, 50) / percentile(o.plain, 50)).toFixed(2)} | |`,
      `| dependent AWS stages: critical path from the proxy's call log, min / median / max of ${rounds} rounds | ${spread(o.paths)} | ${spread(s.paths)} |`,
      `| dependent AWS stages from latency, (p50 delayed − p50 plain) / ${delayMs} ms, min / median / max of ${rounds} rounds | ${spread(o.fromLatency)} | ${spread(s.fromLatency)} |`,
      `| critical path per request (delayed requests) | ${histogram(oursContender)} | ${histogram(sample)} |`,
      `| AWS calls per request | ${o.callsPerRequest.toFixed(2)} | ${s.callsPerRequest.toFixed(2)} |`,
      '',
      '| the package | value |',
      '|---|---|',
      `| dist/provisioning: ${layout.files.length} files | ${kib(layout.totalBytes)} (${kib(packageGzip)} gzipped) |`,
      `| entry chunk ${BUNDLE_ENTRY_FILE} | ${kib(layout.entryBytes)} |`,
      `| loaded by the init: the entry and its static imports, ${layout.initFiles.length} files | ${kib(layout.initBytes)} |`,
      `| cold start: importing the package (config, clients) in a fresh process, median / max of ${cold.length} | ` +
        `${percentile(cold, 50).toFixed(0)} ms / ${(cold.at(-1) ?? NaN).toFixed(0)} ms |`,
      `| RSS after the init / after ${rssRequests} requests (Node ${process.version}) | ${mib(rss.init)} / ${mib(rss.after)} |`,
    ],
  };
}

/** /device-status through our edge: the table lines. */
async function statusMeasurement(stack: LocalStack, ours: Edge, options: Options, log: Log) {
  // One more device than measured: its call loads the status code into the sandbox first.
  log(`seeding and provisioning ${options.statusDevices + 1} devices for the status calls (key mode)…`);
  const devices: BenchDevice[] = [];
  for (const thingName of await seed(stack, 'bench-status', options.statusDevices + 1)) {
    devices.push(await provisionForStatus(ours.provisioningUrl, requests.v1Body(thingName), VIEWER));
  }
  // The function's own setting (its default when unset), and a second more: the function
  // compares whole seconds.
  const intervalSeconds = Number(stack.functionEnvironment.STATUS_MIN_INTERVAL_SECONDS ?? 5);
  const spacingMs = (intervalSeconds + 1) * 1000;
  const [warmUpDevice, ...measured] = devices as [BenchDevice, ...BenchDevice[]];
  // Signed with the device's current certificate key, and telling the region it connects to.
  const body = (device: BenchDevice) =>
    requests.lifecycleBody('status', device.thingName, device, { region: device.region });
  await measureStatus({
    statusUrl: ours.statusUrl,
    faultsUrl: stack.faultsUrl,
    devices: [warmUpDevice],
    callsPerDevice: 1,
    spacingMs,
    body,
  });
  log(
    `status: ${measured.length} devices × ${options.statusCalls} calls, one at a time, ` +
      `each device's calls ≥ ${spacingMs / 1000} s apart (the function allows one per ${intervalSeconds} s)…`,
  );
  const run: StatusRun = await measureStatus({
    statusUrl: ours.statusUrl,
    faultsUrl: stack.faultsUrl,
    devices: measured,
    callsPerDevice: options.statusCalls,
    spacingMs,
    body,
  });
  const keyType = stack.functionEnvironment.GENERATED_KEY_TYPE ?? 'rsa-2048';
  const latencies = sortedCopy(run.latencies);
  const n = latencies.length;
  const counted = (values: Iterable<[string | number, number]>) =>
    [...values].map(([what, times]) => `${what}: ${times}`).join(', ');
  const paths = new Map<number, number>();
  for (const path of run.paths) paths.set(path, (paths.get(path) ?? 0) + 1);
  const awsCalls = callsPerRequest(run.awsCalls, n);
  return {
    about: `${n} status calls`,
    lines: [
      `status: p50 ${ms(percentile(latencies, 50))}, p99 ${ms(percentile(latencies, 99))} over ${n} calls ` +
        `(${run.devices} devices × ${run.callsPerDevice}, ≥ ${spacingMs / 1000} s apart per device); ` +
        `AWS calls per status: ${awsCalls}`,
      '',
      '| /device-status, ours (dist/provisioning) | value |',
      '|---|---|',
      `| latency p50 / p99, local edge → handler → moto (n = ${n}: ${run.devices} devices × ${run.callsPerDevice} calls, ` +
        `each device's calls ≥ ${spacingMs / 1000} s apart; p99 is the ${Math.ceil(0.99 * n)}th of ${n}) | ` +
        `${ms(percentile(latencies, 50))} / ${ms(percentile(latencies, 99))} |`,
      `| AWS calls per status call, from the proxy's call log | ${awsCalls} |`,
      `| dependent AWS stages per status call (critical path from the call log, no injected delay) | ` +
        `${counted([...paths.entries()].sort(([a], [b]) => a - b).map(([path, times]) => [`${path} stages`, times]))} |`,
      `| answers, by action | ${counted(run.actions.entries())} |`,
      '',
      `Devices provisioned in key mode (${keyType} keys from the service); each status call signed with ` +
        `the device's key (${keyType.startsWith('rsa') ? 'RSA PKCS#1 v1.5' : 'ECDSA, DER'}, SHA-256), ` +
        'sending its certificate and region.',
    ],
  };
}

async function main(): Promise<void> {
  const options = new Command('bench')
    .description(
      'Latency, dependent AWS stages, package size, cold start and memory of the provisioning function, ' +
        "beside the 2018 sample's call pattern; then /device-status latency and AWS calls",
    )
    .option('-n, --requests <count>', 'requests per contender, plain and delayed each', positiveInteger, 150)
    .option('-r, --rounds <count>', 'rounds the requests are split into', positiveInteger, 5)
    .option('-d, --delay <ms>', 'delay injected in front of every AWS call', positiveInteger, 50)
    .option(
      '--status-devices <count>',
      'devices provisioned for the status measurement',
      positiveInteger,
      100,
    )
    .option(
      '--status-calls <count>',
      'status calls per device, spaced by more than the per-device status interval',
      positiveInteger,
      2,
    )
    .option('--status-only', 'measure /device-status only (no provisioning comparison, package or memory)')
    .parse()
    .opts<Options>();
  const log: Log = (line: string) => process.stdout.write(`${line}\n`);
  const benchStarted = Date.now();

  const { started } = await startStack({ log, stopWithOwner: true });
  requests = await import('../integration/requests');
  const stack = readStack();
  const edges: Edge[] = [];
  try {
    await clearFaults(stack.faultsUrl);
    const edgeFor: EdgeFor = async (handlerModule, label) => {
      const edge = await startFunctionEdge(stack, {
        handlerModule,
        label,
        // One sandbox each, reused by every request: a warm container, as in steady state.
        maxSandboxes: 1,
        warmSpares: 0,
      });
      edges.push(edge);
      return edge;
    };
    const ours = await edgeFor(relative(REPO_ROOT, ENTRY), 'ours');

    const parts = [];
    if (!options.statusOnly) parts.push(await comparison(stack, ours, edgeFor, options, log));
    parts.push(await statusMeasurement(stack, ours, options, log));

    log('');
    log(
      `${new Date().toISOString().slice(0, 10)}, ${machine()}; ${parts.map((part) => part.about).join('; ')}; ` +
        `bench took ${Math.round((Date.now() - benchStarted) / 1000)} s`,
    );
    for (const part of parts) {
      log('');
      for (const line of part.lines) log(line);
    }
  } finally {
    await Promise.all(edges.map((edge) => edge.close().catch(() => undefined)));
    await clearFaults(stack.faultsUrl).catch(() => undefined);
    if (started) await stopStack({ log });
  }
}

function machine(): string {
  const cores = cpus();
  return `${cores.length} × ${(cores[0]?.model ?? 'unknown CPU').trim()}, ${Math.round(totalmem() / 2 ** 30)} GiB, ${platform()} ${arch()}, Node ${process.version}`;
}

main().catch((error: unknown) => {
  console.error(`bench failed: ${(error as Error).message}`);
  process.exit(1);
});
