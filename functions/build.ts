/**
 * Bundles the Lambdas with esbuild: ESM for Node.js 22 with code splitting, the AWS SDK bundled in
 * (its ES module build, tree-shaken). Each Lambda package is its chunk folder:
 *   dist/provisioning/index.mjs + chunks/  ← functions/provisioning/handler.ts (behind API Gateway)
 *   dist/reconciler/index.mjs + chunks/    ← functions/reconciler/handler.ts (scheduled)
 * Lambda's handler setting `index.handler` finds index.mjs. What a request path loads lazily
 * (`import()`: the CSR parser, the SSM client) is a chunk of its own, so the init only parses the
 * entry chunk and its static imports. The esbuild metafile (which input went where) and the
 * source maps are written beside the packages, not into them: dist/<name>.meta.json, dist/maps/.
 */
import { build, Plugin } from 'esbuild';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { BUNDLE_ENTRY_FILE, BUNDLES, bundleLayout, BundleName } from './bundle-layout';

const REPO_ROOT = join(__dirname, '..');

/**
 * The SDK's generated schema modules (`dist-es/schemas/schemas_0.js`, one per client, every
 * operation of the service) key their objects with computed names (`{ [_h]: [...] }`, where
 * `const _h = "http"`). esbuild treats a computed key as a possible side effect, so it keeps every
 * schema of the service: 108 KiB of @aws-sdk/client-iot for the dozen operations we call. Writing
 * those keys as the string literals they name lets the unused schemas be dropped. The build
 * fails if a computed key is left that it cannot resolve, so an SDK upgrade that changes the
 * generated code is noticed rather than silently bundling everything again.
 */
const sdkSchemaKeys: Plugin = {
  name: 'sdk-schema-literal-keys',
  setup(context) {
    context.onLoad(
      { filter: /[\\/]@aws-sdk[\\/]client-[a-z0-9-]+[\\/]dist-es[\\/]schemas[\\/]schemas_\d+\.js$/ },
      (args) => {
        const source = readFileSync(args.path, 'utf8');
        const constants = new Map<string, string>();
        for (const [, name, value] of source.matchAll(/^const (_\w+) = ("[^"\\\n]*");$/gm)) {
          if (name && value) constants.set(name, value);
        }
        const unresolved = new Set<string>();
        const contents = source.replace(/\[(_\w+)\]:/g, (whole, name: string) => {
          const value = constants.get(name);
          if (value === undefined) unresolved.add(name);
          return value === undefined ? whole : `${value}:`;
        });
        if (unresolved.size > 0) {
          throw new Error(
            `${relative(REPO_ROOT, args.path)}: computed keys not defined as string constants: ${[...unresolved].join(', ')}`,
          );
        }
        return { contents, loader: 'js' };
      },
    );
  },
};

function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

async function bundle(name: BundleName): Promise<void> {
  const entry = join(__dirname, name, 'handler.ts');
  if (!existsSync(entry)) throw new Error(`${relative(REPO_ROOT, entry)} is missing`);
  const outdir = join(REPO_ROOT, 'dist', name);
  const mapsDir = join(REPO_ROOT, 'dist', 'maps', name);
  rmSync(outdir, { recursive: true, force: true });
  rmSync(mapsDir, { recursive: true, force: true });
  const started = Date.now();
  const result = await build({
    entryPoints: { index: entry },
    outdir,
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'esm',
    splitting: true,
    outExtension: { '.js': '.mjs' },
    chunkNames: 'chunks/[name]-[hash]',
    // The SDK's and Powertools' ES module builds tree-shake; their CommonJS builds do not.
    mainFields: ['module', 'main'],
    // Bundled CommonJS code (tslib, some Powertools and SDK helpers) may still call require().
    banner: {
      js: "import{createRequire as __createRequire}from'node:module';const require=__createRequire(import.meta.url);",
    },
    plugins: [sdkSchemaKeys],
    minify: true,
    sourcemap: 'external',
    metafile: true,
    legalComments: 'none',
    logLevel: 'warning',
  });
  // Source maps out of the package: it holds the code Lambda loads and nothing else.
  const moveMaps = (dir: string, into: string) => {
    for (const entryName of readdirSync(dir, { withFileTypes: true })) {
      const from = join(dir, entryName.name);
      if (entryName.isDirectory()) moveMaps(from, join(into, entryName.name));
      else if (entryName.name.endsWith('.map')) {
        mkdirSync(into, { recursive: true });
        renameSync(from, join(into, entryName.name));
      }
    }
  };
  moveMaps(outdir, mapsDir);
  writeFileSync(join(REPO_ROOT, 'dist', `${name}.meta.json`), JSON.stringify(result.metafile));
  const layout = bundleLayout(result.metafile, name);
  console.log(
    `built dist/${name}/${BUNDLE_ENTRY_FILE} in ${Date.now() - started} ms: entry ${kib(layout.entryBytes)}, ` +
      `loaded at init ${kib(layout.initBytes)} (${layout.initFiles.length} files), ` +
      `package ${kib(layout.totalBytes)} (${layout.files.length} files)`,
  );
}

async function main(): Promise<void> {
  mkdirSync(join(REPO_ROOT, 'dist'), { recursive: true });
  for (const name of BUNDLES) await bundle(name);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
