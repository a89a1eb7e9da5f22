/**
 * One request to the service, as a device in the field makes it: POST a freshly signed JSON body,
 * retry what is worth retrying (network errors, 5xx, 429, never sooner than Retry-After), and hand
 * back the protocol's answer or why there is none. Provisioning, status and renewal share it; each
 * turns the outcome into its own errors.
 */
import { z } from 'zod';
import {
  DEFAULT_BACKOFF,
  isRetryableStatus,
  parseRetryAfter,
  retryDelayMs,
  type BackoffPolicy,
} from './backoff';

export interface RetryNotice {
  readonly attempt: number;
  readonly maxAttempts: number;
  readonly delayMs: number;
  /** "HTTP 429: <message>" or the network error. */
  readonly reason: string;
}

export interface ExchangeOptions<Answer> {
  readonly url: string;
  /**
   * Called for every attempt: a signed request carries a nonce the service may remember from an
   * attempt that failed half-way, and a timestamp that must stay within its window.
   */
  readonly body: () => object;
  /** The success answer; a 2xx that is not this is retried, as a garbled answer would be. */
  readonly answer: z.ZodType<Answer>;
  readonly headers?: Readonly<Record<string, string>>;
  readonly backoff?: BackoffPolicy;
  readonly requestTimeoutMs?: number;
  readonly onRetry?: (retry: RetryNotice) => void;
  /**
   * Stop at the first refused connection instead of retrying it (a local stack that is down does
   * not come up within the backoff; a device in the field keeps retrying).
   */
  readonly giveUpWhenRefused?: boolean;
  /** Answers worth asking again, given the status and Retry-After; default: 429 and 5xx. */
  readonly retryStatus?: (status: number, retryAfterMs: number | undefined) => boolean;
  /**
   * A Retry-After longer than this is not waited for: the caller hears when to come back
   * (a renewal refused for a day must not hold the device for a day).
   */
  readonly longestWaitMs?: number;
  /** Waits between attempts; tests replace it to avoid sleeping. */
  readonly sleep?: (ms: number) => Promise<void>;
  /** Tests replace it to answer without a server. */
  readonly fetch?: typeof fetch;
}

export type ExchangeOutcome<Answer> =
  | {
      readonly kind: 'answer';
      readonly answer: Answer;
      readonly attempts: number;
      readonly latencyMs: number;
    }
  /** A 4xx the service meant (or an error body the sample's way, with HTTP 200): asking again cannot help. */
  | { readonly kind: 'refused'; readonly status: number; readonly message: string; readonly attempts: number }
  | {
      readonly kind: 'unavailable';
      /** "gave up after N attempts; last: …", or why it stopped early. */
      readonly message: string;
      readonly attempts: number;
      /** Nothing accepted the TCP connection (ECONNREFUSED) on the last attempt. */
      readonly connectionRefused: boolean;
      /** The last HTTP status, when there was one. */
      readonly status?: number;
      /** When the service said to come back, on the last attempt. */
      readonly retryAfterMs?: number;
    };

const errorAnswer = z.object({ status: z.literal('error'), message: z.string() });

export async function postWithRetries<Answer>(
  options: ExchangeOptions<Answer>,
): Promise<ExchangeOutcome<Answer>> {
  const policy = options.backoff ?? DEFAULT_BACKOFF;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((done) => setTimeout(done, ms)));
  const started = Date.now();

  for (let attempt = 1; ; attempt++) {
    const outcome = await postOnce(options);
    if (outcome.kind === 'answer') {
      return { kind: 'answer', answer: outcome.answer, attempts: attempt, latencyMs: Date.now() - started };
    }
    if (outcome.kind === 'refused') return { ...outcome, attempts: attempt };
    const connectionRefused = outcome.connectionRefused === true;
    const unavailable = (message: string) =>
      ({
        kind: 'unavailable',
        message,
        attempts: attempt,
        connectionRefused,
        status: outcome.status,
        retryAfterMs: outcome.retryAfterMs,
      }) as const;
    if (connectionRefused && options.giveUpWhenRefused) {
      return unavailable(`nothing accepts connections: ${outcome.reason}`);
    }
    if (
      options.longestWaitMs !== undefined &&
      outcome.retryAfterMs !== undefined &&
      outcome.retryAfterMs > options.longestWaitMs
    ) {
      return unavailable(
        `${outcome.reason}; the service asks to come back in ${describeWait(outcome.retryAfterMs)}`,
      );
    }
    if (attempt >= policy.maxAttempts) {
      return unavailable(`gave up after ${attempt} attempts; last: ${outcome.reason}`);
    }
    const delayMs = retryDelayMs(attempt, policy, outcome.retryAfterMs);
    options.onRetry?.({ attempt, maxAttempts: policy.maxAttempts, delayMs, reason: outcome.reason });
    await sleep(delayMs);
  }
}

type Attempt<Answer> =
  | { kind: 'answer'; answer: Answer }
  | { kind: 'refused'; status: number; message: string }
  | { kind: 'retry'; reason: string; status?: number; retryAfterMs?: number; connectionRefused?: boolean };

async function postOnce<Answer>(options: ExchangeOptions<Answer>): Promise<Attempt<Answer>> {
  const post = options.fetch ?? fetch;
  let response: Response;
  let text: string;
  try {
    response = await post(options.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...options.headers },
      body: JSON.stringify(options.body()),
      signal: AbortSignal.timeout(options.requestTimeoutMs ?? 30_000),
    });
    text = await response.text();
  } catch (error) {
    const cause = (error as Error & { cause?: { code?: unknown } }).cause;
    return {
      kind: 'retry',
      reason: describeNetworkError(error),
      connectionRefused: cause?.code === 'ECONNREFUSED',
    };
  }
  const message = serverMessage(text);
  if (response.ok) {
    const parsed = options.answer.safeParse(safeJson(text));
    if (parsed.success) return { kind: 'answer', answer: parsed.data };
    // The sample answered errors with HTTP 200 and an error body; such a service still says no.
    const refused = errorAnswer.safeParse(safeJson(text));
    if (refused.success) return { kind: 'refused', status: response.status, message: refused.data.message };
    return {
      kind: 'retry',
      status: response.status,
      reason: `HTTP ${response.status} with an answer that is not the protocol's`,
    };
  }
  const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
  if ((options.retryStatus ?? isRetryableStatus)(response.status, retryAfterMs)) {
    return {
      kind: 'retry',
      status: response.status,
      reason: `HTTP ${response.status}: ${message}`,
      retryAfterMs,
    };
  }
  return { kind: 'refused', status: response.status, message };
}

/** "45 s", "3 min", "23 h": how long the service asked the device to wait. */
export function describeWait(ms: number): string {
  const seconds = Math.ceil(ms / 1000);
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 2 * 3600) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function serverMessage(text: string): string {
  const parsed = errorAnswer.safeParse(safeJson(text));
  if (parsed.success) return parsed.data.message;
  const snippet = text.trim().slice(0, 200);
  return snippet === '' ? '(no message)' : snippet;
}

function describeNetworkError(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as Error & { cause?: unknown }).cause;
    const detail = cause instanceof Error ? `: ${cause.message}` : '';
    return `${error.name === 'TimeoutError' ? 'timed out' : error.message}${detail}`;
  }
  return String(error);
}
