/**
 * `make test`, `make test-unit`, `make test-integration`: jest with its per-file reporter and one
 * summary of this run at the end (tests/support/summary-reporter.js), or, when jest stopped
 * before running any test, a line saying so. Arguments are passed on to jest.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
const markerDir = mkdtempSync(path.join(tmpdir(), 'jest-summary-'));
const marker = path.join(markerDir, 'done');
const run = spawnSync(
  process.execPath,
  [
    path.join(root, 'node_modules', 'jest', 'bin', 'jest.js'),
    '--ci',
    ...process.argv.slice(2),
    // Last: --reporters takes every following argument that is not an option.
    `--reporters=${path.join(root, 'node_modules', '@jest', 'reporters', 'build', 'DefaultReporter.js')}`,
    `--reporters=${path.join(__dirname, 'summary-reporter.js')}`,
  ],
  { cwd: root, stdio: 'inherit', env: { ...process.env, JEST_SUMMARY_MARKER: marker } },
);
const ranTests = existsSync(marker);
rmSync(markerDir, { recursive: true, force: true });
if (!ranTests) {
  process.stderr.write(
    `\nno tests ran: jest stopped before running any (${run.signal ?? `exit ${run.status}`}); the reason is above\n`,
  );
}
process.exit(run.status ?? 1);
