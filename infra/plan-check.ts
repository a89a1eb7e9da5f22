/**
 * What `make plan` and `make deploy` refuse to do without being told: delete or replace a device
 * CA registration, a CA key or its alias, or the registry table. Each takes devices offline or
 * loses what they are, and each can come from an ordinary-looking config edit (a region removed
 * from iotRegions, a CA file replaced, a previous CA dropped too early, a table renamed).
 *
 * `prevent_destroy` on those resources stops Terraform from planning their replacement, but not
 * their deletion when the resource leaves the configuration (a removed region is exactly that).
 * So the plan itself is read (`terraform show -json <plan>`) and checked here before anything is
 * applied. An explicit `--allow-destroy=<address>` lets one named resource go.
 *
 * No I/O: tests/infra/plan-check.test.ts feeds it fixture plans.
 */

export class PlanUnreadableError extends Error {
  override readonly name = 'PlanUnreadableError';
}

export interface PlannedChange {
  readonly address: string;
  readonly type: string;
  readonly actions: readonly string[];
  /** The resource's attributes before the change (null when it is being created). */
  readonly before: Record<string, unknown> | null;
}

/** A protected resource the plan would delete or replace. */
export interface Destruction {
  readonly address: string;
  readonly replace: boolean;
  /** What it does to devices, in one sentence. */
  readonly consequence: string;
}

export interface PlanVerdict {
  /** Destructions no flag allowed: the deploy stops. */
  readonly refused: readonly Destruction[];
  /** Destructions the operator allowed by address. */
  readonly allowed: readonly Destruction[];
}

/** The resources whose deletion or replacement must be asked for, and why. */
function consequence(change: PlannedChange): string | undefined {
  const region = regionOf(change.before);
  const where = region ? ` in ${region}` : '';
  switch (change.type) {
    case 'aws_iot_ca_certificate':
      return (
        `the AWS provider sets this device CA INACTIVE and deregisters it${where}: every device whose ` +
        'certificate chains to it stops connecting there'
      );
    case 'aws_kms_key':
      return isCaKey(change.address)
        ? 'schedules the device CA signing key for deletion: nothing can be issued under that CA again, ' +
            'and a rollback to it becomes impossible after 30 days'
        : undefined;
    case 'aws_kms_alias':
      return isCaKey(change.address)
        ? 'removes the name make init-ca and make deploy use to find the device CA key'
        : undefined;
    case 'aws_dynamodb_table':
      return (
        'deletes the registry table and its replicas: every device record, certificate reference and ' +
        'allowlist entry is lost (restore only from a backup or point-in-time recovery)'
      );
    default:
      return undefined;
  }
}

const isCaKey = (address: string) => /(^|\.)device-ca-key-/.test(address);

function regionOf(attributes: Record<string, unknown> | null): string | undefined {
  const arn = attributes?.arn;
  return typeof arn === 'string' ? arn.split(':')[3] || undefined : undefined;
}

/** Parses `terraform show -json <plan>` output; anything else is refused, never guessed at. */
export function parsePlan(text: string): PlannedChange[] {
  let plan: unknown;
  try {
    plan = JSON.parse(text);
  } catch (error) {
    throw new PlanUnreadableError(`the plan is not JSON: ${(error as Error).message}`);
  }
  if (typeof plan !== 'object' || plan === null || !('format_version' in plan)) {
    throw new PlanUnreadableError('the plan JSON has no format_version: not `terraform show -json` output');
  }
  const changes = (plan as { resource_changes?: unknown }).resource_changes ?? [];
  if (!Array.isArray(changes)) throw new PlanUnreadableError('resource_changes is not a list');
  return changes.map((entry: unknown, index) => {
    const change = entry as {
      address?: unknown;
      type?: unknown;
      change?: { actions?: unknown; before?: unknown };
    };
    const actions = change.change?.actions;
    if (
      typeof change.address !== 'string' ||
      typeof change.type !== 'string' ||
      !Array.isArray(actions) ||
      !actions.every((action) => typeof action === 'string')
    ) {
      throw new PlanUnreadableError(`resource_changes[${index}] has no address, type or actions`);
    }
    const before = change.change?.before;
    return {
      address: change.address,
      type: change.type,
      actions: actions as string[],
      before: typeof before === 'object' && before !== null ? (before as Record<string, unknown>) : null,
    };
  });
}

/**
 * An allow entry names one address, or ends in `*` to name every address starting with the rest
 * (`--allow-destroy='aws_iot_ca_certificate.device-ca_eu-west-1*'` for one region's CAs).
 */
function isAllowed(address: string, allow: readonly string[]): boolean {
  return allow.some((entry) =>
    entry.endsWith('*') ? address.startsWith(entry.slice(0, -1)) : address === entry,
  );
}

export function checkPlan(changes: readonly PlannedChange[], allow: readonly string[] = []): PlanVerdict {
  const refused: Destruction[] = [];
  const allowed: Destruction[] = [];
  for (const change of changes) {
    if (!change.actions.includes('delete')) continue;
    const why = consequence(change);
    if (!why) continue;
    const destruction = {
      address: change.address,
      replace: change.actions.includes('create'),
      consequence: why,
    };
    (isAllowed(change.address, allow) ? allowed : refused).push(destruction);
  }
  return { refused, allowed };
}

/** The refusal as the operator reads it: what would go, what it does, and how to allow it. */
export function describeRefusal(refused: readonly Destruction[]): string {
  const lines = refused.map(
    (destruction) =>
      `  - ${destruction.address} would be ${destruction.replace ? 'replaced (deleted, then created)' : 'deleted'}: ` +
      destruction.consequence,
  );
  return [
    `this plan deletes or replaces ${refused.length} resource(s) devices depend on:`,
    ...lines,
    'Nothing was applied. If that is what you mean (docs/deploy.md: "Removing a region", "Rotate the',
    'device CA"), allow each one by address and run again:',
    `  make deploy ARGS="${refused.map((destruction) => `--allow-destroy=${destruction.address}`).join(' ')}"`,
  ].join('\n');
}
