/**
 * What `gdp-device --json` prints (docs/device.md, "For scripts"): the facts a run notes as it
 * goes, and the report built from them and from what is stored at the end, so a renewal, a move
 * or provisioning again shows as the device now is.
 */
import type { StatusAnswer } from '../functions/provisioning/wire';
import { certificateIdOf } from './keys';
import type { DeviceCredentials } from './store';

/** What a run did after day one: the status check and what the device did with its answer. */
export interface DayTwoFacts {
  /** answered, skipped (not due, or no status URL), refused (4xx) or failed (unreachable). */
  readonly statusCheck?: 'answered' | 'skipped' | 'refused' | 'failed';
  /** The service's answer: none, renew, move or reprovision. */
  readonly action?: StatusAnswer['action'];
  /** Why the check was skipped, refused or failed. */
  readonly reason?: string;
  /** A renewal interrupted by an earlier run, finished or undone on start. */
  readonly resumedRenewal?: string;
  readonly renewed?: boolean;
  /** The region a move took the device to; absent when it stayed. */
  readonly movedTo?: string;
  readonly reprovisioned?: boolean;
}

export interface DeviceFacts {
  /** provisioned by this run (first boot, --reset or a reprovision answer), or earlier. */
  readonly provisioned?: 'now' | 'earlier';
  readonly attempts?: number;
  readonly latencyMs?: number;
  readonly httpStatus?: number;
  readonly error?: string;
  readonly published?: number;
  readonly dayTwo?: DayTwoFacts;
}

/** `gdp-device --json`: one object on stdout when the run ends (docs/device.md, "For scripts"). */
export interface DeviceReport extends Omit<DeviceFacts, 'dayTwo'> {
  /** One name per exit status (OUTCOME in device/cli.ts). */
  readonly outcome: string;
  readonly exitCode: number;
  readonly thingName: string;
  readonly region?: string;
  readonly endpoint?: string;
  readonly certificateId?: string;
  readonly dataDir: string;
  readonly dayTwo?: DayTwoFacts;
}

/** Gathers the facts a run notes; day-two facts merge, the others replace. */
export function collectFacts(): { note(facts: DeviceFacts): void; collected(): DeviceFacts } {
  let facts: DeviceFacts = {};
  return {
    note: (more) => {
      facts = { ...facts, ...more, ...(more.dayTwo ? { dayTwo: { ...facts.dayTwo, ...more.dayTwo } } : {}) };
    },
    collected: () => facts,
  };
}

export function deviceReport(run: {
  readonly outcome: string;
  readonly exitCode: number;
  readonly thingName: string;
  readonly dataDir: string;
  /** The credentials in the data directory at the end; another thing's are not reported. */
  readonly stored: DeviceCredentials | undefined;
  readonly facts: DeviceFacts;
}): DeviceReport {
  const current = run.stored?.identity.thingName === run.thingName ? run.stored : undefined;
  return {
    outcome: run.outcome,
    exitCode: run.exitCode,
    thingName: run.thingName,
    ...(current
      ? {
          region: current.identity.region,
          endpoint: current.identity.endpointAddress,
          certificateId: certificateIdOf(current.certificatePem),
        }
      : {}),
    dataDir: run.dataDir,
    ...run.facts,
  };
}
