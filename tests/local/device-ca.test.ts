/**
 * The local stack's device CA, as a deployment has it: a KMS key that signs, a CA certificate
 * registered in every enabled region, and the function configured with both. Read back from moto
 * directly with the real SDK.
 */
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  DescribeCACertificateCommand,
  IoTClient,
  ListCertificatesByCACommand,
  RegisterCertificateCommand,
} from '@aws-sdk/client-iot';
import { DescribeKeyCommand, KMSClient, ListAliasesCommand } from '@aws-sdk/client-kms';
import {
  issueDeviceCertificate,
  parseCaCertificate,
} from '../../functions/provisioning/certificate-authority';
import { kmsSigner } from '../../functions/provisioning/kms';
import { DEVICE_CA_KEY_ALIAS } from './device-ca';
import { LocalStack, readStack } from './stack-state';

const describeWithStack = process.env.NO_LOCAL_STACK ? describe.skip : describe;

describeWithStack('the local device CA', () => {
  let stack: LocalStack;
  let pem: string;
  let kms: KMSClient;
  const credentials = { accessKeyId: 'local', secretAccessKey: 'local' };
  const iot = (region: string) =>
    new IoTClient({ endpoint: stack.motoUrl, region, credentials, maxAttempts: 1 });

  beforeAll(() => {
    stack = readStack();
    pem = readFileSync(stack.deviceCaCertificate, 'utf8');
    kms = new KMSClient({ endpoint: stack.motoUrl, region: stack.homeRegion, credentials, maxAttempts: 1 });
  });
  afterAll(() => kms.destroy());

  it('is a CA certificate for the KMS key, its id the SHA-256 of its DER', async () => {
    expect(path.isAbsolute(stack.deviceCaCertificate)).toBe(true);
    const certificate = new X509Certificate(pem);
    expect(certificate.ca).toBe(true);
    expect(certificate.subject).toContain('CN=global-device-provisioning local device CA');
    expect(certificate.verify(certificate.publicKey)).toBe(true);
    expect(new Date(certificate.validTo).getUTCFullYear()).toBeGreaterThanOrEqual(
      new Date().getUTCFullYear() + 24,
    );
    expect(stack.deviceCaCertificateId).toBe(createHash('sha256').update(certificate.raw).digest('hex'));

    const key = await kms.send(new DescribeKeyCommand({ KeyId: stack.deviceCaKmsKeyId }));
    expect(key.KeyMetadata).toMatchObject({ Arn: stack.deviceCaKmsKeyId, KeyUsage: 'SIGN_VERIFY' });
    expect(key.KeyMetadata?.KeySpec ?? key.KeyMetadata?.CustomerMasterKeySpec).toBe('ECC_NIST_P256');
    const aliases = await kms.send(new ListAliasesCommand({}));
    expect(aliases.Aliases?.find((alias) => alias.AliasName === DEVICE_CA_KEY_ALIAS)?.TargetKeyId).toBe(
      key.KeyMetadata?.KeyId,
    );
  });

  it('is registered and active in every enabled region, with the PEM the function gets', async () => {
    for (const region of stack.regions) {
      const client = iot(region);
      const described = await client.send(
        new DescribeCACertificateCommand({ certificateId: stack.deviceCaCertificateId }),
      );
      expect(described.certificateDescription?.status).toBe('ACTIVE');
      expect(described.certificateDescription?.certificatePem).toBe(pem);
      client.destroy();
    }
    expect(stack.functionEnvironment.CA_KMS_KEY_ID).toBe(stack.deviceCaKmsKeyId);
    expect(stack.functionEnvironment.CA_CERTIFICATE_PEM).not.toContain('\n');
    expect(stack.functionEnvironment.CA_CERTIFICATE_PEM?.replace(/\\n/g, '\n')).toBe(pem);
  });

  it('issues device certificates through KMS that AWS IoT registers under the CA', async () => {
    const ca = parseCaCertificate(pem);
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const device = await issueDeviceCertificate(ca, kmsSigner(kms, stack.deviceCaKmsKeyId), {
      thingName: `ca-test-${Date.now().toString(36)}`,
      publicKeySpki: publicKey.export({ type: 'spki', format: 'der' }),
      validityDays: 365,
    });
    expect(new X509Certificate(device.pem).verify(new X509Certificate(pem).publicKey)).toBe(true);

    const region = stack.regions[1] ?? stack.homeRegion;
    const client = iot(region);
    const registered = await client.send(
      new RegisterCertificateCommand({
        certificatePem: device.pem,
        caCertificatePem: pem,
        setAsActive: true,
      }),
    );
    expect(registered.certificateId).toBe(device.id);
    const listed = await client.send(
      new ListCertificatesByCACommand({ caCertificateId: stack.deviceCaCertificateId }),
    );
    expect(listed.certificates?.map((certificate) => certificate.certificateId)).toContain(device.id);
    client.destroy();
  });
});
