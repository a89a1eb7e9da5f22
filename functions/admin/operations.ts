/**
 * The operator's changes to one device: disable, enable, revoke, reset, move. Each is a
 * conditional write of the record first (compare-and-set on version, status and claim, so it can
 * never overwrite a provisioning request's claim or mark), then the AWS IoT steps, each of which
 * can be repeated. Running a command again after an interruption finishes it; what a crash leaves
 * unreferenced in AWS IoT the reconciler retires.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import {
  AuditEntry,
  CertificateRef,
  DeviceRecord,
  PROV_STATUS,
  referencedCertificates,
} from '../provisioning/device-record';
import type { DeviceIot } from '../provisioning/iot';
import type { Registry } from '../provisioning/registry';
import { LEGACY_ATTRIBUTES } from '../provisioning/registry-table';
import { auditEntry } from './audit';
import { AdminError, EXIT } from './exit-codes';

export interface OperatorDependencies {
  readonly registry: Registry;
  readonly iot: DeviceIot;
  readonly regions: readonly string[];
  /** The caller's ARN (STS GetCallerIdentity): the audit's "who". */
  readonly caller: () => Promise<string>;
  /** How long to wait for a provisioning request in flight before refusing. */
  readonly waitSeconds: number;
  readonly log: (line: string) => void;
  readonly clock?: () => number;
}

export interface ChangeResult {
  readonly thingName: string;
  /** False when the record already was as asked: nothing written. */
  readonly changed: boolean;
  readonly audit?: AuditEntry;
  readonly notes: readonly string[];
}

const CERTIFICATE_ATTRIBUTES = [
  'certificate_id',
  'certificate_arn',
  'certificate_pem',
  'certificate_key_sha256',
  'key_mode',
  'thing_arn',
  'endpoint_address',
  // A renewal's previous certificate: retired with the others (referencedCertificates lists it).
  'previous_certificate_id',
  'previous_region',
  'previous_retire_after',
];
const MOVE_ATTRIBUTES = ['move_to_region', 'move_started', 'moved_from_region', 'moved_at'];
const PENDING_ATTRIBUTES = [
  'claim_id',
  'claim_expires',
  'pending_certificate_id',
  'pending_certificate_pem',
  'pending_region',
  'pending_key_sha256',
  'pending_key_mode',
  'pending_since',
];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The record, once no provisioning request holds a live claim on it (waits up to waitSeconds). */
async function settledRecord(deps: OperatorDependencies, thingName: string): Promise<DeviceRecord> {
  const now = () => (deps.clock ?? Date.now)();
  const giveUpAt = now() + deps.waitSeconds * 1000;
  let told = false;
  for (;;) {
    const record = await deps.registry.read(thingName);
    if (!record) throw new AdminError(`${thingName} is not in the registry`, EXIT.notFound);
    const expires = record.claimExpires ?? 0;
    if (!record.claimId || expires * 1000 <= now()) return record;
    if (now() >= giveUpAt) {
      throw new AdminError(
        `a provisioning request for ${thingName} is in flight (its lease ends ${new Date(expires * 1000).toISOString()}); ` +
          'nothing was changed: retry after that, or give --wait more seconds',
        EXIT.refused,
      );
    }
    if (!told) deps.log(`${thingName}: a provisioning request is in flight; waiting for it to finish`);
    told = true;
    await sleep(500);
  }
}

interface Plan {
  readonly what: string;
  readonly set?: Record<string, AttributeValue>;
  readonly remove?: readonly string[];
}

/**
 * Reads, plans and writes until the write lands on the record it was planned from. A plan of
 * undefined means the record already is as asked. A refusal is thrown by the planner.
 */
