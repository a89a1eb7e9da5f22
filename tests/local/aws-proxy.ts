/**
 * A fault-injecting HTTP proxy in front of moto. Its URL is the AWS endpoint everything local
 * uses (AWS_ENDPOINT_URL), so a test can make one AWS call fail exactly as AWS would fail it,
 * and the benchmark can add a fixed delay to every AWS call to count dependent round trips.
 *
 * Control API on the same port, path /__faults: POST a FaultSpec to set, DELETE to clear,
 * GET to read (with counters). Errors are shaped per protocol so the real SDK parses them into
 * the same exception classes AWS produces. Besides errors, a rule can lose a call's answer
 * after moto applied it (drop, reset-after), reset the connection before moto sees the call
 * (reset-before), or delay one call. The same spec carries the kill rules the function's
 * sandboxes obey (kill-switch.ts).
 *
 * Quota mode (aws-quotas.ts), on its own control path /__quotas so that fault specs don't switch
 * it off: a token bucket per (region, API) at AWS's default rates times a scale factor; a call
 * over its rate is answered ThrottlingException, as AWS answers it, and never reaches moto.
 */
import { listenLocally } from './listen';
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import { isProbability, KillRule, KillSwitch, parseKillRules } from './kill-switch';
import { apiOf, parseQuotaSpec, QuotaBuckets, QuotaSpec, QuotaState } from './aws-quotas';

export type { QuotaCount, QuotaSpec, QuotaState } from './aws-quotas';

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
  /**
   * Regular expression tested against the request body as text: DynamoDB and KMS calls carry no
   * thing name in their path, but a registry call has the key (`"thing_name":{"S":"wm101"}`) in it.
   */
  readonly body?: string;
}

/**
 * What a rule does to a matching call:
 * - `error`: answers with `error`, shaped as AWS would; moto never sees the call.
 * - `drop`: moto applies the call, the answer is never sent; the connection stays open until
 *   the client gives up (its own timeout) or the proxy's hold limit passes.
 * - `reset-before`: the connection is reset; moto never sees the call.
 * - `reset-after`: moto applies the call and answers, then the connection is reset instead.
 * - `delay`: the call waits `delayMs`, then goes through normally.
 */
export type FaultAction = 'error' | 'drop' | 'reset-before' | 'reset-after' | 'delay';

export const FAULT_ACTIONS: readonly FaultAction[] = [
  'error',
  'drop',
  'reset-before',
  'reset-after',
  'delay',
];

export interface FaultRule {
  readonly match?: FaultMatch;
  /** Default `error`. */
  readonly action?: FaultAction;
  /** The error to answer with; required for (and only for) action `error`. */
  readonly error?: InjectedError;
  /** For action `delay`: how long the call waits before it is forwarded. */
  readonly delayMs?: number;
  /** How many matching calls the rule acts on; omitted = every matching call. */
  readonly times?: number;
  /** Chance (0–1) that the rule acts on a matching call; omitted = 1. A miss leaves `times` alone. */
  readonly probability?: number;
}

export interface FaultSpec {
  /** Added before forwarding every AWS call. */
  readonly delayMs?: number;
  readonly rules?: readonly FaultRule[];
  /** Checkpoints at which the function's sandbox kills itself (kill-switch.ts). */
  readonly kills?: readonly KillRule[];
}

/** One fault that happened, newest last (GET keeps the last MAX_EVENTS). */
export interface FaultEvent {
  readonly at: string;
  readonly action: FaultAction | 'kill';
  /** AWS call: `service region operation`; kill: the checkpoint. */
  readonly what: string;
  readonly thingName?: string;
}

/**
 * One AWS call the proxy handled, whatever happened to it: when it arrived and when its answer
 * was finished (or its connection closed), in milliseconds on the proxy's clock
 * (performance.timeOrigin + performance.now()). The benchmark rebuilds each request's critical
 * path from these: calls that overlap in time ran in parallel.
 */
export interface CallRecord {
  /** 1, 2, 3… since the proxy started; `GET {faultsUrl}?callsAfter=<seq>` lists only later calls. */
  readonly seq: number;
  /** `service region method target-or-path`, as in `events`. */
  readonly what: string;
  readonly startMs: number;
  readonly endMs: number;
  /** HTTP status sent; 0 when the connection closed without an answer (drop, reset). */
  readonly status: number;
}

