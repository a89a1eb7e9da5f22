/**
 * The provisioning flow. Five dependent stages of AWS calls on the steady-state path:
 *
 *   1. read the record (consistent)  ∥ locate the device  ∥ make the key (key mode) and the certificate (KMS Sign)
 *   2. claim: lease + intent (the certificate id and region), compare-and-set on the record as read
 *      ∥ admission: a slot in the region's AWS IoT quota budget, or 429 (admission.ts)
 *   3. RegisterCertificate           ∥ CreateThing  (policy + endpoint: from the deployment's config)
 *   4. AttachPolicy                  ∥ AttachThingPrincipal
 *   5. mark the record provisioned
 *
 * Spill-over (opt-in, spill-over.ts) adds one stage on its own path only: a first provisioning
 * placed by distance, refused by a region backlogged past the configured wait, tries the
 * next-nearest region's budget ∥ re-points its claim's intent there, before any IoT call.
 * A key-mode device whose answer was lost is answered from the record within a short window
 * (answer-recovery.ts): its generated key, sealed by KMS beside stages 2–4, is stored by the mark.
 *
 * Nothing is written before the request's signature verifies (a stranger can't hold a lease,
 * spend a nonce or learn a record's state); from verification on, the request's nonce is spent
 * whatever the answer (replay-guard.ts). Nothing exists in AWS IoT before the registry records it
 * as intent. Every step after the claim can be repeated, and every write is
 * recognisable as ours when its answer was lost. A failure undoes within the deadline; what a
 * killed function leaves, the next request for the device or the reconciler finishes.
 * docs/protocol.md states the guarantees.
 */
import { KeyObject, randomUUID } from 'node:crypto';
import { Admission, admit, admitIfRoom, RegionBacklogged, retryAfterThrottle } from './admission';
import { Sealing, startSealing, unsealKey } from './answer-recovery';
import { checkpoint } from './checkpoints';
import { sha256Hex } from './ca-certificate';
import type { CertificateSigner } from './certificate-authority';
import { ProvisioningConfig } from './config';
import type { CheckedCsr } from './csr';
import { Deadline, UNDO_RESERVE_MS } from './deadline';
import type { GeneratedKey } from './device-key';
import {
  CertificateRef,
  decide,
  Decision,
  DeviceRecord,
  KeyMode,
  nextRecentNonces,
  PendingCertificate,
  PreviousCertificate,
  referencedCertificates,
  retiringEntry,
} from './device-record';
import { ProvisioningError, throttled, unauthenticated } from './errors';
import { DeviceIot } from './iot';
import { IpGeolocator, locateDevice, Placement, ViewerLocation } from './locate';
import { distanceToRegionKm, RegionChoice } from './regions';
import { maySpill, Spill, spillCandidates } from './spill-over';
import { Claim, ClaimLost, ProvisionedFacts, Registry } from './registry';
import { ProvisioningRequest } from './request';
import { spendingTheNonce, spendNonce, VerifiedNonce } from './replay-guard';
import { distinctCertificates, retireAndForget, withRetries } from './retiring';
import { precheckProof, proofVerifies, SignatureCheck } from './signature';
import { countMetric, countMetricFor, logger, StageTimer } from './telemetry';
import { SuccessAnswer } from './wire';

export interface ProvisioningDependencies {
  readonly config: ProvisioningConfig;
  readonly registry: Registry;
  readonly iot: DeviceIot;
  /** The CA key: signs device certificates. */
  readonly signer: CertificateSigner;
  readonly geolocator?: IpGeolocator;
  /** Key pairs for devices that send no CSR (deviceKeyPool). */
  readonly deviceKeys: () => Promise<GeneratedKey>;
  /** Milliseconds since the epoch. */
  readonly clock?: () => number;
  /** Admission control per region (admission.ts); without it every request is admitted. */
  readonly admission?: Admission;
}

export type Outcome = 'provisioned' | 'reprovisioned' | 'resumed' | 'same-certificate' | 'recovered';

export interface ProvisioningOutcome {
  readonly answer: SuccessAnswer;
  readonly placement: Placement;
  readonly outcome: Outcome;
  readonly stages: Readonly<Record<string, number>>;
  /** Placed in the next-nearest region because the nearest was backlogged (spill-over). */
  readonly spill?: Spill;
}