async function changeRecord(
  deps: OperatorDependencies,
  thingName: string,
  plan: (record: DeviceRecord) => Plan | undefined,
): Promise<{ record: DeviceRecord; audit?: AuditEntry }> {
  const by = await deps.caller();
  for (let attempt = 1; attempt <= 5; attempt += 1) {
    const record = await settledRecord(deps, thingName);
    const planned = plan(record);
    if (!planned) return { record };
    // A dead request's claim goes with every change: left on the record, the dead request could
    // still mark it (its mark is conditional on its claim) and undo the operator's change.
    const remove = [...new Set([...(planned.remove ?? []), ...(record.claimId ? PENDING_ATTRIBUTES : [])])];
    const audit = auditEntry(record, planned.what, by, planned);
    if (await deps.registry.change(record, { set: planned.set, remove, audit })) {
      deps.log(`audit ${JSON.stringify({ thingName, ...audit })}`);
      // Its intent was never answered (no mark): retired, not left live for the reconciler.
      const intent = record.claimId ? record.pending : undefined;
      if (intent && intent.certificateId !== record.certificateId) {
        await deps.iot.retireCertificate(intent.region, intent.certificateId);
      }
      return { record, audit };
    }
    // A provisioning request (or another operator) wrote in between: decide again.
  }
  throw new AdminError(
    `${thingName} kept changing while we tried to write it; nothing was changed`,
    EXIT.refused,
  );
}

const S = (value: string): AttributeValue => ({ S: value });
const N = (value: number): AttributeValue => ({ N: String(value) });

/**
 * Every certificate the record references: the live one in every region it is registered in
 * (a move's copies), a renewal's previous one, and a dead request's intent. Revoking covers all.
 */
function everyCopy(record: DeviceRecord): CertificateRef[] {
  const seen = new Set<string>();
  return referencedCertificates(record).filter((ref) => {
    const key = `${ref.region}/${ref.certificateId}`;
    return !seen.has(key) && seen.add(key) !== undefined;
  });
}

export async function disable(
  deps: OperatorDependencies,
  thingName: string,
  options: { readonly revoke?: boolean } = {},
): Promise<ChangeResult> {
  const { record, audit } = await changeRecord(deps, thingName, (current) => {
    if (current.provStatus === PROV_STATUS.disabled) return undefined;
    if (current.provStatus === PROV_STATUS.revoked) {
      throw new AdminError(`${thingName} is revoked, which already refuses it`, EXIT.refused);
    }
    return {
      what: options.revoke ? 'disable --revoke' : 'disable',
      set: { prov_status: S(PROV_STATUS.disabled) },
    };
  });
  const notes: string[] = [];
  if (options.revoke) notes.push(...(await deactivate(deps, record)));
  return { thingName, changed: audit !== undefined, audit, notes };
}

export async function enable(deps: OperatorDependencies, thingName: string): Promise<ChangeResult> {
  const { record, audit } = await changeRecord(deps, thingName, (current) => {
    if (current.provStatus !== PROV_STATUS.disabled) {
      if (current.provStatus === PROV_STATUS.revoked) {
        throw new AdminError(
          `${thingName} is revoked: \`gdp-admin reset ${thingName}\` lets it provision again`,
          EXIT.refused,
        );
      }
      return undefined;
    }
    // Back to what it was: provisioned while it has a certificate, else waiting to provision.
    const status = current.certificateId ? PROV_STATUS.provisioned : PROV_STATUS.unprovisioned;
    return { what: 'enable', set: { prov_status: S(status) } };
  });
  const notes: string[] = [];
  // `disable --revoke` deactivated the live copies: enabling gives them back, once the record
  // says provisioned again (the write above). Judged on the record as written: if another
  // operator's change landed meanwhile, the record decides and nothing is reactivated.
  const latest = audit ? await deps.registry.read(thingName) : undefined;
  if (latest && latest.version === record.version + 1 && latest.provStatus === PROV_STATUS.provisioned) {
    for (const copy of referencedCertificates({ ...latest, pending: undefined, previous: undefined })) {
      const state = await deps.iot.describeCertificate(copy.region, copy.certificateId);
      if (state?.status !== 'INACTIVE') continue;
      await deps.iot.setCertificateStatus(copy.region, copy.certificateId, 'ACTIVE');
      notes.push(
        `reactivated certificate ${copy.certificateId} in ${copy.region} (deactivated by disable --revoke)`,
      );
    }
    // A disable --revoke that wrote after our read deactivates after us: it must win.
    const after = await deps.registry.read(thingName);
    if (after && after.provStatus !== PROV_STATUS.provisioned) notes.push(...(await deactivate(deps, after)));
  }
  return { thingName, changed: audit !== undefined, audit, notes };
}

