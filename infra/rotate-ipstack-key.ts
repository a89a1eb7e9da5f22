/**
 * `make rotate-ipstack-key`: stores a new ipstack access key where the function reads it, as KMS
 * ciphertext only. The key is read from stdin (piped) or from the terminal without echo, never
 * from argv or the environment, so it stays out of shell history, process lists, logs and
 * Terraform state. Round trip verified by decrypting what was stored; the key is never printed.
 */
import '../functions/cli-runtime';
import { timingSafeEqual } from 'node:crypto';
import { Command } from 'commander';
import { DecryptCommand, DescribeKeyCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { GetParameterCommand, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { IPSTACK_KEY_ENCRYPTION_CONTEXT } from '../functions/provisioning/config';
import { awsCaller } from './aws-credentials';
import { loadDeploymentConfig } from './config';

/** ipstack access keys are 32 hex characters; accept any plausible token so a format change does not block rotation. */
const IPSTACK_KEY_PATTERN = /^[A-Za-z0-9]{16,64}$/;

interface RotateOptions {
  keyId?: string;
  parameter?: string;
  region?: string;
  endpointUrl?: string;
}

async function readAll(stream: NodeJS.ReadStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream)
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}

/** Reads one line from the terminal with echo off (raw mode); Ctrl-C aborts. */
function readHidden(prompt: string): Promise<Buffer> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  return new Promise((resolvePromise, reject) => {
    const typed: number[] = [];
    stdin.setRawMode(true);
    stdin.resume();
    const finish = (error?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.removeListener('data', onData);
      process.stderr.write('\n');
      if (error) reject(error);
      else resolvePromise(Buffer.from(typed));
      typed.fill(0);
    };
    const onData = (chunk: Buffer) => {
      for (const byte of chunk) {
        if (byte === 0x03) return finish(new Error('aborted'));
        if (byte === 0x0d || byte === 0x0a || byte === 0x04) return finish();
        if (byte === 0x7f || byte === 0x08) typed.pop();
        else typed.push(byte);
      }
    };
    stdin.on('data', onData);
  });
}

async function readNewKey(): Promise<Buffer> {
  const raw = process.stdin.isTTY
    ? await readHidden('new ipstack access key (not echoed): ')
    : await readAll(process.stdin);
  const text = raw.toString('utf8').trim();
  raw.fill(0);
  if (!IPSTACK_KEY_PATTERN.test(text)) {
    // Say what is wrong without repeating the input.
    throw new Error(
      `that does not look like an ipstack access key (expected 16–64 letters/digits, got ${text.length} characters)`,
    );
  }
  return Buffer.from(text, 'utf8');
}

async function requireKey(kms: KMSClient, keyId: string, region: string): Promise<void> {
  try {
    await kms.send(new DescribeKeyCommand({ KeyId: keyId }));
  } catch (error) {
    const name = (error as Error).name;
    if (name === 'NotFoundException')
      throw new Error(
        `KMS key ${keyId} does not exist in ${region}: deploy first (make deploy) or pass --key-id`,
        { cause: error },
      );
    if (name === 'AccessDeniedException')
      throw new Error(
        `not allowed to use KMS key ${keyId} (${(error as Error).message}); ` +
          'use a role with the ipstack_key_rotator_policy_arn policy (make outputs)',
        { cause: error },
      );
    throw new Error(`cannot reach KMS in ${region} (${name}: ${(error as Error).message})`, { cause: error });
  }
}

async function rotate(options: RotateOptions): Promise<void> {
  const config = loadDeploymentConfig();
  const region = options.region ?? config.homeRegion;
  const keyId = options.keyId ?? config.kmsKeyAlias;
  const parameterName = options.parameter ?? config.ipstackKeyParameter;
  const endpoint = options.endpointUrl ?? process.env.AWS_ENDPOINT_URL;
  const clientConfig = { region, ...(endpoint ? { endpoint } : {}) };
  const kms = new KMSClient(clientConfig);
  const ssm = new SSMClient(clientConfig);

  // Everything that can fail without the key is checked before the key is asked for.
  const caller = await awsCaller(region, endpoint);
  console.error(`▸ AWS account ${caller.account} as ${caller.arn}`);
  await requireKey(kms, keyId, region);
  const newKey = await readNewKey();
  try {
    console.error(`▸ encrypting with ${keyId} in ${region}`);
    const encrypted = await kms.send(
      new EncryptCommand({
        KeyId: keyId,
        Plaintext: newKey,
        EncryptionContext: { ...IPSTACK_KEY_ENCRYPTION_CONTEXT },
      }),
    );
    if (!encrypted.CiphertextBlob) throw new Error('KMS returned no ciphertext');
    const ciphertext = Buffer.from(encrypted.CiphertextBlob).toString('base64');

    console.error(`▸ storing ciphertext in ${parameterName}`);
    const stored = await ssm.send(
      new PutParameterCommand({ Name: parameterName, Value: ciphertext, Type: 'String', Overwrite: true }),
    );

    console.error('▸ verifying: reading the parameter back and decrypting it');
    const readBack = await ssm.send(new GetParameterCommand({ Name: parameterName }));
    const decrypted = await kms.send(
      new DecryptCommand({
        CiphertextBlob: Buffer.from(readBack.Parameter?.Value ?? '', 'base64'),
        EncryptionContext: { ...IPSTACK_KEY_ENCRYPTION_CONTEXT },
        KeyId: encrypted.KeyId,
      }),
    );
    const roundTrip = Buffer.from(decrypted.Plaintext ?? new Uint8Array());
    const matches = roundTrip.length === newKey.length && timingSafeEqual(roundTrip, newKey);
    roundTrip.fill(0);
    if (!matches) throw new Error(`verification failed: ${parameterName} does not decrypt to the new key`);

    console.log(
      `stored version ${stored.Version} of ${parameterName} (KMS key ${encrypted.KeyId}); round trip verified.`,
    );
    console.log(
      `Running functions pick it up within ${config.ipstackKeyCacheSeconds} s (IPSTACK_KEY_CACHE_SECONDS); ` +
        'new containers at once. Revoke the old key at ipstack after that (docs/deploy.md).',
    );
  } finally {
    newKey.fill(0);
    kms.destroy();
    ssm.destroy();
  }
}

const program = new Command('rotate-ipstack-key')
  .description(
    'Store a new ipstack access key, KMS-encrypted, where the provisioning function reads it.\n' +
      'The key is read from stdin when piped (e.g. from a password manager CLI), else from the terminal without echo.',
  )
  .option('--key-id <id>', 'KMS key id, ARN or alias (default: kmsKeyAlias from infra/deployment.json)')
  .option(
    '--parameter <name>',
    'SSM parameter name (default: ipstackKeyParameter from infra/deployment.json)',
  )
  .option('--region <region>', 'AWS region (default: homeRegion from infra/deployment.json)')
  .option('--endpoint-url <url>', 'AWS endpoint override, e.g. a local moto server (also AWS_ENDPOINT_URL)')
  .showHelpAfterError()
  .action(rotate);

program.parseAsync(process.argv).catch((error: unknown) => {
  console.error(`rotate-ipstack-key failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
