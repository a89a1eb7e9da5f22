/**
 * POST /device-renew: a new certificate for the same thing in its region, with the crash safety of
 * provisioning (provision.ts): the new certificate's id is known before AWS IoT sees it, the claim
 * records it as intent, every later step can be repeated, and the mark makes it current while the
 * old one stays ACTIVE as `previous` for its grace period.
 *
 *   1. read the record ∥ the signing certificate's state in AWS IoT (it must be ACTIVE)
 *   2. make the key (key mode) and the certificate (KMS Sign)
 *   3. claim: lease + intent
 *   4. RegisterCertificate ∥ CreateThing (joins the existing thing) → attach → mark
 *   5. retire what the renewal replaces (the proven predecessor, an unproven re-issue)
 */
import { sha256Hex } from './ca-certificate';
import type { CheckedCsr } from './csr';
import { Deadline } from './deadline';
import { DeviceRecord, nextRecentNonces, PendingCertificate } from './device-record';
import { forbidden, unauthenticated } from './errors';
import { decideRenewal, issuedFor, signerOf, verifyLifecycleProof } from './lifecycle';
import { makeLive, prepareCertificate, PreparedCertificate, ProvisioningDependencies } from './provision';
import { LifecycleRequest } from './request';
import { countMetric, logger, StageTimer } from './telemetry';
import { RenewAnswer } from './wire';
import { X509Certificate } from 'node:crypto';

export interface RenewalOutcome {
  readonly answer: RenewAnswer;
  readonly outcome: 'renewed' | 'reissued' | 'resumed' | 'same-certificate';
  readonly stages: Readonly<Record<string, number>>;
}

function answerFor(
  certificatePem: string,
  certificateId: string,
  region: string,
  endpointAddress: string,
  retireAfter: number | undefined,
  privateKeyPem?: string,
): RenewAnswer {
  return {
    status: 'success',
    region,
    endpointAddress,
    certificatePem,
    ...(privateKeyPem ? { PrivateKey: privateKeyPem } : {}),
    certificateId,
    notAfter: new Date(new X509Certificate(certificatePem).validTo).toISOString(),
    ...(retireAfter !== undefined ? { previousRetiredBy: new Date(retireAfter * 1000).toISOString() } : {}),
  };
}

export async function renewCertificate(
  request: LifecycleRequest,
  deps: ProvisioningDependencies,
  deadline: Deadline,
): Promise<RenewalOutcome> {
  const { config, registry, iot } = deps;
  const nowSeconds = () => Math.floor((deps.clock ?? Date.now)() / 1000);
  const timer = new StageTimer();
  const { thingName } = request;
  const csr: CheckedCsr | undefined = request.csrPem
    ? await (await import('./csr')).checkCsr(request.csrPem, thingName)
    : undefined;
  const certificate = await verifyLifecycleProof(
    request,
    config.v2MaxClockSkewSeconds,
    nowSeconds(),
    csr?.der,
  );

  deadline.beforeStage('reading the registry');
  const signal = deadline.workSignal();
  const record = await timer.time('read', () => registry.read(thingName, signal));
  const nonceEntry = `${request.timestamp}.${request.nonce}`;
  const decision = decideRenewal(
    record,
    {
      thingName,
      nonceEntry,
      certificateId: certificate.id,
      csrKeySha256: csr ? sha256Hex(csr.publicKeySpki) : undefined,
      issuedByUs: () => issuedFor(certificate, config.caCertificate, thingName),
    },
    {
      nowSeconds: nowSeconds(),
      renewMinIntervalSeconds: config.lifecycle.renewMinIntervalSeconds,
      renewGraceSeconds: config.lifecycle.renewGraceSeconds,
    },
  );
  if (decision.kind === 'refuse') throw decision.error;
  const device = record as DeviceRecord;
  const region = device.region as string;

  // The signing certificate must still be ACTIVE in AWS IoT: an operator may have deactivated it
  // there. Renewals are rare, so this IoT call is affordable here (a status call skips it).
  const signerRegion =
    signerOf(device, certificate.id) === 'previous' ? (device.previous?.region ?? region) : region;
  const state = await timer.time('certificate-state', () =>
    iot.describeCertificate(signerRegion, certificate.id, signal),
  );
  if (!state)
    throw unauthenticated(`certificate ${certificate.id.slice(0, 12)}… no longer exists in AWS IoT`);
  if (state.status !== 'ACTIVE') {
    throw forbidden(`certificate ${certificate.id.slice(0, 12)}… is ${state.status} in ${signerRegion}`);
  }

  if (decision.kind === 'same-certificate') {
    const endpointAddress = device.endpointAddress ?? (await iot.endpointAddress(region, signal));
    countMetric('RenewalSameCertificate');
    return {
      answer: answerFor(
        device.certificatePem as string,
        device.certificateId as string,
        region,
        endpointAddress,
        device.previous?.retireAfter,
      ),
      outcome: 'same-certificate',
      stages: timer.stages,
    };
  }

  const prepared: PreparedCertificate = decision.resume
    ? { pending: decision.resume }
    : await timer.time('certificate', () => prepareCertificate(thingName, csr, deps, signal));

  const now = nowSeconds();
  const pending: PendingCertificate = { ...prepared.pending, region, since: now };
  const endpointAddress = await makeLive(
    deps,
    {
      record: device,
      pending,
      recentNonces: nextRecentNonces(device, nonceEntry, now, config.v2MaxClockSkewSeconds),
      plan: {
        geoSource: device.raw.geo_source?.S ?? 'renewal',
        firstProvisionedAtEpoch: device.firstProvisionedAtEpoch ?? device.provisionedAtEpoch,
        reissueCount: decision.reissueCount,
        previous: decision.previous,
      },
      // The thing is the device's: an undo keeps it.
      keepThing: true,
      retire: decision.retire,
    },
    timer,
    deadline,
    nowSeconds,
  );

  const outcome = decision.resume ? 'resumed' : decision.reissueCount > 0 ? 'reissued' : 'renewed';
  const answer = answerFor(
    pending.certificatePem,
    pending.certificateId,
    region,
    endpointAddress,
    decision.previous.retireAfter,
    prepared.privateKeyPem,
  );
  countMetric('Renewed');
  logger.info('renewed', {
    thingName,
    region,
    outcome,
    certificateId: pending.certificateId,
    previousCertificateId: decision.previous.certificateId,
    notAfter: answer.notAfter,
  });
  return { answer, outcome, stages: timer.stages };
}
