/**
 * The import's transaction loop against a stand-in for TransactWriteItems that cancels
 * transactions the way DynamoDB does (a record that exists, a concurrent write, throughput),
 * throws throttling errors and loses an answer: moto (the local AWS) does only the first, so this
 * is where the others are proven. The stand-in keeps the one rule that matters: a Put never lands
 * on an existing record.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import { NewItem, writeTransactions } from '../../../functions/provisioning/registry-import';

const item = (thingName: string): NewItem => ({
  thingName,
  item: { thing_name: { S: thingName }, written_by: { S: 'import' } },
});

const cancelled = (codes: string[], items: (Record<string, AttributeValue> | undefined)[] = []) =>
  new TransactionCanceledException({
    message: `Transaction cancelled [${codes.join(', ')}]`,
    $metadata: {},
    CancellationReasons: codes.map((Code, index) => ({
      Code,
      ...(items[index] ? { Item: items[index] } : {}),
    })),
  });

const throttled = (name = 'ProvisionedThroughputExceededException') =>
  Object.assign(new Error('throttled'), { name });

function batchesOf(names: string[], size: number): NewItem[][] {
  const batches: NewItem[][] = [];
  for (let start = 0; start < names.length; start += size)
    batches.push(names.slice(start, start + size).map(item));
  return batches;
}

/** A table whose transactions refuse a Put over an existing record, all or nothing. */
function table(existing: string[]) {
  const store = new Map<string, Record<string, AttributeValue>>(
    existing.map((name) => [name, { thing_name: { S: name }, written_by: { S: 'device' } }]),
  );
  const puts = new Map<string, number>();
  const transact = (batch: readonly NewItem[]) => {
    const codes = batch.map(({ thingName }) => (store.has(thingName) ? 'ConditionalCheckFailed' : 'None'));
    if (codes.includes('ConditionalCheckFailed'))
      throw cancelled(
        codes,
        batch.map(({ thingName }) => store.get(thingName)),
      );
    for (const entry of batch) {
      store.set(entry.thingName, entry.item);
      puts.set(entry.thingName, (puts.get(entry.thingName) ?? 0) + 1);
    }
  };
  return { store, puts, transact };
}

it('never overwrites a record that exists, and writes every other item exactly once through throttling and conflicts', async () => {
  const { store, puts, transact } = table(['d3', 'd40', 'd41', 'd199']);
  let calls = 0;
  const names = Array.from({ length: 200 }, (_, index) => `d${index}`);
  let progressed = 0;

  const report = await writeTransactions(
    async (batch) => {
      calls += 1;
      if (calls % 7 === 0) throw throttled();
      if (calls % 5 === 0)
        throw cancelled(batch.map((_, index) => (index === 0 ? 'TransactionConflict' : 'None')));
      if (calls % 11 === 0) throw cancelled(batch.map(() => 'ThrottlingError'));
      transact(batch);
    },
    batchesOf(names, 25),
    { concurrency: 3, onWritten: (count: number) => (progressed += count) },
  );

  expect(report.written).toBe(196);
  expect(progressed).toBe(196);
  expect([...report.alreadyThere].sort()).toEqual(['d199', 'd3', 'd40', 'd41']);
  for (const name of report.alreadyThere) expect(store.get(name)?.written_by?.S).toBe('device');
  expect([...puts.values()].every((count) => count === 1)).toBe(true);
  expect(puts.size).toBe(196);
  expect(report.throttledRetries).toBeGreaterThan(0);
  expect(report.conflictRetries).toBeGreaterThan(0);
});

it('counts a transaction applied with its answer lost, then refused as existing, as its own write', async () => {
  const { transact } = table([]);
  let lost = false;
  const report = await writeTransactions(
    async (batch) => {
      transact(batch);
      if (!lost) {
        lost = true;
        throw throttled('ThrottlingException');
      }
    },
    batchesOf(['a', 'b'], 2),
    { isOurs: (existing) => existing?.written_by?.S === 'import' },
  );
  expect(report).toMatchObject({ written: 2, alreadyThere: [] });
});

it('gives up on a transaction DynamoDB keeps refusing, with the count left', async () => {
  const send = async () => {
    throw throttled('ThrottlingException');
  };
  await expect(writeTransactions(send, [[item('a')]], { maxAttempts: 3 })).rejects.toThrow(
    /still refused 1 items after 3 attempts/,
  );
});

it('stops on a cancellation it cannot act on (a validation error), naming it', async () => {
  const send = async (batch: readonly NewItem[]) => {
    throw cancelled(batch.map(() => 'ValidationError'));
  };
  await expect(writeTransactions(send, [[item('a')]], {})).rejects.toThrow(/ValidationError/);
});
