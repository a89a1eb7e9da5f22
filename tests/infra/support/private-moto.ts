/**
 * A private moto_server for infra tests that must not share the local stack's (operator tools run
 * against an account of their own). Skipped, with a warning, where moto_server is not on PATH.
 */
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';

const motoInstalled = spawnSync('sh', ['-c', 'command -v moto_server'], { encoding: 'utf8' }).status === 0;

/** `describe`, or `describe.skip` with a warning naming `what` when moto_server is missing. */
export function describeIfMoto(what: string): jest.Describe {
  if (!motoInstalled) console.warn(`${what} skipped: moto_server is not on PATH`);
  return motoInstalled ? describe : describe.skip;
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

async function waitForMoto(endpoint: string, moto: ChildProcess): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (moto.exitCode !== null) throw new Error(`moto_server exited with ${moto.exitCode}`);
    try {
      if ((await fetch(`${endpoint}/moto-api/`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolveWait) => setTimeout(resolveWait, 100));
  }
  throw new Error('moto_server did not start within 20 s');
}

/** Starts moto_server on a free loopback port and waits until it answers. */
export async function startPrivateMoto(): Promise<{ endpoint: string; process: ChildProcess }> {
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const moto = spawn('moto_server', ['-H', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  await waitForMoto(endpoint, moto);
  return { endpoint, process: moto };
}

/** Runs an operator tool (infra/<script>) with tsx and collects its exit status and output. */
export function runTool(
  script: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  stdin?: string,
): Promise<{ status: number | null; output: string }> {
  const repoRoot = join(__dirname, '..', '..', '..');
  return new Promise((resolveRun) => {
    const child = spawn(join(repoRoot, 'node_modules', '.bin', 'tsx'), [join(repoRoot, script), ...args], {
      cwd: repoRoot,
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('close', (status) => resolveRun({ status, output }));
    child.stdin.end(stdin ?? '');
  });
}
