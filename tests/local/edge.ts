/**
 * The local stand-in for CloudFront + API Gateway (HTTP API, payload 2.0) in front of the
 * provisioning function. It calls the same handler module the Lambda runs.
 *
 * CloudFront part: client-sent CloudFront-Viewer-* headers are dropped (CloudFront overwrites
 * them), the local-only X-Local-Viewer-Latitude/-Longitude/-Country/-Address headers become the
 * matching CloudFront-Viewer-* headers so tests can place a device anywhere, and
 * CloudFront-Viewer-Address defaults to the socket's ip:port (CloudFront always sends it). The
 * origin secret header is added like the distribution's custom origin header.
 * API Gateway part: the exact payload 2.0 event, three routes (POST /device-provisioning,
 * /device-status, /device-renew) to the one function,
 * 404 {"message":"Not Found"} elsewhere, 500 {"message":"Internal Server Error"} when the
 * function throws, crashes, is killed or times out.
 * Lambda part: a handler module runs in sandboxes (sandbox-pool.ts), child processes that take
 * one invocation at a time, at most 8 at once; with `scaleOut`, every request runs as soon as it
 * arrives, as a deployed function without reserved concurrency scales out; a handler function
 * (tests only) runs in this process.
 */
import { listenLocally } from './listen';
import http from 'node:http';
import { randomBytes, randomUUID } from 'node:crypto';
import type { KillSwitch } from './kill-switch';
import { SandboxPool, startSandboxPool } from './sandbox-pool';
import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyResultV2,
  APIGatewayProxyStructuredResultV2,
  Context,
} from 'aws-lambda';

export type ProvisioningHandler = (
  event: APIGatewayProxyEventV2,
  context: Context,
) => Promise<APIGatewayProxyResultV2 | APIGatewayProxyStructuredResultV2>;

export const ROUTE_PATH = '/device-provisioning';
export const ROUTE_KEY = `POST ${ROUTE_PATH}`;
export const STATUS_ROUTE_PATH = '/device-status';
export const RENEW_ROUTE_PATH = '/device-renew';
/** The API's routes, as infra/edge.ts declares them (a test pins that they agree). */
export const ROUTE_PATHS: readonly string[] = [ROUTE_PATH, STATUS_ROUTE_PATH, RENEW_ROUTE_PATH];
export const DEFAULT_HANDLER_MODULE = 'functions/provisioning/handler.ts';
/** API Gateway's own limit is 10 MB; the function answers 413 above 64 KiB. */
export const EDGE_MAX_BODY_BYTES = 1024 * 1024;

const LOCAL_VIEWER_HEADERS: Record<string, string> = {
  'x-local-viewer-latitude': 'cloudfront-viewer-latitude',
  'x-local-viewer-longitude': 'cloudfront-viewer-longitude',
  'x-local-viewer-country': 'cloudfront-viewer-country',
  'x-local-viewer-address': 'cloudfront-viewer-address',
};

/** A place on the map, as CloudFront's viewer geolocation would report it. */
export interface ViewerPlace {
  readonly latitude?: number;
  readonly longitude?: number;
  readonly country: string;
}

/** The local-only headers that place a caller at `place` (this edge turns them into CloudFront's). */
export function viewerHeaders(place: ViewerPlace): Record<string, string> {
  return {
    ...(place.latitude !== undefined ? { 'X-Local-Viewer-Latitude': String(place.latitude) } : {}),
    ...(place.longitude !== undefined ? { 'X-Local-Viewer-Longitude': String(place.longitude) } : {}),
    'X-Local-Viewer-Country': place.country,
  };
}

