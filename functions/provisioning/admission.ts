/**
 * Admission control: a request that verified its signature makes AWS IoT calls only while its
 * region's quota budget has room for them. AWS IoT's control-plane quotas are per account and
 * region (RegisterCertificate 10/s by default), so a storm of devices in one region can only
 * drain at that rate whatever we do; what admission decides is whether the service drains them
 * at it, or burns the quota on throttled calls, undos and retries.
 *
 * The design (docs/deploy.md, "Quotas and admission"): one schedule per region, a generic cell
 * rate algorithm in its virtual-scheduling form. The schedule is a time, `nextFree`: when the
 * region's budget next has room. Admitting a request moves it on by the request's cost (the
 * seconds of budget its IoT calls take, undo included); a request whose slot lies within
 * `maxWaitMs` is admitted and waits for its slot, any other is refused with a Retry-After that
 * points at a slot of its own on a second time, `promised`, the end of the queue of refused
 * requests told when to come back. Spacing the returns by the budget is what keeps a wave of
 * 429s from coming back as one wave; jitter spreads the ones told the same second.
 *
 * This file is the pure arithmetic of verdicts and Retry-After and the request-path verb `admit`;
 * admission-budget.ts says what a request costs of a region's budget; admission-state.ts keeps the schedules in a small DynamoDB table, because every
 * concurrent invocation of the function must share them.
 */
import { ApiRates, callsOfRequest, costMs } from './admission-budget';
import { ProvisioningError, throttled } from './errors';
import type { SpillOverSettings } from './spill-over';
import { countMetric, countMetricFor, logger, MetricUnit } from './telemetry';

/** A region's schedule as stored: epoch milliseconds; absent = never used. */
export interface Schedule {
  /** When the region's budget next has room: admitted work is booked up to here. */
  readonly nextFreeMs?: number;
  /** The end of the queue of refused requests, each told to return at its own slot. */
  readonly promisedMs?: number;
}

export type Verdict =
  | { readonly kind: 'admitted'; readonly slotMs: number; readonly backlogMs: number }
  | {
      readonly kind: 'refused';
      readonly slotMs: number;
      readonly backlogMs: number;
      /** False: the request took no place in the queue (its backlog was past unqueuedOverMs). */
      readonly queued?: false;
    }
  /** The schedule could not be read or written: admitted or refused by the configured choice. */
  | { readonly kind: 'unavailable'; readonly busy: boolean; readonly cause: unknown };

/** True when a request arriving at `nowMs` may take the slot after `nextFreeMs`. */
export function fitsWithin(nextFreeMs: number | undefined, nowMs: number, maxWaitMs: number): boolean {
  return (nextFreeMs ?? 0) - nowMs <= maxWaitMs;
}

/** Where a refused request's slot starts: after the queue, and never before the admitted work. */
export function queueEnd(schedule: Schedule, nowMs: number): number {
  return Math.max(schedule.promisedMs ?? 0, schedule.nextFreeMs ?? 0, nowMs);
}

type Decided = { readonly verdict: Verdict & { kind: 'admitted' | 'refused' }; readonly schedule: Schedule };

/** A place at the end of the queue: the slot after everyone told before, and after admitted work. */
export function joinQueue(schedule: Schedule, nowMs: number, costMs: number): Decided {
  const slotMs = queueEnd(schedule, nowMs);
  return {
    verdict: { kind: 'refused', slotMs, backlogMs: slotMs - nowMs },
    schedule: { ...schedule, promisedMs: slotMs + costMs },
  };
}

/**
 * The schedule's one rule, as admission-state.ts applies it with conditional writes: the slot
 * after the admitted work (or now, when the region is idle) is taken when it lies within
 * maxWaitMs; otherwise the request joins the queue.
 */
export function takeSlot(schedule: Schedule, nowMs: number, costMs: number, maxWaitMs: number): Decided {
  if (!fitsWithin(schedule.nextFreeMs, nowMs, maxWaitMs)) return joinQueue(schedule, nowMs, costMs);
  const slotMs = Math.max(schedule.nextFreeMs ?? 0, nowMs);
  return {
    verdict: { kind: 'admitted', slotMs, backlogMs: slotMs - nowMs },
    schedule: { ...schedule, nextFreeMs: slotMs + costMs },
  };
}

/** `unqueuedOverMs` for a slot only when it fits now: every refusal's backlog is over it. */
export const ONLY_IF_ROOM = -1;

/**
 * A refusal that takes no place in the queue, when its backlog is over `unqueuedOverMs`: a request
 * that may go elsewhere (spill-over) must not leave a phantom slot in a queue it never returns to.
 */