async function deactivate(deps: OperatorDependencies, record: DeviceRecord): Promise<string[]> {
  const notes: string[] = [];
  for (const copy of everyCopy(record)) {
    if (await deps.iot.setCertificateStatus(copy.region, copy.certificateId, 'INACTIVE')) {
      notes.push(`deactivated certificate ${copy.certificateId} in ${copy.region}`);
    }
  }
  return notes;
}

/** Retires certificates (deactivate, detach, delete) and then our things where they held them. */
async function retire(deps: OperatorDependencies, thingName: string, refs: readonly CertificateRef[]) {
  const notes: string[] = [];
  for (const ref of refs) {
    await deps.iot.retireCertificate(ref.region, ref.certificateId);
    notes.push(`retired certificate ${ref.certificateId} in ${ref.region}`);
  }
  for (const region of new Set(refs.map((ref) => ref.region))) {
    if (await deps.iot.deleteThingIfOursAndEmpty(region, thingName))
      notes.push(`deleted thing ${thingName} in ${region}`);
    else
      notes.push(
        `left thing ${thingName} in ${region}: not created by this service, or it holds other certificates`,
      );
  }
  return notes;
}

export async function revoke(
  deps: OperatorDependencies,
  thingName: string,
  options: { readonly delete?: boolean } = {},
): Promise<ChangeResult> {
  const { record, audit } = await changeRecord(deps, thingName, (current) => {
    const hasCertificate = current.certificateId !== undefined;
    if (current.provStatus === PROV_STATUS.revoked && !(options.delete && hasCertificate)) return undefined;
    return {
      what: options.delete ? 'revoke --delete' : 'revoke',
      set: { prov_status: S(PROV_STATUS.revoked) },
      // With --delete the record lets go of the certificate first: if we stop before AWS IoT is
      // done, nothing references it any more and the reconciler quarantines it.
      remove: options.delete ? [...CERTIFICATE_ATTRIBUTES, ...MOVE_ATTRIBUTES] : [],
    };
  });
  const notes = options.delete
    ? await retire(deps, thingName, everyCopy(record))
    : await deactivate(deps, record);
  return { thingName, changed: audit !== undefined, audit, notes };
}

export async function reset(deps: OperatorDependencies, thingName: string): Promise<ChangeResult> {
  const { record, audit } = await changeRecord(deps, thingName, (current) => {
    const clean =
      current.provStatus === PROV_STATUS.unprovisioned &&
      !current.certificateId &&
      !current.claimId &&
      !current.moveTo &&
      !current.movedFrom &&
      // What earlier versions left (every write removes it): a reset writes, so it goes.
      !LEGACY_ATTRIBUTES.some((attribute) => attribute in current.raw);
    if (clean) return undefined;
    return {
      what: 'reset',
      set: { prov_status: S(PROV_STATUS.unprovisioned) },
      remove: [
        ...CERTIFICATE_ATTRIBUTES,
        ...MOVE_ATTRIBUTES,
        // A dead request's claim and intent (a live one was waited for above).
        ...(current.claimId ? PENDING_ATTRIBUTES : []),
        'first_prov_epoch',
        'reissue_count',
        'geo_source',
        'prov_epoch',
        'prov_datetime',
        'aws_region',
      ],
    };
  });
  const notes = audit ? await retire(deps, thingName, everyCopy(record)) : [];
  return { thingName, changed: audit !== undefined, audit, notes };
}

