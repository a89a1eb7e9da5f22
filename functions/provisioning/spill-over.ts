/**
 * Spill-over (opt-in): when the nearest region's admission backlog is longer than a configured
 * wait, a device placed there by distance alone may be placed in the next-nearest enabled region
 * instead, within a configured extra distance (docs/deploy.md, "Spill-over").
 *
 * This file is the pure part: the setting and its validation (shared by the function's config and
 * infra/config.ts, so a bad value fails `make synth` and the init alike), which requests may spill,
 * and where to. provision.ts runs the spill path; admission.ts and admission-state.ts take the
 * candidate's slot without joining its queue.
 */
import type { Placement } from './locate';
import { distanceKm, GeoPoint, RegionChoice, RegionSite } from './regions';

export interface SpillOverSettings {
  /** A refusal whose backlog in the nearest region is longer than this may spill over. */
  readonly afterWaitMs: number;
  /** A candidate region is at most this much farther from the device than the nearest one. */
  readonly maxExtraKm: number;
}

/** Regions tried after the nearest, nearest first: each try costs a dependent stage. */
export const MAX_SPILL_CANDIDATES = 2;

const SPILL_OVER_FIELDS = ['afterWaitSeconds', 'maxExtraKm'] as const;

/**
 * What is wrong with the setting (`null` = off, or `{ afterWaitSeconds, maxExtraKm }`, both
 * positive numbers), one problem a line, each naming `name` and the field.
 */
export function spillOverProblems(value: unknown, name: string): string[] {
  if (value === null) return [];
  if (typeof value !== 'object' || value === undefined || Array.isArray(value))
    return [`${name}: expected null or { "afterWaitSeconds": 60, "maxExtraKm": 1500 }`];
  const problems: string[] = [];
  const fields = value as Record<string, unknown>;
  for (const field of Object.keys(fields)) {
    if (!(SPILL_OVER_FIELDS as readonly string[]).includes(field))
      problems.push(`${name}.${field}: unknown field (expected ${SPILL_OVER_FIELDS.join(', ')})`);
  }
  for (const field of SPILL_OVER_FIELDS) {
    const number = fields[field];
    if (typeof number !== 'number' || !Number.isFinite(number) || number <= 0)
      problems.push(
        `${name}.${field}: expected a positive number, got ${JSON.stringify(number) ?? 'nothing'}`,
      );
  }
  return problems;
}

/** The validated setting (spillOverProblems found nothing), or undefined when off. */
export function spillOverSettings(value: unknown): SpillOverSettings | undefined {
  if (value === null || value === undefined) return undefined;
  const fields = value as { afterWaitSeconds: number; maxExtraKm: number };
  return { afterWaitMs: fields.afterWaitSeconds * 1000, maxExtraKm: fields.maxExtraKm };
}

/** What provisioning knows about a request when it chooses the region. */
export interface SpillFacts {
  /** A first provisioning: decision `issue` without re-issue (not a resume, not a re-issue). */
  readonly firstProvisioning: boolean;
  /** The record names a region (region_pin): an operator chose it. */
  readonly pinned: boolean;
  readonly placement: Placement;
  /** The region the request goes to. */
  readonly region: string;
}

/**
 * Only a device placed by distance may spill: a country override is data residency and never
 * spills; the default region with no known point has no distance to compare; a pin, a resumed
 * intent or a re-issue (the thing exists in its region) stays where it is.
 */
export function maySpill(facts: SpillFacts): facts is SpillFacts & { placement: { point: GeoPoint } } {
  const { placement } = facts;
  return (
    facts.firstProvisioning &&
    !facts.pinned &&
    !placement.overridden &&
    placement.geoSource !== 'default' &&
    placement.point !== undefined &&
    facts.region === placement.region
  );
}

/**
 * The enabled regions other than the nearest, nearest first, no farther than the nearest's
 * distance plus maxExtraKm; at most MAX_SPILL_CANDIDATES. Ties keep the enabled list's order.
 */
export function spillCandidates(
  point: GeoPoint,
  nearest: string,
  enabled: readonly RegionSite[],
  maxExtraKm: number,
): RegionChoice[] {
  const site = enabled.find((candidate) => candidate.region === nearest);
  if (!site) return [];
  const limitKm = distanceKm(point, site) + maxExtraKm;
  return enabled
    .filter((candidate) => candidate.region !== nearest)
    .map((candidate) => ({ region: candidate.region, exactKm: distanceKm(point, candidate) }))
    .filter((candidate) => candidate.exactKm <= limitKm)
    .sort((a, b) => a.exactKm - b.exactKm)
    .slice(0, MAX_SPILL_CANDIDATES)
    .map((candidate) => ({ region: candidate.region, distanceKm: Math.round(candidate.exactKm) }));
}

/** Where a spilled request went, and why: for the answer, the log line and the metric. */
export interface Spill {
  readonly from: string;
  readonly to: string;
  /** The nearest region's backlog when it refused. */
  readonly backlogMs: number;
}
