/**
 * What the bench and the storm set up on the local stack: a private local edge in front of a
 * handler module (the stack's function environment, AWS proxy and moto, its own sandboxes, the
 * function's log lines in the stack's logs folder rather than on the terminal), and devices on
 * the allowlist.
 */
import { join } from 'node:path';
import { Edge, startEdge } from '../local/edge';
import { addDevice, type LocalStack } from '../local/stack';

export interface FunctionEdgeOptions {
  readonly handlerModule: string;
  /** Names its log file, `<logs>/bench-<label>.log`. */
  readonly label: string;
  readonly maxSandboxes?: number;
  readonly warmSpares?: number;
  /** Lambda-like scale-out: every request runs as it arrives (sandbox-pool.ts). */
  readonly scaleOut?: boolean;
  /** Settings over the stack's function environment (the storm scales the admission budget). */
  readonly environment?: Readonly<Record<string, string>>;
}

export function startFunctionEdge(stack: LocalStack, options: FunctionEdgeOptions): Promise<Edge> {
  return startEdge({
    // The function logs a line per request, as in Lambda; into the stack's logs, not here.
    sandboxOutputFile: join(stack.logs, `bench-${options.label}.log`),
    host: '127.0.0.1',
    port: 0,
    originVerifySecret: stack.originVerifySecret,
    handlerModule: options.handlerModule,
    environment: { ...stack.functionEnvironment, ...options.environment },
    region: stack.homeRegion,
    accountId: stack.accountId,
    maxSandboxes: options.maxSandboxes,
    warmSpares: options.warmSpares,
    scaleOut: options.scaleOut,
  });
}

/** Puts `thingNames` on the allowlist as unprovisioned, 16 writes at a time. */
export async function addDevices(stack: LocalStack, thingNames: readonly string[]): Promise<void> {
  for (let at = 0; at < thingNames.length; at += 16) {
    await Promise.all(thingNames.slice(at, at + 16).map((thingName) => addDevice(stack, thingName)));
  }
}
