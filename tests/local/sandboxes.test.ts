/**
 * The function runs in sandboxes: child processes like Lambda's, one invocation at a time each,
 * replaced by a fresh process when they die, killed at a checkpoint when a kill rule says so.
 * These tests run a private edge with tests/local/checkpoint-handler.ts (not the provisioning
 * function) and a private AWS proxy whose fault API carries the kill rules.
 */
import { AwsProxy, clearFaults, getFaults, setFaults, startAwsProxy } from './aws-proxy';
import type { Checkpoint } from '../../functions/provisioning/checkpoints';
import { Edge, startEdge } from './edge';
import { readStack } from './stack-state';

const describeWithStack = process.env.NO_LOCAL_STACK ? describe.skip : describe;
const HANDLER = 'tests/local/checkpoint-handler.ts';
const TIMEOUT_MS = 4_000;

interface HandlerAnswer {
  readonly pid: number;
  readonly passed: Checkpoint[];
  readonly remainingMs: number;
  readonly overlapping: number;
  readonly environment: Record<string, string | undefined>;
}

describeWithStack('function sandboxes', () => {
  let proxy: AwsProxy;
  const edges: Edge[] = [];
  let edge: Edge;

  const startTestEdge = async (
    options: { maxSandboxes?: number; functionTimeoutMs?: number; handlerModule?: string } = {},
  ) => {
    const started = await startEdge({
      host: '127.0.0.1',
      port: 0,
      originVerifySecret: 'origin-secret-for-sandbox-tests',
      region: 'us-east-2',
      handlerModule: HANDLER,
      environment: { SANDBOX_TEST_MARKER: 'set-by-the-edge' },
      kills: proxy.killSwitch,
      functionTimeoutMs: TIMEOUT_MS,
      ...options,
    });
    edges.push(started);
    return started;
  };

  const call = async (
    target: Edge,
    body: { thingName?: string; points?: Checkpoint[]; sleepMs?: number; fail?: boolean },
  ): Promise<{ status: number; answer: HandlerAnswer | { message: string } }> => {
    const response = await fetch(target.provisioningUrl, { method: 'POST', body: JSON.stringify(body) });
    return { status: response.status, answer: (await response.json()) as HandlerAnswer };
  };
  const answered = (result: { answer: HandlerAnswer | { message: string } }) =>
    result.answer as HandlerAnswer;

  beforeAll(async () => {
    proxy = await startAwsProxy({ host: '127.0.0.1', port: 0, target: readStack().motoUrl });
    edge = await startTestEdge();
  });
  afterAll(async () => {
    await Promise.all(edges.map((started) => started.close()));
    await proxy.close();
  });
  afterEach(() => clearFaults(proxy.faultsUrl));

  it('runs the handler in another process with the function environment and a deadline-based context', async () => {
    const result = await call(edge, { thingName: 'sandbox-env' });
    expect(result.status).toBe(200);
    const answer = answered(result);
    expect(answer.pid).not.toBe(process.pid);
    expect(answer.environment.SANDBOX_TEST_MARKER).toBe('set-by-the-edge');
    expect(answer.remainingMs).toBeGreaterThan(0);
    expect(answer.remainingMs).toBeLessThanOrEqual(TIMEOUT_MS);
  });

  it('gives each sandbox one request at a time, grows up to the cap and queues beyond it', async () => {
    const capped = await startTestEdge({ maxSandboxes: 2 });
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, index) => call(capped, { thingName: `queued-${index}`, sleepMs: 150 })),
    );
    expect(results.map((result) => result.status)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(results.map((result) => answered(result).overlapping)).toEqual([1, 1, 1, 1, 1, 1]);
    expect(new Set(results.map((result) => answered(result).pid)).size).toBeLessThanOrEqual(2);
    expect(capped.sandboxes?.stats().running).toBeLessThanOrEqual(2);
  });

  it('kills the function at the named checkpoint: 500 like API Gateway, and a fresh sandbox next time', async () => {
    // One sandbox only, so the killed call ran in the same process as the first: with warm spares
    // the pool may hand the calls to different sandboxes, and the later call could land on the
    // first one's spare-mate.
    const single = await startTestEdge({ maxSandboxes: 1 });
    const thingName = 'killed-at-registered';
    const before = await call(single, { thingName, points: ['claimed'] });
    await setFaults(proxy.faultsUrl, { kills: [{ point: 'registered', thingName, times: 1 }] });

    const killed = await call(single, { thingName, points: ['claimed', 'registered', 'attached'] });
    expect(killed).toEqual({ status: 500, answer: { message: 'Internal Server Error' } });

    const retried = await call(single, { thingName, points: ['claimed', 'registered', 'attached'] });
    expect(retried.status).toBe(200);
    expect(answered(retried).passed).toEqual(['claimed', 'registered', 'attached']);
    expect(answered(retried).pid).not.toBe(answered(before).pid);

    const state = await getFaults(proxy.faultsUrl);
    expect(state.byAction.kill).toBe(1);
    expect(state.kills).toEqual([]);
    expect(state.events.at(-1)).toMatchObject({ action: 'kill', what: 'registered', thingName });
  });

  it('kills only the named thing and point, and never with probability 0', async () => {
    await setFaults(proxy.faultsUrl, {
      kills: [
        { point: 'marked', thingNamePattern: '^victim-' },
        { point: 'claimed', probability: 0 },
      ],
    });
    expect((await call(edge, { thingName: 'bystander-1', points: ['claimed', 'marked'] })).status).toBe(200);
    expect((await call(edge, { thingName: 'victim-1', points: ['claimed', 'registered'] })).status).toBe(200);
    expect((await call(edge, { thingName: 'victim-2', points: ['claimed', 'marked'] })).status).toBe(500);
    expect((await getFaults(proxy.faultsUrl)).kills).toHaveLength(2);
  });

  it('honours `times` across sandboxes running at the same time', async () => {
    const wide = await startTestEdge({ maxSandboxes: 4 });
    await setFaults(proxy.faultsUrl, { kills: [{ point: 'attached', times: 2 }] });
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, index) =>
        call(wide, { thingName: `times-${index}`, points: ['claimed', 'attached'], sleepMs: 50 }),
      ),
    );
    const statuses = results.map((result) => result.status).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 500, 500]);
    const state = await getFaults(proxy.faultsUrl);
    expect(state.kills).toEqual([]);
    expect(wide.sandboxes?.stats().killed).toBe(2);
  });

  it('kills a sandbox that runs past the function timeout and answers 500', async () => {
    // One sandbox only (see above): the slow call surely ran where the first did.
    const short = await startTestEdge({ functionTimeoutMs: 1_000, maxSandboxes: 1 });
    const first = await call(short, { thingName: 'slow', sleepMs: 10 });
    const timedOut = await call(short, { thingName: 'slow', sleepMs: 5_000 });
    expect(timedOut).toEqual({ status: 500, answer: { message: 'Internal Server Error' } });
    expect(short.sandboxes?.stats().timedOut).toBe(1);
    const after = await call(short, { thingName: 'slow', sleepMs: 10 });
    expect(after.status).toBe(200);
    expect(answered(after).pid).not.toBe(answered(first).pid);
  });

  it('answers 500 when the handler throws, and keeps the sandbox warm', async () => {
    const single = await startTestEdge({ maxSandboxes: 1 });
    const first = await call(single, { thingName: 'thrower' });
    const failed = await call(single, { thingName: 'thrower', fail: true });
    expect(failed).toEqual({ status: 500, answer: { message: 'Internal Server Error' } });
    const after = await call(single, { thingName: 'thrower' });
    expect(answered(after).pid).toBe(answered(first).pid);
  });

  it('answers 500 when the handler module cannot load, and tries again on the next request', async () => {
    const broken = await startTestEdge({ handlerModule: 'tests/local/no-such-handler.ts' });
    const init = await broken.sandboxes?.firstInit();
    expect(init?.ok).toBe(false);
    expect((await call(broken, { thingName: 'nobody' })).status).toBe(500);
    expect((await call(broken, { thingName: 'nobody' })).status).toBe(500);
    expect(broken.sandboxes?.stats().initFailures).toBeGreaterThanOrEqual(3);
  });
});