export interface EdgeOptions {
  readonly host: '127.0.0.1';
  readonly port: number;
  readonly originVerifySecret: string;
  /**
   * A handler function, called in this process, concurrently (edge tests only); otherwise the
   * module path exporting `handler`, run in sandbox processes, one invocation at a time each.
   */
  readonly handler?: ProvisioningHandler;
  readonly handlerModule?: string;
  /** The function's environment, added to this process's for every sandbox. */
  readonly environment?: Readonly<Record<string, string>>;
  readonly region: string;
  readonly accountId?: string;
  readonly functionTimeoutMs?: number;
  /** Most sandboxes running at once (default 8); requests beyond wait in a queue. */
  readonly maxSandboxes?: number;
  /** Idle sandboxes started ahead of demand (default 2). */
  readonly warmSpares?: number;
  /**
   * Lambda-like scale-out: no cap, every request is invoked as it arrives, in `maxSandboxes`
   * processes (default 1) that each run any number of invocations at once (sandbox-pool.ts).
   */
  readonly scaleOut?: boolean;
  /** Where the sandboxes' stdout and stderr go (appended); default: this process's own. */
  readonly sandboxOutputFile?: string;
  /** Kill rules the sandboxes obey at checkpoints (the AWS proxy's). */
  readonly kills?: KillSwitch;
  readonly logger?: (line: string) => void;
}

export interface Edge {
  readonly url: string;
  readonly provisioningUrl: string;
  readonly statusUrl: string;
  readonly renewUrl: string;
  /** The sandboxes, unless the edge calls a handler function in-process. */
  readonly sandboxes?: SandboxPool;
  close(): Promise<void>;
}

/** Header names lower-cased, repeated headers comma-joined, as API Gateway delivers them. */
function joinHeaders(rawHeaders: readonly string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (let index = 0; index + 1 < rawHeaders.length; index += 2) {
    const name = (rawHeaders[index] ?? '').toLowerCase();
    const value = rawHeaders[index + 1] ?? '';
    headers[name] = name in headers ? `${headers[name]},${value}` : value;
  }
  return headers;
}

/** `::ffff:127.0.0.1` → `127.0.0.1`; CloudFront sends IPv6 addresses unbracketed. */
function viewerAddress(socket: { remoteAddress?: string; remotePort?: number }): string {
  const ip = (socket.remoteAddress ?? '127.0.0.1').replace(/^::ffff:/, '');
  return `${ip}:${socket.remotePort ?? 0}`;
}

export interface EdgeRequest {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: readonly string[];
  readonly body: Buffer;
  readonly remoteAddress?: string;
  readonly remotePort?: number;
}

export interface EventIdentity {
  readonly accountId: string;
  readonly apiId: string;
  readonly region: string;
  readonly originVerifySecret: string;
  readonly requestId?: string;
  readonly now?: Date;
}

/** What CloudFront forwards to the origin: forged viewer headers gone, local ones translated. */
export function cloudFrontHeaders(request: EdgeRequest, identity: EventIdentity): Record<string, string> {
  const viewer = joinHeaders(request.rawHeaders);
  const headers: Record<string, string> = {};
  const translated: Record<string, string> = {};
  for (const [name, value] of Object.entries(viewer)) {
    if (name.startsWith('cloudfront-viewer-')) continue;
    const target = LOCAL_VIEWER_HEADERS[name];
    if (target) translated[target] = value;
    else headers[name] = value;
  }
  const viewerIp = (request.remoteAddress ?? '127.0.0.1').replace(/^::ffff:/, '');
  translated['cloudfront-viewer-address'] ??= viewerAddress({
    remoteAddress: request.remoteAddress,
    remotePort: request.remotePort,
  });
  const domainName = `${identity.apiId}.execute-api.${identity.region}.amazonaws.com`;
  const cloudFrontId = randomBytes(28).toString('base64url');
  return {
    ...headers,
    ...translated,
    host: domainName,
    via: `2.0 ${randomBytes(16).toString('hex')}.cloudfront.net (CloudFront)`,
    'x-amz-cf-id': cloudFrontId,
    // CloudFront appends the viewer; API Gateway appends CloudFront (the edge, here 127.0.0.1).
    'x-forwarded-for': [headers['x-forwarded-for'], viewerIp, '127.0.0.1'].filter(Boolean).join(', '),
    'x-forwarded-port': '443',
    'x-forwarded-proto': 'https',
    'x-amzn-trace-id': `Root=1-${Math.floor(Date.now() / 1000).toString(16)}-${randomBytes(12).toString('hex')}`,
    'x-origin-verify': identity.originVerifySecret,
  };
}

