/**
 * A 10,000-row import while DynamoDB throttles TransactWriteItems (the fault proxy answers
 * ProvisionedThroughputExceededException): every row ends up written exactly once. Cancellations
 * for throughput or a conflict, and a lost answer, are pinned by
 * tests/unit/admin/write-transactions.test.ts (moto does none of them).
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { main } from '../../functions/admin/cli';
import { clearFaults, setFaults, uniqueThingName } from '../integration/requests';

afterEach(clearFaults);

async function run(...args: string[]): Promise<{ code: number; out: string }> {
  const out: string[] = [];
  const log = jest
    .spyOn(console, 'log')
    .mockImplementation((...parts: unknown[]) => void out.push(parts.join(' ')));
  try {
    return { code: await main(['node', 'gdp-admin', '--local', '--yes', ...args]), out: out.join('\n') };
  } finally {
    process.exitCode = undefined;
    log.mockRestore();
  }
}

it('imports 10,000 rows under TransactWriteItems throttling, each exactly once', async () => {
  const prefix = uniqueThingName('bulk');
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'gdp-import-')), 'fleet.csv');
  const names = Array.from({ length: 10_000 }, (_, index) => `${prefix}-${String(index).padStart(5, '0')}`);
  writeFileSync(file, ['thing_name', ...names].join('\n'));
  // 12 throttled answers: with the SDK's 3 attempts per call, some transactions fail outright and
  // are sent again by the import's own backoff.
  await setFaults({
    rules: [
      {
        match: { service: 'dynamodb', target: 'DynamoDB_20120810.TransactWriteItems' },
        error: 'ProvisionedThroughputExceededException',
        times: 12,
      },
    ],
  });

  const imported = await run('import', file, '--json');
  expect(imported.code).toBe(0);
  const summary = JSON.parse(imported.out) as Record<string, number>;
  expect(summary).toMatchObject({ new: 10_000, written: 10_000, rejected: 0 });
  expect(summary.throttledRetries).toBeGreaterThan(0);

  const listed = await run('list', '--prefix', prefix, '--ndjson');
  const seen = listed.out.split('\n').map((line) => (JSON.parse(line) as { thingName: string }).thingName);
  expect(seen).toHaveLength(10_000);
  expect(new Set(seen)).toEqual(new Set(names));

  // Again: nothing new, nothing overwritten.
  expect(JSON.parse((await run('import', file, '--json')).out)).toMatchObject({
    new: 0,
    written: 0,
    existing: 10_000,
  });
}, 120_000);
