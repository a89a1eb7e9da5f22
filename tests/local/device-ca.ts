/**
 * The deployment's device CA, created locally as `make init-ca` would in AWS: an asymmetric KMS
 * key (ECC_NIST_P256, SIGN_VERIFY) whose private key never leaves KMS (here: moto), a
 * self-signed CA certificate signed through it, registered in every enabled IoT region. Uses the
 * function's own CA code (functions/provisioning/certificate-authority.ts, kms.ts), through the
 * AWS proxy and the real SDK.
 *
 * moto keeps state in memory, so a new key and certificate are made at every start.
 */
import { writeFileSync } from 'node:fs';
import { IoTClient, RegisterCACertificateCommand } from '@aws-sdk/client-iot';
import { CreateAliasCommand, CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { createCaCertificate, parseCaCertificate } from '../../functions/provisioning/certificate-authority';
import { kmsSigner } from '../../functions/provisioning/kms';

export const DEVICE_CA_KEY_ALIAS = 'alias/global-device-provisioning-device-ca-local';
export const DEVICE_CA_COMMON_NAME = 'global-device-provisioning local device CA';
/** 25 years, leap days included. */
export const DEVICE_CA_VALIDITY_DAYS = 9_131;

export interface DeviceCa {
  /** The PEM exactly as registered in every region (and given to the function). */
  readonly pem: string;
  readonly path: string;
  /** ARN of the CA's KMS key. */
  readonly kmsKeyArn: string;
  /** SHA-256 of the DER: AWS IoT's caCertificateId in every region. */
  readonly certificateId: string;
}

export interface DeviceCaOptions {
  readonly awsEndpoint: string;
  readonly homeRegion: string;
  readonly regions: readonly string[];
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  /** Where the CA certificate's PEM is written. */
  readonly pemPath: string;
}

export async function createDeviceCa(options: DeviceCaOptions): Promise<DeviceCa> {
  const clientConfig = (region: string) => ({
    endpoint: options.awsEndpoint,
    region,
    credentials: { ...options.credentials },
  });
  const kms = new KMSClient(clientConfig(options.homeRegion));
  try {
    const key = await kms.send(
      new CreateKeyCommand({
        Description: 'global-device-provisioning local: device certificate CA',
        KeyUsage: 'SIGN_VERIFY',
        KeySpec: 'ECC_NIST_P256',
      }),
    );
    const kmsKeyArn = key.KeyMetadata?.Arn;
    if (!kmsKeyArn) throw new Error('KMS CreateKey returned no key ARN');
    await kms.send(new CreateAliasCommand({ AliasName: DEVICE_CA_KEY_ALIAS, TargetKeyId: kmsKeyArn }));
    const signer = kmsSigner(kms, kmsKeyArn);
    const pem = await createCaCertificate(signer, {
      commonName: DEVICE_CA_COMMON_NAME,
      validityDays: DEVICE_CA_VALIDITY_DAYS,
      publicKeySpki: await signer.publicKeySpki(),
    });
    const certificateId = parseCaCertificate(pem).id;
    writeFileSync(options.pemPath, pem);

    await Promise.all(
      options.regions.map(async (region) => {
        const iot = new IoTClient(clientConfig(region));
        try {
          const registered = await iot.send(
            new RegisterCACertificateCommand({
              caCertificate: pem,
              setAsActive: true,
              certificateMode: 'SNI_ONLY',
              allowAutoRegistration: false,
            }),
          );
          if (registered.certificateId !== certificateId) {
            throw new Error(
              `${region} registered the device CA as ${registered.certificateId ?? '?'}, expected ${certificateId}`,
            );
          }
        } finally {
          iot.destroy();
        }
      }),
    );
    return { pem, path: options.pemPath, kmsKeyArn, certificateId };
  } finally {
    kms.destroy();
  }
}