/** A certificate ready to be registered, with the key when we generated it. */
export interface PreparedCertificate {
  readonly pending: Omit<PendingCertificate, 'region' | 'since'>;
  readonly privateKeyPem?: string;
}

/** The record's own key, undefined when it has none; throws 401 when it has an unusable one. */
async function deviceKeyOf(
  record: DeviceRecord | undefined,
  thingName: string,
): Promise<KeyObject | undefined> {
  const pem = record?.devicePublicKeyPem;
  if (!pem) return undefined;
  // Loaded only for records with their own key: it brings the ASN.1 parser.
  const verdict = (await import('./key-soundness')).checkPublicKeyPem(pem);
  if (!verdict.sound) {
    // Not the fleet key instead: the record demands its own. The caller learns no more than
    // from a wrong signature; the operator finds the reason in the log.
    logger.error('registered device_public_key is refused; fix the record', {
      thingName,
      problem: verdict.problem,
    });
    countMetric('RegistryRecordInvalid');
    throw unauthenticated('signature does not verify');
  }
  return verdict.key;
}

export async function prepareCertificate(
  thingName: string,
  csr: CheckedCsr | undefined,
  deps: ProvisioningDependencies,
  signal: AbortSignal,
): Promise<PreparedCertificate> {
  const key = csr ? { publicKeySpki: csr.publicKeySpki, privateKeyPem: undefined } : await deps.deviceKeys();
  const { config } = deps;
  // The certificate builder (ASN.1) loads with the first certificate a container issues, while
  // that request's registry read is in flight, not in the init.
  const { issueDeviceCertificate } = await import('./certificate-authority');
  const certificate = await issueDeviceCertificate(
    config.caCertificate,
    deps.signer,
    {
      thingName,
      publicKeySpki: key.publicKeySpki,
      validityDays: config.certificateValidityDays,
      now: new Date((deps.clock ?? Date.now)()),
    },
    signal,
  );
  const keyMode: KeyMode = csr ? 'csr' : 'server';
  return {
    pending: {
      certificateId: certificate.id,
      certificatePem: certificate.pem,
      keySha256: sha256Hex(key.publicKeySpki),
      keyMode,
    },
    privateKeyPem: key.privateKeyPem,
  };
}

