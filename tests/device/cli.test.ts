/**
 * The device CLI as a person meets it: usage errors say what is wrong and exit 2, a provisioning
 * URL where nothing listens fails at once with a hint, a stale .local/stack.json is named.
 * Runs in an empty directory, so no local stack's defaults apply unless a test writes them.
 */
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { EXIT } from '../../device/cli';
import type { DeviceReport } from '../../device/run-report';
import { loadCredentials, saveCredentials, type DeviceCredentials } from '../../device/store';
import { version } from '../../package.json';

const TSX = resolve('node_modules/.bin/tsx');
const CLI = resolve('device/cli.ts');
let workDir: string;
let signingKey: string;

function device(...args: string[]) {
  const run = spawnSync(TSX, [CLI, ...args], { cwd: workDir, encoding: 'utf8', timeout: 60_000 });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** A loopback port nothing listens on (taken, then released). */
function closedPort(): Promise<number> {
  return new Promise((done) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => done(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), 'device-cli-'));
  signingKey = join(workDir, 'fleet-key.pem');
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(signingKey, privateKey.export({ type: 'pkcs8', format: 'pem' }));
});

afterAll(() => rmSync(workDir, { recursive: true, force: true }));

describe('gdp-device command line', () => {
  it('names itself gdp-device and prints its version', () => {
    expect(device('--help').stdout).toMatch(/^Usage: gdp-device /);
    expect(device('--help').stdout).not.toMatch(/default: \{\}/);
    expect(device('--version')).toMatchObject({ status: EXIT.ok, stdout: `${version}\n` });
  });

  it('documents the status check flags and exit 7 in --help, and refuses a status URL that is not one', () => {
    const help = device('--help').stdout;
    for (const flag of [
      '--status-url',
      '--renew-url',
      '--status-interval',
      '--check-status',
      '--no-check-status',
    ]) {
      expect(help).toContain(flag);
    }
    expect(help).toMatch(/7 revoked, disabled or no longer allowed/);
    const run = device('-t', 'd1', '-a', 'https://example.com/p', '--status-url', 'notaurl');
    expect(run.status).toBe(EXIT.usage);
    expect(run.stderr).toMatch(/status-url.*not a URL/);
  });

  it('says which file it cannot read, with exit 2', () => {
    const run = device('-t', 'd1', '-a', 'https://example.com/p', '--signing-key', join(workDir, 'nope.pem'));
    expect(run.status).toBe(EXIT.usage);
    expect(run.stderr).toMatch(/--signing-key: cannot read signing key .*nope\.pem/);
    const ca = device(
      '-t',
      'd1',
      '-a',
      'https://example.com/p',
      '--signing-key',
      signingKey,
      '--ca',
      workDir,
    );
    expect(ca.status).toBe(EXIT.usage);
    expect(ca.stderr).toMatch(/--ca: cannot read CA certificate/);
  });

  it('refuses a provisioning URL that is not one as a usage error, without trying it', () => {
    const run = device('-t', 'd1', '-a', 'notaurl', '--signing-key', signingKey);
    expect(run.status).toBe(EXIT.usage);
    expect(run.stderr).toMatch(/api-url.*not a URL/);
    expect(run.stdout).not.toMatch(/attempt/);
  });

  it('stops at once when nothing listens on a local URL, and suggests starting the local stack', async () => {
    const url = `http://127.0.0.1:${await closedPort()}/device-provisioning`;
    const run = device('-t', 'd1', '-c', '-a', url, '--signing-key', signingKey);
    expect(run.status).toBe(EXIT.unavailable);
    expect(run.stdout).not.toMatch(/attempt \d/);
    expect(run.stderr).toMatch(/is the local stack running\? Start it with `make local-up && make seed`/);
  });

  it('--json: prints one JSON report on stdout, the lines on stderr, whatever the outcome', async () => {
    const url = `http://127.0.0.1:${await closedPort()}/device-provisioning`;
    const run = device('-t', 'd1', '-a', url, '--signing-key', signingKey, '--json');
    expect(run.status).toBe(EXIT.unavailable);
    expect(run.stdout.trim().split('\n')).toHaveLength(1);
    const report = JSON.parse(run.stdout) as DeviceReport;
    expect(report).toMatchObject({
      outcome: 'unavailable',
      exitCode: EXIT.unavailable,
      thingName: 'd1',
      error: expect.stringMatching(/ECONNREFUSED|fetch failed|refused/),
    });
    expect(report).not.toHaveProperty('region');
    expect(run.stderr).toMatch(/Step 1: ask .* for credentials/);
    expect(run.stderr).toMatch(/is the local stack running\?/);
  });

  describe('--reset keeps the stored credentials until new ones arrive', () => {
    const dataDir = () => join(workDir, 'device-data', 'kept');
    const credentials: DeviceCredentials = {
      identity: {
        thingName: 'kept',
        region: 'eu-west-1',
        endpointAddress: '127.0.0.1',
        distance: 0,
        provisionedAt: '2026-01-01T00:00:00.000Z',
        keySource: 'service',
      },
      privateKeyPem: 'stored key',
      certificatePem: 'stored certificate',
    };
    beforeEach(() => saveCredentials(dataDir(), credentials));

    it('when nothing listens at the provisioning URL', async () => {
      const url = `http://127.0.0.1:${await closedPort()}/device-provisioning`;
      const run = device('-t', 'kept', '-c', '--reset', '-a', url, '--signing-key', signingKey);
      expect(run.status).toBe(EXIT.unavailable);
      expect(run.stderr).toContain(`--reset: kept the credentials stored in ${dataDir()}`);
      expect(await loadCredentials(dataDir())).toEqual(credentials);
    });

    it('when there is no provisioning URL at all', async () => {
      const run = device('-t', 'kept', '-c', '--reset', '--signing-key', signingKey);
      expect(run.status).toBe(EXIT.usage);
      expect(run.stderr).toMatch(/no provisioning URL/);
      expect(await loadCredentials(dataDir())).toEqual(credentials);
    });
  });

  it('names a stale .local/stack.json instead of retrying its dead URL', async () => {
    mkdirSync(join(workDir, '.local'), { recursive: true });
    writeFileSync(
      join(workDir, '.local', 'stack.json'),
      JSON.stringify({
        provisioningUrl: `http://127.0.0.1:${await closedPort()}/device-provisioning`,
        fleetSigningKey: signingKey,
        pids: { stackServer: 2 ** 22 + 1 },
      }),
    );
    try {
      const run = device('-t', 'd1', '-c');
      expect(run.status).toBe(EXIT.unavailable);
      expect(run.stderr).toMatch(/stack\.json is stale: the local stack that wrote it is not running/);
    } finally {
      rmSync(join(workDir, '.local'), { recursive: true, force: true });
    }
  });
});
