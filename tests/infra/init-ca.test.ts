/**
 * make init-ca against moto (local KMS through the real SDK): the CA certificate is signed by the
 * KMS key, verifies with the key's public key, is a CA, is accepted by the stack, and the command
 * never writes a private key. Skipped when moto_server is not installed.
 */
import type { ChildProcess } from 'node:child_process';
import { X509Certificate, createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateAliasCommand, CreateKeyCommand, GetPublicKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { parseCaCertificate } from '../../functions/provisioning/certificate-authority';
import { all, synthesize, TEST_CA_CERTIFICATE } from './synth';
import { describeIfMoto, runTool, startPrivateMoto } from './support/private-moto';

const REGION = 'us-east-2';
const ALIAS = 'alias/init-ca-test';
const OTHER_ALIAS = 'alias/init-ca-test-other';
const credentials = { accessKeyId: 'testing', secretAccessKey: 'testing' };

const describeWithMoto = describeIfMoto('init-ca integration test');

function runInitCa(args: string[]): Promise<{ status: number | null; output: string }> {
  const env = {
    AWS_ACCESS_KEY_ID: credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    AWS_REGION: REGION,
  };
  return runTool('infra/init-ca.ts', args, env);
}

describeWithMoto('make init-ca (against moto)', () => {
  let moto: ChildProcess;
  let endpoint: string;
  let kms: KMSClient;
  let outFile: string;

  beforeAll(async () => {
    ({ endpoint, process: moto } = await startPrivateMoto());
    kms = new KMSClient({ region: REGION, endpoint, credentials });
    for (const alias of [ALIAS, OTHER_ALIAS]) {
      const key = await kms.send(
        new CreateKeyCommand({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY', Description: alias }),
      );
      await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: key.KeyMetadata!.KeyId! }));
    }
    outFile = join(mkdtempSync(join(tmpdir(), 'init-ca-')), 'device-ca.pem');
  }, 30_000);

  afterAll(() => {
    kms?.destroy();
    moto?.kill('SIGTERM');
  });

  const args = (alias = ALIAS, ...more: string[]) => [
    '--endpoint-url',
    endpoint,
    '--region',
    REGION,
    '--key-id',
    alias,
    '--out',
    outFile,
    ...more,
  ];

  it('writes a self-signed CA certificate that the KMS key signed, and nothing secret', async () => {
    const run = await runInitCa(args(ALIAS, '--common-name', 'test device CA'));
    expect(run.status).toBe(0);
    expect(run.output).toMatch(/wrote .*device-ca\.pem/);
    expect(run.output).not.toMatch(/PRIVATE KEY/);

    const pem = readFileSync(outFile, 'utf8');
    expect(pem.match(/-----BEGIN [A-Z ]+-----/g)).toEqual(['-----BEGIN CERTIFICATE-----']);
    const certificate = new X509Certificate(pem);
    const kmsPublicKey = (await kms.send(new GetPublicKeyCommand({ KeyId: ALIAS }))).PublicKey!;
    expect(certificate.ca).toBe(true);
    expect(certificate.subject).toContain('CN=test device CA');
    expect(certificate.checkIssued(certificate)).toBe(true);
    expect(
      certificate.verify(createPublicKey({ key: Buffer.from(kmsPublicKey), format: 'der', type: 'spki' })),
    ).toBe(true);
    expect(run.output).toContain(parseCaCertificate(pem).id);
  });

  it('gives a certificate the stack registers in every enabled region', () => {
    const pem = readFileSync(outFile, 'utf8');
    const { json } = synthesize({}, { certificatePem: pem, source: outFile });
    const registrations = all(json, 'aws_iot_ca_certificate');
    expect(registrations.length).toBeGreaterThan(0);
    for (const ca of registrations) expect(ca.ca_certificate_pem).toBe(parseCaCertificate(pem).pem);
  });

  it('changes nothing when run again for the same key', async () => {
    const before = readFileSync(outFile, 'utf8');
    const modified = statSync(outFile).mtimeMs;
    const run = await runInitCa(args());
    expect(run.status).toBe(0);
    expect(run.output).toMatch(/already holds the CA certificate/);
    expect(readFileSync(outFile, 'utf8')).toBe(before);
    expect(statSync(outFile).mtimeMs).toBe(modified);
  });

  it('refuses to overwrite a certificate another key made, unless forced', async () => {
    const before = readFileSync(outFile, 'utf8');
    const refused = await runInitCa(args(OTHER_ALIAS));
    expect(refused.status).toBe(1);
    expect(refused.output).toMatch(/did not make.*caPreviousCertificates/);
    expect(readFileSync(outFile, 'utf8')).toBe(before);

    writeFileSync(outFile, TEST_CA_CERTIFICATE);
    const forced = await runInitCa(args(OTHER_ALIAS, '--force'));
    expect(forced.status).toBe(0);
    expect(forced.output).toMatch(/caPreviousCertificates or the next deploy deregisters it/);
    expect(readFileSync(outFile, 'utf8')).not.toBe(TEST_CA_CERTIFICATE);
  });

  it('explains a missing key: deploy the bootstrap stack first', async () => {
    const run = await runInitCa(args('alias/does-not-exist'));
    expect(run.status).toBe(1);
    expect(run.output).toMatch(/does not exist in us-east-2: run `make deploy` first/);
  });
});
