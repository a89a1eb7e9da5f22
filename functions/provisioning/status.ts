/**
 * POST /device-status: where a provisioned device lives, and what it should do next.
 *
 * The common path costs one consistent GetItem and one conditional UpdateItem (the nonce and the
 * per-device interval), and no IoT call: the certificate to verify against, the region, its
 * endpoint and the certificate's validity all come from the record. The certificate's ACTIVE
 * state is the record's too: every change of it goes through the record first (gdp-admin
 * disable/revoke/reset/move, a renewal), so a provisioned record's current certificate is ACTIVE.
 * Only the call that follows a renewal does more: it retires the previous certificate.
 */
import { ProvisioningDependencies, withRetries } from './provision';
import { Deadline } from './deadline';
import { DeviceRecord, nextRecentNonces, PreviousCertificate } from './device-record';
import { rateLimited } from './errors';
import { decideStatus, issuedFor, recordValidity, verifyLifecycleProof } from './lifecycle';
import { LifecycleRequest } from './request';
import { countMetric, logger } from './telemetry';
import { StatusAnswer } from './wire';

export interface StatusOutcome {
  readonly answer: StatusAnswer;
  readonly retiredPrevious: boolean;
}

export async function deviceStatus(
  request: LifecycleRequest,
  deps: ProvisioningDependencies,
  deadline: Deadline,
): Promise<StatusOutcome> {
  const { config, registry, iot } = deps;
  const nowSeconds = () => Math.floor((deps.clock ?? Date.now)() / 1000);
  const { thingName } = request;
  const certificate = await verifyLifecycleProof(request, config.v2MaxClockSkewSeconds, nowSeconds());

  deadline.beforeStage('reading the registry');
  const record = await registry.read(thingName, deadline.workSignal());
  const now = nowSeconds();
  const nonceEntry = `${request.timestamp}.${request.nonce}`;
  const validity = record && recordValidity(record, config.lifecycle.renewAtPercent);
  const decision = decideStatus(
    record,
    {
      thingName,
      nonceEntry,
      certificateId: certificate.id,
      reportedRegion: request.reportedRegion,
      issuedByUs: () => issuedFor(certificate, config.caCertificate, thingName),
    },
    {
      nowSeconds: now,
      statusMinIntervalSeconds: config.lifecycle.statusMinIntervalSeconds,
      currentValidity: validity,
    },
  );
  if (decision.kind === 'refuse') throw decision.error;
  const device = record as DeviceRecord;

  deadline.beforeStage('recording the status call');
  const recorded = await registry.recordStatusCall(
    {
      record: device,
      nowSeconds: now,
      nonceEntry,
      statusNonces: nextRecentNonces(
        device,
        nonceEntry,
        now,
        config.v2MaxClockSkewSeconds,
        device.statusNonces,
      ),
      reportedRegion: request.reportedRegion,
    },
    deadline.workSignal(),
  );
  if (!recorded) {
    throw rateLimited(
      `another status call for ${thingName} was answered just now; at most one every ${config.lifecycle.statusMinIntervalSeconds} s`,
      Math.max(1, config.lifecycle.statusMinIntervalSeconds),
    );
  }

  const retiredPrevious = decision.retirePrevious
    ? await retireProvenPrevious(deps, device, decision.retirePrevious, deadline)
    : false;

  const provisioned = decision.action !== 'reprovision';
  const region = provisioned ? device.region : undefined;
  // Older records lack endpoint_address: the adapter's per-container cache answers then.
  const endpointAddress =
    region === undefined
      ? undefined
      : (device.endpointAddress ?? (await iot.endpointAddress(region, deadline.workSignal())));
  return {
    answer: {
      status: 'success',
      action: decision.action,
      provStatus: device.provStatus,
      ...(provisioned
        ? {
            region,
            endpointAddress,
            certificateId: device.certificateId,
            certificateStatus: decision.signer === 'previous' ? 'RETIRING' : 'ACTIVE',
            notAfter: validity?.notAfter.toISOString(),
            renewAfter: validity?.renewAfter.toISOString(),
          }
        : {}),
      ...(decision.action === 'move' && device.movedFrom ? { movedFrom: device.movedFrom.region } : {}),
      message: decision.message,
    },
    retiredPrevious,
  };
}

/**
 * The device signed with its renewed certificate, so it holds the new key: the previous
 * certificate goes now rather than at the end of its grace period. Retire first, then forget: if
 * this stops half-way, the record still names it and the reconciler finishes at the grace end.
 */
async function retireProvenPrevious(
  deps: ProvisioningDependencies,
  record: DeviceRecord,
  previous: PreviousCertificate,
  deadline: Deadline,
): Promise<boolean> {
  const signal = deadline.undoSignal();
  try {
    await withRetries(
      () => deps.iot.retireCertificate(previous.region, previous.certificateId, signal),
      signal,
    );
    await deps.registry.forgetPrevious(record, signal);
    countMetric('PreviousCertificateRetired');
    logger.info('previous certificate retired: the device proved its renewed key', {
      thingName: record.thingName,
      region: previous.region,
      certificateId: previous.certificateId,
    });
    return true;
  } catch (error) {
    countMetric('PreviousCertificateRetireFailed');
    logger.warn(
      'could not retire the previous certificate; the reconciler will at the end of its grace period',
      {
        thingName: record.thingName,
        certificateId: previous.certificateId,
        errorClass: (error as Error).name,
      },
    );
    return false;
  }
}
