/**
 * Starts the local stack once for the whole jest run, or reuses a healthy one already running
 * (then teardown leaves it alone). NO_LOCAL_STACK=1 skips it for runs that need no AWS.
 */
import { startStack } from './stack';

declare global {
  var localStackStartedByJest: boolean | undefined;
}

export default async function globalSetup(): Promise<void> {
  if (process.env.NO_LOCAL_STACK) return;
  const started = Date.now();
  const { stack, started: fresh } = await startStack({ log: () => undefined, stopWithOwner: true });
  globalThis.localStackStartedByJest = fresh;
  process.stdout.write(
    `\nlocal stack ${fresh ? `started in ${((Date.now() - started) / 1000).toFixed(1)} s` : 'already running, reused'}: ` +
      `${stack.provisioningUrl}\n`,
  );
}
