/**
 * The admission schedules (admission.ts) in DynamoDB: one item per region in a small table of
 * their own in the home region. Not in the registry table: operator scans read every item there
 * as a device, and it is a global table, whose replicas resolve concurrent writes
 * last-writer-wins (a schedule advanced in two regions at once would lose admissions). One item
 * per region keeps regions independent: a storm in one region makes its own item hot, no other.
 *
 * Cost without a storm: one conditional UpdateItem per admitted request (the region is idle:
 * its schedule lies in the past). During a storm an admitted request makes two, a refused one
 * two or three; every one is a single-item conditional write, so the schedule is shared by
 * every concurrent invocation without a lock. A request AWS IoT throttled after all reads the
 * schedule (GetItem) to queue behind it. A region a request may spill into is only tried
 * (take with ONLY_IF_ROOM): one or two writes, never a place in its queue. DynamoDB has no max(), hence the shape: try the
 * idle case, and learn the schedule from the failed condition's ALL_OLD for the busy case.
 *
 * Item: region (S, key), next_free_ms (N), promised_ms (N), epoch milliseconds.
 */
import {
  AttributeValue,
  ConditionalCheckFailedException,
  DynamoDBClient,
  GetItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { awsClientSettings } from './aws-client-settings';
import { isThrottling } from './aws-errors';
import { AdmissionState, fitsWithin, queueEnd, Schedule, unqueued, Verdict } from './admission';

const number = (value: number): AttributeValue => ({ N: String(Math.round(value)) });

function scheduleOf(item: Record<string, AttributeValue> | undefined): Schedule {
  const read = (name: string) => (item?.[name]?.N !== undefined ? Number(item[name].N) : undefined);
  return { nextFreeMs: read('next_free_ms'), promisedMs: read('promised_ms') };
}

/** Written: the new item; the condition failed: the item as it was. */
type Outcome =
  | { readonly written: true; readonly item: Record<string, AttributeValue> | undefined }
  | { readonly written: false; readonly item: Record<string, AttributeValue> | undefined };

export function dynamoAdmissionState(settings: { region: string; tableName: string }): AdmissionState {
  // One attempt and one retry: the schedule is on the request path, and a slow answer is worth
  // less than the documented fallback (admission.ts, whenUnavailable).
  const dynamodb = new DynamoDBClient(awsClientSettings(settings.region, 2));
  const TableName = settings.tableName;

  async function update(
    region: string,
    input: Omit<
      ConstructorParameters<typeof UpdateItemCommand>[0],
      'TableName' | 'Key' | 'ReturnValues' | 'ReturnValuesOnConditionCheckFailure'
    >,
    signal?: AbortSignal,
  ): Promise<Outcome> {
    try {
      const answer = await dynamodb.send(
        new UpdateItemCommand({
          ...input,
          TableName,
          Key: { region: { S: region } },
          ReturnValues: 'ALL_NEW',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
        { abortSignal: signal },
      );
      return { written: true, item: answer.Attributes };
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) return { written: false, item: error.Item };
      throw error;
    }
  }

  /** A place at the end of the region's queue, knowing the schedule as `seen`. */
  async function promise(
    region: string,
    seen: Schedule,
    nowMs: number,
    costMs: number,
    signal?: AbortSignal,
  ): Promise<Verdict> {
    const start = queueEnd(seen, nowMs);
    if ((seen.promisedMs ?? 0) < start) {
      // The queue is empty (its end lies before the admitted work or now): start it after both.
      // One writer wins; the others join behind it below.
      const started = await update(
        region,
        {
          ConditionExpression:
            seen.promisedMs === undefined ? 'attribute_not_exists(promised_ms)' : 'promised_ms = :seen',
          UpdateExpression: 'SET promised_ms = :end',
          ExpressionAttributeValues: {
            ':end': number(start + costMs),
            ...(seen.promisedMs === undefined ? {} : { ':seen': number(seen.promisedMs) }),
          },
        },
        signal,
      );
      if (started.written) return { kind: 'refused', slotMs: start, backlogMs: start - nowMs };
    }
    // Joining a queue: ADD needs no condition, so concurrent refusals each get their own slot.
    const joined = await update(
      region,
      { UpdateExpression: 'ADD promised_ms :cost', ExpressionAttributeValues: { ':cost': number(costMs) } },
      signal,
    );
    const end = scheduleOf(joined.item).promisedMs ?? start + costMs;
    const slotMs = Math.max(end - costMs, start);
    return { kind: 'refused', slotMs, backlogMs: slotMs - nowMs };
  }

  async function guarded(work: () => Promise<Verdict>): Promise<Verdict> {
    try {
      return await work();
    } catch (error) {
      return { kind: 'unavailable', busy: isThrottling(error), cause: error };
    }
  }

  return {
    // The schedule's rule (admission.ts, takeSlot); a refusal past `unqueuedOverMs` joins no queue.
    take: (region, nowMs, costMs, maxWaitMs, signal, unqueuedOverMs) =>
      guarded(async () => {
        // The idle region: its schedule lies in the past (or it has none yet).
        const idle = await update(
          region,
          {
            ConditionExpression: 'attribute_not_exists(next_free_ms) OR next_free_ms <= :now',
            UpdateExpression: 'SET next_free_ms = :next',
            ExpressionAttributeValues: { ':now': number(nowMs), ':next': number(nowMs + costMs) },
          },
          signal,
        );
        if (idle.written) return { kind: 'admitted', slotMs: nowMs, backlogMs: 0 };
        let seen = scheduleOf(idle.item);
        if (fitsWithin(seen.nextFreeMs, nowMs, maxWaitMs)) {
          // Busy but within the bound: book the slot after the admitted work.
          const booked = await update(
            region,
            {
              ConditionExpression: 'next_free_ms <= :latest',
              UpdateExpression: 'ADD next_free_ms :cost',
              ExpressionAttributeValues: { ':latest': number(nowMs + maxWaitMs), ':cost': number(costMs) },
            },
            signal,
          );
          if (booked.written) {
            const next = scheduleOf(booked.item).nextFreeMs ?? nowMs + costMs;
            const slotMs = Math.max(nowMs, next - costMs);
            return { kind: 'admitted', slotMs, backlogMs: slotMs - nowMs };
          }
          seen = scheduleOf(booked.item);
        }
        return unqueued(seen, nowMs, unqueuedOverMs) ?? promise(region, seen, nowMs, costMs, signal);
      }),

    queue: (region, nowMs, costMs, signal) =>
      guarded(async () => {
        const read = await dynamodb.send(
          new GetItemCommand({ TableName, Key: { region: { S: region } }, ConsistentRead: true }),
          { abortSignal: signal },
        );
        return promise(region, scheduleOf(read.Item), nowMs, costMs, signal);
      }),
  };
}
