/**
 * AWS IoT Core, one client per region per container: the one adapter the function, the
 * reconciler and the operator tools use. Owns the device policy and endpoint caches, certificate
 * registration, things, and the retirement of certificates.
 *
 * Every step can be repeated safely, which is what makes a lost answer or a killed function
 * harmless: registering our certificate again answers "already exists" for our own id; a thing
 * created with our marker attribute is created again as a no-op; attaching is idempotent;
 * retiring tolerates parts already gone.
 *
 * Quotas: RegisterCertificate ~10 TPS, AttachPolicy/AttachThingPrincipal/CreateThing ~15 TPS per
 * account per region (docs/deploy.md). Admission (admission.ts) paces requests to them; a throttle
 * that still happens is retried once by the SDK (IOT_MAX_ATTEMPTS), then the device gets 429.
 */
import {
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  CreatePolicyCommand,
  CreateThingCommand,
  DeleteCertificateCommand,
  DeleteThingCommand,
  DescribeCertificateCommand,
  DescribeEndpointCommand,
  DescribeThingCommand,
  DetachPolicyCommand,
  DetachThingPrincipalCommand,
  GetPolicyCommand,
  IoTClient,
  ListAttachedPoliciesCommand,
  ListCertificatesByCACommand,
  ListPrincipalThingsCommand,
  ListThingPrincipalsCommand,
  ListThingsCommand,
  RegisterCertificateCommand,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import { KeyObject, X509Certificate } from 'node:crypto';
import { devicePolicyDocument } from '../../infra/device-policy';
import { awsClientSettings, IOT_MAX_ATTEMPTS } from './aws-client-settings';
import { hasName, isThrottling, isTransient } from './aws-errors';
import { ProvisioningError, throttled, unavailable } from './errors';

/** Thing attribute that marks things this service created; it never deletes any other thing. */
export const THING_MARKER = { name: 'provisioned_by', value: 'global-device-provisioning' } as const;

export interface ThingInRegion {
  readonly thingArn: string;
  /** True when the thing carries our marker (we created it). */
  readonly ours: boolean;
}

export interface CertificateListing {
  readonly certificateId: string;
  readonly certificateArn: string;
  readonly status: string;
  readonly createdAt?: Date;
}

export interface CertificateState {
  readonly certificateArn: string;
  readonly status: string;
  readonly caCertificateId?: string;
  /** True when our CA issued it (by caCertificateId, or by its signature when that is omitted). */
  readonly ours: boolean;
  readonly createdAt?: Date;
  /** When its status last changed: for an INACTIVE orphan, when it was quarantined. */
  readonly lastModifiedAt?: Date;
}

/** A certificate attached to a thing, as `gdp-admin show` reports it. */
export interface PrincipalReport {
  readonly certificateId: string;
  readonly certificateArn: string;
  /** undefined when the certificate no longer exists. */
  readonly status?: string;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** True when our CA issued it. */
  readonly ours: boolean;
  readonly caCertificateId?: string;
  readonly policies: readonly string[];
}

/** What AWS IoT in one region says about a device. */
export interface ThingReport {
  readonly region: string;
  /** undefined when there is no thing of that name in the region. */
  readonly thing?: { readonly thingArn: string; readonly ours: boolean };
  readonly principals: readonly PrincipalReport[];
}

export interface DeviceIot {
  /**
   * Data-ATS endpoint address: as the deployment configured it, else learned once per region per
   * container (DescribeEndpoint).
   */
  endpointAddress(region: string, signal?: AbortSignal): Promise<string>;
  /**
   * Creates the device policy in the region if missing, once per region per container; nothing
   * when the deployment manages the policy.
   */
  ensurePolicy(region: string, signal?: AbortSignal): Promise<void>;
  /** Registers a certificate of our CA, ACTIVE; "already exists" for the same id counts as done. */
  registerCertificate(
    region: string,
    certificate: { readonly id: string; readonly pem: string },
    signal?: AbortSignal,
  ): Promise<{ certificateArn: string }>;
  /**
   * Creates the thing with our marker, or joins an existing one that holds no certificate of
   * another CA; one that does is refused with 409 for an operator to sort out.
   */
  createThing(region: string, thingName: string, signal?: AbortSignal): Promise<ThingInRegion>;
  attach(region: string, thingName: string, certificateArn: string, signal?: AbortSignal): Promise<void>;
  /**
   * Deactivates, detaches from every thing and policy, and deletes; tolerates parts already gone.
   * Deactivating and detaching are each tried even when another fails, before it gives up.
   */
  retireCertificate(region: string, certificateId: string, signal?: AbortSignal): Promise<void>;
  /**
   * Retires the certificate like retireCertificate, only if `retirable` holds for its state as
   * described just before (the reconciler's quarantine deletes only what is still INACTIVE and
   * old enough). False when it does not: nothing done. True when done or already gone.
   */
  retireCertificateIf(
    region: string,
    certificateId: string,
    retirable: (state: CertificateState) => boolean,
    signal?: AbortSignal,
  ): Promise<boolean>;
  /** The things a certificate is attached to ([] when it does not exist). */
  certificateThings(region: string, certificateId: string, signal?: AbortSignal): Promise<string[]>;
  /** Deletes the thing if it carries our marker and holds no certificate; true when it is gone. */
  deleteThingIfOursAndEmpty(region: string, thingName: string, signal?: AbortSignal): Promise<boolean>;
  /** Certificates our CA issued in the region (the reconciler). */
  listCertificatesOfOurCa(region: string, signal?: AbortSignal): AsyncIterable<CertificateListing>;
  /** Names of the things that carry our marker in the region (the reconciler's sweep of empty ones). */
  listThingsOfOurs(region: string, signal?: AbortSignal): AsyncIterable<string>;
  /** The certificate's state, or undefined when it does not exist. */
  describeCertificate(
    region: string,
    certificateId: string,
    signal?: AbortSignal,
  ): Promise<CertificateState | undefined>;
  /** Principal ARNs attached to the thing ([] when the thing does not exist). */
  thingPrincipals(region: string, thingName: string, signal?: AbortSignal): Promise<string[]>;
  /**
   * Activates or deactivates a certificate (operators: disable --revoke, revoke); false when it
   * does not exist. Deactivating is what stops a device from connecting.
   */
  setCertificateStatus(
    region: string,
    certificateId: string,
    status: 'ACTIVE' | 'INACTIVE',
    signal?: AbortSignal,
  ): Promise<boolean>;
  /** The thing, its certificates with status, validity, issuer and policies (gdp-admin show). */
  inspectThing(region: string, thingName: string, signal?: AbortSignal): Promise<ThingReport>;
}

export interface DeviceIotSettings {
  readonly policyName: string;
  /** PEM of our CA, exactly as registered in every region. */
  readonly caCertificatePem: string;
  /** SHA-256 of the CA's DER: AWS IoT's caCertificateId. */
  readonly caCertificateId: string;
  /** Told of every throttled attempt (the function counts IotThrottled per API). */
  readonly onThrottle?: (api: string, region: string) => void;
  /**
   * Region → endpoint address the deployment learned (IOT_ENDPOINTS); DescribeEndpoint only for
   * a region missing here (the reconciler and operator tools pass none).
   */
  readonly endpoints?: Readonly<Record<string, string>>;
  /** The deployment creates the policy in every region (IOT_POLICY_MANAGED): no GetPolicy. */
  readonly policyManaged?: boolean;
}

/** Turns SDK errors into the service's closed set; rethrows anything else unchanged. */
export function translateIotError(error: unknown, what: string): unknown {
  if (error instanceof ProvisioningError) return error;
  if (isThrottling(error)) return throttled(`AWS IoT is throttling ${what}; retry shortly`, 2, error);
  if (isTransient(error) || hasName(error, 'AbortError')) {
    return unavailable(`AWS IoT is unavailable (${what}); retry shortly`, error);
  }
  return error;
}

/**
 * Reports every attempt AWS IoT throttles, by API and region, retried ones included: inside the
 * SDK's retry loop, around the deserializer that raises them.
 */
function countThrottles(
  client: IoTClient,
  region: string,
  onThrottle: (api: string, region: string) => void,
): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      try {
        return await next(args);
      } catch (error) {
        if (isThrottling(error))
          onThrottle(context.commandName?.replace(/Command$/, '') ?? 'unknown', region);
        throw error;
      }
    },
    { step: 'deserialize', priority: 'high', name: 'countIotThrottles' },
  );
}

