/**
 * The provisioning flow, in four dependent stages of AWS calls on the steady-state path:
 *
 *   1. claim the registry record      ∥ locate the device (CloudFront headers / ipstack)
 *   2. CreateThing                    ∥ issue the certificate  (∥ policy + endpoint, cached)
 *   3. AttachPolicy                   ∥ AttachThingPrincipal
 *   4. mark the record provisioned
 *
 * Anything that fails after the claim undoes what was created and releases the claim, so the
 * device can simply retry. A device whose answer was lost may retry inside the
 * re-provisioning window: it gets a fresh certificate and the previous one is retired, so it
 * never holds two live certificates.
 */
import { createPublicKey, KeyObject, randomUUID } from 'node:crypto';
import { ProvisioningConfig } from './config';
import type { CheckedCsr } from './csr';
import { CreatedThing, DeviceIot, IssuedCertificate } from './iot';
import { IpGeolocator, locateDevice, Placement, ViewerLocation } from './locate';
import { distanceToRegionKm } from './regions';
import { Claim, Registry } from './registry';
import { ProvisioningRequest } from './request';
import { precheckProof, verifyProof } from './signature';
import { countMetric, logger, StageTimer } from './telemetry';
import { SuccessAnswer } from './wire';

export interface ProvisioningDependencies {
  readonly config: ProvisioningConfig;
  readonly registry: Registry;
  readonly iot: DeviceIot;
  readonly geolocator?: IpGeolocator;
  /** Milliseconds since the epoch. */
  readonly clock?: () => number;
}

export interface ProvisioningOutcome {
  readonly answer: SuccessAnswer;
  readonly placement: Placement;
  readonly reprovisioned: boolean;
  readonly stages: Readonly<Record<string, number>>;
}

function deviceKey(pem: string | undefined): KeyObject | undefined {
  if (!pem) return undefined;
  try {
    return createPublicKey(pem);
  } catch {
    // A broken registered key must not fall back to the fleet key: nothing will verify.
    return createPublicKey({ key: Buffer.from('00', 'hex'), format: 'der', type: 'spki' });
  }
}

export async function provision(
  request: ProvisioningRequest,
  viewer: ViewerLocation,
  deps: ProvisioningDependencies,
): Promise<ProvisioningOutcome> {
  const { config, registry } = deps;
  const nowSeconds = () => Math.floor((deps.clock ?? Date.now)() / 1000);
  const timer = new StageTimer();
  const { thingName, proof } = request;

  const proofCheck = {
    proof,
    acceptV1: config.acceptV1Signatures,
    nowSeconds: nowSeconds(),
    maxClockSkewSeconds: config.v2MaxClockSkewSeconds,
  };
  precheckProof(proofCheck);
  if (proof.version === 1) countMetric('V1SignatureUsed');
  // The X.509 stack is loaded only when a device sends a CSR: key-mode containers skip its init.
  const csr: CheckedCsr | undefined = request.csrPem
    ? await (await import('./csr')).checkCsr(request.csrPem, thingName)
    : undefined;

  // Stage 1. The placement never fails (it falls back to the default region).
  const [claim, placement] = await timer.time('claimAndLocate', () =>
    Promise.all([
      registry.claim({
        thingName,
        claimId: randomUUID(),
        nowSeconds: nowSeconds(),
        leaseSeconds: config.leaseSeconds,
        reprovisionWindowSeconds: config.reprovisionWindowSeconds,
        nonce: proof.version === 2 ? proof.nonce : undefined,
      }),
      locateDevice(viewer, config, deps.geolocator),
    ]),
  );

  try {
    // The record may carry the device's own key, so the signature is checked with the claim held.
    verifyProof({
      ...proofCheck,
      thingName,
      csrDer: csr?.der,
      deviceKey: deviceKey(claim.record.devicePublicKeyPem),
      fleetKey: config.fleetPublicKey,
    });
  } catch (error) {
    await registry.release(claim);
    throw error;
  }

  // A re-provisioned device stays in the region its thing lives in.
  const region =
    claim.reprovision &&
    claim.record.region &&
    config.regions.some((site) => site.region === claim.record.region)
      ? claim.record.region
      : placement.region;
  const distanceKm =
    region === placement.region ? placement.distanceKm : distanceToRegionKm(placement.point, region);
  const answer = await createInRegion(
    deps,
    claim,
    { region, distanceKm, geoSource: placement.geoSource },
    csr,
    timer,
    nowSeconds,
  );
  return {
    answer,
    placement: { ...placement, region, distanceKm },
    reprovisioned: claim.reprovision,
    stages: timer.stages,
  };
}

