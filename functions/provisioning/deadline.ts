/**
 * The request's time budget, derived from the Lambda context's remaining time. Work stops early
 * enough to leave `undoReserveMs` for the undo of a failed request, and no stage starts that
 * could not finish: a function that times out mid-stage leaves work for the reconciler, one that
 * refuses to start a stage leaves nothing.
 */
import { unavailable } from './errors';

export interface RemainingTime {
  getRemainingTimeInMillis(): number;
}

/** Without a Lambda context (tests, tools) a request gets this long. */
const DEFAULT_BUDGET_MS = 20_000;
/** Kept back from the work for the undo and the answer. */
export const UNDO_RESERVE_MS = 4_000;
/** A stage with less than this left is not started. */
export const MIN_STAGE_MS = 1_500;
/** Kept back from the undo itself, to answer before the runtime kills us. */
const ANSWER_RESERVE_MS = 300;

export class Deadline {
  private constructor(
    private readonly endsAt: number,
    private readonly now: () => number,
  ) {}

  static from(context: RemainingTime | undefined, now: () => number = Date.now): Deadline {
    const remaining = context ? context.getRemainingTimeInMillis() : DEFAULT_BUDGET_MS;
    return new Deadline(now() + remaining, now);
  }

  /** Milliseconds left for work, the undo reserve excluded. */
  workMs(): number {
    return this.endsAt - UNDO_RESERVE_MS - this.now();
  }

  /** Aborts AWS calls of the work when its time is up. */
  workSignal(): AbortSignal {
    return AbortSignal.timeout(Math.max(1, this.workMs()));
  }

  /** Aborts undo calls shortly before the runtime would kill the function. */
  undoSignal(): AbortSignal {
    return AbortSignal.timeout(Math.max(1, this.endsAt - ANSWER_RESERVE_MS - this.now()));
  }

  /** Throws 503 (the device retries) instead of starting a stage that could not finish. */
  beforeStage(stage: string): void {
    const left = this.workMs();
    if (left < MIN_STAGE_MS) {
      throw unavailable(`ran out of time before ${stage} (${Math.max(0, left)} ms left); retry`);
    }
  }
}
