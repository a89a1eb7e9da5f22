/**
 * AWS IoT Core, one client per region per container. Owns the device policy and endpoint
 * caches, certificate issuance and the undo of everything it creates.
 *
 * Quotas: certificate creation and AttachPolicy are ~10–15 TPS per account per region, so a
 * factory batch hits throttling first here; the SDK retries with backoff, then we answer 429.
 */
import {
  AttachPolicyCommand,
  AttachThingPrincipalCommand,
  CreateCertificateFromCsrCommand,
  CreateKeysAndCertificateCommand,
  CreatePolicyCommand,
  CreateThingCommand,
  DeleteCertificateCommand,
  DeleteThingCommand,
  DescribeEndpointCommand,
  DescribeThingCommand,
  DetachPolicyCommand,
  DetachThingPrincipalCommand,
  GetPolicyCommand,
  IoTClient,
  UpdateCertificateCommand,
} from '@aws-sdk/client-iot';
import { devicePolicyDocument } from '../../infra/device-policy';
import { awsClientSettings } from './aws-client-settings';
import { hasName, isThrottling, isTransient } from './aws-errors';
import { ProvisioningError, throttled, unavailable } from './errors';

export interface IssuedCertificate {
  readonly certificateId: string;
  readonly certificateArn: string;
  readonly certificatePem: string;
  /** Only when AWS generated the key pair (no CSR). */
  readonly privateKeyPem?: string;
}

export interface CreatedThing {
  readonly thingArn: string;
  /** False when the thing already existed (then undo must not delete it). */
  readonly created: boolean;
}

export interface DeviceIot {
  /** Data-ATS endpoint address, learned once per region per container. */
  endpointAddress(region: string): Promise<string>;
  /** Creates the device policy in the region if missing; once per region per container. */
  ensurePolicy(region: string): Promise<void>;
  createThing(region: string, thingName: string): Promise<CreatedThing>;
  issueCertificate(region: string, csrPem?: string): Promise<IssuedCertificate>;
  attach(region: string, thingName: string, certificateArn: string): Promise<void>;
  /** Detach, deactivate and delete a certificate; tolerates parts already gone. */
  retireCertificate(
    region: string,
    thingName: string,
    certificate: Pick<IssuedCertificate, 'certificateId' | 'certificateArn'>,
  ): Promise<void>;
  deleteThing(region: string, thingName: string): Promise<void>;
}

/** Turns SDK errors into the service's closed set; rethrows anything else unchanged. */
export function translateIotError(error: unknown, what: string): unknown {
  if (error instanceof ProvisioningError) return error;
  if (isThrottling(error)) return throttled(`AWS IoT is throttling ${what}; retry shortly`, 2, error);
  if (isTransient(error)) return unavailable(`AWS IoT is unavailable (${what}); retry shortly`, error);
  return error;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function awsDeviceIot(policyName: string): DeviceIot {
  const clients = new Map<string, IoTClient>();
  const endpoints = new Map<string, Promise<string>>();
  const policies = new Map<string, Promise<void>>();

  const client = (region: string): IoTClient => {
    let existing = clients.get(region);
    if (!existing) {
      existing = new IoTClient(awsClientSettings(region, 4));
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

  /** Runs an undo step; "already gone" counts as done. */
  async function undo(work: () => Promise<unknown>): Promise<void> {
    try {
      await work();
    } catch (error) {
      if (hasName(error, 'ResourceNotFoundException')) return;
      throw error;
    }
  }

  return {
    endpointAddress(region) {
      return once(endpoints, region, () =>
        call('DescribeEndpoint', async () => {
          const answer = await client(region).send(
            new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }),
          );
          if (!answer.endpointAddress) throw new Error(`DescribeEndpoint returned no address in ${region}`);
          return answer.endpointAddress;
        }),
      );
    },

    ensurePolicy(region) {
      return once(policies, region, () =>
        call('policy setup', async () => {
          try {
            await client(region).send(new GetPolicyCommand({ policyName }));
          } catch (error) {
            if (!hasName(error, 'ResourceNotFoundException')) throw error;
            try {
              await client(region).send(
                new CreatePolicyCommand({
                  policyName,
                  policyDocument: JSON.stringify(devicePolicyDocument()),
                }),
              );
            } catch (createError) {
              // Another container created it meanwhile.
              if (!hasName(createError, 'ResourceAlreadyExistsException')) throw createError;
            }
          }
        }),
      );
    },

    createThing(region, thingName) {
      return call('CreateThing', async () => {
        try {
          const created = await client(region).send(new CreateThingCommand({ thingName }));
          return { thingArn: created.thingArn ?? '', created: true };
        } catch (error) {
          // AWS refuses to re-create a thing that differs; a re-provisioned device keeps its thing.
          if (!hasName(error, 'ResourceAlreadyExistsException')) throw error;
          const existing = await client(region).send(new DescribeThingCommand({ thingName }));
          return { thingArn: existing.thingArn ?? '', created: false };
        }
      });
    },

    issueCertificate(region, csrPem) {
      return call('certificate creation', async () => {
        if (csrPem) {
          // setAsActive must be passed as true or omitted: moto reads false as true (DESIGN.md).
          const issued = await client(region).send(
            new CreateCertificateFromCsrCommand({ certificateSigningRequest: csrPem, setAsActive: true }),
          );
          return {
            certificateId: issued.certificateId ?? '',
            certificateArn: issued.certificateArn ?? '',
            certificatePem: issued.certificatePem ?? '',
          };
        }
        const issued = await client(region).send(new CreateKeysAndCertificateCommand({ setAsActive: true }));
        return {
          certificateId: issued.certificateId ?? '',
          certificateArn: issued.certificateArn ?? '',
          certificatePem: issued.certificatePem ?? '',
          privateKeyPem: issued.keyPair?.PrivateKey,
        };
      });
    },

    attach(region, thingName, certificateArn) {
      return call('attaching policy and thing', async () => {
        await Promise.all([
          client(region).send(new AttachPolicyCommand({ policyName, target: certificateArn })),
          client(region).send(new AttachThingPrincipalCommand({ thingName, principal: certificateArn })),
        ]);
      });
    },

    async retireCertificate(region, thingName, certificate) {
      const iot = client(region);
      await Promise.all([
        undo(() =>
          iot.send(new DetachThingPrincipalCommand({ thingName, principal: certificate.certificateArn })),
        ),
        undo(() => iot.send(new DetachPolicyCommand({ policyName, target: certificate.certificateArn }))),
        undo(() =>
          iot.send(
            new UpdateCertificateCommand({ certificateId: certificate.certificateId, newStatus: 'INACTIVE' }),
          ),
        ),
      ]);
      // Detaching is eventually consistent in AWS: DeleteCertificate may still see the
      // attachment for a moment (CertificateStateException / DeleteConflictException).
      for (let attempt = 1; ; attempt += 1) {
        try {
          await undo(() =>
            iot.send(new DeleteCertificateCommand({ certificateId: certificate.certificateId })),
          );
          return;
        } catch (error) {
          const retryable =
            hasName(error, 'CertificateStateException', 'DeleteConflictException') || isThrottling(error);
          if (!retryable || attempt >= 5) throw error;
          await sleep(200 * 2 ** attempt);
        }
      }
    },

    async deleteThing(region, thingName) {
      await undo(() => client(region).send(new DeleteThingCommand({ thingName })));
    },
  };
}
