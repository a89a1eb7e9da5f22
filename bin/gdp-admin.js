#!/usr/bin/env node
// The `gdp-admin` command once the package is linked or installed: runs the TypeScript source
// through tsx, a dependency of this package (not a devDependency), so it resolves from here
// whatever the working directory, with no build step and no `npx` download.
require('tsx/cjs/api').register();
require('../functions/admin/cli.ts').runCommandLine();
