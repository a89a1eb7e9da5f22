/**
 * Bundles the provisioning Lambda with esbuild: one minified CommonJS file for Node.js 22,
 * with the AWS SDK bundled in (tree-shaken modular clients start faster than the runtime's
 * copy and pin the version we test against).
 */
import { build } from 'esbuild';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const outdir = join(__dirname, '..', 'dist', 'provisioning');

async function main(): Promise<void> {
  mkdirSync(outdir, { recursive: true });
  const started = Date.now();
  const result = await build({
    entryPoints: [join(__dirname, 'provisioning', 'handler.ts')],
    outfile: join(outdir, 'index.js'),
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'cjs',
    minify: true,
    sourcemap: 'linked',
    metafile: true,
    legalComments: 'none',
    logLevel: 'warning',
  });
  writeFileSync(join(outdir, 'meta.json'), JSON.stringify(result.metafile));
  const bytes = statSync(join(outdir, 'index.js')).size;
  console.log(
    `built dist/provisioning/index.js: ${(bytes / 1024).toFixed(1)} KiB in ${Date.now() - started} ms`,
  );
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