export interface FaultState {
  readonly delayMs: number;
  /** Rules still armed, `times` = what they have left. */
  readonly rules: readonly FaultRule[];
  readonly kills: readonly KillRule[];
  /** Calls forwarded to moto since the proxy started (dropped, reset-after and delayed calls included). */
  readonly forwarded: number;
  /** Calls a rule acted on (any action) since the proxy started. */
  readonly injected: number;
  /** Faults per action since the proxy started; `kill` counts sandboxes killed at a checkpoint. */
  readonly byAction: Record<FaultAction | 'kill', number>;
  /** Connections of dropped calls still held open. */
  readonly held: number;
  readonly events: readonly FaultEvent[];
  /**
   * GET: the last MAX_CALLS calls, oldest first (with `?callsAfter=<seq>`, only those after it);
   * POST and DELETE answer none.
   */
  readonly calls: readonly CallRecord[];
}

const MAX_EVENTS = 1000;
const MAX_CALLS = 1000;
/** A dropped call's connection is closed after this long if the client has not given up. */
export const DEFAULT_HOLD_MS = 30_000;

export const FAULTS_PATH = '/__faults';
export const QUOTAS_PATH = '/__quotas';

interface AwsCall {
  readonly service: string;
  readonly region: string;
  readonly method: string;
  readonly path: string;
  readonly target: string;
  readonly body: string;
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
  if (match.body !== undefined && !new RegExp(match.body).test(call.body)) return false;
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

const RULE_FIELDS = new Set(['match', 'action', 'error', 'delayMs', 'times', 'probability']);

function parseRule(rule: unknown, index: number): FaultRule {
  if (typeof rule !== 'object' || rule === null) throw new Error(`rules[${index}] must be an object`);
  const candidate = rule as Record<string, unknown>;
  for (const field of Object.keys(candidate)) {
    if (!RULE_FIELDS.has(field)) throw new Error(`rules[${index}].${field} is not a known field`);
  }
  const action = candidate.action ?? 'error';
  if (!FAULT_ACTIONS.includes(action as FaultAction)) {
    throw new Error(`rules[${index}].action must be one of ${FAULT_ACTIONS.join(', ')}`);
  }
  if (action === 'error') {
    if (typeof candidate.error !== 'string' || !INJECTED_ERRORS.has(candidate.error)) {
      throw new Error(`rules[${index}].error must be one of ${[...INJECTED_ERRORS].join(', ')}`);
    }
  } else if (candidate.error !== undefined) {
    throw new Error(`rules[${index}].error only goes with action error`);
  }
  if (action === 'delay') {
    const delay = candidate.delayMs;
    if (typeof delay !== 'number' || !Number.isFinite(delay) || delay <= 0) {
      throw new Error(`rules[${index}].delayMs must be a positive number for action delay`);
    }
  } else if (candidate.delayMs !== undefined) {
    throw new Error(`rules[${index}].delayMs only goes with action delay`);
  }
  if (
    candidate.times !== undefined &&
    (typeof candidate.times !== 'number' || !Number.isInteger(candidate.times) || candidate.times < 1)
  ) {
    throw new Error(`rules[${index}].times must be a positive integer`);
  }
  if (candidate.probability !== undefined && !isProbability(candidate.probability)) {
    throw new Error(`rules[${index}].probability must be a number from 0 to 1`);
  }
  if (candidate.match !== undefined && (typeof candidate.match !== 'object' || candidate.match === null)) {
    throw new Error(`rules[${index}].match must be an object`);
  }
  const match = (candidate.match ?? {}) as Record<string, unknown>;
  for (const [field, value] of Object.entries(match)) {
    if (
      !['service', 'region', 'method', 'path', 'target', 'body'].includes(field) ||
      typeof value !== 'string'
    ) {
      throw new Error(`rules[${index}].match.${field} is not a known string field`);
    }
  }
  if (typeof match.path === 'string') new RegExp(match.path);
  if (typeof match.body === 'string') new RegExp(match.body);
  return candidate as FaultRule;
}

/** Validates a control request body; throws with a message naming the problem. */
export function parseFaultSpec(input: unknown): Required<FaultSpec> {
  if (typeof input !== 'object' || input === null) throw new Error('body must be a JSON object');
  const spec = input as { delayMs?: unknown; rules?: unknown; kills?: unknown };
  const delayMs = spec.delayMs ?? 0;
  if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
    throw new Error('delayMs must be a non-negative number');
  }
  const rules = spec.rules ?? [];
  if (!Array.isArray(rules)) throw new Error('rules must be an array');
  return { delayMs, rules: rules.map(parseRule), kills: parseKillRules(spec.kills) };
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
  /** The quota mode's control API: POST a QuotaSpec to switch it on, DELETE to switch it off, GET the counters. */
  readonly quotasUrl: string;
  /** The kill rules of the current fault spec, for the function's sandboxes. */
  readonly killSwitch: KillSwitch;
  close(): Promise<void>;
}

