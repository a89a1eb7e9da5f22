/**
 * What every command line shares (functions/cli-runtime.ts) and gdp-admin's conventions that need
 * no local stack: --version, usage errors with exit 2 that name what was wrong, global options and
 * examples that work off a terminal in every subcommand's help, progress lines off a terminal, a
 * closed pipe ending quietly, no Node-version warning from the AWS SDK on Node 20, and the bins
 * working outside the repository.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { progressIntervalMs, progressLines } from '../../functions/cli-runtime';
import { main, program } from '../../functions/admin/cli';
import packageJson from '../../package.json';

const root = path.resolve(__dirname, '..', '..');
const TSX = path.join(root, 'node_modules', '.bin', 'tsx');

/** gdp-admin in this process, without --local or --yes: exit code and what it printed. */
async function admin(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = jest
    .spyOn(console, 'log')
    .mockImplementation((...parts: unknown[]) => void out.push(parts.join(' ')));
  const stdout = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out.push(String(chunk));
    return true;
  });
  const stderr = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err.push(String(chunk));
    return true;
  });
  process.exitCode = undefined;
  try {
    const code = await main(['node', 'gdp-admin', ...args]);
    return { code, out: out.join(''), err: err.join('') };
  } finally {
    process.exitCode = undefined;
    log.mockRestore();
    stdout.mockRestore();
    stderr.mockRestore();
  }
}

describe('gdp-admin conventions', () => {
  it('prints its version', async () => {
    expect(await admin('--version')).toMatchObject({ code: 0, out: `${packageJson.version}\n` });
  });

  it('treats no command as a usage error (2), with the usage on stderr', async () => {
    const run = await admin();
    expect(run.code).toBe(2);
    expect(run.err).toMatch(/Usage: gdp-admin/);
  });

  it('refuses an unknown --status with 2, naming the allowed values', async () => {
    const run = await admin('--local', 'list', '--status', 'bogus');
    expect(run.code).toBe(2);
    expect(run.err).toMatch(
      /'bogus' is invalid\. Allowed choices are unprovisioned, provisioned, disabled, revoked/,
    );
  });

  it('names an import file that does not exist, with 2, before looking for a stack', async () => {
    const run = await admin('--local', 'import', 'nosuch.csv');
    expect(run.code).toBe(2);
    expect(run.err).toBe('gdp-admin: cannot read nosuch.csv: no such file\n');
  });

  it('shows --local and --yes in every subcommand’s help, and examples that work off a terminal', () => {
    const changes = ['import', 'disable', 'enable', 'revoke', 'reset', 'move'];
    for (const command of program().commands) {
      const help: string[] = [];
      command.configureOutput({ writeOut: (text) => help.push(text) });
      command.outputHelp();
      const text = help.join('');
      expect(`${command.name()}: ${text}`).toMatch(/Global Options:[^]*--local[^]*-y, --yes/);
      if (!changes.includes(command.name())) continue;
      // Off a terminal a change needs --yes; an import's --dry-run changes nothing.
      const examples = text
        .split(/Examples?:\n/)[1]
        ?.split('\n')
        .filter((line) => line.startsWith('  gdp-admin'));
      expect(examples?.length).toBeGreaterThan(0);
      for (const line of examples ?? []) expect(line).toMatch(/--yes|--dry-run/);
    }
  });
});

describe('progress lines off a terminal', () => {
  it('stay quiet until the interval has passed, then give count, rate and ETA of the estimated total', () => {
    let clock = 0;
    const lines: string[] = [];
    const progress = progressLines('list', {
      total: 1000,
      everyMs: 5000,
      now: () => clock,
      write: (l) => lines.push(l),
    });
    clock = 1000;
    progress.add(100);
    expect(lines).toEqual([]);
    clock = 5000;
    progress.add(400);
    expect(lines).toEqual(['list: 500 records, 100/s, 50 % of ~1000, ETA 5 s']);
    clock = 6000;
    progress.add(100);
    expect(lines).toHaveLength(1);
  });

  it('claim no ETA without a total, and read their interval from GDP_PROGRESS_SECONDS', () => {
    const lines: string[] = [];
    const progress = progressLines('reconcile', {
      unit: 'certificates',
      everyMs: 0,
      write: (l) => lines.push(l),
    });
    progress.add();
    expect(lines[0]).toMatch(/^reconcile: 1 certificates, \d+\/s$/);
    expect(progressIntervalMs({ GDP_PROGRESS_SECONDS: '2' })).toBe(2000);
    expect(progressIntervalMs({})).toBe(5000);
  });
});

describe('every entry point', () => {
  const entryPoints = [
    'functions/admin/cli.ts',
    'device/cli.ts',
    'functions/reconciler/cli.ts',
    'tests/chaos/cli.ts',
    'tests/bench/bench.ts',
    'device/demo.ts',
    'tests/local/stack.ts',
    'tests/local/watch.ts',
    'infra/ops.ts',
    'infra/init-ca.ts',
    'infra/rotate-ipstack-key.ts',
  ];

  it.each(entryPoints)('%s loads functions/cli-runtime before anything else', (file) => {
    const firstImport = readFileSync(path.join(root, file), 'utf8')
      .split('\n')
      .find((line) => line.startsWith('import '));
    const module = /^import '([^']+)';$/.exec(firstImport ?? '')?.[1] ?? '';
    expect(path.resolve(root, path.dirname(file), module)).toBe(path.join(root, 'functions', 'cli-runtime'));
  });

  it('ends quietly with 0 when the reader closes the pipe (… | head -1)', () => {
    const writer = `require('./functions/cli-runtime'); for (let i = 0; i < 200000; i += 1) console.log('line', i);`;
    const run = spawnSync('bash', ['-c', `set -o pipefail; "${TSX}" -e "${writer}" | head -1`], {
      cwd: root,
      encoding: 'utf8',
    });
    expect(run.stderr).toBe('');
    expect(run).toMatchObject({ status: 0, stdout: 'line 0\n' });
  });

  it('keeps the AWS SDK’s Node-version warning off on Node 20 without the Makefile', () => {
    const env = { ...process.env };
    delete env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
    const client = `require('./functions/cli-runtime'); const { STSClient } = require('@aws-sdk/client-sts'); new STSClient({ region: 'us-east-1' });`;
    const run = spawnSync(TSX, ['-e', client], { cwd: root, encoding: 'utf8', env });
    expect(run.status).toBe(0);
    expect(run.stderr).not.toMatch(/NodeVersionSupportWarning/);
  });
});

describe('the gdp-admin and gdp-device bins', () => {
  it('are JavaScript run by node, with tsx a dependency rather than a devDependency', () => {
    expect(packageJson.bin).toEqual({ 'gdp-device': 'bin/gdp-device.js', 'gdp-admin': 'bin/gdp-admin.js' });
    expect(packageJson.dependencies).toHaveProperty('tsx');
    expect(packageJson.devDependencies).not.toHaveProperty('tsx');
    for (const bin of Object.values(packageJson.bin)) {
      expect(readFileSync(path.join(root, bin), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
    }
  });

  it.each(Object.entries(packageJson.bin))('%s runs from another directory, without npx', (_name, bin) => {
    const env = { ...process.env, PATH: path.dirname(process.execPath) };
    const run = spawnSync(process.execPath, [path.join(root, bin), '--version'], {
      cwd: tmpdir(),
      encoding: 'utf8',
      env,
    });
    expect(run).toMatchObject({ status: 0, stdout: `${packageJson.version}\n` });
  });
});