async function createInRegion(
  deps: ProvisioningDependencies,
  claim: Claim,
  target: { region: string; distanceKm: number; geoSource: string },
  csr: CheckedCsr | undefined,
  timer: StageTimer,
  nowSeconds: () => number,
): Promise<SuccessAnswer> {
  const { registry, iot } = deps;
  const { region } = target;
  const { thingName } = claim;
  let thing: CreatedThing | undefined;
  let certificate: IssuedCertificate | undefined;
  try {
    // Stage 2. Policy and endpoint are cached per container: no round trip after the first request.
    const [thingResult, certificateResult, policyResult, endpointResult] = await timer.time('create', () =>
      Promise.allSettled([
        iot.createThing(region, thingName),
        iot.issueCertificate(region, csr?.pem),
        iot.ensurePolicy(region),
        iot.endpointAddress(region),
      ]),
    );
    if (thingResult.status === 'fulfilled') thing = thingResult.value;
    if (certificateResult.status === 'fulfilled') certificate = certificateResult.value;
    for (const result of [thingResult, certificateResult, policyResult, endpointResult]) {
      if (result.status === 'rejected') throw result.reason;
    }
    const endpointAddress = (endpointResult as PromiseFulfilledResult<string>).value;
    const issued = certificate as IssuedCertificate;

    // Stage 3.
    await timer.time('attach', () => iot.attach(region, thingName, issued.certificateArn));

    // Stage 4.
    await timer.time('markProvisioned', () =>
      registry.markProvisioned(claim, {
        region,
        certificateId: issued.certificateId,
        certificateArn: issued.certificateArn,
        thingArn: (thing as CreatedThing).thingArn,
        geoSource: target.geoSource,
        nowSeconds: nowSeconds(),
      }),
    );

    if (claim.reprovision) await retirePrevious(deps, claim, issued);

    return {
      status: 'success',
      region,
      distance: target.distanceKm,
      endpointAddress,
      certificatePem: issued.certificatePem,
      ...(issued.privateKeyPem ? { PrivateKey: issued.privateKeyPem } : {}),
    };
  } catch (error) {
    await undo(deps, claim, region, thing, certificate);
    throw error;
  }
}

/** Retires the certificate a re-provisioned device held before; the new one is already live. */
async function retirePrevious(
  deps: ProvisioningDependencies,
  claim: Claim,
  issued: IssuedCertificate,
): Promise<void> {
  const previous = claim.record;
  if (!previous.certificateId || !previous.certificateArn || previous.certificateId === issued.certificateId)
    return;
  try {
    await deps.iot.retireCertificate(previous.region ?? '', claim.thingName, {
      certificateId: previous.certificateId,
      certificateArn: previous.certificateArn,
    });
    countMetric('PreviousCertificateRetired');
  } catch (error) {
    countMetric('PreviousCertificateRetireFailed');
    logger.error('could not retire the previous certificate; retire it by hand', {
      thingName: claim.thingName,
      region: previous.region,
      certificateId: previous.certificateId,
      errorClass: (error as Error).name,
    });
  }
}

/** Best-effort undo; each step is independent so one failure doesn't strand the others. */
async function undo(
  deps: ProvisioningDependencies,
  claim: Claim,
  region: string,
  thing: CreatedThing | undefined,
  certificate: IssuedCertificate | undefined,
): Promise<void> {
  const failures: string[] = [];
  if (certificate) {
    await deps.iot
      .retireCertificate(region, claim.thingName, certificate)
      .catch((error: Error) => failures.push(`certificate ${certificate.certificateId}: ${error.name}`));
  }
  if (thing?.created) {
    await deps.iot
      .deleteThing(region, claim.thingName)
      .catch((error: Error) => failures.push(`thing: ${error.name}`));
  }
  await deps.registry.release(claim).catch((error: Error) => failures.push(`claim: ${error.name}`));
  countMetric('RolledBack');
  if (failures.length > 0) {
    countMetric('RollbackIncomplete');
    logger.error('rollback incomplete', { thingName: claim.thingName, region, failures });
  }
}
