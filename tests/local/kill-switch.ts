/**
 * Kill rules: which checkpoint (functions/provisioning/checkpoints.ts) kills the function. They
 * are set through the AWS proxy's fault API, together with the AWS faults, and enforced by the
 * function's sandboxes (sandbox-pool.ts, sandbox.ts).
 *
 * A sandbox decides at the checkpoint, synchronously: it checks the rules it was handed (point,
 * thing name, probability), then asks the stack server over a pipe whether the rule may still
 * fire. The server decrements `times` before it answers yes, so `times` holds across sandboxes
 * running in parallel, and the kill is counted even though the sandbox dies without a word.
 *
 * This module is imported by the sandbox too: keep it free of heavy imports.
 */
import { CHECKPOINTS, Checkpoint } from '../../functions/provisioning/checkpoints';

export interface KillRule {
  readonly point: Checkpoint;
  /** Only this thing (exact name). */
  readonly thingName?: string;
  /** Only things whose name matches this regular expression. */
  readonly thingNamePattern?: string;
  /** How many kills; omitted = every match. Counted across all sandboxes. */
  readonly times?: number;
  /** Chance (0–1) that a matching checkpoint kills; omitted = 1. */
  readonly probability?: number;
}

/** What a sandbox gets with each invocation: the live rules, numbered within their generation. */
export interface KillRules {
  readonly generation: number;
  readonly rules: readonly { readonly index: number; readonly rule: KillRule }[];
}

/** A sandbox's request to fire rule `index` of `generation` (one JSON line on the kill pipe). */
export interface KillClaim {
  readonly generation: number;
  readonly index: number;
  readonly point: Checkpoint;
  readonly thingName: string;
}

export interface KillEvent {
  readonly point: Checkpoint;
  readonly thingName: string;
}

const KILL_RULE_FIELDS = new Set(['point', 'thingName', 'thingNamePattern', 'times', 'probability']);

export function isProbability(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 && value <= 1;
}

/** Validates `kills` of a fault spec; throws with a message naming the problem. */
export function parseKillRules(input: unknown): KillRule[] {
  const kills = input ?? [];
  if (!Array.isArray(kills)) throw new Error('kills must be an array');
  return kills.map((kill: unknown, index) => {
    if (typeof kill !== 'object' || kill === null) throw new Error(`kills[${index}] must be an object`);
    const candidate = kill as Record<string, unknown>;
    for (const field of Object.keys(candidate)) {
      if (!KILL_RULE_FIELDS.has(field)) throw new Error(`kills[${index}].${field} is not a known field`);
    }
    if (!CHECKPOINTS.includes(candidate.point as Checkpoint)) {
      throw new Error(`kills[${index}].point must be one of ${CHECKPOINTS.join(', ')}`);
    }
    for (const field of ['thingName', 'thingNamePattern']) {
      if (candidate[field] !== undefined && typeof candidate[field] !== 'string') {
        throw new Error(`kills[${index}].${field} must be a string`);
      }
    }
    if (typeof candidate.thingNamePattern === 'string') new RegExp(candidate.thingNamePattern);
    if (
      candidate.times !== undefined &&
      (typeof candidate.times !== 'number' || !Number.isInteger(candidate.times) || candidate.times < 1)
    ) {
      throw new Error(`kills[${index}].times must be a positive integer`);
    }
    if (candidate.probability !== undefined && !isProbability(candidate.probability)) {
      throw new Error(`kills[${index}].probability must be a number from 0 to 1`);
    }
    return candidate as unknown as KillRule;
  });
}

/** Whether `rule` names this checkpoint and thing (the probability is rolled by the caller). */
export function killRuleApplies(rule: KillRule, point: Checkpoint, thingName: string): boolean {
  if (rule.point !== point) return false;
  if (rule.thingName !== undefined && rule.thingName !== thingName) return false;
  if (rule.thingNamePattern !== undefined && !new RegExp(rule.thingNamePattern).test(thingName)) return false;
  return true;
}

/** The stack server's side: the current rules, their remaining `times`, and the kill count. */
export class KillSwitch {
  private generation = 0;
  private entries: { rule: KillRule; remaining: number }[] = [];
  private readonly listeners: ((rules: KillRules) => void)[] = [];
  /** Kills since the stack started. */
  killed = 0;

  constructor(private readonly onKill: (event: KillEvent) => void = () => undefined) {}

  replace(rules: readonly KillRule[]): void {
    this.generation += 1;
    this.entries = rules.map((rule) => ({ rule, remaining: rule.times ?? Number.POSITIVE_INFINITY }));
    const current = this.current();
    for (const listener of this.listeners) listener(current);
  }

  current(): KillRules {
    return {
      generation: this.generation,
      rules: this.entries.flatMap(({ rule, remaining }, index) => (remaining > 0 ? [{ index, rule }] : [])),
    };
  }

  /** Rules still armed, with the kills they have left as `times`. */
  state(): KillRule[] {
    return this.entries
      .filter(({ remaining }) => remaining > 0)
      .map(({ rule, remaining }) => (Number.isFinite(remaining) ? { ...rule, times: remaining } : rule));
  }

  /** Called when the rules change, so running sandboxes learn it before their next checkpoint. */
  onChange(listener: (rules: KillRules) => void): void {
    this.listeners.push(listener);
  }

  /** A sandbox asks to fire a rule; true = it may (and is counted), false = the rule is spent or gone. */
  claim(claim: KillClaim): boolean {
    if (claim.generation !== this.generation) return false;
    const entry = this.entries[claim.index];
    if (!entry || entry.remaining <= 0 || !killRuleApplies(entry.rule, claim.point, claim.thingName)) {
      return false;
    }
    entry.remaining -= 1;
    this.killed += 1;
    this.onKill({ point: claim.point, thingName: claim.thingName });
    if (entry.remaining <= 0) {
      const current = this.current();
      for (const listener of this.listeners) listener(current);
    }
    return true;
  }
}
