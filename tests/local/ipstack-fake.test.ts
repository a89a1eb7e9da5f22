/**
 * The ipstack fake stands in for the real API (unreachable from tests): it must answer in
 * ipstack's formats, including errors delivered with HTTP 200.
 */
import { randomInt } from 'node:crypto';
import { addIpstackFixture } from './ipstack-fake';
import { LocalStack, readStack } from './stack-state';

const describeWithStack = process.env.NO_LOCAL_STACK ? describe.skip : describe;

describeWithStack('ipstack fake', () => {
  let stack: LocalStack;
  const lookup = async (ip: string, query: Record<string, string>) => {
    const response = await fetch(`${stack.ipstackUrl}/${ip}?${new URLSearchParams(query).toString()}`);
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };

  beforeAll(() => {
    stack = readStack();
  });

  it('answers a known address with an ipstack success body', async () => {
    const { status, body } = await lookup('203.0.113.10', { access_key: stack.ipstackAccessKey });
    expect(status).toBe(200);
    expect(body).toMatchObject({
      ip: '203.0.113.10',
      type: 'ipv4',
      continent_code: 'AS',
      country_code: 'JP',
      city: 'Tokyo',
      latitude: 35.6895,
      longitude: 139.6917,
    });
    for (const field of ['continent_name', 'country_name', 'region_code', 'region_name', 'zip']) {
      expect(body).toHaveProperty(field);
    }
  });

  it("accepts the 2018 sample's doubled slash before the address, as ipstack does", async () => {
    const response = await fetch(`${stack.ipstackUrl}//203.0.113.10?access_key=${stack.ipstackAccessKey}`);
    expect(await response.json()).toMatchObject({ ip: '203.0.113.10', country_code: 'JP' });
  });

  it('returns only the requested fields', async () => {
    const { body } = await lookup('203.0.113.20', {
      access_key: stack.ipstackAccessKey,
      fields: 'latitude,longitude,country_code',
    });
    expect(body).toEqual({ latitude: -33.8688, longitude: 151.2093, country_code: 'AU' });
  });

  it('answers an unknown public address with nulls, as ipstack does', async () => {
    const { body } = await lookup('2001:db8::7', { access_key: stack.ipstackAccessKey });
    expect(body).toMatchObject({
      ip: '2001:db8::7',
      type: 'ipv6',
      country_code: null,
      latitude: null,
      longitude: null,
    });
  });

  it('rejects a missing or wrong access key with error 101 and HTTP 200', async () => {
    const missing = await lookup('203.0.113.10', {});
    expect(missing.status).toBe(200);
    expect(missing.body).toMatchObject({ success: false, error: { code: 101, type: 'missing_access_key' } });
    const wrong = await lookup('203.0.113.10', { access_key: 'not-the-key' });
    expect(wrong.status).toBe(200);
    expect(wrong.body).toMatchObject({ success: false, error: { code: 101, type: 'invalid_access_key' } });
  });

  it('rejects an invalid address with error 106', async () => {
    const { status, body } = await lookup('not-an-ip', { access_key: stack.ipstackAccessKey });
    expect(status).toBe(200);
    expect(body).toMatchObject({ success: false, error: { code: 106, type: 'invalid_ip_address' } });
  });

  it('sees fixture entries added while it runs, including error bodies', async () => {
    const ip = `192.0.2.${randomInt(1, 250)}`;
    addIpstackFixture(stack.ipstackFixtures, ip, { country_code: 'BR', latitude: -22.9, longitude: -43.2 });
    expect((await lookup(ip, { access_key: stack.ipstackAccessKey })).body).toMatchObject({
      ip,
      country_code: 'BR',
      latitude: -22.9,
    });
    const limited = {
      success: false as const,
      error: { code: 104, type: 'usage_limit_reached', info: 'limit' },
    };
    addIpstackFixture(stack.ipstackFixtures, ip, limited);
    const { status, body } = await lookup(ip, { access_key: stack.ipstackAccessKey });
    expect(status).toBe(200);
    expect(body).toEqual(limited);
  });
});