export async function provision(
  request: ProvisioningRequest,
  viewer: ViewerLocation,
  deps: ProvisioningDependencies,
  deadline: Deadline,
): Promise<ProvisioningOutcome> {
  const { config, registry, iot } = deps;
  const nowSeconds = () => Math.floor((deps.clock ?? Date.now)() / 1000);
  const timer = new StageTimer();
  const { thingName, proof } = request;

  const proofCheck: Omit<SignatureCheck, 'deviceKey'> = {
    thingName,
    proof,
    acceptV1: config.acceptV1Signatures,
    nowSeconds: nowSeconds(),
    maxClockSkewSeconds: config.v2MaxClockSkewSeconds,
    fleetKey: config.fleetPublicKey,
  };
  precheckProof(proofCheck);
  if (proof.version === 1) countMetric('V1SignatureUsed');
  // The X.509 parser is loaded only when a device sends a CSR: key-mode containers skip its init.
  const csr: CheckedCsr | undefined = request.csrPem
    ? await (await import('./csr')).checkCsr(request.csrPem, thingName)
    : undefined;
  const withCsr = { ...proofCheck, csrDer: csr?.der };

  // Stage 1. Only a request that verifies with the fleet key gets a certificate signed before
  // its record is read: nobody else makes us spend a KMS call (or an RSA key generation).
  deadline.beforeStage('reading the registry');
  const signal = deadline.workSignal();
  const fleetSigned = proofVerifies({ ...withCsr, deviceKey: undefined });
  let early: Promise<PreparedCertificate> | undefined = fleetSigned
    ? prepareCertificate(thingName, csr, deps, signal)
    : undefined;
  early?.catch(() => undefined); // awaited below, or dropped when the request is refused
  const [record, placement] = await timer.time('read', () =>
    Promise.all([registry.read(thingName, signal), locateDevice(viewer, config, deps.geolocator)]),
  );
  const deviceKey = await deviceKeyOf(record, thingName);
  if (deviceKey) {
    if (!proofVerifies({ ...withCsr, deviceKey })) throw unauthenticated('signature does not verify');
    early = undefined; // verified with the device's own key: sign below, now that we know it's the device
  } else if (!fleetSigned) {
    throw unauthenticated(
      proof.version === 1 ? 'thing-name-sig does not verify' : 'signature does not verify',
    );
  }

  const nonceEntry = proof.version === 2 ? `${proof.timestamp}.${proof.nonce}` : undefined;
  // Verified from here on: whatever the answer, the nonce is spent (replay-guard.ts).
  const nonce: VerifiedNonce = { record, list: 'recent_nonces', entry: nonceEntry };
  return spendingTheNonce(deps, nonce, deadline, async (nonceWritten) => {
    const rules = () => ({
      nowSeconds: nowSeconds(),
      reprovisionWindowSeconds: config.reprovisionWindowSeconds,
      reissueLimit: config.reissueLimit,
    });
    let decision = decide(
      config.answerRecovery ? record : record && { ...record, sealedKey: undefined },
      { thingName, nonceEntry, csrKeySha256: csr ? sha256Hex(csr.publicKeySpki) : undefined },
      rules(),
    );
    let existing = record as DeviceRecord;
    /** The nonce the claim records: none when a failed recovery spent it already. */
    let claimNonce = nonceEntry;

    if (decision.kind === 'recover') {
      const recovered = await recoverAnswer(deps, decision, existing, nonce, placement, timer, deadline);
      if (recovered) return recovered;
      // KMS refused the sealed key for good. Its nonce spent beside the unsealing, the request
      // is decided again on the record as it now is, as if nothing were sealed (a re-issue).
      deadline.beforeStage('reading the registry again');
      const fresh = await registry.read(thingName, signal);
      claimNonce = nonceEntry && !fresh?.recentNonces.includes(nonceEntry) ? nonceEntry : undefined;
      decision = decide(
        fresh && { ...fresh, sealedKey: undefined },
        { thingName, nonceEntry: claimNonce },
        rules(),
      );
      existing = fresh as DeviceRecord;
    }
    if (decision.kind === 'refuse' || decision.kind === 'recover') {
      throw decision.kind === 'refuse' ? decision.error : new Error('recovery decided twice');
    }

    if (decision.kind === 'same-certificate') {
      // Answered without a write: spend the nonce beside the endpoint lookup (no extra stage).
      const [endpointAddress] = await Promise.all([
        timer.time('endpoint', () => iot.endpointAddress(decision.region, signal)),
        spendNonce(deps, nonce, deadline),
        retireNamed(deps, thingName, existing.retiring, deadline),
      ]);
      const distanceKm = distanceToRegionKm(placement.point, decision.region);
      return {
        answer: {
          status: 'success',
          region: decision.region,
          distance: distanceKm,
          endpointAddress,
          certificatePem: decision.certificatePem,
        },
        placement: { ...placement, region: decision.region, distanceKm },
        outcome: 'same-certificate',
        stages: timer.stages,
      };
    }

    // A re-issued device stays in the region its thing lives in; a resumed one where its intent was;
    // a pinned one (region_pin, from `gdp-admin import`) goes to its pin while that region is enabled.
    const enabled = (region: string | undefined) => config.regions.some((site) => site.region === region);
    const region =
      decision.kind === 'resume'
        ? decision.pending.region
        : decision.reissue && enabled(existing.region)
          ? (existing.region as string)
          : enabled(existing.regionPin)
            ? (existing.regionPin as string)
            : placement.region;
    const prepared: PreparedCertificate =
      decision.kind === 'resume'
        ? { pending: decision.pending }
        : await timer.time('certificate', () => early ?? prepareCertificate(thingName, csr, deps, signal));
    // Key mode: seal the generated key for a retry whose answer is lost, beside stages 2–4.
    const sealing: Sealing | undefined =
      config.answerRecovery && prepared.privateKeyPem
        ? startSealing(
            config.answerRecovery,
            config.registryRegion,
            {
              thingName,
              certificateId: prepared.pending.certificateId,
              privateKeyPem: prepared.privateKeyPem,
            },
            signal,
          )
        : undefined;

    // Stages 2–5 (makeLive checks the deadline before its claim).
    const now = nowSeconds();
    const pending: PendingCertificate = { ...prepared.pending, region, since: now };
    const reissue = decision.kind === 'issue' && decision.reissue;
    const spillOver = deps.admission?.settings.spillOver;
    const spillFacts = {
      firstProvisioning: decision.kind === 'issue' && !decision.reissue,
      pinned: existing.regionPin !== undefined,
      placement,
      region,
    };
    const spillTo =
      spillOver && maySpill(spillFacts)
        ? spillCandidates(spillFacts.placement.point, region, config.regions, spillOver.maxExtraKm)
        : [];
    let spill: (Spill & { readonly distanceKm: number }) | undefined;
    const endpointAddress = await makeLive(
      deps,
      {
        record: existing,
        pending,
        recentNonces: claimNonce
          ? nextRecentNonces(existing, claimNonce, now, config.v2MaxClockSkewSeconds)
          : undefined,
        plan: {
          geoSource: placement.geoSource,
          firstProvisionedAtEpoch: reissue
            ? (existing.firstProvisionedAtEpoch ?? existing.provisionedAtEpoch)
            : undefined,
          reissueCount: reissue ? existing.reissueCount + 1 : 0,
          sealing,
        },
        keepThing: reissue,
        retire: decision.kind === 'issue' ? decision.retire : [],
        onClaimed: nonceWritten,
        spillTo,
        onSpilled: (spilled) => {
          spill = {
            ...spilled,
            distanceKm: spillTo.find((choice) => choice.region === spilled.to)?.distanceKm ?? 0,
          };
        },
      },
      timer,
      deadline,
      nowSeconds,
    );
    const placedIn = spill?.to ?? region;
    const distanceKm =
      spill?.distanceKm ??
      (region === placement.region ? placement.distanceKm : distanceToRegionKm(placement.point, region));

    return {
      answer: {
        status: 'success',
        region: placedIn,
        distance: distanceKm,
        endpointAddress,
        certificatePem: pending.certificatePem,
        ...(prepared.privateKeyPem ? { PrivateKey: prepared.privateKeyPem } : {}),
        ...(spill ? { spilledFrom: spill.from } : {}),
      },
      placement: { ...placement, region: placedIn, distanceKm },
      outcome: decision.kind === 'resume' ? 'resumed' : reissue ? 'reprovisioned' : 'provisioned',
      stages: timer.stages,
      ...(spill ? { spill: { from: spill.from, to: spill.to, backlogMs: spill.backlogMs } } : {}),
    };
  });
}

