/**
 * The function's sandboxes, as Lambda keeps them: child processes (sandbox.ts), each loading the
 * handler module once and running one invocation at a time. The pool grows on demand up to
 * `maxSandboxes` and queues requests beyond that; whenever no invocation runs, it tops up
 * `warmSpares` idle sandboxes started ahead, so a request rarely waits for a cold start. A sandbox that dies (killed at a
 * checkpoint, crashed, timed out) is discarded, and its replacement is a fresh process: module
 * state, caches and SDK clients start over, as in a new Lambda sandbox.
 *
 * A sandbox that runs past the function timeout is killed (SIGKILL) and the invocation fails;
 * the edge then answers like API Gateway does for a failed function.
 *
 * Scale-out mode (`scaleOut`) is Lambda without a concurrency cap, as a deployed function with no
 * reserved concurrency behaves: every invocation runs as soon as it arrives. Starting a process
 * per concurrent request would take this machine's CPUs (about a second each) and memory, so
 * instead `maxSandboxes` processes (default 1), all started ahead, each take any number of
 * invocations at once, the least busy first. Each process is one copy of the module: its SDK
 * clients, caches and sockets are shared by the invocations it runs, which Lambda's containers
 * would not share (docs/local-stack.md says what that changes).
 */
import { ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyResultV2,
  APIGatewayProxyStructuredResultV2,
} from 'aws-lambda';
import { KillClaim, KillRules, KillSwitch } from './kill-switch';

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const SANDBOX_SCRIPT = path.join(__dirname, 'sandbox.ts');
export const DEFAULT_MAX_SANDBOXES = 8;
/**
 * Idle sandboxes kept started ahead. A cold start here takes about a second (node + tsx + the
 * handler's init), far longer than Lambda's: without spares, the second of two concurrent
 * requests would wait for one and run after the first instead of beside it.
 */
export const DEFAULT_WARM_SPARES = 2;
/** Sandbox processes in scale-out mode unless `maxSandboxes` says otherwise. */
export const DEFAULT_SCALE_OUT_SANDBOXES = 1;
const NO_KILLS: KillRules = { generation: 0, rules: [] };
/** Cold starts kept for stats(). */
const KEPT_COLD_STARTS = 50;

export type FunctionResult = APIGatewayProxyResultV2 | APIGatewayProxyStructuredResultV2;

/** Server → sandbox over the IPC channel. */
export interface SandboxInvocation {
  readonly type: 'invoke';
  readonly id: number;
  readonly event: APIGatewayProxyEventV2;
  /** Epoch ms at which the function times out: the context's getRemainingTimeInMillis counts to it. */
  readonly deadline: number;
  readonly requestId: string;
  readonly region: string;
  readonly accountId: string;
  readonly kills: KillRules;
}
export type ServerMessage = SandboxInvocation | { readonly type: 'kills'; readonly kills: KillRules };

/** Sandbox → server over the IPC channel. */
export type SandboxMessage =
  | { readonly type: 'ready'; readonly initMs: number }
  | { readonly type: 'init-error'; readonly message: string }
  | { readonly type: 'result'; readonly id: number; readonly result: FunctionResult }
  | { readonly type: 'error'; readonly id: number; readonly message: string };

export type InvocationOutcome =
  | { readonly kind: 'result'; readonly result: FunctionResult }
  /** The handler threw, its init failed, it crashed, was killed or timed out. */
  | { readonly kind: 'failed'; readonly reason: string };

export interface SandboxPoolOptions {
  /** Module exporting `handler`, absolute or relative to the repository root. */
  readonly handlerModule: string;
  /** Added to the stack server's own environment for every sandbox. */
  readonly environment?: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  readonly region: string;
  readonly accountId: string;
  readonly maxSandboxes?: number;
  readonly warmSpares?: number;
  /**
   * Every invocation runs at once, however many arrive: `maxSandboxes` processes (default 1),
   * started ahead, each running any number of invocations concurrently. A timed-out invocation
   * fails alone (its process keeps serving the others); a kill at a checkpoint ends every
   * invocation in that process.
   */
  readonly scaleOut?: boolean;
  readonly kills?: KillSwitch;
  readonly logger?: (line: string) => void;
  /** Where the sandboxes' stdout and stderr go (appended); default: this process's own. */
  readonly outputFile?: string;
}

