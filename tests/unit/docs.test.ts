/**
 * The README and docs as a new user reads them: code fences that open and close (one left open
 * turns the rest of a page into code), a walk-through that works with any LOCAL_PORT_BASE and any
 * base64, and the figures a newcomer needs next to the commands they run first.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(__dirname, '..', '..');
const read = (file: string) => readFileSync(path.join(root, file), 'utf8');
const pages = [
  'README.md',
  ...readdirSync(path.join(root, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .map((name) => `docs/${name}`),
];

/** The text of the section under `heading`, up to the next heading outside a code block. */
function section(text: string, heading: string): string {
  const start = text.indexOf(`${heading}\n`);
  if (start < 0) throw new Error(`no section ${heading}`);
  const lines = text.slice(start + heading.length + 1).split('\n');
  let inCode = false;
  const end = lines.findIndex((line) => {
    if (line.startsWith('```')) inCode = !inCode;
    return !inCode && /^#{1,6} /.test(line);
  });
  return (end < 0 ? lines : lines.slice(0, end)).join('\n');
}

describe.each(pages)('%s', (page) => {
  it('opens and closes every code fence on a line of its own', () => {
    const fences = read(page)
      .split('\n')
      .map((line, index) => ({ line, number: index + 1 }))
      .filter(({ line }) => line.trimStart().startsWith('```'));
    // A fence line is ``` or ```lang: anything after that is prose swallowed by the block.
    for (const { line, number } of fences) expect(`${page}:${number}: ${line}`).toMatch(/:\d+: *```[\w-]*$/);
    expect(fences.length % 2).toBe(0);
  });
});

describe('README', () => {
  const readme = read('README.md');

  it('gives the fresh-clone time of make demo next to the two commands at the top', () => {
    const top = readme.slice(0, readme.indexOf('Prerequisites'));
    expect(top).toMatch(/make demo[^]*make test[^]*```\n\nFrom a fresh clone, `make demo` takes about \d+ s/);
  });

  it('says which Node versions work, and why Node 20 prints no SDK warning', () => {
    expect(readme).toMatch(/Node 22 is what the\s+Lambda runs/);
    expect(readme).toMatch(/functions\/cli-runtime\.ts/);
  });

  it('walks through gdp-admin on the stack of this LOCAL_PORT_BASE, portably, and stops the stack at the end', () => {
    const walkThrough = section(readme, '### Walk-through (local stack)');
    const block = /```bash\n([^]*?)```/.exec(walkThrough)?.[1] ?? '';
    expect(block).toContain(`URL=$(node -p "require('./.local/stack.json').provisioningUrl")`);
    expect(block).toContain('curl -s -X POST "$URL"');
    expect(block).not.toMatch(/127\.0\.0\.1:\d+/);
    expect(block).not.toMatch(/base64 -w/);
    expect(block).toContain('openssl base64 -A');
    // printf with a variable as its format mangles % and backslashes.
    expect(block).not.toMatch(/printf "?\$/);
    expect(block.trim().split('\n').at(-1)).toBe('make local-down');
  });
});

describe('docs/device.md', () => {
  it('documents gdp-device --json for scripts', () => {
    const forScripts = section(read('docs/device.md'), '### For scripts: `--json`');
    for (const field of ['outcome', 'region', 'endpoint', 'certificateId', 'dayTwo', 'exitCode']) {
      expect(forScripts).toContain(`\`${field}\``);
    }
  });
});
