/**
 * Bundles the Lambdas with esbuild: one minified CommonJS file each for Node.js 22, with the AWS
 * SDK bundled in (tree-shaken modular clients start faster than the runtime's copy and pin the
 * version we test against).
 *   dist/provisioning/index.js  ← functions/provisioning/handler.ts (behind API Gateway)
 *   dist/reconciler/index.js    ← functions/reconciler/handler.ts (scheduled)
 */
import { build } from 'esbuild';
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';

const REPO_ROOT = join(__dirname, '..');
const BUNDLES = ['provisioning', 'reconciler'] as const;

async function bundle(name: (typeof BUNDLES)[number]): Promise<void> {
  const entry = join(__dirname, name, 'handler.ts');
  if (!existsSync(entry)) throw new Error(`${relative(REPO_ROOT, entry)} is missing`);
  const outdir = join(REPO_ROOT, 'dist', name);
  mkdirSync(outdir, { recursive: true });
  const started = Date.now();
  const result = await build({
    entryPoints: [entry],
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
  console.log(`built dist/${name}/index.js: ${(bytes / 1024).toFixed(1)} KiB in ${Date.now() - started} ms`);
}

async function main(): Promise<void> {
  for (const name of BUNDLES) await bundle(name);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