export interface SandboxPoolStats {
  readonly running: number;
  readonly started: number;
  readonly invocations: number;
  readonly initFailures: number;
  readonly killed: number;
  readonly crashed: number;
  readonly timedOut: number;
  /** Most invocations ever waiting for a sandbox at once. */
  readonly maxQueued: number;
  /** Most invocations ever running at once, over all sandboxes. */
  readonly maxConcurrent: number;
  /** Spawn to ready (node + tsx + handler module init), newest last. */
  readonly coldStartsMs: readonly number[];
}

export interface SandboxPool {
  invoke(event: APIGatewayProxyEventV2): Promise<InvocationOutcome>;
  /** Resolves when the first sandbox has loaded the handler, or failed to. */
  firstInit(): Promise<{ ok: true; coldStartMs: number } | { ok: false; message: string }>;
  stats(): SandboxPoolStats;
  close(): Promise<void>;
}

interface Pending {
  readonly id: number;
  readonly event: APIGatewayProxyEventV2;
  readonly resolve: (outcome: InvocationOutcome) => void;
}

interface Running {
  readonly pending: Pending;
  readonly timer: NodeJS.Timeout;
}

interface Sandbox {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly spawnedAt: number;
  state: 'starting' | 'ready' | 'gone';
  /** Invocations in this sandbox: at most one, unless the pool scales out. */
  readonly running: Map<number, Running>;
  /** Set when the kill switch let it kill itself: the checkpoint and thing. */
  killedAt?: string;
  timedOut?: boolean;
  /**
   * Scaling out: an invocation in it timed out. It takes no new invocation and is killed once
   * the others in it have ended, so the timed-out one stops calling AWS within one function
   * timeout, as Lambda ends a timed-out invocation's container.
   */
  draining?: boolean;
}