export function unqueued(
  schedule: Schedule,
  nowMs: number,
  unqueuedOverMs: number | undefined,
): (Verdict & { kind: 'refused' }) | undefined {
  if (unqueuedOverMs === undefined) return undefined;
  const slotMs = queueEnd(schedule, nowMs);
  return slotMs - nowMs > unqueuedOverMs
    ? { kind: 'refused', slotMs, backlogMs: slotMs - nowMs, queued: false }
    : undefined;
}

/** The schedules in memory: one container's view, for tests and benches (the function shares them in DynamoDB). */
export function memoryAdmissionState(): AdmissionState & { readonly schedules: Map<string, Schedule> } {
  const schedules = new Map<string, Schedule>();
  const apply = (region: string, decided: Decided) => {
    schedules.set(region, decided.schedule);
    return Promise.resolve(decided.verdict);
  };
  return {
    schedules,
    take: (region, nowMs, costMs, maxWaitMs, _signal, unqueuedOverMs) => {
      const schedule = schedules.get(region) ?? {};
      const left = fitsWithin(schedule.nextFreeMs, nowMs, maxWaitMs)
        ? undefined
        : unqueued(schedule, nowMs, unqueuedOverMs);
      return left
        ? Promise.resolve<Verdict>(left)
        : apply(region, takeSlot(schedule, nowMs, costMs, maxWaitMs));
    },
    queue: (region, nowMs, costMs) => apply(region, joinQueue(schedules.get(region) ?? {}, nowMs, costMs)),
  };
}

/**
 * Retry-After in whole seconds for a slot at `slotMs`: when the budget will have room for this
 * request, plus up to `jitterSeconds` so that the devices told the same second spread out. At
 * least 1 (HTTP's unit), at most `maxSeconds` (a device that waits longer is better told again).
 */
export function retryAfterSeconds(
  slotMs: number,
  nowMs: number,
  jitterSeconds: number,
  maxSeconds: number,
  random: () => number = Math.random,
): number {
  const wait = Math.max(0, slotMs - nowMs) / 1000 + random() * jitterSeconds;
  return Math.min(maxSeconds, Math.max(1, Math.ceil(wait)));
}

export interface AdmissionSettings {
  /** Budgets per region; a region without one is not admitted (config validates every enabled one). */
  readonly rates: Readonly<Record<string, ApiRates>>;
  /** An admitted request waits at most this long for its slot; a later slot is refused. */
  readonly maxWaitMs: number;
  /** Up to this much is added to a Retry-After. */
  readonly jitterSeconds: number;
  /** Longest Retry-After given. */
  readonly maxRetryAfterSeconds: number;
  /**
   * What a request gets when the schedule can't be read or written (table missing, access
   * denied, timeout): 'open' admits it (the IoT calls still answer throttling with a 429),
   * 'closed' refuses it with a short Retry-After. A schedule DynamoDB itself throttles is a storm
   * and is always refused.
   */
  readonly whenUnavailable: 'open' | 'closed';
  /** Spill-over (spill-over.ts): undefined = off, a backlogged region's devices wait there. */
  readonly spillOver?: SpillOverSettings;
}

/** The shared schedules (admission-state.ts keeps them in DynamoDB). */
export interface AdmissionState {
  /**
   * Takes a slot for `costMs` of the region's budget at `nowMs`, or a place in its queue; with
   * `unqueuedOverMs`, a refusal whose backlog is longer than that takes no place (queued: false).
   * ONLY_IF_ROOM (-1) takes a slot only when it fits now: for a region a request might spill
   * into, so that a storm elsewhere can't fill a quiet region's queue with phantoms.
   */
  take(
    region: string,
    nowMs: number,
    costMs: number,
    maxWaitMs: number,
    signal?: AbortSignal,
    unqueuedOverMs?: number,
  ): Promise<Verdict>;
  /** Takes a place in the region's queue (a request that AWS IoT throttled after all). */
  queue(region: string, nowMs: number, costMs: number, signal?: AbortSignal): Promise<Verdict>;
}

export interface Admission {
  readonly settings: AdmissionSettings;
  readonly state: AdmissionState;
  /** Milliseconds since the epoch. */
  readonly clock?: () => number;
  readonly random?: () => number;
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

const sleepFor = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });

function record(region: string, verdict: Verdict): void {
  if (verdict.kind === 'unavailable') {
    countMetric('AdmissionUnavailable');
    return;
  }
  countMetricFor(verdict.kind === 'admitted' ? 'Admitted' : 'AdmissionRefused', { Region: region });
  // Also without the region: the throttle alarm subtracts refusals, which a storm makes by design
  // (the backlog alarm watches those), from the 429s it counts.
  if (verdict.kind === 'refused') countMetric('AdmissionRefused');
  countMetricFor(
    'AdmissionBacklogSeconds',
    { Region: region },
    Math.max(0, verdict.backlogMs) / 1000,
    MetricUnit.Seconds,
  );
}

