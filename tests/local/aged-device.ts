/**
 * A device provisioned long ago, on the local stack: what `make demo` and the lifecycle tests use
 * for "a certificate near its end" without waiting years. It is provisioned through the
 * service's own adapters (claim with intent, RegisterCertificate, CreateThing, attach, mark), in
 * the same order as the function, with the clock set back `ageDays`: the certificate's notBefore
 * and the record's prov_epoch are that far in the past. Nothing else differs from a real one.
 */
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { KMSClient } from '@aws-sdk/client-kms';
import {
  issueDeviceCertificate,
  parseCaCertificate,
  sha256Hex,
} from '../../functions/provisioning/certificate-authority';
import { awsDeviceIot } from '../../functions/provisioning/iot';
import { kmsSigner } from '../../functions/provisioning/kms';
import { dynamoRegistry, PROV_STATUS } from '../../functions/provisioning/registry';
import { useLocalStack, type LocalStack } from './stack-state';

export interface AgedDevice {
  readonly thingName: string;
  readonly region: string;
  readonly endpointAddress: string;
  readonly certificateId: string;
  readonly certificatePem: string;
  /** PKCS#8 PEM of the device's EC P-256 key. */
  readonly privateKeyPem: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface AgedDeviceOptions {
  readonly thingName: string;
  readonly region: string;
  /** How long ago it was provisioned. */
  readonly ageDays: number;
  /** Its certificate's validity from then. */
  readonly validityDays: number;
}

/**
 * Puts `thingName` on the allowlist if needed and provisions it as of `ageDays` ago. Refuses a
 * device that is provisioned already (pick a fresh name, or `gdp-admin reset` it first).
 */
export async function seedAgedDevice(stack: LocalStack, options: AgedDeviceOptions): Promise<AgedDevice> {
  useLocalStack(stack);
  const { thingName, region } = options;
  const caCertificatePem = readFileSync(stack.deviceCaCertificate, 'utf8');
  const ca = parseCaCertificate(caCertificatePem);
  const registry = dynamoRegistry({ region: stack.homeRegion, tableName: stack.tableName });
  const iot = awsDeviceIot({
    policyName: stack.functionEnvironment.IOT_POLICY_NAME as string,
    caCertificatePem: ca.pem,
    caCertificateId: ca.id,
  });

  let record = await registry.read(thingName);
  if (record && record.provStatus !== PROV_STATUS.unprovisioned) {
    throw new Error(`${thingName} is ${record.provStatus} already; use a fresh thing name`);
  }
  if (!record) {
    await registry.putNewDevices([{ thingName }], {
      audit: {
        at: new Date().toISOString(),
        by: 'aged-device fixture',
        what: 'import',
        before: {},
        after: {},
      },
    });
    record = await registry.read(thingName);
    if (!record) throw new Error(`${thingName} was not written to ${stack.tableName}`);
  }

  const then = new Date(Date.now() - options.ageDays * 86_400_000);
  const thenSeconds = Math.floor(then.getTime() / 1000);
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const publicKeySpki = publicKey.export({ type: 'spki', format: 'der' });
  const kms = new KMSClient({ region: stack.homeRegion });
  const certificate = await issueDeviceCertificate(ca, kmsSigner(kms, stack.deviceCaKmsKeyId), {
    thingName,
    publicKeySpki,
    validityDays: options.validityDays,
    now: then,
  });

  const claim = await registry.claim({
    record,
    claimId: randomUUID(),
    nowSeconds: Math.floor(Date.now() / 1000),
    leaseSeconds: 60,
    pending: {
      certificateId: certificate.id,
      certificatePem: certificate.pem,
      region,
      keySha256: sha256Hex(publicKeySpki),
      keyMode: 'csr',
      since: thenSeconds,
    },
  });
  await iot.ensurePolicy(region);
  const [registered, thing, endpointAddress] = await Promise.all([
    iot.registerCertificate(region, { id: certificate.id, pem: certificate.pem }),
    iot.createThing(region, thingName),
    iot.endpointAddress(region),
  ]);
  await iot.attach(region, thingName, registered.certificateArn);
  await registry.markProvisioned(claim, {
    region,
    certificateArn: registered.certificateArn,
    thingArn: thing.thingArn,
    endpointAddress,
    geoSource: 'aged-device fixture',
    nowSeconds: thenSeconds,
    firstProvisionedAtEpoch: thenSeconds,
    reissueCount: 0,
  });
  return {
    thingName,
    region,
    endpointAddress,
    certificateId: certificate.id,
    certificatePem: certificate.pem,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    notBefore: then,
    notAfter: certificate.notAfter,
  };
}
