/**
 * The local stack: `up`, `down`, `seed`, `status` (make local-up / local-down / seed), and the
 * same operations as a library for tests (readStack, startStack, stopStack, addDevice, ...).
 *
 * `up` prepares .local/ (local CA, fleet signing key pair, origin secret, ipstack fake key and
 * fixtures), then starts one detached process group — stack-server.ts with moto as its child —
 * and returns when .local/stack.json is written and everything answers.
 */
import '../../functions/cli-runtime';
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Command } from 'commander';
import {
  AttributeValue,
  ConditionalCheckFailedException,
  DeleteItemCommand,
  DynamoDBClient,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import { loadDeploymentConfig } from '../../infra/config';
import { DEFAULT_HANDLER_MODULE } from './edge';
import { ensureFixtureFile } from './ipstack-fake';
import { createLocalCa } from './pki';
import { motoPython } from './moto-python';
import { parseEndpointAddress } from '../../device/mqtt';
import {
  CA_DIR,
  DEFAULT_PORT_BASE,
  FLEET_PUBLIC_KEY_FILE,
  FLEET_SIGNING_KEY_FILE,
  FUNCTION_LOG,
  IPSTACK_FIXTURES_FILE,
  LOCAL_DIR,
  LocalStack,
  LocalStackError,
  LOGS_DIR,
  MQTT_PORT,
  PIDS_FILE,
  PidsFile,
  portsFrom,
  readJson,
  readStack,
  REPO_ROOT,
  SECRETS_FILE,
  SERVER_OPTIONS_FILE,
  STACK_FILE,
  STACK_LOG,
  StackServerOptions,
  writeJsonAtomic,
} from './stack-state';

export { readStack } from './stack-state';
export type { LocalStack } from './stack-state';

const START_LOCK_FILE = path.join(LOCAL_DIR, 'start.lock');
const START_TIMEOUT_MS = Number(process.env.LOCAL_STACK_START_TIMEOUT_MS ?? 90_000);
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface StartOptions {
  /** Module exporting the API Gateway handler; default functions/provisioning/handler.ts. */
  readonly handlerModule?: string;
  readonly portBase?: number;
  readonly log?: (line: string) => void;
  /** Stop the stack by itself when the calling process exits (for tests, bench and demo). */
  readonly stopWithOwner?: boolean;
  /** The edge scales out like Lambda (every request at once) instead of capping at 8 sandboxes. */
  readonly scaleOut?: boolean;
}

export interface StartResult {
  readonly stack: LocalStack;
  /** false when a healthy stack was already running and was reused. */
  readonly started: boolean;
}

/** True while the process runs; an exited process not yet reaped by init (a zombie) counts as gone. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    // /proc/<pid>/stat: "pid (comm) S ..."; detached children are reaped by init, sometimes late.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

function tcpAnswers(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (answer: boolean) => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function httpAnswers(url: string): Promise<boolean> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await response.arrayBuffer();
    return true;
  } catch {
    return false;
  }
}

/** Names of the parts of the stack that do not answer (empty = healthy). */
export async function unhealthyParts(stack: LocalStack): Promise<string[]> {
  const checks: [string, Promise<boolean>][] = [
    ['stack server process', Promise.resolve(isAlive(stack.pids.stackServer))],
    ['moto process', Promise.resolve(isAlive(stack.pids.moto))],
    ['edge', httpAnswers(stack.provisioningUrl)],
    ['moto', httpAnswers(`${stack.motoUrl}/moto-api/`)],
    ['AWS proxy', httpAnswers(stack.faultsUrl)],
    ['ipstack fake', httpAnswers(`${stack.ipstackUrl}/check`)],
  ];
  if (stack.mqttRunning) {
    for (const [region, endpoint] of Object.entries(stack.mqttEndpoints)) {
      const { host, port } = parseEndpointAddress(endpoint);
      checks.push([`MQTT ${region}`, tcpAnswers(host, port)]);
    }
  }
  const results = await Promise.all(checks.map(([, check]) => check));
  return checks.filter((_check, index) => !results[index]).map(([name]) => name);
}

/** The running stack if stack.json exists and every part answers. */
export async function healthyStack(): Promise<LocalStack | undefined> {
  const stack = readJson<LocalStack>(STACK_FILE);
  if (!stack) return undefined;
  return (await unhealthyParts(stack)).length === 0 ? stack : undefined;
}

/** 'free', or why the address can't be listened on ('EADDRINUSE', 'EADDRNOTAVAIL', ...). */
function listenable(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    server.listen(port, host, () => server.close(() => resolve('free')));
  });
}

