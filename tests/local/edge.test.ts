/**
 * The local edge plays CloudFront + API Gateway: these tests run it in-process with a handler
 * that records the payload 2.0 event it receives.
 */
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { buildEvent, Edge, EDGE_MAX_BODY_BYTES, ProvisioningHandler, startEdge } from './edge';

describe('local edge', () => {
  let edge: Edge;
  let received: APIGatewayProxyEventV2[] = [];
  let answer: ProvisioningHandler = async () => ({ statusCode: 200, body: '{"status":"success"}' });
  const secret = 'origin-secret-for-edge-tests';

  beforeAll(async () => {
    edge = await startEdge({
      host: '127.0.0.1',
      port: 0,
      originVerifySecret: secret,
      region: 'us-east-2',
      handler: (event, context) => {
        received.push(event);
        return answer(event, context);
      },
    });
  });
  afterAll(() => edge.close());
  beforeEach(() => {
    received = [];
    answer = async () => ({ statusCode: 200, body: '{"status":"success"}' });
  });

  const post = (headers: Record<string, string> = {}, body = '{}', path = '/device-provisioning') =>
    fetch(`${edge.url}${path}`, { method: 'POST', headers, body });

  it('drops CloudFront-Viewer-* headers sent by the client', async () => {
    await post({
      'CloudFront-Viewer-Latitude': '1.0',
      'CloudFront-Viewer-Country': 'KP',
      'CloudFront-Viewer-Address': '6.6.6.6:1',
    });
    const headers = received[0]?.headers ?? {};
    expect(headers['cloudfront-viewer-latitude']).toBeUndefined();
    expect(headers['cloudfront-viewer-country']).toBeUndefined();
    expect(headers['cloudfront-viewer-address']).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('turns X-Local-Viewer-* headers into CloudFront-Viewer-* headers', async () => {
    await post({
      'X-Local-Viewer-Latitude': '35.68950',
      'X-Local-Viewer-Longitude': '139.69170',
      'X-Local-Viewer-Country': 'JP',
      'X-Local-Viewer-Address': '203.0.113.10:50123',
    });
    const headers = received[0]?.headers ?? {};
    expect(headers).toMatchObject({
      'cloudfront-viewer-latitude': '35.68950',
      'cloudfront-viewer-longitude': '139.69170',
      'cloudfront-viewer-country': 'JP',
      'cloudfront-viewer-address': '203.0.113.10:50123',
    });
    expect(Object.keys(headers).some((name) => name.startsWith('x-local-viewer-'))).toBe(false);
  });

  it('adds the origin secret and reports the edge as the source IP', async () => {
    await post({ 'x-origin-verify': 'forged' });
    const event = received[0];
    expect(event?.headers['x-origin-verify']).toBe(secret);
    expect(event?.requestContext.http.sourceIp).toBe('127.0.0.1');
  });

  it('builds the payload 2.0 event API Gateway sends', async () => {
    await fetch(`${edge.url}/device-provisioning?a=1&a=2&b=x`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Cookie: 'c1=v1; c2=v2', 'User-Agent': 'wm101/1.0' },
      body: '{"thing-name":"wm101"}',
    });
    const event = received[0];
    expect(event).toMatchObject({
      version: '2.0',
      routeKey: 'POST /device-provisioning',
      rawPath: '/device-provisioning',
      rawQueryString: 'a=1&a=2&b=x',
      cookies: ['c1=v1', 'c2=v2'],
      queryStringParameters: { a: '1,2', b: 'x' },
      body: '{"thing-name":"wm101"}',
      isBase64Encoded: false,
      requestContext: {
        http: { method: 'POST', path: '/device-provisioning', protocol: 'HTTP/1.1', userAgent: 'wm101/1.0' },
        routeKey: 'POST /device-provisioning',
        stage: '$default',
      },
    });
    expect(event?.headers['content-type']).toBe('application/json');
    expect(event?.headers.cookie).toBeUndefined();
    expect(event?.requestContext.time).toMatch(/^\d{2}\/[A-Z][a-z]{2}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000$/);
    expect(typeof event?.requestContext.timeEpoch).toBe('number');
  });

  it('lower-cases header names and joins repeated headers with commas', () => {
    const event = buildEvent(
      {
        method: 'POST',
        url: '/device-provisioning',
        rawHeaders: ['X-Trace', 'one', 'x-trace', 'two'],
        body: Buffer.from(''),
      },
      { accountId: '123456789012', apiId: 'api', region: 'us-east-2', originVerifySecret: secret },
    );
    expect(event.headers['x-trace']).toBe('one,two');
    expect(event.body).toBeUndefined();
  });

  it('maps the function result back: status, headers, base64 body', async () => {
    answer = async () => ({
      statusCode: 429,
      headers: { 'Retry-After': '2', 'content-type': 'application/json' },
      body: Buffer.from('{"status":"error","message":"throttled"}').toString('base64'),
      isBase64Encoded: true,
    });
    const response = await post();
    expect(response.status).toBe(429);
    expect(response.headers.get('retry-after')).toBe('2');
    expect(await response.json()).toEqual({ status: 'error', message: 'throttled' });
  });

  it('answers 500 like API Gateway when the function throws', async () => {
    answer = async () => {
      throw new Error('boom');
    };
    const response = await post();
    expect(response.status).toBe(500);
    expect(await response.json()).toEqual({ message: 'Internal Server Error' });
  });

  it('answers 404 Not Found for any other route', async () => {
    const other = await post({}, '{}', '/other');
    expect(other.status).toBe(404);
    expect(await other.json()).toEqual({ message: 'Not Found' });
    const get = await fetch(`${edge.url}/device-provisioning`);
    expect(get.status).toBe(404);
    expect(received).toHaveLength(0);
  });

  it('passes bodies up to 1 MiB to the function and refuses larger ones itself', async () => {
    const accepted = await post({}, 'x'.repeat(100 * 1024));
    expect(accepted.status).toBe(200);
    expect(received[0]?.body).toHaveLength(100 * 1024);
    const refused = await post({}, 'x'.repeat(EDGE_MAX_BODY_BYTES + 1));
    expect(refused.status).toBe(413);
    expect(received).toHaveLength(1);
  });
});
