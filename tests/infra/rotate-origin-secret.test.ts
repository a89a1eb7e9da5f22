/**
 * `make rotate-origin-secret` walks a rotation one deploy at a time (infra/rotate-origin-secret.ts):
 * the function accepts the next secret before CloudFront sends it, and drops the old one only
 * after CloudFront has moved on. The synthesized secrets of each step: tests/infra/blast-radius.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_DEPLOYMENT_FILE } from '../../infra/config';
import { nextRotationStep, OriginSecretState } from '../../infra/rotate-origin-secret';

const REPO_ROOT = join(__dirname, '..', '..');

describe('origin secret rotation steps', () => {
  it('goes accept-next, send-next, then the next generation, and starts over from there', () => {
    let state: OriginSecretState = { generation: 1, rotation: 'none' };
    const seen: OriginSecretState[] = [];
    for (let step = 0; step < 4; step += 1) {
      state = nextRotationStep(state).next;
      seen.push(state);
    }
    expect(seen).toEqual([
      { generation: 1, rotation: 'accept-next' },
      { generation: 1, rotation: 'send-next' },
      { generation: 2, rotation: 'none' },
      { generation: 2, rotation: 'accept-next' },
    ]);
  });

  it('--step writes the next step into the deployment config and says to deploy', () => {
    const work = mkdtempSync(join(tmpdir(), 'rotate-origin-'));
    const file = join(work, 'deployment.json');
    copyFileSync(DEFAULT_DEPLOYMENT_FILE, file);
    try {
      const run = spawnSync(
        join(REPO_ROOT, 'node_modules', '.bin', 'tsx'),
        [join(REPO_ROOT, 'infra', 'rotate-origin-secret.ts'), '--step'],
        { env: { ...process.env, DEPLOYMENT_CONFIG: file }, encoding: 'utf8' },
      );
      expect(run.status).toBe(0);
      expect(run.stdout).toMatch(/step 1 of 3.*\n.*now: `make deploy`/);
      expect((JSON.parse(readFileSync(file, 'utf8')) as { originSecret: unknown }).originSecret).toEqual({
        generation: 1,
        rotation: 'accept-next',
      });
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