/**
 * The MQTT endpoints listen on 8883 at one loopback address per region. Systems that answer only
 * on 127.0.0.1 (macOS without `ifconfig lo0 alias`) get 127.0.0.1:<base + 10 + i> instead.
 */
async function perRegionAddressesWork(base: number, regions: readonly string[]): Promise<boolean> {
  const probe = portsFrom(base, regions).mqttHosts;
  const first = Object.values(probe)[0];
  return first === undefined || (await listenable(MQTT_PORT, first)) !== 'EADDRNOTAVAIL';
}

function ensureSecrets(created: string[]): { originVerifySecret: string; ipstackAccessKey: string } {
  const existing = readJson<{ originVerifySecret: string; ipstackAccessKey: string }>(SECRETS_FILE);
  if (existing) return existing;
  created.push('secrets');
  const secrets = {
    originVerifySecret: randomBytes(24).toString('base64url'),
    ipstackAccessKey: randomBytes(16).toString('hex'),
  };
  writeJsonAtomic(SECRETS_FILE, secrets, 0o600);
  return secrets;
}

function ensureFleetKeys(created: string[]): void {
  if (existsSync(FLEET_SIGNING_KEY_FILE) && existsSync(FLEET_PUBLIC_KEY_FILE)) return;
  created.push('fleet signing key');
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  writeFileSync(FLEET_SIGNING_KEY_FILE, privateKey, { mode: 0o600 });
  writeFileSync(FLEET_PUBLIC_KEY_FILE, publicKey);
}

/** Echoes new lines of the stack server's progress log while it starts. */
function progressTail(log: (line: string) => void): () => string[] {
  let offset = existsSync(STACK_LOG) ? statSync(STACK_LOG).size : 0;
  const seen: string[] = [];
  return () => {
    if (!existsSync(STACK_LOG)) return seen;
    const content = readFileSync(STACK_LOG);
    if (content.length <= offset) return seen;
    const lines = content.subarray(offset).toString('utf8').split('\n');
    const complete = lines.slice(0, -1);
    offset += Buffer.byteLength(complete.join('\n')) + (complete.length > 0 ? 1 : 0);
    for (const line of complete) {
      seen.push(line);
      log(`  ${line.replace(/^\S+ /, '')}`);
    }
    return seen;
  };
}

/**
 * Serialises concurrent `up`s (two jest runs, `make local-up` beside `make test`): the second
 * waits for the first and then finds a healthy stack to reuse.
 */
async function withStartLock<T>(work: () => Promise<T>): Promise<T> {
  mkdirSync(LOCAL_DIR, { recursive: true });
  const deadline = Date.now() + START_TIMEOUT_MS + 10_000;
  for (;;) {
    try {
      closeSync(openSync(START_LOCK_FILE, 'wx'));
      writeFileSync(START_LOCK_FILE, String(process.pid));
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const owner = Number(readFileSync(START_LOCK_FILE, 'utf8') || '0');
      if (owner > 0 && !isAlive(owner)) rmSync(START_LOCK_FILE, { force: true });
      else if (Date.now() > deadline)
        throw new Error(`another local stack start (pid ${owner}) holds ${START_LOCK_FILE}`, {
          cause: error,
        });
      else await sleep(200);
    }
  }
  try {
    return await work();
  } finally {
    rmSync(START_LOCK_FILE, { force: true });
  }
}

/** `up`: reuses a healthy stack, otherwise starts one and waits until everything answers. */
export function startStack(options: StartOptions = {}): Promise<StartResult> {
  return withStartLock(() => startUnlocked(options));
}

