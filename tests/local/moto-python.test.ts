/**
 * Where moto is missing and cannot be installed, the local stack stops with one message that
 * says what is missing, the command that installs it and how to use another Python. A stand-in
 * "python" that has no moto and no venv module plays Debian's python3 without python3-venv.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INSTALL_COMMAND, motoPython, MotoUnavailableError } from './moto-python';

describe('finding moto for the local stack', () => {
  let dir: string;
  const saved = process.env.LOCAL_STACK_PYTHON;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'moto-python-'));
    const fake = join(dir, 'python3');
    writeFileSync(
      fake,
      '#!/bin/sh\n' +
        'if [ "$1" = "-m" ]; then echo "Error: ensurepip is not available" >&2; exit 1; fi\n' +
        'echo "ModuleNotFoundError: No module named moto" >&2; exit 1\n',
    );
    chmodSync(fake, 0o755);
    process.env.LOCAL_STACK_PYTHON = fake;
  });

  afterAll(() => {
    if (saved === undefined) delete process.env.LOCAL_STACK_PYTHON;
    else process.env.LOCAL_STACK_PYTHON = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  it('ends in one message naming the missing piece, the install command and LOCAL_STACK_PYTHON', () => {
    const lines: string[] = [];
    const where = { venvDir: join(dir, 'venv'), installLog: join(dir, 'install.log') };
    let failure: unknown;
    try {
      motoPython((line) => lines.push(line), where);
    } catch (error) {
      failure = error;
    }
    expect(failure).toBeInstanceOf(MotoUnavailableError);
    const message = (failure as Error).message;
    expect(message).toMatch(/needs moto 5\.2\.1/);
    expect(message).toMatch(
      /cannot create virtual environments \(Debian\/Ubuntu: apt install python3-venv\)/,
    );
    expect(message).toContain(INSTALL_COMMAND);
    expect(message).toMatch(/LOCAL_STACK_PYTHON=/);
    expect(lines[0]).toMatch(/moto 5\.2\.1 not found \(.*python3: no moto\)/);
    expect(readFileSync(where.installLog, 'utf8')).toMatch(/ensurepip is not available/);
  });
});
