/**
 * The function validates with zod's "mini" build: it tree-shakes to a few KiB, where the full API
 * added ~430 KiB and ~50 ms of cold start to the bundle. Mini ships without messages; load the
 * English ones (only those) for the cases our own messages don't cover, such as a missing variable.
 */
import { config } from 'zod/mini';
// The .cjs file: jest (CommonJS) can load it, and esbuild bundles it alike.
import en from 'zod/v4/locales/en.cjs';

config(en());