/**
 * The mark failed in a way that may have been applied (its answer lost), and a read could not
 * tell: undoing now could retire the certificate the record points at, so nothing is undone.
 * The claim expires and the next request or the reconciler settles it.
 */
export class MarkOutcomeUnknown extends Error {
  constructor(override readonly cause: unknown) {
    super('outcome of the mark unknown', { cause });
  }
}

/** A certificate to make live on a record: what stages 2–5 need. */
export interface LiveCertificatePlan {
  /** The record as read: the claim compares and sets against it. */
  readonly record: DeviceRecord;
  readonly pending: PendingCertificate;
  /** The nonces to keep, this request's included (v2 and lifecycle requests). */
  readonly recentNonces?: readonly string[];
  readonly plan: MarkPlan;
  /** The device had a thing before this request: an undo must not delete it. */
  readonly keepThing: boolean;
  /** Certificates of ours to retire once the new one is recorded. */
  readonly retire: readonly CertificateRef[];
  /** Admitted already (a renewal admits before its IoT check); else admission runs beside the claim. */
  readonly admitted?: boolean;
  /** Told when the claim (which carries the request's nonce) has landed. */
  readonly onClaimed?: () => void;
  /**
   * Regions this request may spill into, nearest first (spill-over.ts; empty or absent: none).
   * Only a first provisioning placed by distance gets any.
   */
  readonly spillTo?: readonly RegionChoice[];
  /** Told when the claim's intent moved to another region (before any IoT call). */
  readonly onSpilled?: (spill: Spill) => void;
}