function formatTime(date: Date): string {
  // API Gateway's requestContext.time: 12/Mar/2020:19:03:58 +0000
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const pad = (value: number) => String(value).padStart(2, '0');
  return (
    `${pad(date.getUTCDate())}/${months[date.getUTCMonth()]}/${date.getUTCFullYear()}:` +
    `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} +0000`
  );
}

/** The payload 2.0 event API Gateway builds for the request, as the function receives it. */
export function buildEvent(request: EdgeRequest, identity: EventIdentity): APIGatewayProxyEventV2 {
  const url = new URL(request.url, 'http://edge.local');
  const headers = cloudFrontHeaders(request, identity);
  const cookieHeader = headers.cookie;
  delete headers.cookie;
  const query: Record<string, string> = {};
  for (const [name, value] of url.searchParams)
    query[name] = name in query ? `${query[name]},${value}` : value;
  const now = identity.now ?? new Date();
  const domainName = headers.host ?? '';
  const event: APIGatewayProxyEventV2 = {
    version: '2.0',
    routeKey: `POST ${url.pathname}`,
    rawPath: url.pathname,
    rawQueryString: url.search.replace(/^\?/, ''),
    headers,
    requestContext: {
      accountId: identity.accountId,
      apiId: identity.apiId,
      domainName,
      domainPrefix: identity.apiId,
      http: {
        method: request.method,
        path: url.pathname,
        protocol: 'HTTP/1.1',
        sourceIp: '127.0.0.1',
        userAgent: headers['user-agent'] ?? '',
      },
      requestId: identity.requestId ?? randomBytes(8).toString('base64url').slice(0, 14) + '=',
      routeKey: `POST ${url.pathname}`,
      stage: '$default',
      time: formatTime(now),
      timeEpoch: now.getTime(),
    },
    isBase64Encoded: false,
  };
  if (cookieHeader) event.cookies = cookieHeader.split(/;\s*/).filter(Boolean);
  if (Object.keys(query).length > 0) event.queryStringParameters = query;
  if (request.body.length > 0) event.body = request.body.toString('utf8');
  return event;
}

