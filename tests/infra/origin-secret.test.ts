/**
 * During an origin secret rotation the function accepts the current and the next secret
 * (ORIGIN_VERIFY_SECRET, ORIGIN_VERIFY_SECRET_NEXT), so CloudFront can switch minutes after the
 * function without one refused device. Any other value is still refused before any AWS call:
 * the dependencies here throw if touched.
 */
import { generateKeyPairSync } from 'node:crypto';
import type { APIGatewayProxyEventV2, Context } from 'aws-lambda';
import { loadConfig, ORIGIN_VERIFY_HEADER } from '../../functions/provisioning/config';
import { createHandler } from '../../functions/provisioning/http';
import type { ProvisioningDependencies } from '../../functions/provisioning/provision';
import { TEST_CA_CERTIFICATE } from './synth';

const CURRENT = 'current-secret-aaaaaaaaaaaaaaaaaaaa';
const NEXT = 'next-secret-bbbbbbbbbbbbbbbbbbbbbbbbb';
const environment = {
  TABLE_NAME: 'registry',
  REGISTRY_REGION: 'us-east-2',
  IOT_REGIONS: 'us-east-2',
  DEFAULT_REGION: 'us-east-2',
  IOT_POLICY_NAME: 'device-policy',
  FLEET_PUBLIC_KEY: generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({
    type: 'spki',
    format: 'pem',
  }) as string,
  ORIGIN_VERIFY_SECRET: CURRENT,
  CA_KMS_KEY_ID: 'arn:aws:kms:us-east-2:123456789012:key/00000000-0000-0000-0000-000000000000',
  CA_CERTIFICATE_PEM: TEST_CA_CERTIFICATE,
};
const untouchable = new Proxy(
  {},
  {
    get: (_target, property) => {
      throw new Error(`AWS dependency used before the origin check: ${String(property)}`);
    },
  },
);

function handlerWith(env: Record<string, string>) {
  const config = loadConfig(env);
  return createHandler({
    config,
    registry: untouchable,
    iot: untouchable,
    signer: untouchable,
    deviceKeys: () => Promise.reject(new Error('not used')),
  } as unknown as ProvisioningDependencies);
}

/** The status code for a provisioning request carrying `secret` and an empty (invalid) body. */
async function statusFor(handler: ReturnType<typeof handlerWith>, secret: string): Promise<number> {
  const event = {
    routeKey: 'POST /device-provisioning',
    rawPath: '/device-provisioning',
    headers: { [ORIGIN_VERIFY_HEADER]: secret, 'content-type': 'application/json' },
    body: '',
    isBase64Encoded: false,
    requestContext: { http: { method: 'POST', sourceIp: '192.0.2.1' } },
  } as unknown as APIGatewayProxyEventV2;
  const context = { getRemainingTimeInMillis: () => 10_000, awsRequestId: 'test' } as unknown as Context;
  const answer = await handler(event, context);
  return (answer as { statusCode: number }).statusCode;
}

describe('origin secret during a rotation', () => {
  it('accepts only the current secret outside a rotation', async () => {
    const handler = handlerWith(environment);
    expect(await statusFor(handler, CURRENT)).toBe(400);
    expect(await statusFor(handler, NEXT)).toBe(403);
  });

  it('accepts the current and the next secret during one, and nothing else', async () => {
    const handler = handlerWith({ ...environment, ORIGIN_VERIFY_SECRET_NEXT: NEXT });
    expect(await statusFor(handler, CURRENT)).toBe(400);
    expect(await statusFor(handler, NEXT)).toBe(400);
    for (const wrong of ['', 'x', CURRENT.slice(0, -1), `${NEXT}x`, CURRENT + NEXT]) {
      expect({ wrong, status: await statusFor(handler, wrong) }).toEqual({ wrong, status: 403 });
    }
  });

  it('refuses a next secret too short to be one', () => {
    expect(() => loadConfig({ ...environment, ORIGIN_VERIFY_SECRET_NEXT: 'short' })).toThrow(
      /ORIGIN_VERIFY_SECRET_NEXT/,
    );
  });
});