/**
 * Admits a request for `region` or throws 429 with a Retry-After: resolves once the request's
 * slot has come (at most maxWaitMs from now). Called after the signature verified and before
 * any IoT call; `retiring` is how many certificates a success retires.
 */
export async function admit(
  admission: Admission,
  region: string,
  retiring: number,
  signal?: AbortSignal,
  spillAfterMs?: number,
): Promise<void> {
  const { settings, state } = admission;
  const rates = settings.rates[region];
  if (!rates) return; // config.ts gives every enabled region a budget; a region it doesn't know has no IoT here
  const now = (admission.clock ?? Date.now)();
  const cost = costMs(callsOfRequest(retiring), rates);
  const verdict = await state.take(region, now, cost, settings.maxWaitMs, signal, spillAfterMs);
  record(region, verdict);
  if (verdict.kind === 'admitted') {
    const wait = verdict.slotMs - now;
    if (wait > 0) await (admission.sleep ?? sleepFor)(wait, signal);
    return;
  }
  if (verdict.kind === 'refused' && verdict.queued === false) {
    throw new RegionBacklogged(
      region,
      verdict.backlogMs,
      retryAfterSeconds(
        verdict.slotMs,
        now,
        settings.jitterSeconds,
        settings.maxRetryAfterSeconds,
        admission.random,
      ),
    );
  }
  if (verdict.kind === 'refused') {
    const retryAfter = retryAfterSeconds(
      verdict.slotMs,
      now,
      settings.jitterSeconds,
      settings.maxRetryAfterSeconds,
      admission.random,
    );
    throw throttled(`${region} is at its AWS IoT quota; retry after ${retryAfter} s`, retryAfter);
  }
  logger.warn('admission state unavailable', {
    region,
    busy: verdict.busy,
    whenUnavailable: settings.whenUnavailable,
    errorClass: (verdict.cause as Error | undefined)?.name,
  });
  if (verdict.busy || settings.whenUnavailable === 'closed') {
    const retryAfter = retryAfterSeconds(
      now + settings.maxWaitMs,
      now,
      settings.jitterSeconds,
      settings.maxRetryAfterSeconds,
      admission.random,
    );
    throw throttled(`${region} is busy; retry after ${retryAfter} s`, retryAfter, verdict.cause);
  }
}

/**
 * A refusal past the spill-over wait (admit's spillAfterMs): the request holds no place in the
 * region's queue and may go to another region. When it goes nowhere, the caller queues it
 * (retryAfterThrottle) for an honest Retry-After; `retryAfterSeconds` is the fallback.
 */
export class RegionBacklogged extends ProvisioningError {
  constructor(
    readonly region: string,
    readonly backlogMs: number,
    retryAfter: number,
  ) {
    super('throttled', `${region} is at its AWS IoT quota; retry after ${retryAfter} s`, retryAfter);
  }
}

/**
 * Takes a slot in a region a request spills into, only when it fits now: no place in its queue
 * otherwise. Resolves true once the slot has come; false when the region has no room or its
 * schedule can't be reached (spill-over never fails open: the nearest region's answer stands).
 */
export async function admitIfRoom(
  admission: Admission,
  region: string,
  retiring: number,
  signal?: AbortSignal,
): Promise<boolean> {
  const { settings, state } = admission;
  const rates = settings.rates[region];
  if (!rates) return false;
  const now = (admission.clock ?? Date.now)();
  const verdict = await state.take(
    region,
    now,
    costMs(callsOfRequest(retiring), rates),
    settings.maxWaitMs,
    signal,
    ONLY_IF_ROOM,
  );
  if (verdict.kind !== 'admitted') return false;
  record(region, verdict);
  const wait = verdict.slotMs - now;
  if (wait > 0) await (admission.sleep ?? sleepFor)(wait, signal);
  return true;
}

/**
 * An honest Retry-After for a request AWS IoT throttled although it was admitted (another
 * consumer of the quota, a budget set above the real quota): a place at the end of the region's
 * queue. Falls back to `fallbackSeconds` when the schedule can't be reached.
 */
export async function retryAfterThrottle(
  admission: Admission,
  region: string,
  fallbackSeconds: number,
  signal?: AbortSignal,
): Promise<number> {
  const { settings, state } = admission;
  const rates = settings.rates[region];
  if (!rates) return fallbackSeconds;
  const now = (admission.clock ?? Date.now)();
  const verdict = await state.queue(region, now, costMs(callsOfRequest(), rates), signal);
  if (verdict.kind === 'unavailable') return fallbackSeconds;
  return retryAfterSeconds(
    verdict.slotMs,
    now,
    settings.jitterSeconds,
    settings.maxRetryAfterSeconds,
    admission.random,
  );
}