/**
 * Re-homes a device without re-keying: the same certificate registered in the target region too.
 *
 * 1. intent: `move_to_region` on the record (the reconciler then keeps the target copy);
 * 2. AWS IoT in the target: policy, RegisterCertificate (again: "already exists"), CreateThing with
 *    our marker (again: no-op), attach (idempotent);
 * 3. switch: `aws_region` = target, `moved_from_region` = the old one; both regions accept the
 *    device until it learns its new endpoint;
 * 4. finish (`--finish`, or the same move again): retire the old region's copy and thing, then drop
 *    `moved_from_region`. Nothing stays live twice.
 * Interrupted anywhere, the same command continues from the record.
 */
export async function move(
  deps: OperatorDependencies,
  thingName: string,
  options: { readonly to?: string; readonly finish?: boolean },
): Promise<ChangeResult> {
  const notes: string[] = [];
  let audit: AuditEntry | undefined;
  const to = options.to;
  if (to !== undefined && !deps.regions.includes(to)) {
    throw new AdminError(
      `${to} is not one of the deployment's regions (${deps.regions.join(', ')})`,
      EXIT.usage,
    );
  }

  if (to !== undefined) {
    const now = Math.floor((deps.clock ?? Date.now)() / 1000);
    const intent = await changeRecord(deps, thingName, (current) => {
      if (
        current.provStatus !== PROV_STATUS.provisioned ||
        !current.certificateId ||
        !current.certificatePem ||
        !current.region
      ) {
        throw new AdminError(
          `${thingName} is ${current.provStatus || 'without status'}${current.certificateId ? '' : ' without a certificate'}: only a provisioned device can move`,
          EXIT.refused,
        );
      }
      if (current.moveTo?.region === to) return undefined; // resuming this move
      if (current.moveTo) {
        throw new AdminError(
          `${thingName} is being moved to ${current.moveTo.region}: run \`gdp-admin move ${thingName} --to ${current.moveTo.region}\` to finish that first`,
          EXIT.refused,
        );
      }
      if (current.region === to) return undefined; // done already (maybe only the finish is left)
      if (current.movedFrom) {
        throw new AdminError(
          `${thingName} still has its old copy in ${current.movedFrom.region}: \`gdp-admin move ${thingName} --finish\` first`,
          EXIT.refused,
        );
      }
      return { what: `move --to ${to} (started)`, set: { move_to_region: S(to), move_started: N(now) } };
    });
    audit = intent.audit;
    const record = await deps.registry.read(thingName);
    if (record?.moveTo?.region === to && record.certificateId && record.certificatePem) {
      await deps.iot.ensurePolicy(to);
      const { certificateArn } = await deps.iot.registerCertificate(to, {
        id: record.certificateId,
        pem: record.certificatePem,
      });
      const thing = await deps.iot.createThing(to, thingName);
      await deps.iot.attach(to, thingName, certificateArn);
      // Recorded with the region, so status calls tell the device where to go without an IoT call.
      const endpointAddress = await deps.iot.endpointAddress(to);
      notes.push(`registered certificate ${record.certificateId} in ${to}, attached to thing ${thingName}`);
      let switched;
      try {
        switched = await changeRecord(deps, thingName, (current) => {
          if (
            current.moveTo?.region !== to ||
            current.certificateId !== record.certificateId ||
            !current.region
          ) {
            throw new AdminError(
              `${thingName} changed during the move (re-provisioned?): run the move again`,
              EXIT.refused,
            );
          }
          return {
            what: `move --to ${to}`,
            set: {
              aws_region: S(to),
              moved_from_region: S(current.region),
              moved_at: N(Math.floor((deps.clock ?? Date.now)() / 1000)),
              certificate_arn: S(certificateArn),
              thing_arn: S(thing.thingArn),
              endpoint_address: S(endpointAddress),
              // A pinned device would go back to its pin when it next provisions: the pin moves too.
              ...(current.regionPin ? { region_pin: S(to) } : {}),
            },
            remove: ['move_to_region', 'move_started'],
          };
        });
      } catch (error) {
        // The record moved on while we registered (a reset, a re-provisioning): what this move
        // put in the target region is nobody's now. Undone, unless the record names it after all.
        const latest = await deps.registry.read(thingName);
        const named = latest ? everyCopy(latest) : [];
        if (!named.some((ref) => ref.region === to && ref.certificateId === record.certificateId)) {
          await retire(deps, thingName, [{ region: to, certificateId: record.certificateId }]);
        }
        throw error;
      }
      audit = switched.audit ?? audit;
    }
  }

  const current = await settledRecord(deps, thingName);
  if (current.movedFrom && current.certificateId) {
    if (options.finish || (to !== undefined && current.region === to && audit === undefined)) {
      const old = { certificateId: current.certificateId, region: current.movedFrom.region };
      const previous = current.previous;
      if (previous && previous.region === old.region) {
        // Its thing there holds the renewal's previous certificate, the device's fallback until it
        // proves the new one: finishing now would leave that thing behind once it is retired.
        throw new AdminError(
          `${thingName} renewed and has not proven its new certificate yet: its previous certificate ` +
            `${previous.certificateId} stays live in ${old.region} until ` +
            `${new Date(previous.retireAfter * 1000).toISOString()} (or its next status call); ` +
            'nothing was changed: run --finish after that',
          EXIT.refused,
        );
      }
      // Retire first, then forget: a second run after a crash finds the copy gone and still works.
      notes.push(...(await retire(deps, thingName, [old])));
      const finished = await changeRecord(deps, thingName, (latest) =>
        latest.movedFrom
          ? {
              what: `move --finish (retired the copy in ${old.region})`,
              remove: ['moved_from_region', 'moved_at'],
            }
          : undefined,
      );
      audit = finished.audit ?? audit;
    } else {
      notes.push(
        `both ${current.region} and ${current.movedFrom.region} accept ${thingName} until it uses its new endpoint; ` +
          `then \`gdp-admin move ${thingName} --finish\` retires the copy in ${current.movedFrom.region}`,
      );
    }
  } else if (options.finish && to === undefined) {
    notes.push(`${thingName} has no old copy to retire`);
  }
  if (options.finish) notes.push(...(await sweepEmptyThings(deps, thingName)));
  return { thingName, changed: audit !== undefined, audit, notes };
}