/**
 * Stages 2–5, shared by provisioning and renewal: claim with intent, register ∥ thing, attach,
 * mark, then retire what the new certificate replaces. A failure undoes within the deadline;
 * whatever a killed function leaves, the intent on the record says. Returns the endpoint.
 */
export async function makeLive(
  deps: ProvisioningDependencies,
  live: LiveCertificatePlan,
  timer: StageTimer,
  deadline: Deadline,
  nowSeconds: () => number,
): Promise<string> {
  const { registry } = deps;
  const { record, pending } = live;
  const { thingName } = record;
  deadline.beforeStage('claiming the record');
  const claimId = randomUUID();
  let claim: Claim;
  let spilled: Claim | undefined;
  try {
    const claiming = registry.claim(
      {
        record,
        claimId,
        nowSeconds: nowSeconds(),
        leaseSeconds: deps.config.leaseSeconds,
        pending,
        recentNonces: live.recentNonces,
      },
      deadline.workSignal(),
    );
    claim = await timer.time('claim', () =>
      claimAdmitted(
        claiming,
        // Beside the claim, not before it: admission costs no stage of its own (admission.ts).
        deps.admission && !live.admitted
          ? admitOrSpill(deps, deps.admission, live, claiming, deadline).then((moved) => {
              spilled = moved;
            })
          : undefined,
        (held) => releaseUnused(registry, record, held, deadline.undoSignal()),
      ),
    );
    claim = spilled ?? claim;
  } catch (error) {
    // A claim that failed without an answer may have been written: let it go now rather than
    // after the lease. A refused one (429: the record moved on) was not, and costs no more writes.
    if (!(error instanceof ProvisioningError && error.kind === 'throttled')) {
      await releaseUnused(registry, record, { thingName, claimId, pending }, deadline.undoSignal()).catch(
        () => undefined,
      );
    }
    throw error;
  }
  live.onClaimed?.();
  checkpoint('claimed', thingName);

  let endpointAddress: string;
  try {
    endpointAddress = await finishInRegion(
      deps,
      claim,
      { ...live.plan, retiring: live.retire },
      timer,
      deadline,
      nowSeconds,
    );
  } catch (error) {
    if (error instanceof MarkOutcomeUnknown) {
      logger.warn('could not tell whether the record was marked; leaving it to the lease', { thingName });
      throw error.cause;
    }
    // Taken over: the record and whatever it references belong to another request now. Our
    // certificate, if it was registered, is referenced by nothing: the reconciler's sweep retires it.
    if (!(error instanceof ClaimLost)) await undo(deps, claim, live.keepThing, deadline);
    throw await honestRetryAfter(deps, claim.pending.region, error, deadline);
  }
  checkpoint('marked', thingName);

  // What this request replaced (named by the mark) and what earlier ones left named.
  const retiring = distinctCertificates([...live.retire, ...record.retiring]);
  if (retiring.length > 0) await retireNamed(deps, thingName, retiring, deadline);
  checkpoint('retired', thingName);
  return endpointAddress;
}

/**
 * The claim and the admission verdict, both settled: a claim written for a request admission
 * refused is released, keeping what the record referenced (releaseUnused; the nonce it recorded
 * stays spent), and the refusal is thrown.
 */
async function claimAdmitted(
  claiming: Promise<Claim>,
  admitted: Promise<void> | undefined,
  release: (claim: Claim) => Promise<void>,
): Promise<Claim> {
  const [claimed, admission] = await Promise.allSettled([claiming, admitted]);
  if (claimed.status === 'rejected') throw claimed.reason;
  if (admission.status === 'rejected') {
    await release(claimed.value).catch(() => undefined);
    throw admission.reason;
  }
  return claimed.value;
}

/**
 * Gives back a claim that made nothing in AWS IoT (admission refused it, or its write's answer
 * was lost) without losing what the record referenced before it. A dead request's intent that
 * the claim resumed stays the record's intent: the device's next try resumes it and registers
 * nothing new. One the claim replaced is named as retiring: the dead request may have registered
 * it, and unnamed it would be live and referenced by nothing until the reconciler's quarantine.
 */
