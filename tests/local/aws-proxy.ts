/**
 * A fault-injecting HTTP proxy in front of moto. Its URL is the AWS endpoint everything local
 * uses (AWS_ENDPOINT_URL), so a test can make one AWS call fail exactly as AWS would fail it,
 * and the benchmark can add a fixed delay to every AWS call to count dependent round trips.
 *
 * Control API on the same port, path /__faults: POST a FaultSpec to set, DELETE to clear,
 * GET to read (with counters). Errors are shaped per protocol so the real SDK parses them into
 * the same exception classes AWS produces.
 */
import { listenLocally } from './listen';
import http from 'node:http';
import { randomUUID } from 'node:crypto';

export type InjectedError =
  'ThrottlingException' | 'ProvisionedThroughputExceededException' | 'InternalFailure' | 'ServiceUnavailable';

export interface FaultMatch {
  /** Signing name from the SigV4 credential scope: iot, dynamodb, kms, ssm, sts. */
  readonly service?: string;
  readonly region?: string;
  readonly method?: string;
  /** Regular expression tested against the request path including the query string. */
  readonly path?: string;
  /** X-Amz-Target, e.g. DynamoDB_20120810.UpdateItem. */
  readonly target?: string;
}

export interface FaultRule {
  readonly match?: FaultMatch;
  readonly error: InjectedError;
  /** How many matching calls fail; omitted = every matching call. */
  readonly times?: number;
}

export interface FaultSpec {
  /** Added before forwarding every AWS call. */
  readonly delayMs?: number;
  readonly rules?: readonly FaultRule[];
}

export interface FaultState {
  readonly delayMs: number;
  readonly rules: readonly FaultRule[];
  /** Calls forwarded to moto since the proxy started. */
  readonly forwarded: number;
  /** Calls answered with an injected error since the proxy started. */
  readonly injected: number;
}

export const FAULTS_PATH = '/__faults';

interface AwsCall {
  readonly service: string;
  readonly region: string;
  readonly method: string;
  readonly path: string;
  readonly target: string;
}

