/**
 * make rotate-ipstack-key against moto (local KMS + SSM through the real SDK): the key goes in on
 * stdin, comes out only as ciphertext that KMS decrypts with the function's encryption context,
 * and never appears in the tool's output. Skipped when moto_server is not installed.
 */
import type { ChildProcess } from 'node:child_process';
import { CreateAliasCommand, CreateKeyCommand, DecryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { GetParameterCommand, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { IPSTACK_KEY_ENCRYPTION_CONTEXT, IPSTACK_KEY_UNSET } from '../../functions/provisioning/config';
import { describeIfMoto, runTool, startPrivateMoto } from './support/private-moto';

const REGION = 'us-east-2';
const PARAMETER = '/test/ipstack-access-key-ciphertext';
const ALIAS = 'alias/rotate-test';
const NEW_KEY = '0123456789abcdef0123456789abcdef';
const credentials = { accessKeyId: 'testing', secretAccessKey: 'testing' };

const describeWithMoto = describeIfMoto('rotate-ipstack-key integration test');

function runRotate(args: string[], stdin: string): Promise<{ status: number | null; output: string }> {
  const env = {
    AWS_ACCESS_KEY_ID: credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    AWS_REGION: REGION,
  };
  return runTool('infra/rotate-ipstack-key.ts', args, env, stdin);
}

describeWithMoto('make rotate-ipstack-key (against moto)', () => {
  let moto: ChildProcess;
  let endpoint: string;
  let kms: KMSClient;
  let ssm: SSMClient;

  beforeAll(async () => {
    ({ endpoint, process: moto } = await startPrivateMoto());
    kms = new KMSClient({ region: REGION, endpoint, credentials });
    ssm = new SSMClient({ region: REGION, endpoint, credentials });
    const key = await kms.send(new CreateKeyCommand({ Description: 'rotate test' }));
    await kms.send(new CreateAliasCommand({ AliasName: ALIAS, TargetKeyId: key.KeyMetadata!.KeyId! }));
    await ssm.send(new PutParameterCommand({ Name: PARAMETER, Value: IPSTACK_KEY_UNSET, Type: 'String' }));
  }, 30_000);

  afterAll(() => {
    kms?.destroy();
    ssm?.destroy();
    moto?.kill('SIGTERM');
  });

  const toolArgs = () => [
    '--endpoint-url',
    endpoint,
    '--region',
    REGION,
    '--key-id',
    ALIAS,
    '--parameter',
    PARAMETER,
  ];

  it('stores the piped key as ciphertext that decrypts, with the function context, to the key', async () => {
    const run = await runRotate(toolArgs(), `${NEW_KEY}\n`);
    expect(run.status).toBe(0);
    expect(run.output).toMatch(/stored version 2 of \/test\/ipstack-access-key-ciphertext/);
    expect(run.output).toMatch(/within 300 s/);
    expect(run.output).not.toContain(NEW_KEY);

    const stored = (await ssm.send(new GetParameterCommand({ Name: PARAMETER }))).Parameter!.Value!;
    expect(stored).not.toContain(NEW_KEY);
    const decrypted = await kms.send(
      new DecryptCommand({
        CiphertextBlob: Buffer.from(stored, 'base64'),
        EncryptionContext: { ...IPSTACK_KEY_ENCRYPTION_CONTEXT },
      }),
    );
    expect(Buffer.from(decrypted.Plaintext!).toString('utf8')).toBe(NEW_KEY);
  });

  it('binds the ciphertext to the encryption context: decrypting without it fails', async () => {
    const stored = (await ssm.send(new GetParameterCommand({ Name: PARAMETER }))).Parameter!.Value!;
    await expect(
      kms.send(new DecryptCommand({ CiphertextBlob: Buffer.from(stored, 'base64') })),
    ).rejects.toThrow();
  });

  it('checks the KMS key before it asks for the ipstack key, and says what is missing', async () => {
    const args = toolArgs();
    args[args.indexOf(ALIAS)] = 'alias/not-deployed';
    const run = await runRotate(args, 'not a key\n');
    expect(run.status).toBe(1);
    expect(run.output).toMatch(/KMS key alias\/not-deployed does not exist in us-east-2: deploy first/);
    expect(run.output).not.toMatch(/does not look like an ipstack access key|Exception/);
  });

  it('refuses input that is not an ipstack key, without echoing it, and leaves the parameter alone', async () => {
    const before = (await ssm.send(new GetParameterCommand({ Name: PARAMETER }))).Parameter!;
    const run = await runRotate(toolArgs(), 'not a key; rm -rf /\n');
    expect(run.status).toBe(1);
    expect(run.output).toMatch(/does not look like an ipstack access key/);
    expect(run.output).not.toContain('rm -rf');
    const after = (await ssm.send(new GetParameterCommand({ Name: PARAMETER }))).Parameter!;
    expect(after.Version).toBe(before.Version);
  });
});