function releaseUnused(
  registry: Registry,
  record: DeviceRecord,
  claim: Claim,
  signal: AbortSignal,
): Promise<void> {
  const before = record.pending;
  const resumed = before !== undefined && retiringEntry(before) === retiringEntry(claim.pending);
  const otherwiseReferenced = referencedCertificates({ ...record, pending: undefined }).map(retiringEntry);
  const replaced: CertificateRef[] =
    before && !resumed && !otherwiseReferenced.includes(retiringEntry(before))
      ? [{ certificateId: before.certificateId, region: before.region }]
      : [];
  return registry.release(claim, signal, replaced, { keepIntent: resumed });
}

/**
 * Admission for the claim's region; past the spill-over wait, a request with regions to spill
 * into (live.spillTo) takes no place in that region's queue and tries them, nearest first: a slot
 * only if it fits now (admitIfRoom) ∥ the held claim's intent re-pointed there. Nothing exists in
 * AWS IoT yet (our CA's certificates are registered per region, so any region can take it), so
 * the move is safe; a crash after it leaves an intent the next request or the reconciler finishes
 * in the new region. Resolves the re-pointed claim, or undefined when admitted where it was; when
 * no region has room, the request queues in its own region and gets that 429.
 */
async function admitOrSpill(
  deps: ProvisioningDependencies,
  admission: Admission,
  live: LiveCertificatePlan,
  claiming: Promise<Claim>,
  deadline: Deadline,
): Promise<Claim | undefined> {
  const { region: from } = live.pending;
  const spillOver = admission.settings.spillOver;
  const candidates = spillOver ? (live.spillTo ?? []) : [];
  const retiring = live.retire.length;
  if (!spillOver || candidates.length === 0) {
    await admit(admission, from, retiring, deadline.workSignal());
    return undefined;
  }
  try {
    await admit(admission, from, retiring, deadline.workSignal(), spillOver.afterWaitMs);
    return undefined;
  } catch (error) {
    if (!(error instanceof RegionBacklogged)) throw error;
    let claim = await claiming;
    for (const candidate of candidates) {
      deadline.beforeStage(`spilling over to ${candidate.region}`);
      const [admitted, repointed] = await Promise.all([
        admitIfRoom(admission, candidate.region, retiring, deadline.workSignal()),
        deps.registry.repoint(claim, candidate.region, deadline.workSignal()),
      ]);
      claim = repointed;
      if (admitted) {
        const spill: Spill = { from, to: candidate.region, backlogMs: error.backlogMs };
        countMetricFor('SpilledOver', { Region: from, To: spill.to });
        logger.info('spilled over', {
          thingName: claim.thingName,
          spilledFrom: from,
          spilledTo: spill.to,
          backlogSeconds: Math.round(spill.backlogMs / 1000),
        });
        live.onSpilled?.(spill);
        return claim;
      }
    }
    // No region had room: the request takes its place in its own region's queue after all.
    const retryAfter = await retryAfterThrottle(
      admission,
      from,
      error.retryAfterSeconds ?? 1,
      deadline.undoSignal(),
    );
    throw throttled(`${from} is at its AWS IoT quota; retry after ${retryAfter} s`, retryAfter);
  }
}

/**
 * A throttle that happened although the request was admitted: its Retry-After (the adapter's
 * constant) becomes a place in the region's queue, so the device returns when there is room.
 */
async function honestRetryAfter(
  deps: ProvisioningDependencies,
  region: string,
  error: unknown,
  deadline: Deadline,
): Promise<unknown> {
  if (!deps.admission || !(error instanceof ProvisioningError) || error.kind !== 'throttled') return error;
  const fallback = error.retryAfterSeconds ?? 1;
  const retryAfter = await retryAfterThrottle(deps.admission, region, fallback, deadline.undoSignal());
  return throttled(error.message, retryAfter, error.cause);
}

