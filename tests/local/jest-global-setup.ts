/**
 * Starts the local stack once for the whole jest run, or reuses a healthy one already running
 * (then teardown leaves it alone). NO_LOCAL_STACK=1 skips it for runs that need no AWS.
 */
import { startStack } from './stack';
import { LocalStackError } from './stack-state';

declare global {
  var localStackStartedByJest: boolean | undefined;
}

export default async function globalSetup(): Promise<void> {
  if (process.env.NO_LOCAL_STACK) return;
  const started = Date.now();
  let result;
  try {
    result = await startStack({ log: () => undefined, stopWithOwner: true });
  } catch (error) {
    // The message says what to do; jest would add a stack trace of our own start code.
    if (error instanceof LocalStackError) error.stack = `${error.message}\n`;
    throw error;
  }
  const { stack, started: fresh } = result;
  globalThis.localStackStartedByJest = fresh;
  process.stdout.write(
    `\nlocal stack ${fresh ? `started in ${((Date.now() - started) / 1000).toFixed(1)} s` : 'already running, reused'}: ` +
      `${stack.provisioningUrl}\n`,
  );
}
