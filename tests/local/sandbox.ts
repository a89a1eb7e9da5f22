/**
 * One function sandbox, as Lambda runs it: a process that loads the handler module once (the
 * init, with the function's environment), then runs one invocation at a time for the stack
 * server (sandbox-pool.ts) over the IPC channel, with a Lambda context built from the deadline
 * the server gives.
 *
 * It installs the checkpoint hook: when a kill rule names the checkpoint, it asks the server on
 * the kill pipe (fd 4) whether the rule may still fire, blocking until the answer comes, and on
 * yes kills itself with SIGKILL: no cleanup, no answer, nothing flushed.
 *
 * Usage (by sandbox-pool.ts): node --import tsx tests/local/sandbox.ts <handler module>
 */
import { readSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Context } from 'aws-lambda';
import { installCheckpointHook } from '../../functions/provisioning/checkpoints';
import { KillClaim, killRuleApplies, KillRules } from './kill-switch';
import type { ProvisioningHandler } from './edge';
import type { SandboxInvocation, SandboxMessage, ServerMessage } from './sandbox-pool';

/** The fd of the kill pipe (stdio index 4; 3 is the IPC channel). */
const KILL_FD = 4;

let killRules: KillRules = { generation: 0, rules: [] };

const send = (message: SandboxMessage): void => {
  process.send?.(message);
};

/** Blocks this process until the server answers: the decision is made at the checkpoint. */
function serverAllowsKill(claim: KillClaim): boolean {
  writeSync(KILL_FD, `${JSON.stringify(claim)}\n`);
  const answer = Buffer.alloc(1);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      if (readSync(KILL_FD, answer, 0, 1, null) === 1) return answer.toString('ascii') === 'y';
      return false; // the server is gone
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
      Atomics.wait(pause, 0, 0, 1);
    }
  }
}

installCheckpointHook((point, thingName) => {
  for (const { index, rule } of killRules.rules) {
    if (!killRuleApplies(rule, point, thingName)) continue;
    if (rule.probability !== undefined && Math.random() >= rule.probability) continue;
    if (serverAllowsKill({ generation: killRules.generation, index, point, thingName })) {
      process.kill(process.pid, 'SIGKILL');
    }
  }
});

function lambdaContext(invocation: SandboxInvocation): Context {
  const functionName = 'global-device-provisioning-local';
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:${invocation.region}:${invocation.accountId}:function:${functionName}`,
    memoryLimitInMB: '512',
    awsRequestId: invocation.requestId,
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: `local/${process.pid}`,
    getRemainingTimeInMillis: () => Math.max(0, invocation.deadline - Date.now()),
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}

async function main(): Promise<void> {
  const modulePath = path.resolve(process.argv[2] ?? '');
  const started = Date.now();
  let handler: ProvisioningHandler;
  try {
    const loaded = (await import(modulePath)) as { handler?: unknown; default?: { handler?: unknown } };
    const candidate = loaded.handler ?? loaded.default?.handler;
    if (typeof candidate !== 'function') throw new Error(`${modulePath} does not export a handler function`);
    handler = candidate as ProvisioningHandler;
  } catch (error) {
    // Like a failed Lambda init: this sandbox is discarded; the next request tries a fresh one.
    process.send?.({ type: 'init-error', message: (error as Error).stack ?? String(error) }, () =>
      process.exit(1),
    );
    return;
  }

  process.on('message', (message: ServerMessage) => {
    if (message.type === 'kills') {
      killRules = message.kills;
      return;
    }
    killRules = message.kills;
    const invocation = message;
    Promise.resolve()
      .then(() => handler(invocation.event, lambdaContext(invocation)))
      .then(
        (result) => send({ type: 'result', id: invocation.id, result }),
        (error: unknown) =>
          send({
            type: 'error',
            id: invocation.id,
            message: `${(error as Error).name ?? 'Error'}: ${(error as Error).message ?? String(error)}`,
          }),
      );
  });
  send({ type: 'ready', initMs: Date.now() - started });
}

// The stack server is gone (or closed the pool): a sandbox never outlives it.
process.on('disconnect', () => process.exit(0));

main().catch((error: unknown) => {
  process.stderr.write(`sandbox failed: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