async function startUnlocked(options: StartOptions): Promise<StartResult> {
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  const running = await healthyStack();
  if (running) return { stack: running, started: false };
  if (readJson<PidsFile>(PIDS_FILE) || existsSync(STACK_FILE)) {
    log('a previous local stack is not healthy: stopping it first');
    await stopStack({ log: () => undefined });
  }

  // A fresh set of logs per run: the previous run's are gone once a new one starts.
  rmSync(LOGS_DIR, { recursive: true, force: true });
  mkdirSync(LOGS_DIR, { recursive: true });
  const deployment = loadDeploymentConfig();
  const base = options.portBase ?? Number(process.env.LOCAL_PORT_BASE ?? DEFAULT_PORT_BASE);
  if (!Number.isInteger(base) || base < 1024 || base > 65000)
    throw new LocalStackError(`LOCAL_PORT_BASE must be a port number from 1024 to 65000 (got ${base})`);
  const perRegionAddresses = await perRegionAddressesWork(base, deployment.iotRegions);
  if (!perRegionAddresses)
    log('this system answers only on 127.0.0.1: MQTT endpoints fall back to 127.0.0.1:<port>');
  const ports = portsFrom(base, deployment.iotRegions, perRegionAddresses);
  const wanted: [string, string, number][] = [
    ['edge', '127.0.0.1', ports.edge],
    ['AWS proxy', '127.0.0.1', ports.awsProxy],
    ['moto', '127.0.0.1', ports.moto],
    ['ipstack fake', '127.0.0.1', ports.ipstack],
    ['watch', '127.0.0.1', ports.watch],
    ...Object.entries(ports.mqtt).map(([region, port]): [string, string, number] => [
      `MQTT ${region}`,
      ports.mqttHosts[region] ?? '127.0.0.1',
      port,
    ]),
  ];
  const taken = [];
  for (const [name, host, port] of wanted)
    if ((await listenable(port, host)) !== 'free') taken.push(`${name} ${host}:${port}`);
  if (taken.length > 0) {
    throw new LocalStackError(
      `addresses in use: ${taken.join(', ')}; set LOCAL_PORT_BASE to another base (now ${base})`,
    );
  }

  // Installing moto is rare and slow: say so even when the caller keeps the stack quiet (jest).
  const pythonCommand = motoPython((line) => process.stderr.write(`${line}\n`));
  const created: string[] = [];
  if (!existsSync(path.join(CA_DIR, 'ca.pem'))) created.push('local CA');
  const ca = await createLocalCa(CA_DIR);
  ensureFleetKeys(created);
  const secrets = ensureSecrets(created);
  if (ensureFixtureFile(IPSTACK_FIXTURES_FILE)) created.push('ipstack fixtures');
  if (created.length > 0) log(`prepared .local/: ${created.join(', ')}`);
  const serverOptions: StackServerOptions = {
    ports,
    handlerModule: options.handlerModule ?? process.env.LOCAL_HANDLER_MODULE ?? DEFAULT_HANDLER_MODULE,
    originVerifySecret: secrets.originVerifySecret,
    ipstackAccessKey: secrets.ipstackAccessKey,
    fixturesPath: IPSTACK_FIXTURES_FILE,
    caCertPath: ca.certPath,
    caKeyPath: ca.keyPath,
    fleetSigningKeyPath: FLEET_SIGNING_KEY_FILE,
    fleetPublicKeyPath: FLEET_PUBLIC_KEY_FILE,
    pythonCommand,
    ownerPid: options.stopWithOwner ? process.pid : undefined,
  };
  writeJsonAtomic(SERVER_OPTIONS_FILE, serverOptions, 0o600);

  const tail = progressTail(log);
  const output = openSync(FUNCTION_LOG, 'a');
  const server = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(REPO_ROOT, 'tests/local/stack-server.ts'), SERVER_OPTIONS_FILE],
    {
      cwd: REPO_ROOT,
      detached: true,
      stdio: ['ignore', output, output],
      env: {
        ...process.env,
        NODE_OPTIONS: '',
        ...(options.scaleOut ? { LOCAL_EDGE_SCALE_OUT: '1' } : {}),
      },
    },
  );
  closeSync(output);
  server.unref();
  if (!server.pid) throw new Error('could not start the stack server');
  const pids: PidsFile = { stackServer: server.pid, processGroup: server.pid };
  writeJsonAtomic(PIDS_FILE, pids);
  log(
    `stack server started (pid ${server.pid}); logs in ${path.relative(process.cwd(), LOGS_DIR) || LOGS_DIR}`,
  );

  const deadline = Date.now() + START_TIMEOUT_MS;
  const failure = (reason: string) =>
    new LocalStackError(
      `local stack failed to start: ${reason}\n  see ${STACK_LOG}, ${FUNCTION_LOG} and ${path.join(LOGS_DIR, 'moto.log')}`,
    );
  for (;;) {
    const lines = tail();
    const failed = lines.find((line) => line.includes(' FAILED: '));
    if (failed) {
      await stopStack({ log: () => undefined });
      throw failure(failed.replace(/^\S+ FAILED: /, ''));
    }
    if (!isAlive(server.pid)) {
      await stopStack({ log: () => undefined });
      throw failure('the stack server exited');
    }
    if (lines.some((line) => line.endsWith(' READY')) && existsSync(STACK_FILE)) {
      const stack = readStack();
      const notAnswering = await unhealthyParts(stack);
      if (notAnswering.length === 0) return { stack, started: true };
      if (Date.now() > deadline) {
        await stopStack({ log: () => undefined });
        throw failure(`not answering: ${notAnswering.join(', ')}`);
      }
    }
    if (Date.now() > deadline) {
      await stopStack({ log: () => undefined });
      throw failure(`not ready after ${START_TIMEOUT_MS / 1000} s`);
    }
    await sleep(100);
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** `down`: stops the process group `up` started; harmless when nothing runs. */
export async function stopStack(options: { log?: (line: string) => void } = {}): Promise<boolean> {
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  const pids = readJson<PidsFile>(PIDS_FILE);
  const stack = readJson<LocalStack>(STACK_FILE);
  const groups = new Set<number>();
  if (pids) groups.add(pids.processGroup);
  if (stack) groups.add(stack.pids.stackServer);
  const processes = [...groups, ...(stack?.pids.moto ? [stack.pids.moto] : [])];
  const running = () => processes.filter(isAlive);
  const stopped = running().length > 0;
  if (stopped) {
    for (const group of groups) signalGroup(group, 'SIGTERM');
    const deadline = Date.now() + 5000;
    while (running().length > 0 && Date.now() < deadline) await sleep(25);
    const stubborn = running();
    if (stubborn.length > 0) {
      log(`processes ${stubborn.join(', ')} did not stop on SIGTERM: sending SIGKILL`);
      for (const group of groups) signalGroup(group, 'SIGKILL');
      for (const pid of stubborn) signalGroup(pid, 'SIGKILL');
    }
  }
  rmSync(PIDS_FILE, { force: true });
  rmSync(STACK_FILE, { force: true });
  rmSync(SERVER_OPTIONS_FILE, { force: true });
  log(stopped ? 'local stack stopped' : 'local stack was not running');
  return stopped;
}

function registry(stack: LocalStack): DynamoDBClient {
  return new DynamoDBClient({
    endpoint: stack.awsEndpoint,
    region: stack.homeRegion,
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
}

/**
 * Adds an unprovisioned device to the registry. Returns false (and changes nothing) when the
 * record exists, unless `reset` is set.
 */
export async function addDevice(
  stack: LocalStack,
  thingName: string,
  extraAttributes: Record<string, AttributeValue> = {},
  reset = false,
): Promise<boolean> {
  const client = registry(stack);
  try {
    await client.send(
      new PutItemCommand({
        TableName: stack.tableName,
        Item: { ...extraAttributes, thing_name: { S: thingName }, prov_status: { S: 'unprovisioned' } },
        ConditionExpression: reset ? undefined : 'attribute_not_exists(thing_name)',
      }),
    );
    return true;
  } catch (error) {
    if (error instanceof ConditionalCheckFailedException) return false;
    throw error;
  } finally {
    client.destroy();
  }
}

export async function deleteDevice(stack: LocalStack, thingName: string): Promise<void> {
  const client = registry(stack);
  try {
    await client.send(
      new DeleteItemCommand({ TableName: stack.tableName, Key: { thing_name: { S: thingName } } }),
    );
  } finally {
    client.destroy();
  }
}

/** `seed`: mydevice1…mydevice10 as unprovisioned, as the 2018 sample's README did. */
export async function seed(stack: LocalStack, reset: boolean, log: (line: string) => void): Promise<void> {
  for (let index = 1; index <= 10; index += 1) {
    const thingName = `mydevice${index}`;
    const added = await addDevice(stack, thingName, {}, reset);
    log(
      `${thingName}: ${added ? (reset ? 'reset to unprovisioned' : 'added as unprovisioned') : 'exists, left as is'}`,
    );
  }
}

async function cli(argv: string[]): Promise<void> {
  const program = new Command()
    .name('stack')
    .description(
      'The local stack: moto as AWS, the local edge with the provisioning handler, ipstack fake, MQTT',
    );

  program
    .command('up')
    .description('start the local stack (idempotent) and write .local/stack.json')
    .option('--handler <module>', 'module exporting the API Gateway handler', DEFAULT_HANDLER_MODULE)
    .option('--port-base <port>', `first port (default: env LOCAL_PORT_BASE or ${DEFAULT_PORT_BASE})`)
    .option(
      '--scale-out',
      'the edge runs every request at once, as Lambda scales out, instead of at most 8 sandboxes (env LOCAL_EDGE_SCALE_OUT=1)',
    )
    .action(async (options: { handler: string; portBase?: string; scaleOut?: boolean }) => {
      const started = Date.now();
      const { stack, started: fresh } = await startStack({
        handlerModule: options.handler,
        portBase: options.portBase ? Number(options.portBase) : undefined,
        scaleOut: options.scaleOut,
      });
      if (!fresh) {
        console.log(`already running: ${stack.provisioningUrl}`);
        return;
      }
      console.log(`local stack up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      console.log(`  provisioning URL  ${stack.provisioningUrl}`);
      console.log(`  AWS endpoint      ${stack.awsEndpoint} (faults: ${stack.faultsUrl})`);
      console.log(`  regions           ${stack.regions.join(', ')} (home ${stack.homeRegion})`);
      console.log(
        `  MQTT endpoints    ${
          stack.mqttRunning
            ? Object.entries(stack.mqttEndpoints)
                .map(([region, endpoint]) => `${region} ${endpoint}`)
                .join(', ')
            : 'not running'
        }`,
      );
      console.log(`  details           ${STACK_FILE}`);
    });

  program
    .command('down')
    .description('stop everything `up` started')
    .action(async () => {
      await stopStack();
    });

  program
    .command('seed')
    .description('add mydevice1..mydevice10 to the registry as unprovisioned (existing records are kept)')
    .option('--reset', 'overwrite existing records with unprovisioned ones')
    .action(async (options: { reset?: boolean }) => {
      await seed(readStack(), options.reset === true, (line) => console.log(line));
    });

  program
    .command('status')
    .description('show whether the local stack runs and which parts answer')
    .action(async () => {
      const stack = readJson<LocalStack>(STACK_FILE);
      if (!stack) {
        console.log('local stack not running');
        process.exitCode = 1;
        return;
      }
      const notAnswering = await unhealthyParts(stack);
      console.log(
        notAnswering.length === 0
          ? 'local stack running'
          : `local stack unhealthy: ${notAnswering.join(', ')}`,
      );
      console.log(`  provisioning URL  ${stack.provisioningUrl}`);
      console.log(`  AWS endpoint      ${stack.awsEndpoint}`);
      console.log(`  started           ${stack.startedAt}`);
      console.log(`  logs              ${stack.logs}`);
      if (notAnswering.length > 0) process.exitCode = 1;
    });

  await program.parseAsync(argv);
}

if (require.main === module) {
  cli(process.argv).catch((error: unknown) => {
    console.error((error as Error).message);
    process.exit(1);
  });
}

export { LOCAL_DIR };