const certificateIdOf = (arn: string) => arn.slice(arn.lastIndexOf('/') + 1);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function awsDeviceIot(settings: DeviceIotSettings): DeviceIot {
  const { policyName } = settings;
  let caPublicKey: KeyObject | undefined;
  /** DescribeCertificate omits caCertificateId for some registrations (moto always): check the signature. */
  const signedByOurCa = (pem: string | undefined): boolean => {
    if (!pem) return false;
    try {
      caPublicKey ??= new X509Certificate(settings.caCertificatePem).publicKey;
      return new X509Certificate(pem).verify(caPublicKey);
    } catch {
      return false;
    }
  };
  const clients = new Map<string, IoTClient>();
  // Pre-filled from the deployment: under a storm every fresh container would otherwise make
  // these calls once per region, unbudgeted (docs/deploy.md, "Quotas and admission").
  const endpoints = new Map<string, Promise<string>>(
    Object.entries(settings.endpoints ?? {}).map(([region, address]) => [region, Promise.resolve(address)]),
  );
  const policies = new Map<string, Promise<void>>();

  const client = (region: string): IoTClient => {
    let existing = clients.get(region);
    if (!existing) {
      existing = new IoTClient(awsClientSettings(region, IOT_MAX_ATTEMPTS));
      if (settings.onThrottle) countThrottles(existing, region, settings.onThrottle);
      clients.set(region, existing);
    }
    return existing;
  };

  /** Caches a per-region promise; a failure is forgotten so the next request tries again. */
  function once<T>(cache: Map<string, Promise<T>>, region: string, work: () => Promise<T>): Promise<T> {
    let pending = cache.get(region);
    if (!pending) {
      pending = work();
      cache.set(region, pending);
      pending.catch(() => cache.delete(region));
    }
    return pending;
  }

  async function call<T>(what: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw translateIotError(error, what);
    }
  }

  /** Runs a retirement step; "already gone" counts as done. */
  async function gone(work: () => Promise<unknown>): Promise<void> {
    try {
      await work();
    } catch (error) {
      if (hasName(error, 'ResourceNotFoundException')) return;
      throw error;
    }
  }

  async function describeCertificate(region: string, certificateId: string, signal?: AbortSignal) {
    try {
      const answer = await client(region).send(new DescribeCertificateCommand({ certificateId }), {
        abortSignal: signal,
      });
      const description = answer.certificateDescription;
      return {
        certificateArn: description?.certificateArn ?? '',
        status: description?.status ?? 'UNKNOWN',
        caCertificateId: description?.caCertificateId,
        ours:
          description?.caCertificateId === settings.caCertificateId ||
          signedByOurCa(description?.certificatePem),
        createdAt: description?.creationDate,
        lastModifiedAt: description?.lastModifiedDate,
      };
    } catch (error) {
      if (hasName(error, 'ResourceNotFoundException')) return undefined;
      throw error;
    }
  }

  async function thingPrincipals(region: string, thingName: string, signal?: AbortSignal): Promise<string[]> {
    const principals: string[] = [];
    let nextToken: string | undefined;
    try {
      do {
        const page = await client(region).send(new ListThingPrincipalsCommand({ thingName, nextToken }), {
          abortSignal: signal,
        });
        principals.push(...(page.principals ?? []));
        nextToken = page.nextToken;
      } while (nextToken);
    } catch (error) {
      if (hasName(error, 'ResourceNotFoundException')) return [];
      throw error;
    }
    return principals;
  }

  /** Deactivates, detaches and deletes, if `retirable` agrees with the certificate's state. */
  async function retire(
    region: string,
    certificateId: string,
    signal: AbortSignal | undefined,
    retirable: (state: CertificateState) => boolean = () => true,
  ): Promise<boolean> {
    const iot = client(region);
    const state = await describeCertificate(region, certificateId, signal);
    if (!state) return true;
    if (!retirable(state)) return false;
    const certificateArn = state.certificateArn;
    // Deactivating and detaching are independent, and each cuts the certificate off on its own
    // (INACTIVE can't connect; without its policy it can do nothing, off its thing it is no
    // device's): under sustained throttling of one, the others still happen before we give up.
    const failures: unknown[] = [];
    const attempt = (work: () => Promise<unknown>) =>
      gone(work).catch((error: unknown) => {
        failures.push(error);
      });
    await Promise.all([
      state.status === 'ACTIVE'
        ? attempt(() =>
            iot.send(new UpdateCertificateCommand({ certificateId, newStatus: 'INACTIVE' }), {
              abortSignal: signal,
            }),
          )
        : undefined,
      attempt(async () => {
        const things = await iot.send(new ListPrincipalThingsCommand({ principal: certificateArn }), {
          abortSignal: signal,
        });
        await Promise.all(
          (things.things ?? []).map((thingName) =>
            attempt(() =>
              iot.send(new DetachThingPrincipalCommand({ thingName, principal: certificateArn }), {
                abortSignal: signal,
              }),
            ),
          ),
        );
      }),
      attempt(() =>
        iot.send(new DetachPolicyCommand({ policyName, target: certificateArn }), { abortSignal: signal }),
      ),
    ]);
    // DeleteCertificate needs it INACTIVE and detached: give up now, naming the first failure.
    if (failures.length > 0) throw failures[0];
    // Detaching is eventually consistent in AWS: DeleteCertificate may still see the
    // attachment for a moment (CertificateStateException / DeleteConflictException).
    for (let attempt = 1; ; attempt += 1) {
      try {
        await gone(() => iot.send(new DeleteCertificateCommand({ certificateId }), { abortSignal: signal }));
        return true;
      } catch (error) {
        const retryable =
          hasName(error, 'CertificateStateException', 'DeleteConflictException') || isThrottling(error);
        if (!retryable || attempt >= 4 || signal?.aborted) throw error;
        await sleep(100 * 2 ** attempt);
      }
    }
  }

  return {
    endpointAddress(region, signal) {
      return once(endpoints, region, () =>
        call('DescribeEndpoint', async () => {
          const answer = await client(region).send(
            new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }),
            {
              abortSignal: signal,
            },
          );
          if (!answer.endpointAddress) throw new Error(`DescribeEndpoint returned no address in ${region}`);
          return answer.endpointAddress;
        }),
      );
    },

    ensurePolicy(region, signal) {
      if (settings.policyManaged) return Promise.resolve();
      return once(policies, region, () =>
        call('policy setup', async () => {
          try {
            await client(region).send(new GetPolicyCommand({ policyName }), { abortSignal: signal });
          } catch (error) {
            if (!hasName(error, 'ResourceNotFoundException')) throw error;
            try {
              await client(region).send(
                new CreatePolicyCommand({
                  policyName,
                  policyDocument: JSON.stringify(devicePolicyDocument()),
                }),
                { abortSignal: signal },
              );
            } catch (createError) {
              // Another container created it meanwhile.
              if (!hasName(createError, 'ResourceAlreadyExistsException')) throw createError;
            }
          }
        }),
      );
    },

    registerCertificate(region, certificate, signal) {
      return call('RegisterCertificate', async () => {
        try {
          const answer = await client(region).send(
            new RegisterCertificateCommand({
              certificatePem: certificate.pem,
              caCertificatePem: settings.caCertificatePem,
              status: 'ACTIVE',
            }),
            { abortSignal: signal },
          );
          return { certificateArn: answer.certificateArn ?? '' };
        } catch (error) {
          // Registered before (a retried call, or a dead request's intent we are finishing).
          if (!hasName(error, 'ResourceAlreadyExistsException')) throw error;
          const existing = await describeCertificate(region, certificate.id, signal);
          if (!existing) throw error;
          if (existing.status !== 'ACTIVE') {
            await client(region).send(
              new UpdateCertificateCommand({ certificateId: certificate.id, newStatus: 'ACTIVE' }),
              { abortSignal: signal },
            );
          }
          return { certificateArn: existing.certificateArn };
        }
      });
    },

    createThing(region, thingName, signal) {
      return call('CreateThing', async () => {
        try {
          const created = await client(region).send(
            new CreateThingCommand({
              thingName,
              attributePayload: { attributes: { [THING_MARKER.name]: THING_MARKER.value } },
            }),
            { abortSignal: signal },
          );
          return { thingArn: created.thingArn ?? '', ours: true };
        } catch (error) {
          // AWS answers this when a thing of that name exists with other attributes.
          if (!hasName(error, 'ResourceAlreadyExistsException')) throw error;
          const existing = await client(region).send(new DescribeThingCommand({ thingName }), {
            abortSignal: signal,
          });
          const ours = existing.attributes?.[THING_MARKER.name] === THING_MARKER.value;
          if (!ours) {
            const principals = await thingPrincipals(region, thingName, signal);
            const states = await Promise.all(
              principals.map((arn) => describeCertificate(region, certificateIdOf(arn), signal)),
            );
            if (states.some((state) => state?.caCertificateId !== settings.caCertificateId)) {
              throw new ProvisioningError(
                'already-provisioned',
                `thing ${thingName} already exists in ${region} with certificates this service did not issue;` +
                  ' an operator must detach them or delete the thing before it can be provisioned',
              );
            }
          }
          return { thingArn: existing.thingArn ?? '', ours };
        }
      });
    },

    attach(region, thingName, certificateArn, signal) {
      return call('attaching policy and thing', async () => {
        await Promise.all([
          client(region).send(new AttachPolicyCommand({ policyName, target: certificateArn }), {
            abortSignal: signal,
          }),
          client(region).send(new AttachThingPrincipalCommand({ thingName, principal: certificateArn }), {
            abortSignal: signal,
          }),
        ]);
      });
    },

    async retireCertificate(region, certificateId, signal) {
      await retire(region, certificateId, signal);
    },

    retireCertificateIf(region, certificateId, retirable, signal) {
      return retire(region, certificateId, signal, retirable);
    },

    async certificateThings(region, certificateId, signal) {
      const state = await describeCertificate(region, certificateId, signal);
      if (!state) return [];
      const things: string[] = [];
      let nextToken: string | undefined;
      do {
        const page = await client(region).send(
          new ListPrincipalThingsCommand({ principal: state.certificateArn, nextToken }),
          { abortSignal: signal },
        );
        things.push(...(page.things ?? []));
        nextToken = page.nextToken;
      } while (nextToken);
      return things;
    },

    async deleteThingIfOursAndEmpty(region, thingName, signal) {
      const iot = client(region);
      let attributes: Record<string, string> | undefined;
      try {
        attributes = (await iot.send(new DescribeThingCommand({ thingName }), { abortSignal: signal }))
          .attributes;
      } catch (error) {
        if (hasName(error, 'ResourceNotFoundException')) return true;
        throw error;
      }
      if (attributes?.[THING_MARKER.name] !== THING_MARKER.value) return false;
      if ((await thingPrincipals(region, thingName, signal)).length > 0) return false;
      await gone(() => iot.send(new DeleteThingCommand({ thingName }), { abortSignal: signal }));
      return true;
    },

    async *listThingsOfOurs(region, signal) {
      let nextToken: string | undefined;
      do {
        const page = await client(region).send(
          new ListThingsCommand({
            attributeName: THING_MARKER.name,
            attributeValue: THING_MARKER.value,
            maxResults: 250,
            nextToken,
          }),
          { abortSignal: signal },
        );
        for (const thing of page.things ?? []) if (thing.thingName) yield thing.thingName;
        nextToken = page.nextToken;
      } while (nextToken);
    },

    async *listCertificatesOfOurCa(region, signal) {
      let marker: string | undefined;
      do {
        const page = await client(region).send(
          new ListCertificatesByCACommand({
            caCertificateId: settings.caCertificateId,
            marker,
            pageSize: 250,
          }),
          { abortSignal: signal },
        );
        for (const certificate of page.certificates ?? []) {
          if (!certificate.certificateId) continue;
          yield {
            certificateId: certificate.certificateId,
            certificateArn: certificate.certificateArn ?? '',
            status: certificate.status ?? 'UNKNOWN',
            createdAt: certificate.creationDate,
          };
        }
        marker = page.nextMarker;
      } while (marker);
    },

    // Through the error translation like every other call a request makes (a renewal asks for its
    // signing certificate's state): throttled → 429, 5xx or a reset → 503, never a bare 500.
    describeCertificate: (region, certificateId, signal) =>
      call('DescribeCertificate', () => describeCertificate(region, certificateId, signal)),
    thingPrincipals,

    async setCertificateStatus(region, certificateId, status, signal) {
      return call('UpdateCertificate', async () => {
        try {
          await client(region).send(new UpdateCertificateCommand({ certificateId, newStatus: status }), {
            abortSignal: signal,
          });
          return true;
        } catch (error) {
          if (hasName(error, 'ResourceNotFoundException')) return false;
          throw error;
        }
      });
    },

    async inspectThing(region, thingName, signal) {
      const iot = client(region);
      let thing: ThingReport['thing'];
      try {
        const described = await iot.send(new DescribeThingCommand({ thingName }), { abortSignal: signal });
        thing = {
          thingArn: described.thingArn ?? '',
          ours: described.attributes?.[THING_MARKER.name] === THING_MARKER.value,
        };
      } catch (error) {
        if (!hasName(error, 'ResourceNotFoundException')) throw error;
        return { region, principals: [] };
      }
      const principals = await Promise.all(
        (await thingPrincipals(region, thingName, signal)).map(async (certificateArn) => {
          const certificateId = certificateIdOf(certificateArn);
          let description;
          try {
            description = (
              await iot.send(new DescribeCertificateCommand({ certificateId }), { abortSignal: signal })
            ).certificateDescription;
          } catch (error) {
            if (!hasName(error, 'ResourceNotFoundException')) throw error;
          }
          const policies = description
            ? (
                (
                  await iot.send(new ListAttachedPoliciesCommand({ target: certificateArn }), {
                    abortSignal: signal,
                  })
                ).policies ?? []
              ).map((policy) => policy.policyName ?? '')
            : [];
          return {
            certificateId,
            certificateArn,
            status: description?.status,
            notBefore: description?.validity?.notBefore,
            notAfter: description?.validity?.notAfter,
            ours:
              description?.caCertificateId === settings.caCertificateId ||
              signedByOurCa(description?.certificatePem),
            caCertificateId: description?.caCertificateId,
            policies,
          };
        }),
      );
      return { region, thing, principals };
    },
  };
}