/** What the mark records besides the certificate and where it lives. */
export interface MarkPlan {
  readonly geoSource: string;
  /** Kept from the record on a re-issue or renewal; undefined = now. */
  readonly firstProvisionedAtEpoch?: number;
  readonly reissueCount: number;
  /** A renewal: the certificate it replaces, kept ACTIVE for its grace period. */
  readonly previous?: PreviousCertificate;
  /** What the new certificate replaces: named as retiring by the mark, retired right after it. */
  readonly retiring?: readonly CertificateRef[];
  /** Key mode: the generated key being sealed for answer recovery (answer-recovery.ts). */
  readonly sealing?: Sealing;
}

/** Stages 3–5: register ∥ thing, attach, mark. Returns the region's endpoint address. */
export async function finishInRegion(
  deps: ProvisioningDependencies,
  claim: Claim,
  plan: MarkPlan,
  timer: StageTimer,
  deadline: Deadline,
  nowSeconds: () => number,
): Promise<string> {
  const { iot, registry } = deps;
  const { thingName, pending } = claim;
  const { region } = pending;
  const signal = deadline.workSignal();

  deadline.beforeStage('registering the certificate');
  const [registered, thing, , endpointAddress] = await timer.time('register', () =>
    Promise.all([
      iot.registerCertificate(region, { id: pending.certificateId, pem: pending.certificatePem }, signal),
      iot.createThing(region, thingName, signal),
      iot.ensurePolicy(region, signal),
      iot.endpointAddress(region, signal),
    ]),
  );
  checkpoint('registered', thingName);

  deadline.beforeStage('attaching the certificate');
  await timer.time('attach', () => iot.attach(region, thingName, registered.certificateArn, signal));
  checkpoint('attached', thingName);

  deadline.beforeStage('marking the record');
  const now = nowSeconds();
  let facts: ProvisionedFacts = {
    region,
    certificateArn: registered.certificateArn,
    thingArn: thing.thingArn,
    endpointAddress,
    geoSource: plan.geoSource,
    nowSeconds: now,
    firstProvisionedAtEpoch: plan.firstProvisionedAtEpoch ?? now,
    reissueCount: plan.reissueCount,
    previous: plan.previous,
    retiring: plan.retiring,
  };
  const sealedKey = plan.sealing?.take();
  if (plan.sealing && sealedKey) {
    facts = { ...facts, sealedKey: { ciphertext: sealedKey, until: now + plan.sealing.seconds } };
  }
  try {
    await timer.time('mark', () => registry.markProvisioned(claim, facts, signal));
  } catch (error) {
    if (error instanceof ClaimLost) throw error;
    // Applied with its answer lost, or not? The record knows.
    const after = await registry.read(thingName, deadline.undoSignal()).catch(() => undefined);
    if (!after) throw new MarkOutcomeUnknown(error);
    if (after.provStatus === 'provisioned' && after.certificateId === pending.certificateId)
      return endpointAddress;
    if (after.claimId !== claim.claimId) throw new ClaimLost(thingName, error);
    throw error;
  }
  return endpointAddress;
}

/**
 * Kept back from an undo's AWS IoT steps for giving the lease back: a request that fails returns
 * its lease even when retiring its certificate could not finish (the certificate stays named).
 */
export const RELEASE_RESERVE_MS = 1_500;

/**
 * Undo of a failed request: retire the certificate it registered, delete the thing it created,
 * give the lease back. What could not be retired is named as retiring in the release itself, so
 * the device's next request, a status call or the reconciler finishes it; the lease goes back
 * whatever happened, within the deadline.
 */
