/**
 * The edge's scale-out mode: every request is invoked as it arrives, as a deployed Lambda without
 * reserved concurrency scales out, instead of waiting for one of 8 sandboxes. A private edge with
 * tests/local/checkpoint-handler.ts, which answers how many invocations overlapped in its process.
 */
import { Edge, startEdge } from './edge';

interface HandlerAnswer {
  readonly pid: number;
  readonly overlapping: number;
}

describe('an edge that scales out like Lambda', () => {
  const edges: Edge[] = [];
  const startTestEdge = async (options: { functionTimeoutMs?: number; maxSandboxes?: number } = {}) => {
    const edge = await startEdge({
      host: '127.0.0.1',
      port: 0,
      originVerifySecret: 'origin-secret-for-scale-out-tests',
      region: 'us-east-2',
      handlerModule: 'tests/local/checkpoint-handler.ts',
      scaleOut: true,
      ...options,
    });
    edges.push(edge);
    return edge;
  };
  const call = async (edge: Edge, body: { thingName: string; sleepMs?: number }) => {
    const response = await fetch(edge.provisioningUrl, { method: 'POST', body: JSON.stringify(body) });
    return { status: response.status, answer: (await response.json()) as HandlerAnswer };
  };
  afterAll(() => Promise.all(edges.map((edge) => edge.close())));

  it('runs every concurrent request at once, far beyond the 8 sandboxes of the default edge', async () => {
    const edge = await startTestEdge();
    await edge.sandboxes?.firstInit();
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, index) => call(edge, { thingName: `wide-${index}`, sleepMs: 800 })),
    );
    expect(results.map((result) => result.status)).toEqual(Array(20).fill(200));
    expect(Math.max(...results.map((result) => result.answer.overlapping))).toBe(20);
    expect(new Set(results.map((result) => result.answer.pid)).size).toBe(1);
    expect(edge.sandboxes?.stats()).toMatchObject({ maxQueued: 0, maxConcurrent: 20, started: 1 });
  });

  it('spreads the invocations over maxSandboxes processes, the least busy first', async () => {
    const edge = await startTestEdge({ maxSandboxes: 2 });
    await edge.sandboxes?.firstInit();
    // Both processes are started ahead; wait until the second is ready too.
    for (let waited = 0; (edge.sandboxes?.stats().coldStartsMs.length ?? 0) < 2 && waited < 100; waited += 1)
      await new Promise((resolve) => setTimeout(resolve, 100));
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, index) => call(edge, { thingName: `spread-${index}`, sleepMs: 500 })),
    );
    expect(new Set(results.map((result) => result.answer.pid)).size).toBe(2);
    expect(edge.sandboxes?.stats().maxConcurrent).toBe(10);
  });

  it('fails only the invocation that runs past the timeout, then retires its process once the others end', async () => {
    const edge = await startTestEdge({ functionTimeoutMs: 1_500 });
    await edge.sandboxes?.firstInit();
    const [slow, steady] = await Promise.all([
      call(edge, { thingName: 'slow', sleepMs: 5_000 }),
      // Runs from 1 s to 2 s: the slow one times out meanwhile, and this one still finishes.
      new Promise((resolve) => setTimeout(resolve, 1_000)).then(() =>
        call(edge, { thingName: 'steady', sleepMs: 1_000 }),
      ),
    ]);
    expect(slow.status).toBe(500);
    expect(steady.status).toBe(200);
    // The next request runs in a fresh process: what the timed-out invocation left running is gone.
    const after = await call(edge, { thingName: 'after' });
    expect(after.status).toBe(200);
    expect(after.answer.pid).not.toBe(steady.answer.pid);
    expect(edge.sandboxes?.stats()).toMatchObject({ timedOut: 1, started: 2, crashed: 0 });
  });
});
