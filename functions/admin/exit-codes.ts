/** gdp-admin's exit codes (README, "Operating the fleet"): a small closed set scripts can rely on. */
export const EXIT = {
  ok: 0,
  /** An AWS call failed, or part of a bulk operation did. */
  failed: 1,
  /** Bad usage or configuration (unknown option, bad value, no credentials, no local stack). */
  usage: 2,
  /** The thing is not in the registry. */
  notFound: 3,
  /** The record's state does not allow it, or a provisioning request stayed in flight. */
  refused: 4,
  /** import: some rows were rejected (the good rows went in). */
  rejectedRows: 5,
  /** The operator answered no at the confirmation prompt. */
  declined: 6,
  /** reconcile: the circuit breaker stopped a large run; nothing changed (confirm with --allow-large). */
  aborted: 7,
} as const;

/** An expected refusal: printed as one line, no stack trace, with its exit code. */
export class AdminError extends Error {
  override readonly name = 'AdminError';
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}