interface ErrorAnswer {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Service and region from `Credential=AKID/20240101/us-east-1/iot/aws4_request`. */
export function credentialScope(authorization: string | undefined): { service: string; region: string } {
  const scope = /Credential=[^/]+\/\d{8}\/([^/]+)\/([^/]+)\/aws4_request/.exec(authorization ?? '');
  return { region: scope?.[1] ?? '', service: scope?.[2] ?? '' };
}

function matches(rule: FaultRule, call: AwsCall): boolean {
  const match = rule.match ?? {};
  if (match.service !== undefined && match.service !== call.service) return false;
  if (match.region !== undefined && match.region !== call.region) return false;
  if (match.method !== undefined && match.method.toUpperCase() !== call.method) return false;
  if (match.target !== undefined && match.target !== call.target) return false;
  if (match.path !== undefined && !new RegExp(match.path).test(call.path)) return false;
  return true;
}

const MESSAGES: Record<InjectedError, string> = {
  ThrottlingException: 'Rate exceeded',
  ProvisionedThroughputExceededException:
    'The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.',
  InternalFailure: 'We encountered an internal error. Please try again.',
  ServiceUnavailable: 'Service is unavailable. Please try again later.',
};

/** The error name each service's model declares, and its HTTP status. */
function modeledError(service: string, error: InjectedError): { name: string; status: number } {
  const internal: Record<string, string> = {
    iot: 'InternalFailureException',
    dynamodb: 'InternalServerError',
    kms: 'KMSInternalException',
    ssm: 'InternalServerError',
  };
  switch (error) {
    case 'ThrottlingException':
      return {
        name: service === 'sts' ? 'Throttling' : 'ThrottlingException',
        status: service === 'iot' ? 429 : 400,
      };
    case 'ProvisionedThroughputExceededException':
      return { name: error, status: 400 };
    case 'InternalFailure':
      return { name: internal[service] ?? 'InternalFailure', status: 500 };
    case 'ServiceUnavailable':
      return { name: service === 'iot' ? 'ServiceUnavailableException' : 'ServiceUnavailable', status: 503 };
  }
}

/** An error response in the wire format of the call's protocol. */
export function errorAnswer(call: AwsCall, error: InjectedError): ErrorAnswer {
  const { name, status } = modeledError(call.service, error);
  const message = MESSAGES[error];
  const requestId = randomUUID();
  if (call.target !== '') {
    // awsJson1_0 (DynamoDB) / awsJson1_1 (KMS, SSM): the type travels in __type.
    const namespace = call.target.startsWith('DynamoDB_20120810.') ? 'com.amazonaws.dynamodb.v20120810#' : '';
    const contentType = call.target.startsWith('DynamoDB_')
      ? 'application/x-amz-json-1.0'
      : 'application/x-amz-json-1.1';
    return {
      status,
      headers: { 'content-type': contentType, 'x-amzn-requestid': requestId },
      body: JSON.stringify({ __type: `${namespace}${name}`, message }),
    };
  }
  if (call.service === 'sts') {
    const body =
      `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>${status >= 500 ? 'Receiver' : 'Sender'}</Type>` +
      `<Code>${name}</Code><Message>${message}</Message></Error><RequestId>${requestId}</RequestId></ErrorResponse>`;
    return { status, headers: { 'content-type': 'text/xml', 'x-amzn-requestid': requestId }, body };
  }
  // restJson1 (IoT): the type travels in x-amzn-ErrorType.
  return {
    status,
    headers: { 'content-type': 'application/json', 'x-amzn-errortype': name, 'x-amzn-requestid': requestId },
    body: JSON.stringify({ message }),
  };
}

const INJECTED_ERRORS = new Set<string>([
  'ThrottlingException',
  'ProvisionedThroughputExceededException',
  'InternalFailure',
  'ServiceUnavailable',
]);

/** Validates a control request body; throws with a message naming the problem. */
export function parseFaultSpec(input: unknown): Required<FaultSpec> {
  if (typeof input !== 'object' || input === null) throw new Error('body must be a JSON object');
  const spec = input as { delayMs?: unknown; rules?: unknown };
  const delayMs = spec.delayMs ?? 0;
  if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
    throw new Error('delayMs must be a non-negative number');
  }
  const rules = spec.rules ?? [];
  if (!Array.isArray(rules)) throw new Error('rules must be an array');
  rules.forEach((rule: unknown, index) => {
    const candidate = rule as { error?: unknown; times?: unknown; match?: unknown };
    if (typeof candidate !== 'object' || candidate === null)
      throw new Error(`rules[${index}] must be an object`);
    if (typeof candidate.error !== 'string' || !INJECTED_ERRORS.has(candidate.error)) {
      throw new Error(`rules[${index}].error must be one of ${[...INJECTED_ERRORS].join(', ')}`);
    }
    if (candidate.times !== undefined && (typeof candidate.times !== 'number' || candidate.times < 1)) {
      throw new Error(`rules[${index}].times must be a positive number`);
    }
    const match = (candidate.match ?? {}) as Record<string, unknown>;
    for (const [field, value] of Object.entries(match)) {
      if (!['service', 'region', 'method', 'path', 'target'].includes(field) || typeof value !== 'string') {
        throw new Error(`rules[${index}].match.${field} is not a known string field`);
      }
    }
    if (typeof match.path === 'string') new RegExp(match.path);
  });
  return { delayMs, rules: rules as FaultRule[] };
}

function readBody(request: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks)));
    request.on('error', reject);
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface AwsProxy {
  readonly url: string;
  readonly faultsUrl: string;
  close(): Promise<void>;
}

export interface AwsProxyOptions {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** moto's base URL. */
  readonly target: string;
  readonly logger?: (line: string) => void;
}

