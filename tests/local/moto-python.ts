/**
 * Which Python runs moto for the local stack. In order: LOCAL_STACK_PYTHON when it has moto
 * 5.2.1; the project's own .local/venv; python3 when it has moto 5.2.1. With none of them it
 * installs tests/local/requirements.txt (moto[server]==5.2.1 and pinned dependencies) into
 * .local/venv, made with `python3 -m venv`: Debian's and Ubuntu's system Python refuse a plain
 * `pip install` (PEP 668, "externally-managed-environment"). When that fails too, a
 * MotoUnavailableError says what is missing and the one command that installs it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { LOCAL_DIR, LocalStackError, LOGS_DIR, REPO_ROOT } from './stack-state';

export const MOTO_VERSION = '5.2.1';
export const VENV_DIR = path.join(LOCAL_DIR, 'venv');
export const REQUIREMENTS_FILE = path.join(REPO_ROOT, 'tests', 'local', 'requirements.txt');
export const INSTALL_LOG = path.join(LOGS_DIR, 'moto-install.log');

const relative = (file: string) => path.relative(process.cwd(), file) || file;

/** Where moto is installed when missing; tests point these elsewhere. */
export interface MotoInstallPaths {
  readonly venvDir: string;
  readonly installLog: string;
}

/** The command a person runs to install what the stack needs (shown in the error). */
export const INSTALL_COMMAND = `python3 -m venv .local/venv && .local/venv/bin/pip install -r tests/local/requirements.txt`;

/** Nothing usable found and nothing could be installed; the message is meant for people. */
export class MotoUnavailableError extends LocalStackError {
  override readonly name = 'MotoUnavailableError';
}

// What the launcher imports, so a half-installed moto (no [server] extra) counts as missing.
const PROBE = [
  'import moto',
  'from moto.moto_server.threaded_moto_server import ThreadedMotoServer',
  'print(moto.__version__)',
].join('\n');

type Probe =
  | { readonly kind: 'ready' }
  | { readonly kind: 'no python' }
  | { readonly kind: 'no moto' }
  | { readonly kind: 'other version'; readonly version: string };

function probe(python: string): Probe {
  const run = spawnSync(python, ['-c', PROBE], { encoding: 'utf8', timeout: 60_000 });
  if (run.error) return { kind: 'no python' };
  if (run.status !== 0) return { kind: 'no moto' };
  const version = run.stdout.trim();
  return version === MOTO_VERSION ? { kind: 'ready' } : { kind: 'other version', version };
}

function describe(python: string, found: Probe): string {
  switch (found.kind) {
    case 'no python':
      return `${python}: not found`;
    case 'no moto':
      return `${python}: no moto`;
    case 'other version':
      return `${python}: moto ${found.version}, not ${MOTO_VERSION}`;
    default:
      return `${python}: moto ${MOTO_VERSION}`;
  }
}

/** Last non-empty line of a command's output: usually the reason it failed. */
function lastLine(text: string): string {
  return (
    text
      .split('\n')
      .map((line) => line.trim())
      .filter(Boolean)
      .at(-1) ?? ''
  );
}

/** Creates .local/venv from `basePython` and installs the pinned requirements; returns why it failed. */
function installIntoVenv(
  basePython: string,
  where: MotoInstallPaths,
  log: (line: string) => void,
): string | undefined {
  const venvPython = path.join(where.venvDir, 'bin', 'python');
  const transcript: string[] = [];
  const run = (command: string, args: string[], timeoutMs: number) => {
    transcript.push(`$ ${command} ${args.join(' ')}`);
    const result = spawnSync(command, args, { encoding: 'utf8', timeout: timeoutMs });
    transcript.push(result.stdout ?? '', result.stderr ?? '');
    writeFileSync(where.installLog, transcript.join('\n'));
    return result;
  };
  if (!existsSync(venvPython)) {
    log(`creating ${relative(where.venvDir)} with ${basePython} -m venv`);
    const venv = run(basePython, ['-m', 'venv', where.venvDir], 120_000);
    if (venv.error || venv.status !== 0) {
      const reason = lastLine(`${venv.stdout ?? ''}\n${venv.stderr ?? ''}`);
      return /ensurepip|venv/i.test(reason)
        ? `${basePython} cannot create virtual environments (Debian/Ubuntu: apt install python3-venv)`
        : `${basePython} -m venv failed: ${reason || venv.error?.message || `exit ${venv.status}`}`;
    }
  }
  log(
    `installing moto[server]==${MOTO_VERSION} and its pinned dependencies into ${relative(VENV_DIR)} ` +
      `(a minute or two; log: ${relative(where.installLog)})`,
  );
  const pip = run(
    venvPython,
    [
      '-m',
      'pip',
      'install',
      '--disable-pip-version-check',
      '--no-input',
      '--retries',
      '2',
      '--timeout',
      '20',
      '-r',
      REQUIREMENTS_FILE,
    ],
    15 * 60_000,
  );
  if (pip.error || pip.status !== 0) {
    const output = pip.stderr ?? '';
    if (
      /NewConnectionError|Name or service not known|Temporary failure in name resolution|timed out/.test(
        output,
      )
    )
      return 'pip could not reach the package index (offline, or a proxy needed?)';
    return `pip failed: ${(lastLine(output) || pip.error?.message || `exit ${pip.status}`).replace(/^ERROR:\s*/, '')}`;
  }
  return undefined;
}

/**
 * The Python to run tests/local/moto_launcher.py with; installs moto into .local/venv when no
 * candidate has it. Throws MotoUnavailableError with the whole story when that fails.
 */
export function motoPython(
  log: (line: string) => void,
  where: MotoInstallPaths = { venvDir: VENV_DIR, installLog: INSTALL_LOG },
): string {
  const venvPython = path.join(where.venvDir, 'bin', 'python');
  const chosen = process.env.LOCAL_STACK_PYTHON;
  const basePython = chosen || 'python3';
  const candidates = chosen ? [chosen, venvPython] : [venvPython, basePython];
  const findings: string[] = [];
  for (const python of candidates) {
    if (python === venvPython && !existsSync(venvPython)) continue;
    const found = probe(python);
    if (found.kind === 'ready') return python;
    findings.push(describe(python === venvPython ? relative(venvPython) : python, found));
  }
  log(`moto ${MOTO_VERSION} not found (${findings.join('; ')})`);
  const failure = installIntoVenv(basePython, where, log);
  if (!failure && probe(venvPython).kind === 'ready') return venvPython;
  throw new MotoUnavailableError(
    [
      `The local stack needs moto ${MOTO_VERSION} (Python), found none, and installing it into ` +
        `${relative(where.venvDir)} failed: ${failure ?? 'moto is still missing there'} ` +
        `(${relative(where.installLog)}).`,
      `Install it with:  ${INSTALL_COMMAND}`,
      `or point LOCAL_STACK_PYTHON at a Python that has moto[server]==${MOTO_VERSION}, e.g. ` +
        `LOCAL_STACK_PYTHON=/opt/moto/bin/python3 make demo`,
    ].join('\n'),
  );
}
