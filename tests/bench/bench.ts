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
 */
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
import { buildEvent, Edge, ROUTE_PATH, startEdge } from '../local/edge';
import { addDevice, LocalStack, readStack, startStack, stopStack } from '../local/stack';

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

function percentile(sorted: readonly number[], p: number): number {
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] ?? NaN;
}

const sortedCopy = (values: readonly number[]) => [...values].sort((a, b) => a - b);
const median = (values: readonly number[]) => percentile(sortedCopy(values), 50);

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

async function main(): Promise<void> {
  const options = new Command('bench')
    .description(
      'Latency, dependent AWS stages, package size, cold start and memory of the provisioning function, ' +
        "beside the 2018 sample's call pattern",
    )
    .option('-n, --requests <count>', 'requests per contender, plain and delayed each', positiveInteger, 150)
    .option('-r, --rounds <count>', 'rounds the requests are split into', positiveInteger, 5)
    .option('-d, --delay <ms>', 'delay injected in front of every AWS call', positiveInteger, 50)
    .parse()
    .opts<{ requests: number; rounds: number; delay: number }>();
  const { rounds, delay: delayMs } = options;
  const perRound = Math.ceil(options.requests / rounds);
  const count = perRound * rounds;
  const log = (line: string) => process.stdout.write(`${line}\n`);
  const benchStarted = Date.now();

  const { started } = await startStack({ log, stopWithOwner: true });
  requests = await import('../integration/requests');
  const stack = readStack();
  const edges: Edge[] = [];
  try {
    await clearFaults(stack.faultsUrl);
    const edgeFor = async (handlerModule: string, label: string) => {
      const edge = await startEdge({
        // The function logs a line per request, as in Lambda; into the stack's logs, not here.
        sandboxOutputFile: join(stack.logs, `bench-${label}.log`),
        host: '127.0.0.1',
        port: 0,
        originVerifySecret: stack.originVerifySecret,
        handlerModule,
        environment: stack.functionEnvironment,
        region: stack.homeRegion,
        accountId: stack.accountId,
        // One sandbox each, reused by every request: a warm container, as in steady state.
        maxSandboxes: 1,
        warmSpares: 0,
      });
      edges.push(edge);
      return edge;
    };
    const contender = async (label: string, handlerModule: string): Promise<Contender> => ({
      label,
      edge: await edgeFor(handlerModule, label === 'ours' ? 'ours' : 'sample'),
      thingNames: [],
      plain: [],
      delayed: [],
      rounds: [],
      calls: 0,
      callRequests: 0,
    });
    const ours = await contender('ours', relative(REPO_ROOT, ENTRY));
    const sample = await contender('2018 sample', SAMPLE_HANDLER);
    const contenders = [ours, sample];

    const warmUp = 3;
    const rssRequests = 100;
    log(`seeding ${2 * (2 * count + warmUp) + rssRequests} devices…`);
    const seed = async (prefix: string, how: number) => {
      const names = Array.from({ length: how }, () => requests.uniqueThingName(prefix));
      for (let at = 0; at < names.length; at += 16) {
        await Promise.all(names.slice(at, at + 16).map((thingName) => addDevice(stack, thingName)));
      }
      return names;
    };
    for (const each of contenders)
      each.thingNames.push(...(await seed(`bench-${each === ours ? 'ours' : 'sample'}`, 2 * count + warmUp)));
    const rssDevices = await seed('bench-rss', rssRequests);

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
    const layout = bundleLayout(
      JSON.parse(readFileSync(metafilePath('provisioning'), 'utf8')),
      'provisioning',
    );
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
    const [o, s] = [stats(ours), stats(sample)];
    const cell = (values: readonly number[]) =>
      `${ms(percentile(values, 50))} / ${ms(percentile(values, 99))}`;

    log('');
    log(
      `${new Date().toISOString().slice(0, 10)}, ${machine()}; ${count} requests per row and contender ` +
        `(p99 is the ${Math.ceil(0.99 * count)}th of ${count}), ${rounds} rounds; bench took ${Math.round((Date.now() - benchStarted) / 1000)} s`,
    );
    log('');
    log("| measure | ours (dist/provisioning) | the 2018 sample's calls |");
    log('|---|---|---|');
    log(
      `| latency p50 / p99, local edge → handler → moto (n = ${count} each) | ${cell(o.plain)} | ${cell(s.plain)} |`,
    );
    log(
      `| same with ${delayMs} ms before every AWS call (n = ${count} each) | ${cell(o.delayed)} | ${cell(s.delayed)} |`,
    );
    log(
      `| sample ÷ ours, p50 with ${delayMs} ms / without | ${(percentile(s.delayed, 50) / percentile(o.delayed, 50)).toFixed(2)} / ` +
        `${(percentile(s.plain, 50) / percentile(o.plain, 50)).toFixed(2)} | |`,
    );
    log(
      `| dependent AWS stages: critical path from the proxy's call log, min / median / max of ${rounds} rounds | ${spread(o.paths)} | ${spread(s.paths)} |`,
    );
    log(
      `| dependent AWS stages from latency, (p50 delayed − p50 plain) / ${delayMs} ms, min / median / max of ${rounds} rounds | ${spread(o.fromLatency)} | ${spread(s.fromLatency)} |`,
    );
    const histogram = (each: Contender) => {
      const counts = new Map<number, number>();
      for (const path of each.rounds.flatMap((round) => round.paths))
        counts.set(path, (counts.get(path) ?? 0) + 1);
      return [...counts.entries()]
        .sort(([a], [b]) => a - b)
        .map(([path, requestsWithIt]) => `${path} stages: ${requestsWithIt}`)
        .join(', ');
    };
    log(`| critical path per request (delayed requests) | ${histogram(ours)} | ${histogram(sample)} |`);
    log(`| AWS calls per request | ${o.callsPerRequest.toFixed(2)} | ${s.callsPerRequest.toFixed(2)} |`);
    log('');
    log('| the package | value |');
    log('|---|---|');
    log(
      `| dist/provisioning: ${layout.files.length} files | ${kib(layout.totalBytes)} (${kib(packageGzip)} gzipped) |`,
    );
    log(`| entry chunk ${BUNDLE_ENTRY_FILE} | ${kib(layout.entryBytes)} |`);
    log(
      `| loaded by the init: the entry and its static imports, ${layout.initFiles.length} files | ${kib(layout.initBytes)} |`,
    );
    log(
      `| cold start: importing the package (config, clients) in a fresh process, median / max of ${cold.length} | ` +
        `${percentile(cold, 50).toFixed(0)} ms / ${(cold.at(-1) ?? NaN).toFixed(0)} ms |`,
    );
    log(
      `| RSS after the init / after ${rssRequests} requests (Node ${process.version}) | ${mib(rss.init)} / ${mib(rss.after)} |`,
    );
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
