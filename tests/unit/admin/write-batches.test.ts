/**
 * The import's batch loop against a stand-in for BatchWriteItem that hands items back as
 * UnprocessedItems and throws throttling errors: moto (the local AWS) never answers
 * UnprocessedItems, so this is where that path is proven.
 */
import type { WriteRequest } from '@aws-sdk/client-dynamodb';
import { writeBatches } from '../../../functions/provisioning/registry';

const put = (name: string): WriteRequest => ({ PutRequest: { Item: { thing_name: { S: name } } } });

it('sends UnprocessedItems and throttled batches again until every item is written once', async () => {
  const stored = new Map<string, number>();
  let calls = 0;
  const send = async (
    batch: WriteRequest[],
  ): Promise<{ UnprocessedItems?: Record<string, WriteRequest[]> }> => {
    calls += 1;
    if (calls % 5 === 0)
      throw Object.assign(new Error('throttled'), { name: 'ProvisionedThroughputExceededException' });
    // Takes the first half of every batch, hands the rest back.
    const taken = batch.slice(0, Math.ceil(batch.length / 2));
    for (const request of taken) {
      const name = request.PutRequest?.Item?.thing_name?.S ?? '';
      stored.set(name, (stored.get(name) ?? 0) + 1);
    }
    const left = batch.slice(taken.length);
    return { UnprocessedItems: left.length > 0 ? { registry: left } : {} };
  };
  const names = Array.from({ length: 200 }, (_, index) => `d${index}`);
  const batches: WriteRequest[][] = [];
  for (let start = 0; start < names.length; start += 25)
    batches.push(names.slice(start, start + 25).map(put));
  let progressed = 0;

  const report = await writeBatches(send, 'registry', batches, {
    concurrency: 3,
    onWritten: (n) => (progressed += n),
  });

  expect(report.written).toBe(200);
  expect(progressed).toBe(200);
  expect(report.unprocessedRetried).toBeGreaterThan(0);
  expect(report.throttledRetries).toBeGreaterThan(0);
  expect([...stored.values()].every((count) => count === 1)).toBe(true);
  expect(stored.size).toBe(200);
});

it('gives up on a batch DynamoDB keeps refusing, with the count left', async () => {
  const send = async (batch: WriteRequest[]) => ({ UnprocessedItems: { registry: batch } });
  await expect(writeBatches(send, 'registry', [[put('a')]], { maxAttempts: 3 })).rejects.toThrow(
    /still refused 1 items/,
  );
});
