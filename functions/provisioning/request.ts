/**
 * Turns the HTTP body into a typed provisioning request, or a 400/413 naming what was wrong.
 * Pure: no AWS, no clock.
 */
import * as z from 'zod/mini';
import './zod-messages';
import { malformed, ProvisioningError } from './errors';
import { LifecycleOperation, MAX_BODY_BYTES, V2_NONCE_PATTERN } from './wire';

/** AWS IoT thing-name rules. */
export const THING_NAME_PATTERN = /^[a-zA-Z0-9:_-]{1,128}$/;
const BASE64_PATTERN = /^[A-Za-z0-9+/]+={0,2}$/;

export type Proof =
  | { readonly version: 1; readonly signature: Buffer }
  | { readonly version: 2; readonly signature: Buffer; readonly timestamp: number; readonly nonce: string };

export interface ProvisioningRequest {
  readonly thingName: string;
  readonly csrPem?: string;
  readonly proof: Proof;
}

const base64Signature = (field: string) =>
  z
    .string({ error: `${field} must be a base64 string` })
    .check(
      z.minLength(1, `${field} must not be empty`),
      z.maxLength(2048, `${field} is too long`),
      z.regex(BASE64_PATTERN, `${field} must be base64`),
    );

const thingName = z
  .string({ error: 'thing-name must be a string' })
  .check(
    z.regex(THING_NAME_PATTERN, "thing-name must be 1–128 characters of letters, digits, ':', '_' or '-'"),
  );

const csr = z.optional(
  z.string({ error: 'CSR must be a PEM string' }).check(
    z.maxLength(16 * 1024, 'CSR is larger than 16 KiB'),
    z.refine((pem: string) => pem.includes('-----BEGIN CERTIFICATE REQUEST-----'), {
      message: 'CSR must be a PEM "CERTIFICATE REQUEST"',
    }),
  ),
);

const v1Body = z.object({
  'thing-name': thingName,
  'thing-name-sig': base64Signature('thing-name-sig'),
  CSR: csr,
});

const timestamp = z.number({ error: 'timestamp must be a number (Unix seconds)' }).check(
  z.refine((value: number) => Number.isInteger(value), { message: 'timestamp must be whole Unix seconds' }),
  z.positive('timestamp must be positive'),
);
const nonce = z
  .string({ error: 'nonce must be a string' })
  .check(z.regex(V2_NONCE_PATTERN, 'nonce must be 16–64 of A-Z a-z 0-9 _ -'));

const v2Body = z.object({
  'thing-name': thingName,
  'sig-version': z.literal(2),
  timestamp,
  nonce,
  signature: base64Signature('signature'),
  CSR: csr,
});

const lifecycleBody = z.object({
  'thing-name': thingName,
  timestamp,
  nonce,
  certificate: z.string({ error: 'certificate must be the PEM of the device certificate' }).check(
    z.maxLength(16 * 1024, 'certificate is larger than 16 KiB'),
    z.refine((pem: string) => pem.includes('-----BEGIN CERTIFICATE-----'), {
      message: 'certificate must be a PEM "CERTIFICATE"',
    }),
  ),
  signature: base64Signature('signature'),
  region: z.optional(
    z
      .string({ error: 'region must be a string' })
      .check(z.regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'region must be an AWS region name like eu-central-1')),
  ),
  CSR: csr,
});

function firstIssue(error: z.core.$ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid request';
  const field = issue.path.join('.');
  // zod's own messages (e.g. for a missing key) don't name the field; ours do.
  return issue.message.includes(String(issue.path[0] ?? '\u0000')) || !field
    ? issue.message
    : `${field}: ${issue.message}`;
}

/** The body as a JSON object, or a 400/413 naming what is wrong with it. */
function jsonObjectBody(body: string | undefined, isBase64Encoded: boolean): Record<string, unknown> {
  if (body === undefined || body === null || body.length === 0) throw malformed('request body is required');
  const raw = isBase64Encoded ? Buffer.from(body, 'base64') : Buffer.from(body, 'utf8');
  if (raw.length > MAX_BODY_BYTES) {
    throw new ProvisioningError(
      'too-large',
      `request body is ${raw.length} bytes; the limit is ${MAX_BODY_BYTES}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch {
    throw malformed('request body is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw malformed('request body must be a JSON object');
  }
  return parsed as Record<string, unknown>;
}

/** Decodes the API Gateway body (possibly base64) and validates it. */
export function parseProvisioningRequest(
  body: string | undefined,
  isBase64Encoded = false,
): ProvisioningRequest {
  const fields = jsonObjectBody(body, isBase64Encoded);
  if ('sig-version' in fields && fields['sig-version'] !== 1) {
    if (fields['sig-version'] !== 2) throw malformed('sig-version must be 1 or 2');
    const v2 = v2Body.safeParse(fields);
    if (!v2.success) throw malformed(firstIssue(v2.error));
    return {
      thingName: v2.data['thing-name'],
      csrPem: v2.data.CSR,
      proof: {
        version: 2,
        signature: Buffer.from(v2.data.signature, 'base64'),
        timestamp: v2.data.timestamp,
        nonce: v2.data.nonce,
      },
    };
  }
  const v1 = v1Body.safeParse(fields);
  if (!v1.success) throw malformed(firstIssue(v1.error));
  return {
    thingName: v1.data['thing-name'],
    csrPem: v1.data.CSR,
    proof: { version: 1, signature: Buffer.from(v1.data['thing-name-sig'], 'base64') },
  };
}

/** POST /device-status or /device-renew: signed with the key of the device's certificate. */
export interface LifecycleRequest {
  readonly operation: LifecycleOperation;
  readonly thingName: string;
  readonly timestamp: number;
  readonly nonce: string;
  readonly certificatePem: string;
  readonly signature: Buffer;
  readonly reportedRegion?: string;
  readonly csrPem?: string;
}

/** Decodes and validates a status or renewal body; fields of the other operation are refused. */
export function parseLifecycleRequest(
  operation: LifecycleOperation,
  body: string | undefined,
  isBase64Encoded = false,
): LifecycleRequest {
  const fields = jsonObjectBody(body, isBase64Encoded);
  const parsed = lifecycleBody.safeParse(fields);
  if (!parsed.success) throw malformed(firstIssue(parsed.error));
  const request = parsed.data;
  if (operation === 'status' && request.CSR !== undefined) {
    throw malformed('CSR belongs in POST /device-renew, not in a status call');
  }
  if (operation === 'renew' && request.region !== undefined) {
    throw malformed('region belongs in POST /device-status, not in a renewal');
  }
  return {
    operation,
    thingName: request['thing-name'],
    timestamp: request.timestamp,
    nonce: request.nonce,
    certificatePem: request.certificate,
    signature: Buffer.from(request.signature, 'base64'),
    reportedRegion: request.region,
    csrPem: request.CSR,
  };
}
