/**
 * Operators in the chaos run (issue 18): while the fleet provisions under faults and kills, a
 * cohort of its own devices is revoked, moved, reset, disabled and enabled by an operator running
 * gdp-admin's operations, under the same faults, and re-running a command that failed, as an
 * operator would. The audit afterwards: what each record names is exactly what is live, no claim
 * is left, and no thing of ours is left empty in any region.
 */
import { DescribeThingCommand, IoTClient, ListThingPrincipalsCommand } from '@aws-sdk/client-iot';
import { disable, enable, move, OperatorDependencies, reset, revoke } from '../../functions/admin/operations';
import { THING_MARKER } from '../../functions/provisioning/iot';
import { loadReconcilerConfig } from '../../functions/reconciler/config';
import { reconcilerDependencies } from '../../functions/reconciler/wiring';
import type { CertificateOfOurs } from '../integration/audit';
import { post, registryRecord, stack, useLocalAws, v1Body } from '../integration/requests';
import { addDevice } from '../local/stack';

/** What the operator does to the n-th device of the cohort (in turn). */
const ACTIONS = [
  'revoke',
  'move+finish',
  'reset',
  'revoke --delete',
  'disable --revoke+enable',
  'move',
] as const;
type Action = (typeof ACTIONS)[number];

export interface OperatorsReport {
  readonly devices: number;
  /** Actions completed, by kind. */
  readonly done: Readonly<Record<string, number>>;
  /** Commands re-run after a refusal (a request in flight, not yet provisioned) or an AWS error. */
  readonly reruns: number;
  /** Actions given up after every re-run failed (with why). */
  readonly gaveUp: readonly string[];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function operatorDependencies(): OperatorDependencies {
  useLocalAws();
  const { registry, iot } = reconcilerDependencies(
    loadReconcilerConfig({ ...process.env, ...stack.functionEnvironment }),
  );
  return {
    registry,
    iot,
    regions: stack.regions,
    caller: async () => 'arn:aws:sts::123456789012:assumed-role/chaos/operator',
    waitSeconds: 5,
    log: () => undefined,
  };
}

/**
 * Provisions the cohort `${prefix}op-<n>` like devices do and operates on it meanwhile. Their
 * names start with the run's prefix (faults and kills reach them) but not with `${prefix}-`, so the
 * fleet's own audit leaves them to auditOperated().
 */
export async function runOperators(prefix: string, count: number): Promise<OperatorsReport> {
  const thingNames = Array.from({ length: count }, (_, index) => `${prefix}op-${index}`);
  for (const thingName of thingNames) await addDevice(stack, thingName);
  const deps = operatorDependencies();
  const done: Record<string, number> = {};
  const gaveUp: string[] = [];
  let reruns = 0;

  async function provision(thingName: string): Promise<void> {
    const deadline = Date.now() + 120_000;
    for (let attempt = 1; Date.now() < deadline; attempt += 1) {
      const answer = await post(v1Body(thingName)).catch(() => ({ status: 0, headers: new Headers() }));
      // 200, or refused for good by what the operator did (403 revoked/disabled, 409).
      if ([200, 403, 409].includes(answer.status)) return;
      const retryAfter = Number(answer.headers.get('retry-after') ?? 0) * 1000;
      await sleep(Math.max(retryAfter, Math.min(2_000, 100 * 2 ** attempt) * Math.random()));
    }
  }

  async function operate(thingName: string, action: Action): Promise<void> {
    // Somewhere in the device's provisioning: before, during or after.
    await sleep(Math.random() * 3_000);
    const steps: (() => Promise<unknown>)[] = [];
    const target = async () => {
      const region = (await registryRecord(thingName))?.aws_region?.S;
      return stack.regions.find((candidate) => candidate !== region && candidate.startsWith('eu-')) ?? '';
    };
    if (action === 'revoke') steps.push(() => revoke(deps, thingName));
    if (action === 'revoke --delete') steps.push(() => revoke(deps, thingName, { delete: true }));
    if (action === 'reset') steps.push(() => reset(deps, thingName));
    if (action === 'disable --revoke+enable') {
      steps.push(
        () => disable(deps, thingName, { revoke: true }),
        () => enable(deps, thingName),
      );
    }
    if (action === 'move' || action === 'move+finish') {
      let to = '';
      steps.push(async () => move(deps, thingName, { to: (to ||= await target()) }));
      if (action === 'move+finish') steps.push(() => move(deps, thingName, { finish: true }));
    }
    for (const step of steps) {
      let why = '';
      for (let attempt = 1; attempt <= 25; attempt += 1) {
        try {
          await step();
          why = '';
          break;
        } catch (error) {
          why = (error as Error).message;
          reruns += 1;
          await sleep(500 + Math.random() * 1_000);
        }
      }
      if (why) {
        gaveUp.push(`${thingName} (${action}): ${why}`);
        return;
      }
    }
    done[action] = (done[action] ?? 0) + 1;
  }

  await Promise.all(
    thingNames.map((thingName, index) =>
      Promise.all([provision(thingName), operate(thingName, ACTIONS[index % ACTIONS.length] as Action)]),
    ),
  );
  return { devices: count, done, reruns, gaveUp };
}

/**
 * The audit of the operated cohort, after the reconciler ran: the ACTIVE certificates of ours
 * issued to each device, in every region, are exactly the copies its record names as live (none
 * when it is revoked, disabled or unprovisioned); no claim is left; no thing of ours is empty.
 */
export async function auditOperated(
  prefix: string,
  count: number,
  ours: ReadonlyMap<string, readonly CertificateOfOurs[]>,
): Promise<string[]> {
  const problems: string[] = [];
  const credentials = { accessKeyId: 'audit', secretAccessKey: 'audit' };
  const iot = (region: string) => new IoTClient({ region, endpoint: stack.motoUrl, credentials });
  for (let index = 0; index < count; index += 1) {
    const thingName = `${prefix}op-${index}`;
    const record = await registryRecord(thingName);
    const status = record?.prov_status?.S;
    const certificateId = record?.certificate_id?.S;
    const named =
      status === 'provisioned' && certificateId
        ? [record?.aws_region?.S, record?.moved_from_region?.S]
            .filter((region): region is string => !!region)
            .map((region) => `${region}/${certificateId}`)
        : [];
    const live = [...ours.entries()].flatMap(([region, certificates]) =>
      certificates
        .filter((certificate) => certificate.commonName === thingName && certificate.status === 'ACTIVE')
        .map((certificate) => `${region}/${certificate.certificateId}`),
    );
    if (JSON.stringify([...live].sort()) !== JSON.stringify([...named].sort())) {
      problems.push(
        `${thingName} (${status}): live ${JSON.stringify(live)}, the record names ${JSON.stringify(named)}`,
      );
    }
    if (record?.claim_id) problems.push(`${thingName}: a claim is left on the record`);
    for (const region of stack.regions) {
      let attributes: Record<string, string> | undefined;
      try {
        attributes = (await iot(region).send(new DescribeThingCommand({ thingName }))).attributes;
      } catch (error) {
        if ((error as Error).name === 'ResourceNotFoundException') continue;
        throw error;
      }
      if (attributes?.[THING_MARKER.name] !== THING_MARKER.value) continue;
      const principals =
        (await iot(region).send(new ListThingPrincipalsCommand({ thingName }))).principals ?? [];
      if (principals.length === 0) problems.push(`${thingName}: an empty thing of ours is left in ${region}`);
    }
  }
  return problems;
}