export async function startAwsProxy(options: AwsProxyOptions): Promise<AwsProxy> {
  const target = new URL(options.target);
  const log = options.logger ?? (() => undefined);
  let delayMs = 0;
  let rules: { rule: FaultRule; remaining: number }[] = [];
  let forwarded = 0;
  let injected = 0;

  const state = (): FaultState => ({
    delayMs,
    rules: rules.map(({ rule, remaining }) =>
      Number.isFinite(remaining) ? { ...rule, times: remaining } : { match: rule.match, error: rule.error },
    ),
    forwarded,
    injected,
  });

  const sendJson = (response: http.ServerResponse, status: number, body: unknown) => {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(JSON.stringify(body));
  };

  const control = async (request: http.IncomingMessage, response: http.ServerResponse) => {
    if (request.method === 'GET') return sendJson(response, 200, state());
    if (request.method === 'DELETE') {
      delayMs = 0;
      rules = [];
      log('faults cleared');
      return sendJson(response, 200, state());
    }
    if (request.method === 'POST') {
      try {
        const spec = parseFaultSpec(JSON.parse((await readBody(request)).toString('utf8')) as unknown);
        delayMs = spec.delayMs;
        rules = spec.rules.map((rule) => ({ rule, remaining: rule.times ?? Number.POSITIVE_INFINITY }));
        log(`faults set: delayMs=${delayMs} rules=${rules.length}`);
        return sendJson(response, 200, state());
      } catch (error) {
        return sendJson(response, 400, { message: (error as Error).message });
      }
    }
    return sendJson(response, 405, { message: 'use GET, POST or DELETE' });
  };

  const forward = async (request: http.IncomingMessage, response: http.ServerResponse) => {
    const body = await readBody(request);
    const { service, region } = credentialScope(request.headers.authorization);
    const targetHeader = request.headers['x-amz-target'];
    const call: AwsCall = {
      service,
      region,
      method: request.method ?? 'GET',
      path: request.url ?? '/',
      target: typeof targetHeader === 'string' ? targetHeader : '',
    };
    if (delayMs > 0) await sleep(delayMs);

    const hit = rules.find(({ rule, remaining }) => remaining > 0 && matches(rule, call));
    if (hit) {
      hit.remaining -= 1;
      rules = rules.filter(({ remaining }) => remaining > 0);
      injected += 1;
      const answer = errorAnswer(call, hit.rule.error);
      log(
        `inject ${hit.rule.error} ${call.service} ${call.region} ${call.method} ${call.target || call.path}`,
      );
      response.writeHead(answer.status, {
        ...answer.headers,
        'content-length': Buffer.byteLength(answer.body),
      });
      response.end(answer.body);
      return;
    }

    forwarded += 1;
    const upstream = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: request.method,
        path: request.url,
        headers: { ...request.headers, host: target.host, 'content-length': String(body.length) },
      },
      (upstreamResponse) => {
        response.writeHead(upstreamResponse.statusCode ?? 502, upstreamResponse.headers);
        upstreamResponse.pipe(response);
      },
    );
    upstream.on('error', (error) => {
      log(`moto unreachable: ${error.message}`);
      if (!response.headersSent) sendJson(response, 502, { message: `moto unreachable: ${error.message}` });
      else response.destroy();
    });
    upstream.end(body);
  };

  const server = http.createServer((request, response) => {
    const handle = (request.url ?? '').split('?')[0] === FAULTS_PATH ? control : forward;
    handle(request, response).catch((error: unknown) => {
      log(`proxy error: ${(error as Error).message}`);
      if (!response.headersSent) sendJson(response, 500, { message: 'proxy error' });
    });
  });
  server.keepAliveTimeout = 65_000;
  const { url, close } = await listenLocally(server, options.host, options.port);
  return { url, faultsUrl: `${url}${FAULTS_PATH}`, close };
}

async function callFaults(faultsUrl: string, method: string, spec?: FaultSpec): Promise<FaultState> {
  const response = await fetch(faultsUrl, {
    method,
    headers: spec ? { 'content-type': 'application/json' } : undefined,
    body: spec ? JSON.stringify(spec) : undefined,
  });
  const body = (await response.json()) as FaultState & { message?: string };
  if (!response.ok) throw new Error(`fault API ${method}: ${response.status} ${body.message ?? ''}`);
  return body;
}

/** Replaces the current faults (rules and delay) with `spec`. */
export const setFaults = (faultsUrl: string, spec: FaultSpec): Promise<FaultState> =>
  callFaults(faultsUrl, 'POST', spec);

/** Removes every rule and the delay. */
export const clearFaults = (faultsUrl: string): Promise<FaultState> => callFaults(faultsUrl, 'DELETE');

/** Current rules (with remaining `times`) and counters. */
export const getFaults = (faultsUrl: string): Promise<FaultState> => callFaults(faultsUrl, 'GET');