function lambdaContext(requestId: string, region: string, accountId: string, deadline: number): Context {
  const functionName = 'global-device-provisioning-local';
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:${region}:${accountId}:function:${functionName}`,
    memoryLimitInMB: '512',
    awsRequestId: requestId,
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: `local/${process.pid}`,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
}

interface HttpAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[]>;
  readonly body: Buffer;
}

const jsonAnswer = (status: number, message: string): HttpAnswer => ({
  status,
  headers: { 'content-type': 'application/json' },
  body: Buffer.from(JSON.stringify({ message })),
});

/** API Gateway's mapping of a payload 2.0 result onto the HTTP response. */
export function mapResult(result: APIGatewayProxyResultV2 | APIGatewayProxyStructuredResultV2): HttpAnswer {
  if (typeof result === 'string') {
    return { status: 200, headers: { 'content-type': 'application/json' }, body: Buffer.from(result) };
  }
  if (
    typeof result !== 'object' ||
    result === null ||
    !('statusCode' in result) ||
    result.statusCode === undefined
  ) {
    return {
      status: 200,
      headers: { 'content-type': 'application/json' },
      body: Buffer.from(JSON.stringify(result)),
    };
  }
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(result.headers ?? {}))
    headers[name.toLowerCase()] = String(value);
  if (result.cookies?.length) headers['set-cookie'] = result.cookies;
  const body = result.body ?? '';
  return {
    status: result.statusCode,
    headers,
    body: result.isBase64Encoded ? Buffer.from(body, 'base64') : Buffer.from(body, 'utf8'),
  };
}

export async function startEdge(options: EdgeOptions): Promise<Edge> {
  const log = options.logger ?? (() => undefined);
  const accountId = options.accountId ?? '123456789012';
  const apiId = 'local0edge';
  const timeoutMs = options.functionTimeoutMs ?? 20_000;
  const handler = options.handler;
  const sandboxes = handler
    ? undefined
    : startSandboxPool({
        handlerModule: options.handlerModule ?? DEFAULT_HANDLER_MODULE,
        environment: options.environment,
        timeoutMs,
        region: options.region,
        accountId,
        maxSandboxes: options.maxSandboxes,
        warmSpares: options.warmSpares,
        scaleOut: options.scaleOut,
        kills: options.kills,
        logger: log,
        outputFile: options.sandboxOutputFile,
      });

  const invokeInProcess = async (fn: ProvisioningHandler, event: APIGatewayProxyEventV2) => {
    const deadline = Date.now() + timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`function timed out after ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const context = lambdaContext(event.requestContext.requestId, options.region, accountId, deadline);
      return mapResult(await Promise.race([fn(event, context), timeout]));
    } catch (error) {
      log(`function error: ${(error as Error).name}: ${(error as Error).message}`);
      return jsonAnswer(500, 'Internal Server Error');
    } finally {
      clearTimeout(timer);
    }
  };

  const invoke = async (event: APIGatewayProxyEventV2): Promise<HttpAnswer> => {
    if (handler) return invokeInProcess(handler, event);
    const outcome = await (sandboxes as SandboxPool).invoke(event);
    if (outcome.kind === 'result') return mapResult(outcome.result);
    // API Gateway answers a function error, crash or timeout the same way.
    log(`function failed: ${outcome.reason.split('\n')[0]}`);
    return jsonAnswer(500, 'Internal Server Error');
  };

  const server = http.createServer((request, response) => {
    const started = Date.now();
    const method = request.method ?? 'GET';
    const pathname = (request.url ?? '/').split('?')[0] ?? '/';
    const finish = (answer: HttpAnswer) => {
      response.writeHead(answer.status, {
        ...answer.headers,
        'content-length': answer.body.length,
        'apigw-requestid': randomUUID(),
      });
      response.end(answer.body);
      log(`${method} ${pathname} ${answer.status} ${Date.now() - started}ms`);
    };

    if (method !== 'POST' || !ROUTE_PATHS.includes(pathname)) {
      request.resume();
      return finish(jsonAnswer(404, 'Not Found'));
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > EDGE_MAX_BODY_BYTES) tooLarge = true;
      else chunks.push(chunk);
    });
    request.on('error', () => response.destroy());
    request.on('end', () => {
      if (tooLarge) return finish(jsonAnswer(413, 'Request Entity Too Large'));
      const event = buildEvent(
        {
          method,
          url: request.url ?? '/',
          rawHeaders: request.rawHeaders,
          body: Buffer.concat(chunks),
          remoteAddress: request.socket.remoteAddress,
          remotePort: request.socket.remotePort,
        },
        { accountId, apiId, region: options.region, originVerifySecret: options.originVerifySecret },
      );
      invoke(event).then(finish, (error: unknown) => {
        log(`edge error: ${(error as Error).message}`);
        finish(jsonAnswer(500, 'Internal Server Error'));
      });
    });
  });
  const listening = await listenLocally(server, options.host, options.port);
  return {
    url: listening.url,
    provisioningUrl: `${listening.url}${ROUTE_PATH}`,
    statusUrl: `${listening.url}${STATUS_ROUTE_PATH}`,
    renewUrl: `${listening.url}${RENEW_ROUTE_PATH}`,
    sandboxes,
    async close() {
      await sandboxes?.close();
      await listening.close();
    },
  };
}
