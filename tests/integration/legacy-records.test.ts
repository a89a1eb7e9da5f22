/**
 * Records left by older versions or by hand. An earlier version kept every v2 nonce in an
 * unbounded `used_nonces` set; a record it stuffed up to DynamoDB's 400 KB item limit used to lock
 * v1 devices out with a 500 (every write grew the item, and the ValidationException passed through
 * as "internal error"). Every write now sheds the legacy attributes (registry-table.ts), and an
 * item that is still too large is answered with an error naming the problem.
 */
import { randomBytes } from 'node:crypto';
import { AttributeValue } from '@aws-sdk/client-dynamodb';
import { admin } from '../support/admin';
import { addDevice } from '../local/stack';
import { PLACES, post, registryRecord, stack, uniqueThingName, v1Body } from './requests';

/** `timestamp.nonce` entries, as the earlier version stored them, adding up to about `bytes`. */
function usedNonces(bytes: number): AttributeValue {
  const entries: string[] = [];
  for (let size = 0; size < bytes;) {
    const entry = `${1_700_000_000 + entries.length}.${randomBytes(16).toString('base64url')}`;
    entries.push(entry);
    size += entry.length;
  }
  return { SS: entries };
}

/** Close to moto's item limit (405,000 bytes, counted like DynamoDB): a claim's intent won't fit beside it. */
const NEAR_THE_LIMIT = 404_000;

describe('records from older versions', () => {
  it('a v1 device whose record is stuffed with used_nonces near the 400 KB limit provisions, and the field is gone', async () => {
    const thingName = uniqueThingName('legacy-stuffed');
    await addDevice(stack, thingName, { used_nonces: usedNonces(NEAR_THE_LIMIT) });
    const answer = await post(v1Body(thingName), PLACES.mumbai);
    expect(answer.status).toBe(200);
    const record = await registryRecord(thingName);
    expect(record?.prov_status?.S).toBe('provisioned');
    expect(record?.used_nonces).toBeUndefined();
  }, 30_000);

  it('a record too large for any write is answered with a message naming its size, and writes nothing', async () => {
    const thingName = uniqueThingName('legacy-notes');
    // By hand: an attribute nothing of ours knows, so no write of ours removes it.
    await addDevice(stack, thingName, { operator_notes: { S: 'x'.repeat(NEAR_THE_LIMIT) } });
    const answer = await post(v1Body(thingName), PLACES.mumbai);
    expect(answer.status).toBe(500);
    expect(answer.body.message).toMatch(/400 KB item size limit/);
    expect(answer.body.message).not.toMatch(/internal error/);
    expect(Number(answer.headers.get('retry-after'))).toBeGreaterThan(0);
    const record = await registryRecord(thingName);
    expect(record?.prov_status?.S).toBe('unprovisioned');
    expect(record?.claim_id).toBeUndefined();
  }, 30_000);

  it('gdp-admin reset clears used_nonces from a record that is otherwise clean', async () => {
    const thingName = uniqueThingName('legacy-reset');
    await addDevice(stack, thingName, { used_nonces: usedNonces(10_000) });
    expect((await admin('reset', thingName)).code).toBe(0);
    expect((await registryRecord(thingName))?.used_nonces).toBeUndefined();
  });
});