/**
 * Deletes our empty things of the device in every region its record names no certificate in. A
 * device that re-provisions between a move and its --finish drops the move from its record (its
 * old certificate's copies are retired by the request), and the thing the move created, or the
 * one it left, is then nobody's. Only a thing with our marker and no principal is deleted.
 */
async function sweepEmptyThings(deps: OperatorDependencies, thingName: string): Promise<string[]> {
  const record = await settledRecord(deps, thingName);
  const named = new Set(everyCopy(record).map((ref) => ref.region));
  const notes: string[] = [];
  for (const region of deps.regions.filter((candidate) => !named.has(candidate))) {
    const report = await deps.iot.inspectThing(region, thingName);
    if (!report.thing?.ours || report.principals.length > 0) continue;
    if (await deps.iot.deleteThingIfOursAndEmpty(region, thingName)) {
      notes.push(`deleted empty thing ${thingName} in ${region}`);
    }
  }
  return notes;
}

/**
 * `gdp-admin quarantine restore`: reactivates a certificate the reconciler quarantined (ours,
 * INACTIVE, referenced by no record; functions/reconciler/quarantine.ts). Its attachments were
 * kept, so reactivating is the whole restore. Audited on the record of each thing it is attached
 * to (or in the audit log line when none has a record), before the reactivation, like every
 * operator change. The usual order after a lost table is: restore the table, then the
 * certificates; a provisioned record naming it is that. A revoked or disabled record naming it
 * means an operator deactivated it (revoke, disable --revoke), not the reconciler: refused, that
 * is `enable` or `reset`'s business.
 */