export function startSandboxPool(options: SandboxPoolOptions): SandboxPool {
  const log = options.logger ?? (() => undefined);
  const scaleOut = options.scaleOut === true;
  const maxSandboxes = Math.max(
    1,
    options.maxSandboxes ?? (scaleOut ? DEFAULT_SCALE_OUT_SANDBOXES : DEFAULT_MAX_SANDBOXES),
  );
  // Scaling out, every sandbox is started ahead: none is ever started for a waiting request.
  const warmSpares = scaleOut
    ? maxSandboxes
    : Math.min(maxSandboxes, Math.max(0, options.warmSpares ?? DEFAULT_WARM_SPARES));
  const invocationsPerSandbox = scaleOut ? Number.POSITIVE_INFINITY : 1;
  const handlerModule = path.resolve(REPO_ROOT, options.handlerModule);
  const sandboxes = new Set<Sandbox>();
  const queue: Pending[] = [];
  let nextId = 1;
  let closed = false;
  /** After a failed init, no sandbox is started ahead: only a request retries the init. */
  let lastInitOk = true;
  const counters = { started: 0, invocations: 0, initFailures: 0, killed: 0, crashed: 0, timedOut: 0 };
  let maxQueued = 0;
  let maxConcurrent = 0;
  const coldStartsMs: number[] = [];
  let reportFirstInit: (
    outcome: { ok: true; coldStartMs: number } | { ok: false; message: string },
  ) => void = () => undefined;
  const firstInit = new Promise<{ ok: true; coldStartMs: number } | { ok: false; message: string }>(
    (resolve) => {
      reportFirstInit = (outcome) => {
        resolve(outcome);
        reportFirstInit = () => undefined;
      };
    },
  );

  const all = () => [...sandboxes];
  const isIdle = (sandbox: Sandbox) =>
    sandbox.state === 'ready' && !sandbox.draining && sandbox.running.size === 0;
  const count = (which: 'starting' | 'idle' | 'busy') =>
    all().filter((sandbox) =>
      which === 'starting'
        ? sandbox.state === 'starting'
        : which === 'idle'
          ? isIdle(sandbox)
          : sandbox.running.size > 0,
    ).length;
  const concurrent = () => all().reduce((sum, sandbox) => sum + sandbox.running.size, 0);

  const finish = (sandbox: Sandbox, id: number, outcome: InvocationOutcome) => {
    const running = sandbox.running.get(id);
    if (!running) return;
    clearTimeout(running.timer);
    sandbox.running.delete(id);
    running.pending.resolve(outcome);
  };
  /** Kills a draining sandbox once nothing runs in it any more. */
  const retireIfDrained = (sandbox: Sandbox) => {
    if (!sandbox.draining || sandbox.running.size > 0 || sandbox.state === 'gone') return;
    sandbox.state = 'gone';
    log(`sandbox ${sandbox.pid} drained: killed`);
    sandbox.child.kill('SIGKILL');
  };
  const finishAll = (sandbox: Sandbox, outcome: InvocationOutcome) => {
    for (const id of [...sandbox.running.keys()]) finish(sandbox, id, outcome);
  };

  const send = (sandbox: Sandbox, message: ServerMessage) => {
    if (!sandbox.child.connected) return false;
    try {
      sandbox.child.send(message);
      return true;
    } catch {
      return false;
    }
  };

  const dispatch = (sandbox: Sandbox, pending: Pending) => {
    counters.invocations += 1;
    const deadline = Date.now() + options.timeoutMs;
    const timer = setTimeout(() => {
      counters.timedOut += 1;
      const reason = `function timed out after ${options.timeoutMs} ms`;
      if (scaleOut) {
        // Other invocations share the process: this one fails alone, as its own container would,
        // and the process is retired, so that what it left running cannot go on for long.
        log(
          `sandbox ${sandbox.pid}: invocation ${pending.id} timed out after ${options.timeoutMs} ms: draining`,
        );
        sandbox.draining = true;
        sandbox.timedOut = true;
        finish(sandbox, pending.id, { kind: 'failed', reason });
        retireIfDrained(sandbox);
        pump();
        return;
      }
      sandbox.timedOut = true;
      // Dying: no invocation may be handed to it before its exit is seen.
      sandbox.state = 'gone';
      log(`sandbox ${sandbox.pid} timed out after ${options.timeoutMs} ms: killed`);
      finish(sandbox, pending.id, { kind: 'failed', reason });
      sandbox.child.kill('SIGKILL');
    }, options.timeoutMs);
    sandbox.running.set(pending.id, { pending, timer });
    maxConcurrent = Math.max(maxConcurrent, concurrent());
    const sent = send(sandbox, {
      type: 'invoke',
      id: pending.id,
      event: pending.event,
      deadline,
      requestId: pending.event.requestContext.requestId,
      region: options.region,
      accountId: options.accountId,
      kills: options.kills?.current() ?? NO_KILLS,
    });
    if (!sent) finish(sandbox, pending.id, { kind: 'failed', reason: `sandbox ${sandbox.pid} is gone` });
  };

  const pump = () => {
    if (closed) return;
    for (;;) {
      // The least busy sandbox with room (one invocation each, unless scaling out).
      const free = all()
        .filter(
          (sandbox) =>
            sandbox.state === 'ready' && !sandbox.draining && sandbox.running.size < invocationsPerSandbox,
        )
        .sort((a, b) => a.running.size - b.running.size)[0];
      const pending = free ? queue.shift() : undefined;
      if (!free || !pending) break;
      dispatch(free, pending);
    }
    // Spares are started while nothing runs: a sandbox booting beside a running invocation takes
    // a CPU from it (about a second of CPU each), and the invocations would no longer overlap as
    // they do in Lambda. Waiting requests start sandboxes at once.
    const spares = lastInitOk && (scaleOut || count('busy') === 0) ? warmSpares : 0;
    const wanted = queue.length + spares - count('idle') - count('starting');
    // Draining sandboxes are on their way out: their replacements may start beside them.
    const room = maxSandboxes - all().filter((sandbox) => !sandbox.draining).length;
    for (let index = 0; index < Math.min(wanted, room); index += 1) spawnSandbox();
  };

  const onKillPipe = (sandbox: Sandbox, pipe: Socket) => {
    let buffered = '';
    pipe.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        newline = buffered.indexOf('\n');
        let allowed = false;
        try {
          const claim = JSON.parse(line) as KillClaim;
          allowed = options.kills?.claim(claim) ?? false;
          if (allowed) {
            sandbox.killedAt = `${claim.point} (${claim.thingName})`;
            sandbox.state = 'gone';
          }
        } catch (error) {
          log(`sandbox ${sandbox.pid}: bad kill claim: ${(error as Error).message}`);
        }
        pipe.write(allowed ? 'y' : 'n');
      }
    });
    pipe.on('error', () => undefined);
  };

  const output = options.outputFile ? openSync(options.outputFile, 'a') : undefined;

  const spawnSandbox = () => {
    const child = spawn(
      process.execPath,
      // tsx's ESM loader, not only its CommonJS hook (3x faster to start): the function loads
      // some modules with import().
      ['--import', 'tsx', SANDBOX_SCRIPT, handlerModule],
      {
        cwd: REPO_ROOT,
        env: { ...process.env, ...options.environment, NODE_OPTIONS: '' },
        stdio: ['ignore', output ?? 'inherit', output ?? 'inherit', 'ipc', 'pipe'],
      },
    );
    counters.started += 1;
    const sandbox: Sandbox = {
      child,
      pid: child.pid ?? 0,
      spawnedAt: Date.now(),
      state: 'starting',
      running: new Map(),
    };
    sandboxes.add(sandbox);
    const pipe = child.stdio[4];
    if (pipe) onKillPipe(sandbox, pipe as Socket);

    const initFailed = (message: string) => {
      counters.initFailures += 1;
      lastInitOk = false;
      log(`sandbox ${sandbox.pid} init failed: ${message}`);
      reportFirstInit({ ok: false, message });
      // As with a failed Lambda init, the request that waited for it fails; the next one retries.
      queue.shift()?.resolve({ kind: 'failed', reason: `init failed: ${message.split('\n')[0]}` });
    };

    child.on('message', (message: SandboxMessage) => {
      switch (message.type) {
        case 'ready': {
          const coldStartMs = Date.now() - sandbox.spawnedAt;
          coldStartsMs.push(coldStartMs);
          if (coldStartsMs.length > KEPT_COLD_STARTS) coldStartsMs.shift();
          log(
            `sandbox ${sandbox.pid} ready: cold start ${coldStartMs} ms (handler init ${message.initMs} ms)`,
          );
          reportFirstInit({ ok: true, coldStartMs });
          lastInitOk = true;
          sandbox.state = 'ready';
          break;
        }
        case 'init-error':
          sandbox.state = 'gone';
          initFailed(message.message);
          break;
        case 'result':
        case 'error':
          if (!sandbox.running.has(message.id)) return;
          if (message.type === 'error') log(`sandbox ${sandbox.pid} function error: ${message.message}`);
          finish(
            sandbox,
            message.id,
            message.type === 'result'
              ? { kind: 'result', result: message.result }
              : { kind: 'failed', reason: message.message },
          );
          retireIfDrained(sandbox);
          break;
      }
      pump();
    });
    child.on('error', (error) => log(`sandbox ${sandbox.pid}: ${error.message}`));
    child.on('exit', (code, signal) => {
      const wasStarting = sandbox.state === 'starting';
      sandbox.state = 'gone';
      sandboxes.delete(sandbox);
      if (closed) return;
      if (sandbox.killedAt) {
        counters.killed += 1;
        log(`sandbox ${sandbox.pid} killed at ${sandbox.killedAt}`);
      } else if (!sandbox.timedOut && !wasStarting) {
        counters.crashed += 1;
        log(`sandbox ${sandbox.pid} exited (code ${code}, signal ${signal})`);
      }
      if (wasStarting) initFailed(`sandbox exited during init (code ${code}, signal ${signal})`);
      finishAll(sandbox, {
        kind: 'failed',
        reason: sandbox.killedAt
          ? `killed at ${sandbox.killedAt}`
          : `sandbox exited (code ${code}, signal ${signal})`,
      });
      pump();
    });
  };

  options.kills?.onChange((kills) => {
    for (const sandbox of sandboxes)
      if (sandbox.state !== 'starting') send(sandbox, { type: 'kills', kills });
  });

  pump();

  return {
    invoke(event) {
      return new Promise((resolve) => {
        if (closed) return resolve({ kind: 'failed', reason: 'the edge is closing' });
        queue.push({ id: nextId++, event, resolve });
        pump();
        maxQueued = Math.max(maxQueued, queue.length);
      });
    },
    firstInit: () => firstInit,
    stats: () => ({
      running: sandboxes.size,
      ...counters,
      maxQueued,
      maxConcurrent,
      coldStartsMs: [...coldStartsMs],
    }),
    async close() {
      closed = true;
      for (const pending of queue.splice(0))
        pending.resolve({ kind: 'failed', reason: 'the edge is closing' });
      const exits = [...sandboxes].map(
        (sandbox) =>
          new Promise<void>((resolve) => {
            if (sandbox.child.exitCode !== null || sandbox.child.signalCode !== null) return resolve();
            sandbox.child.once('exit', () => resolve());
            finishAll(sandbox, { kind: 'failed', reason: 'the edge is closing' });
            sandbox.child.kill('SIGKILL');
          }),
      );
      await Promise.all(exits);
      sandboxes.clear();
      if (output !== undefined) closeSync(output);
    },
  };
}