export async function undo(
  deps: ProvisioningDependencies,
  claim: Claim,
  reissue: boolean,
  deadline: Deadline,
): Promise<void> {
  const { iot, registry } = deps;
  const { thingName, pending } = claim;
  const signal = deadline.undoSignal();
  // The AWS IoT steps stop in time for the release: UNDO_RESERVE_MS plus what the work left.
  const iotSignal = AbortSignal.any([
    signal,
    AbortSignal.timeout(Math.max(1, deadline.workMs() + UNDO_RESERVE_MS - RELEASE_RESERVE_MS)),
  ]);
  const failures: string[] = [];
  const step = (
    what: string,
    work: () => Promise<unknown>,
    stepSignal: AbortSignal,
    retryThrottled = false,
  ) =>
    withRetries(work, stepSignal, 3, retryThrottled).then(
      () => true,
      (error: Error) => {
        failures.push(`${what}: ${error.name}`);
        return false;
      },
    );

  const retired = await step(
    `certificate ${pending.certificateId}`,
    () => iot.retireCertificate(pending.region, pending.certificateId, iotSignal),
    iotSignal,
  );
  checkpoint('undoing', thingName);
  // A re-issued device keeps its thing.
  if (!reissue && !iotSignal.aborted) {
    await step('thing', () => iot.deleteThingIfOursAndEmpty(pending.region, thingName, iotSignal), iotSignal);
  }
  const leftovers: CertificateRef[] = retired
    ? []
    : [{ certificateId: pending.certificateId, region: pending.region }];
  await step('claim', () => registry.release(claim, signal, leftovers), signal, true);
  countMetric('RolledBack');
  if (failures.length > 0) {
    countMetric('RollbackIncomplete');
    logger.error('rollback incomplete; what is left is named on the record for the next request', {
      thingName,
      region: pending.region,
      certificateId: pending.certificateId,
      failures,
    });
  }
}

/**
 * Retires what the new certificate replaced (named as retiring by the mark) and whatever the
 * record still named, then forgets what is gone. Never throws: what is left stays named.
 */
export async function retireNamed(
  deps: ProvisioningDependencies,
  thingName: string,
  certificates: readonly CertificateRef[],
  deadline: Deadline,
): Promise<void> {
  const report = await retireAndForget(deps, thingName, certificates, deadline.undoSignal());
  if (report.retired.length > 0) countMetric('PreviousCertificateRetired', report.retired.length);
  for (const { certificate, errorClass } of report.failures) {
    countMetric('PreviousCertificateRetireFailed');
    logger.warn(
      'could not retire a certificate; it stays named as retiring for the next request, status call or reconciler',
      {
        thingName,
        region: certificate.region,
        certificateId: certificate.certificateId,
        errorClass,
      },
    );
  }
}

/**
 * A lost key-mode answer, answered again from the record (answer-recovery.ts): the same
 * certificate and the unsealed key, with no claim, no admission and no AWS IoT call but the
 * (cached) endpoint. The nonce is spent and what the record names as retiring is retired beside
 * the unsealing, as for the same certificate. Undefined when KMS refused the sealed key.
 */
async function recoverAnswer(
  deps: ProvisioningDependencies,
  decision: Extract<Decision, { kind: 'recover' }>,
  record: DeviceRecord,
  nonce: VerifiedNonce,
  placement: Placement,
  timer: StageTimer,
  deadline: Deadline,
): Promise<ProvisioningOutcome | undefined> {
  const { config, iot } = deps;
  const settings = config.answerRecovery;
  if (!settings) return undefined;
  const { thingName } = record;
  const { region } = decision;
  const signal = deadline.workSignal();
  // Settled together: a refusal (KMS or IoT throttled) is answered only once the nonce is spent.
  const [unsealed, endpoint] = await timer.time('recover', () =>
    Promise.allSettled([
      unsealKey(
        settings,
        config.registryRegion,
        { thingName, certificateId: decision.certificateId, ciphertext: decision.sealedKey },
        signal,
      ),
      record.endpointAddress ?? iot.endpointAddress(region, signal),
      spendNonce(deps, nonce, deadline),
      retireNamed(deps, thingName, record.retiring, deadline),
    ]),
  );
  if (unsealed.status === 'rejected') throw unsealed.reason;
  if (!unsealed.value) return undefined;
  if (endpoint.status === 'rejected') throw endpoint.reason;
  const [privateKeyPem, endpointAddress] = [unsealed.value, endpoint.value];
  const distanceKm = distanceToRegionKm(placement.point, region);
  return {
    answer: {
      status: 'success',
      region,
      distance: distanceKm,
      endpointAddress,
      certificatePem: decision.certificatePem,
      PrivateKey: privateKeyPem,
    },
    placement: { ...placement, region, distanceKm },
    outcome: 'recovered',
    stages: timer.stages,
  };
}

export type { Decision };
