/**
 * gdp-admin run in this process against the local stack (`--local --yes`), as an operator would
 * run it: its exit code and what it printed.
 */
import { main } from '../../functions/admin/cli';

export async function admin(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = jest
    .spyOn(console, 'log')
    .mockImplementation((...parts: unknown[]) => void out.push(parts.join(' ')));
  const write = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err.push(String(chunk));
    return true;
  });
  process.exitCode = undefined;
  try {
    const code = await main(['node', 'gdp-admin', '--local', '--yes', ...args]);
    return { code, out: out.join('\n'), err: err.join('') };
  } finally {
    process.exitCode = undefined;
    log.mockRestore();
    write.mockRestore();
  }
}