export interface AwsProxyOptions {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** moto's base URL. */
  readonly target: string;
  readonly logger?: (line: string) => void;
  /** How long a dropped call's connection is held at most; default DEFAULT_HOLD_MS. */
  readonly holdMs?: number;
}

interface UpstreamAnswer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

/** Sends a TCP RST where the platform allows it (what a load balancer or NAT reset looks like). */
function resetConnection(socket: Socket): void {
  if (socket.destroyed) return;
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

export async function startAwsProxy(options: AwsProxyOptions): Promise<AwsProxy> {
  const target = new URL(options.target);
  const log = options.logger ?? (() => undefined);
  const holdMs = options.holdMs ?? DEFAULT_HOLD_MS;
  let delayMs = 0;
  let rules: { rule: FaultRule; remaining: number }[] = [];
  let forwarded = 0;
  let injected = 0;
  const byAction: Record<FaultAction | 'kill', number> = {
    error: 0,
    drop: 0,
    'reset-before': 0,
    'reset-after': 0,
    delay: 0,
    kill: 0,
  };
  const events: FaultEvent[] = [];
  const record = (event: Omit<FaultEvent, 'at'>) => {
    events.push({ at: new Date().toISOString(), ...event });
    if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
  };
  const calls: CallRecord[] = [];
  let callSeq = 0;
  const clock = () => performance.timeOrigin + performance.now();
  const logCall = (what: string, startMs: number, response: http.ServerResponse) => {
    const seq = (callSeq += 1);
    response.once('close', () => {
      calls.push({
        seq,
        what,
        startMs,
        endMs: clock(),
        status: response.headersSent ? response.statusCode : 0,
      });
      if (calls.length > MAX_CALLS) calls.splice(0, calls.length - MAX_CALLS);
    });
  };
  const killSwitch = new KillSwitch((kill) => {
    byAction.kill += 1;
    record({ action: 'kill', what: kill.point, thingName: kill.thingName });
    log(`kill at ${kill.point} (${kill.thingName})`);
  });
  const quotas = new QuotaBuckets();
  /** Sockets of dropped calls, with the timer that closes them. */
  const held = new Map<Socket, NodeJS.Timeout>();

  const state = (callsAfter = 0): FaultState => ({
    delayMs,
    rules: rules.map(({ rule, remaining }) =>
      Number.isFinite(remaining) ? { ...rule, times: remaining } : rule,
    ),
    kills: killSwitch.state(),
    forwarded,
    injected,
    byAction: { ...byAction },
    held: held.size,
    events: [...events],
    calls: calls.filter((call) => call.seq > callsAfter).sort((a, b) => a.seq - b.seq),
  });

  const sendJson = (response: http.ServerResponse, status: number, body: unknown) => {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(JSON.stringify(body));
  };

  const control = async (request: http.IncomingMessage, response: http.ServerResponse) => {
    if (request.method === 'GET') {
      const after = Number(new URL(request.url ?? '', 'http://proxy').searchParams.get('callsAfter') ?? 0);
      return sendJson(response, 200, state(Number.isFinite(after) ? after : 0));
    }
    if (request.method === 'DELETE') {
      delayMs = 0;
      rules = [];
      killSwitch.replace([]);
      log('faults cleared');
      return sendJson(response, 200, state(callSeq));
    }
    if (request.method === 'POST') {
      try {
        const spec = parseFaultSpec(JSON.parse((await readBody(request)).toString('utf8')) as unknown);
        delayMs = spec.delayMs;
        rules = spec.rules.map((rule) => ({ rule, remaining: rule.times ?? Number.POSITIVE_INFINITY }));
        killSwitch.replace(spec.kills);
        log(`faults set: delayMs=${delayMs} rules=${rules.length} kills=${spec.kills.length}`);
        return sendJson(response, 200, state(callSeq));
      } catch (error) {
        return sendJson(response, 400, { message: (error as Error).message });
      }
    }
    return sendJson(response, 405, { message: 'use GET, POST or DELETE' });
  };

  const quotaControl = async (request: http.IncomingMessage, response: http.ServerResponse) => {
    if (request.method === 'GET') return sendJson(response, 200, quotas.state());
    if (request.method === 'DELETE') {
      quotas.replace(undefined);
      log('quotas off');
      return sendJson(response, 200, quotas.state());
    }
    if (request.method === 'POST') {
      try {
        const spec = parseQuotaSpec(JSON.parse((await readBody(request)).toString('utf8')) as unknown);
        quotas.replace(spec);
        log(`quotas on: scale ${spec.scale}`);
        return sendJson(response, 200, quotas.state());
      } catch (error) {
        return sendJson(response, 400, { message: (error as Error).message });
      }
    }
    return sendJson(response, 405, { message: 'use GET, POST or DELETE' });
  };

  const upstreamOptions = (request: http.IncomingMessage, body: Buffer): http.RequestOptions => ({
    host: target.hostname,
    port: target.port,
    method: request.method,
    path: request.url,
    headers: { ...request.headers, host: target.host, 'content-length': String(body.length) },
  });

  /** Forwards and waits for moto's whole answer: the call is applied once this resolves. */
  const forwardBuffered = (request: http.IncomingMessage, body: Buffer): Promise<UpstreamAnswer> =>
    new Promise((resolve, reject) => {
      forwarded += 1;
      const upstream = http.request(upstreamOptions(request, body), (upstreamResponse) => {
        const chunks: Buffer[] = [];
        upstreamResponse.on('data', (chunk: Buffer) => chunks.push(chunk));
        upstreamResponse.on('end', () =>
          resolve({
            status: upstreamResponse.statusCode ?? 502,
            headers: upstreamResponse.headers,
            body: Buffer.concat(chunks),
          }),
        );
        upstreamResponse.on('error', reject);
      });
      upstream.on('error', reject);
      upstream.end(body);
    });

  /** Never answers: the client's own timeout fires (the SDK's requestTimeout), or we give up. */
  const hold = (response: http.ServerResponse) => {
    const socket = response.socket;
    if (!socket || socket.destroyed) return;
    const timer = setTimeout(() => socket.destroy(), holdMs);
    timer.unref();
    held.set(socket, timer);
    socket.once('close', () => {
      clearTimeout(timer);
      held.delete(socket);
    });
  };

  const forward = async (request: http.IncomingMessage, response: http.ServerResponse) => {
    const arrived = clock();
    const body = await readBody(request);
    const { service, region } = credentialScope(request.headers.authorization);
    const targetHeader = request.headers['x-amz-target'];
    const call: AwsCall = {
      service,
      region,
      method: request.method ?? 'GET',
      path: request.url ?? '/',
      target: typeof targetHeader === 'string' ? targetHeader : '',
      body: body.toString('utf8'),
    };
    logCall(`${call.service} ${call.region} ${call.method} ${call.target || call.path}`, arrived, response);
    if (delayMs > 0) await sleep(delayMs);

    const api = apiOf(call);
    if (api !== undefined && !quotas.admit(call.service, call.region, api, call.body)) {
      // Over the API's rate: AWS answers before doing anything, so moto never sees the call.
      const answer = errorAnswer(call, 'ThrottlingException');
      response.writeHead(answer.status, {
        ...answer.headers,
        'content-length': Buffer.byteLength(answer.body),
      });
      response.end(answer.body);
      return;
    }

    const hit = rules.find(
      ({ rule, remaining }) =>
        remaining > 0 &&
        matches(rule, call) &&
        (rule.probability === undefined || Math.random() < rule.probability),
    );
    if (hit) {
      hit.remaining -= 1;
      rules = rules.filter(({ remaining }) => remaining > 0);
      injected += 1;
      const action = hit.rule.action ?? 'error';
      byAction[action] += 1;
      const what = `${call.service} ${call.region} ${call.method} ${call.target || call.path}`;
      record({ action, what });
      log(`inject ${action === 'error' ? hit.rule.error : action} ${what}`);
      switch (action) {
        case 'error': {
          const answer = errorAnswer(call, hit.rule.error ?? 'InternalFailure');
          response.writeHead(answer.status, {
            ...answer.headers,
            'content-length': Buffer.byteLength(answer.body),
          });
          response.end(answer.body);
          return;
        }
        case 'reset-before':
          resetConnection(request.socket);
          return;
        case 'drop':
          await forwardBuffered(request, body);
          hold(response);
          return;
        case 'reset-after':
          await forwardBuffered(request, body);
          resetConnection(request.socket);
          return;
        case 'delay':
          await sleep(hit.rule.delayMs ?? 0);
          break;
      }
    }

    forwarded += 1;
    const upstream = http.request(upstreamOptions(request, body), (upstreamResponse) => {
      response.writeHead(upstreamResponse.statusCode ?? 502, upstreamResponse.headers);
      upstreamResponse.pipe(response);
    });
    upstream.on('error', (error) => {
      log(`moto unreachable: ${error.message}`);
      if (!response.headersSent) sendJson(response, 502, { message: `moto unreachable: ${error.message}` });
      else response.destroy();
    });
    upstream.end(body);
  };

  const server = http.createServer((request, response) => {
    const path = (request.url ?? '').split('?')[0];
    const handle = path === FAULTS_PATH ? control : path === QUOTAS_PATH ? quotaControl : forward;
    handle(request, response).catch((error: unknown) => {
      log(`proxy error: ${(error as Error).message}`);
      if (!response.headersSent && !response.socket?.destroyed)
        sendJson(response, 500, { message: 'proxy error' });
    });
  });
  server.keepAliveTimeout = 65_000;
  const listening = await listenLocally(server, options.host, options.port);
  const close = async () => {
    for (const [socket, timer] of held) {
      clearTimeout(timer);
      socket.destroy();
    }
    held.clear();
    await listening.close();
  };
  return {
    url: listening.url,
    faultsUrl: `${listening.url}${FAULTS_PATH}`,
    quotasUrl: `${listening.url}${QUOTAS_PATH}`,
    killSwitch,
    close,
  };
}

/** One call to a control API of the proxy (faults or quotas): its state, or an error naming the refusal. */
async function callControl<State>(url: string, api: string, method: string, spec?: object): Promise<State> {
  const response = await fetch(url, {
    method,
    headers: spec ? { 'content-type': 'application/json' } : undefined,
    body: spec ? JSON.stringify(spec) : undefined,
  });
  const body = (await response.json()) as State & { message?: string };
  if (!response.ok) throw new Error(`${api} API ${method}: ${response.status} ${body.message ?? ''}`);
  return body;
}

const callFaults = (faultsUrl: string, method: string, spec?: FaultSpec) =>
  callControl<FaultState>(faultsUrl, 'fault', method, spec);

/** Replaces the current faults (rules, kills and delay) with `spec`. */
export const setFaults = (faultsUrl: string, spec: FaultSpec): Promise<FaultState> =>
  callFaults(faultsUrl, 'POST', spec);

/** Removes every rule, kill and the delay. */
export const clearFaults = (faultsUrl: string): Promise<FaultState> => callFaults(faultsUrl, 'DELETE');

/** Current rules and kills (with remaining `times`), counters and recent events. */
export const getFaults = (faultsUrl: string): Promise<FaultState> => callFaults(faultsUrl, 'GET');

/** The calls the proxy handled after call `after` (0: the last MAX_CALLS), oldest first. */
export async function getCalls(faultsUrl: string, after = 0): Promise<CallRecord[]> {
  const response = await fetch(`${faultsUrl}?callsAfter=${after}`);
  if (!response.ok) throw new Error(`fault API GET: ${response.status}`);
  return ((await response.json()) as FaultState).calls as CallRecord[];
}

/** The quota mode's control URL, from the fault API's (same proxy, stack.json's `faultsUrl`). */
export const quotasUrlOf = (faultsUrl: string): string => faultsUrl.replace(/\/__faults$/, QUOTAS_PATH);

const callQuotas = (faultsUrl: string, method: string, spec?: QuotaSpec) =>
  callControl<QuotaState>(quotasUrlOf(faultsUrl), 'quota', method, spec);

/** Switches the quota mode on with `spec`; buckets and counters start over. */
export const setQuotas = (faultsUrl: string, spec: QuotaSpec): Promise<QuotaState> =>
  callQuotas(faultsUrl, 'POST', spec);

/** Switches the quota mode off (nothing is throttled for its rate; counters start over). */
export const clearQuotas = (faultsUrl: string): Promise<QuotaState> => callQuotas(faultsUrl, 'DELETE');

/** The quota mode's rates and its calls and throttles per (region, API) since it was last set. */
export const getQuotas = (faultsUrl: string): Promise<QuotaState> => callQuotas(faultsUrl, 'GET');
