/**
 * The reconciler's circuit breaker: how much one run may take from the fleet, and the one gate
 * every destructive step of a run goes through (quarantine, deletion, retirement, reset).
 *
 * The reconciler decides from two listings that can each be wrong without any error: the
 * registry (an emptied table, a point-in-time restore under a new name, TABLE_NAME pointed at
 * another table, an attribute written with the wrong type) and AWS IoT. Wrong input looks like a
 * fleet of orphans. So a run first plans everything, then the breaker judges the plan, and a run
 * it trips does nothing destructive at all: it emits `ReconcilerAborted` and reports why, and an
 * operator who has checked confirms with `gdp-admin reconcile --allow-large`.
 *
 * It trips when
 * - the run would quarantine, delete, retire or reset more than max(N, X % of our CA's
 *   certificates listed in every region);
 * - more of our CA's ACTIVE certificates than that limit are referenced by no record, whatever
 *   their age: the scan found far fewer records than the CA has live certificates (moves and
 *   renewal grace periods don't count, their copies are referenced);
 * - a record names a certificate in a form the reconciler can't read (wrong attribute type,
 *   half an intent): its certificate would look unreferenced.
 *
 * Defaults (README, "The reconciler"): N = 25, X = 2 %. A healthy run finds a handful of
 * orphans (one per killed request or failed retirement in 15 minutes), so 25 leaves room for a
 * bad quarter of an hour of a factory batch, while an emptied table in a fleet of any size trips
 * it. X keeps a large fleet's routine work (renewal grace periods ending: about 1/365 of the fleet
 * a day with yearly certificates) under the limit. What a tripped run would have done waits: the
 * next run, or the operator's confirmed one, does it.
 */

export interface BreakerLimits {
  /** N: this many destructive steps are always allowed. */
  readonly minimum: number;
  /** X: percent of our CA's listed certificates allowed when that is more than N. */
  readonly percent: number;
}

export const DEFAULT_BREAKER: BreakerLimits = { minimum: 25, percent: 2 };

/** What a run planned, before it does any of it. */
export interface PlannedRun {
  /** Our CA's certificates listed, every region, any status. */
  readonly listed: number;
  /** Quarantines, deletions, retirements and resets the run would make. */
  readonly destructive: number;
  /** Our CA's ACTIVE certificates that no record references, any age. */
  readonly unreferencedActive: number;
  /** Records whose certificate references can't be read ("thing: attribute"). */
  readonly unreadable: readonly string[];
}

export interface BreakerVerdict {
  readonly tripped: boolean;
  /** max(N, X % of listed). */
  readonly limit: number;
  /** Why it tripped (empty when it did not). */
  readonly reasons: readonly string[];
}

export function breakerLimit(limits: BreakerLimits, listed: number): number {
  return Math.max(limits.minimum, Math.floor((listed * limits.percent) / 100));
}

export function judgeRun(plan: PlannedRun, limits: BreakerLimits): BreakerVerdict {
  const limit = breakerLimit(limits, plan.listed);
  const reasons: string[] = [];
  if (plan.destructive > limit) {
    reasons.push(
      `the run would quarantine, delete, retire or reset ${plan.destructive} certificates or records, more than ${limit}`,
    );
  }
  if (plan.unreferencedActive > limit) {
    reasons.push(
      `${plan.unreferencedActive} ACTIVE certificates of our CA are referenced by no record, more than ${limit}: ` +
        'is the table empty, restored, or the wrong one?',
    );
  }
  if (plan.unreadable.length > 0) {
    const shown = plan.unreadable.slice(0, 5).join(', ');
    reasons.push(
      `${plan.unreadable.length} records name certificates in a form the reconciler can't read (${shown}${plan.unreadable.length > 5 ? ', …' : ''}): fix them first`,
    );
  }
  return { tripped: reasons.length > 0, limit, reasons };
}

/** Thrown by the gate when a destructive step is asked for beyond what the verdict allows. */
export class BreakerOpen extends Error {
  override readonly name = 'BreakerOpen';
}

/**
 * The gate: every destructive step of a run asks it first. A tripped run (without --allow-large)
 * may take none, any other at most the limit, whatever the code around it plans.
 */
export class DestructionBudget {
  private spent = 0;
  private readonly allowance: number;

  constructor(verdict: BreakerVerdict, allowLarge: boolean) {
    this.allowance = allowLarge ? Infinity : verdict.tripped ? 0 : verdict.limit;
  }

  /** Counts one destructive step, or throws BreakerOpen before it happens. */
  spend(what: string): void {
    if (this.spent >= this.allowance) {
      throw new BreakerOpen(`circuit breaker: ${what} not done (allowance ${this.allowance} spent)`);
    }
    this.spent += 1;
  }
}