export async function restoreFromQuarantine(
  deps: OperatorDependencies,
  certificateId: string,
  options: { readonly region?: string } = {},
): Promise<ChangeResult & { readonly restored: readonly CertificateRef[] }> {
  if (options.region !== undefined && !deps.regions.includes(options.region)) {
    throw new AdminError(
      `${options.region} is not one of the deployment's regions (${deps.regions.join(', ')})`,
      EXIT.usage,
    );
  }
  if (!/^[0-9a-f]{64}$/.test(certificateId)) {
    throw new AdminError(
      `${certificateId} is not a certificate id (64 lower-case hex digits, as \`gdp-admin quarantine\` lists them)`,
      EXIT.usage,
    );
  }
  const notes: string[] = [];
  const restored: CertificateRef[] = [];
  let audit: AuditEntry | undefined;
  let named = false;
  const by = await deps.caller();
  for (const region of options.region ? [options.region] : deps.regions) {
    const state = await deps.iot.describeCertificate(region, certificateId);
    if (!state) continue;
    if (!state.ours) {
      throw new AdminError(
        `${certificateId} in ${region} was not issued by our CA: not ours to restore`,
        EXIT.refused,
      );
    }
    if (state.status === 'ACTIVE') {
      notes.push(`certificate ${certificateId} in ${region} is already ACTIVE`);
      continue;
    }
    const things = await deps.iot.certificateThings(region, certificateId);
    const what = `quarantine restore ${certificateId} in ${region}`;
    let audited = false;
    for (const thingName of things) {
      if (!(await deps.registry.read(thingName))) continue;
      // Decided on the record as written (a compare-and-set), like every operator change.
      const changed = await changeRecord(deps, thingName, (current) => {
        const names = referencedCertificates(current).some(
          (ref) => ref.region === region && ref.certificateId === certificateId,
        );
        if (names && current.provStatus !== PROV_STATUS.provisioned) {
          throw new AdminError(
            `${thingName} is ${current.provStatus} and its record names certificate ${certificateId} in ${region}: ` +
              'an operator deactivated it, not the reconciler; `gdp-admin enable` or `reset` decide about it',
            EXIT.refused,
          );
        }
        named ||= names;
        return { what };
      });
      audit = changed.audit ?? audit;
      audited ||= changed.audit !== undefined;
    }
    if (!audited) {
      // No record to carry the entry: the audit log line is the record of it.
      const at = new Date((deps.clock ?? Date.now)()).toISOString();
      audit = { at, by, what, before: { status: 'INACTIVE' }, after: { status: 'ACTIVE' } };
      deps.log(`audit ${JSON.stringify({ certificateId, ...audit })}`);
    }
    await deps.iot.setCertificateStatus(region, certificateId, 'ACTIVE');
    restored.push({ region, certificateId });
    notes.push(
      `reactivated certificate ${certificateId} in ${region}` +
        (things.length > 0 ? `, attached to ${things.join(', ')}` : ', attached to no thing'),
    );
  }
  if (restored.length === 0 && notes.length === 0) {
    throw new AdminError(
      `certificate ${certificateId} is not in ${options.region ?? 'any of the deployment’s regions'}`,
      EXIT.notFound,
    );
  }
  if (restored.length > 0 && !named) {
    notes.push(
      'no record names it: unless one does before the next reconciler run (a restored table), ' +
        'the reconciler quarantines it again',
    );
  }
  return { thingName: certificateId, changed: restored.length > 0, audit, notes, restored };
}
