/**
 * Where the Lambda packages are and what their init loads: shared by the build, the infra (the
 * package folder and the handler setting), the benchmark and the tests that check the bundle.
 */
import type { Metafile } from 'esbuild';
import { join } from 'node:path';

export const BUNDLES = ['provisioning', 'reconciler'] as const;
export type BundleName = (typeof BUNDLES)[number];

/** The entry chunk of each package; Lambda's handler `index.handler` resolves it. */
export const BUNDLE_ENTRY_FILE = 'index.mjs';
export const BUNDLE_HANDLER = 'index.handler';

const REPO_ROOT = join(__dirname, '..');

/** The package folder Lambda gets (TerraformAsset), holding the entry and its chunks. */
export function bundleDir(name: BundleName): string {
  return join(REPO_ROOT, 'dist', name);
}

/** esbuild's metafile for a package, written beside it by `make build`. */
export function metafilePath(name: BundleName): string {
  return join(REPO_ROOT, 'dist', `${name}.meta.json`);
}

export interface BundleLayout {
  /** Output files relative to the package folder. */
  readonly files: readonly string[];
  readonly totalBytes: number;
  readonly entryBytes: number;
  /** The entry chunk and every chunk it imports statically: what the init parses. */
  readonly initFiles: readonly string[];
  readonly initBytes: number;
  /** Source files (paths as esbuild prints them) whose code is in the init's chunks. */
  readonly initInputs: readonly string[];
  /** Bytes each npm package (or `(ours)`) contributes to the init's chunks. */
  readonly initBytesByPackage: Readonly<Record<string, number>>;
}

/** `node_modules/@aws-sdk/client-iot/dist-es/…` → `@aws-sdk/client-iot`; our files → `(ours)`. */
export function packageOf(input: string): string {
  const at = input.lastIndexOf('node_modules/');
  if (at < 0) return '(ours)';
  const parts = input.slice(at + 'node_modules/'.length).split('/');
  return (parts[0] ?? '').startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? '');
}

export function bundleLayout(metafile: Metafile, name: BundleName): BundleLayout {
  const prefix = `dist/${name}/`;
  const outputs = Object.entries(metafile.outputs).filter(([path]) => !path.endsWith('.map'));
  const relativeName = (path: string) => {
    const at = path.indexOf(prefix);
    return at >= 0 ? path.slice(at + prefix.length) : path;
  };
  const entry = outputs.find(([path]) => relativeName(path) === BUNDLE_ENTRY_FILE);
  if (!entry) throw new Error(`the metafile of ${name} has no ${BUNDLE_ENTRY_FILE}`);

  const byPath = new Map(outputs);
  const init = new Set<string>();
  const pending = [entry[0]];
  while (pending.length > 0) {
    const path = pending.pop() as string;
    if (init.has(path)) continue;
    init.add(path);
    for (const imported of byPath.get(path)?.imports ?? []) {
      if (imported.kind === 'import-statement' && !imported.external) pending.push(imported.path);
    }
  }

  const initInputs = new Set<string>();
  const initBytesByPackage: Record<string, number> = {};
  for (const path of init) {
    for (const [input, { bytesInOutput }] of Object.entries(byPath.get(path)?.inputs ?? {})) {
      if (bytesInOutput === 0) continue;
      initInputs.add(input);
      const owner = packageOf(input);
      initBytesByPackage[owner] = (initBytesByPackage[owner] ?? 0) + bytesInOutput;
    }
  }
  const bytesOf = (paths: Iterable<string>) =>
    [...paths].reduce((sum, path) => sum + (byPath.get(path)?.bytes ?? 0), 0);
  return {
    files: outputs.map(([path]) => relativeName(path)).sort(),
    totalBytes: bytesOf(byPath.keys()),
    entryBytes: entry[1].bytes,
    initFiles: [...init].map(relativeName).sort(),
    initBytes: bytesOf(init),
    initInputs: [...initInputs].sort(),
    initBytesByPackage,
  };
}
