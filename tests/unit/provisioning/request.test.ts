import { parseProvisioningRequest } from '../../../functions/provisioning/request';
import { ProvisioningError } from '../../../functions/provisioning/errors';

function refusal(body: string | undefined, isBase64 = false): { status: number; message: string } {
  try {
    parseProvisioningRequest(body, isBase64);
  } catch (error) {
    const failure = error as ProvisioningError;
    return { status: failure.status, message: failure.message };
  }
  throw new Error('expected a refusal');
}

describe('provisioning request', () => {
  it("accepts the sample's v1 body", () => {
    const request = parseProvisioningRequest(
      JSON.stringify({ 'thing-name': 'wm101', 'thing-name-sig': 'QUJD' }),
    );
    expect(request).toMatchObject({ thingName: 'wm101', proof: { version: 1 } });
    expect(request.csrPem).toBeUndefined();
  });

  it('accepts a v2 body', () => {
    const request = parseProvisioningRequest(
      JSON.stringify({
        'thing-name': 'wm101',
        'sig-version': 2,
        timestamp: 1795497600,
        nonce: 'q2Xr8JkTz0vW4mNa',
        signature: 'QUJD',
      }),
    );
    expect(request.proof).toMatchObject({ version: 2, timestamp: 1795497600, nonce: 'q2Xr8JkTz0vW4mNa' });
  });

  it('decodes a base64-encoded body as API Gateway may send it', () => {
    const body = Buffer.from(JSON.stringify({ 'thing-name': 'wm101', 'thing-name-sig': 'QUJD' })).toString(
      'base64',
    );
    expect(parseProvisioningRequest(body, true).thingName).toBe('wm101');
  });

  it.each([
    [undefined, 'request body is required'],
    ['not json', 'request body is not valid JSON'],
    ['[1]', 'request body must be a JSON object'],
    ['{"thing-name-sig":"QUJD"}', 'thing-name must be a string'],
    ['{"thing-name":"has space","thing-name-sig":"QUJD"}', 'thing-name must be 1–128 characters'],
    [`{"thing-name":"${'a'.repeat(129)}","thing-name-sig":"QUJD"}`, 'thing-name must be 1–128 characters'],
    ['{"thing-name":"wm101"}', 'thing-name-sig must be a base64 string'],
    ['{"thing-name":"wm101","thing-name-sig":"%%%"}', 'thing-name-sig must be base64'],
    ['{"thing-name":"wm101","thing-name-sig":"QUJD","CSR":42}', 'CSR must be a PEM string'],
    [
      '{"thing-name":"wm101","thing-name-sig":"QUJD","CSR":"hello"}',
      'CSR must be a PEM "CERTIFICATE REQUEST"',
    ],
    ['{"thing-name":"wm101","sig-version":3}', 'sig-version must be 1 or 2'],
    ['{"thing-name":"wm101","sig-version":2,"timestamp":"now"}', 'timestamp must be a number'],
    [
      '{"thing-name":"wm101","sig-version":2,"timestamp":1,"nonce":"short","signature":"QUJD"}',
      'nonce must be 16–64',
    ],
  ])('refuses %s with 400 naming the problem', (body, message) => {
    const answer = refusal(body);
    expect(answer.status).toBe(400);
    expect(answer.message).toContain(message);
  });

  it('refuses bodies over 64 KiB with 413', () => {
    const body = JSON.stringify({ 'thing-name': 'wm101', 'thing-name-sig': 'QUJD', pad: 'x'.repeat(70_000) });
    expect(refusal(body)).toEqual({ status: 413, message: expect.stringContaining('the limit is 65536') });
  });
});
