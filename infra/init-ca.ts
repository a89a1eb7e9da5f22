/**
 * `make init-ca`: creates the deployment's device CA certificate. The CA's private key is the
 * asymmetric KMS key the stack created (caKmsKeyAlias); this reads its public key, builds a
 * self-signed CA certificate and has KMS sign it, so the private key never leaves KMS and nothing
 * secret is written anywhere. The PEM goes to caCertificateFile, for the operator to commit; the
 * next `make deploy` registers it in every enabled region and gives it to the function.
 *
 * Idempotent: when the file already holds a certificate for this key it says so and changes
 * nothing. It never overwrites a certificate made for another key without --force.
 */
import '../functions/cli-runtime';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { KMSClient } from '@aws-sdk/client-kms';
import { createCaCertificate, parseCaCertificate } from '../functions/provisioning/certificate-authority';
import { kmsSigner } from '../functions/provisioning/kms';
import { loadDeploymentConfig, repoPath } from './config';

interface InitCaOptions {
  keyId?: string;
  region?: string;
  out?: string;
  commonName?: string;
  organization?: string;
  validityDays?: string;
  endpointUrl?: string;
  force?: boolean;
}

const progress = (message: string) => console.error(`▸ ${message}`);

/** What KMS errors mean to the operator running this. */
function explain(error: unknown, keyId: string, region: string): Error {
  const name = error instanceof Error ? error.name : '';
  const message = error instanceof Error ? error.message : String(error);
  if (name === 'NotFoundException') {
    return new Error(
      `KMS key ${keyId} does not exist in ${region}: run \`make deploy\` first (without ` +
        'the certificate it creates only the CA key), then `make init-ca` again',
    );
  }
  if (name === 'AccessDeniedException') {
    return new Error(
      `not allowed to use ${keyId} (${message}); attach the device_ca_operator_policy_arn output ` +
        'policy to your role, or use an administrator role',
    );
  }
  if (name === 'CredentialsProviderError') {
    return new Error(`no usable AWS credentials (${message}); set AWS_PROFILE or run \`aws sso login\``);
  }
  return error instanceof Error ? error : new Error(message);
}

function spkiOf(pem: string): Buffer {
  return new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
}

async function initCa(options: InitCaOptions): Promise<void> {
  const config = loadDeploymentConfig();
  const region = options.region ?? config.homeRegion;
  const keyId = options.keyId ?? config.caKmsKeyAlias;
  const outFile = repoPath(options.out ?? config.caCertificateFile);
  const validityDays = Number(options.validityDays ?? config.certificates.caValidityDays);
  if (!Number.isInteger(validityDays) || validityDays < config.certificates.validityDays) {
    throw new Error(
      `--validity-days must be a whole number of days, at least certificates.validityDays ` +
        `(${config.certificates.validityDays}): a device certificate cannot outlive its CA`,
    );
  }
  const endpoint = options.endpointUrl ?? process.env.AWS_ENDPOINT_URL;
  const kms = new KMSClient({ region, ...(endpoint ? { endpoint } : {}) });
  try {
    const signer = kmsSigner(kms, keyId);
    progress(`reading the public key of ${keyId} in ${region}`);
    const publicKeySpki = Buffer.from(
      await signer.publicKeySpki().catch((error: unknown) => {
        throw explain(error, keyId, region);
      }),
    );

    if (existsSync(outFile)) {
      const existing = readFileSync(outFile, 'utf8');
      let sameKey = false;
      try {
        sameKey = spkiOf(existing).equals(publicKeySpki);
      } catch {
        // not a certificate: replaced only with --force, like one for another key
      }
      if (sameKey && !options.force) {
        const ca = parseCaCertificate(existing);
        console.log(
          `${outFile} already holds the CA certificate for ${keyId} (id ${ca.id}, valid until ` +
            `${ca.notAfter.toISOString()}); nothing to do. --force makes a new one for the same key.`,
        );
        return;
      }
      if (!sameKey && !options.force) {
        throw new Error(
          `${outFile} holds a certificate that ${keyId} did not make. To rotate the CA, move it to ` +
            'caPreviousCertificates first (docs/deploy.md, "Rotate the device CA"); --force overwrites it',
        );
      }
      // Devices already provisioned chain to the certificate being replaced: the next deploy
      // deregisters it unless it is listed in caPreviousCertificates.
      progress(
        `replacing ${outFile} (--force): list the old certificate in caPreviousCertificates or the next ` +
          'deploy deregisters it, and every device it issued stops connecting',
      );
    }

    const date = new Date().toISOString().slice(0, 10);
    const commonName = options.commonName ?? `${config.appName} device CA ${date}`;
    progress(`signing a self-signed CA certificate "${commonName}", ${validityDays} days, through KMS`);
    const pem = await createCaCertificate(signer, {
      commonName,
      organization: options.organization,
      validityDays,
      publicKeySpki,
    }).catch((error: unknown) => {
      throw explain(error, keyId, region);
    });

    // Check what KMS signed before anyone commits it: a CA, for this key, self-signed correctly.
    const certificate = new X509Certificate(pem);
    const publicKey = createPublicKey({ key: publicKeySpki, format: 'der', type: 'spki' });
    if (!certificate.ca || !certificate.verify(publicKey) || !spkiOf(pem).equals(publicKeySpki)) {
      throw new Error('the signed certificate does not verify with the KMS public key; nothing was written');
    }

    const temporary = `${outFile}.${process.pid}.tmp`;
    writeFileSync(temporary, pem, { mode: 0o644 });
    renameSync(temporary, outFile);
    const ca = parseCaCertificate(pem);
    console.log(`wrote ${outFile}`);
    console.log(`  subject   ${certificate.subject.replace(/\n/g, ', ')}`);
    console.log(`  id        ${ca.id} (AWS IoT caCertificateId)`);
    console.log(`  valid     ${certificate.validFrom} → ${certificate.validTo}`);
    console.log(
      `next: git add ${options.out ?? config.caCertificateFile} && git commit, then \`make deploy\` ` +
        '(registers it in every enabled region and gives it to the function)',
    );
  } finally {
    kms.destroy();
  }
}

const program = new Command('init-ca')
  .description(
    'Create the device CA certificate: self-signed, signed through KMS by the CA key the stack created.\n' +
      'The private key never leaves KMS; the PEM is written to caCertificateFile for you to commit.',
  )
  .option('--key-id <id>', 'KMS key id, ARN or alias (default: caKmsKeyAlias from infra/deployment.json)')
  .option('--region <region>', 'region of the key (default: homeRegion from infra/deployment.json)')
  .option('--out <file>', 'where to write the PEM (default: caCertificateFile from infra/deployment.json)')
  .option('--common-name <name>', 'subject CN (default: "<appName> device CA <date>")')
  .option('--organization <name>', 'subject O (default: none)')
  .option('--validity-days <days>', 'CA validity (default: certificates.caValidityDays)')
  .option('--force', 'replace an existing certificate (same key: new serial and dates; other key: overwrite)')
  .option('--endpoint-url <url>', 'AWS endpoint override, e.g. a local moto server (also AWS_ENDPOINT_URL)')
  .showHelpAfterError()
  .action(initCa);

program.parseAsync(process.argv).catch((error: unknown) => {
  console.error(`init-ca failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
