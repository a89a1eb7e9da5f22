/** Stops the local stack if the global setup started it; a stack someone else started stays up. */
import { stopStack } from './stack';

export default async function globalTeardown(): Promise<void> {
  if (process.env.NO_LOCAL_STACK || !globalThis.localStackStartedByJest) return;
  await stopStack({ log: () => undefined });
}
