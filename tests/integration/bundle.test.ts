/**
 * The built Lambda package (dist/provisioning, `make build`), not the TypeScript the local stack
 * runs through tsx: its init loads only what every request needs, and it answers requests. Here
 * a private edge runs dist/provisioning/index.mjs in sandboxes with the local stack's function
 * environment, so requests go through the bundle into moto.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  BUNDLE_ENTRY_FILE,
  bundleDir,
  bundleLayout,
  BundleLayout,
  metafilePath,
} from '../../functions/bundle-layout';
import { addDevice } from '../local/stack';
import { buildEvent, Edge, ROUTE_PATH, startEdge } from '../local/edge';
import { makeCsr, PLACES, registryRecord, stack, uniqueThingName, v1Body, v2Body } from './requests';

const PACKAGE = bundleDir('provisioning');
const ENTRY = join(PACKAGE, BUNDLE_ENTRY_FILE);

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? filesUnder(join(dir, entry.name)) : [relative(PACKAGE, join(dir, entry.name))],
  );
}

beforeAll(() => {
  if (!existsSync(ENTRY)) throw new Error(`${ENTRY} is missing: run \`make build\` first`);
});

describe('the provisioning package', () => {
  let layout: BundleLayout;
  beforeAll(() => {
    layout = bundleLayout(JSON.parse(readFileSync(metafilePath('provisioning'), 'utf8')), 'provisioning');
  });

  it('is the entry module and its chunks, nothing else', () => {
    const files = filesUnder(PACKAGE);
    expect(files).toContain(BUNDLE_ENTRY_FILE);
    expect(files.filter((file) => !file.endsWith('.mjs'))).toEqual([]);
    expect(files.sort()).toEqual([...layout.files].sort());
  });

  it('loads no X.509 code and no SSM client in its init; the KMS client (signing) is there', () => {
    const loadedAtInit = Object.keys(layout.initBytesByPackage);
    for (const lazy of [
      '@peculiar/asn1-csr',
      '@peculiar/asn1-x509',
      '@peculiar/asn1-schema',
      '@peculiar/x509',
      'asn1js',
      'tsyringe',
      'reflect-metadata',
      '@aws-sdk/client-ssm',
    ]) {
      expect(loadedAtInit).not.toContain(lazy);
    }
    expect(loadedAtInit).toEqual(
      expect.arrayContaining(['@aws-sdk/client-dynamodb', '@aws-sdk/client-iot', '@aws-sdk/client-kms']),
    );
    expect(layout.initInputs.some((input) => input.endsWith('functions/provisioning/csr.ts'))).toBe(false);
    expect(
      layout.initInputs.some((input) => input.endsWith('functions/provisioning/certificate-authority.ts')),
    ).toBe(false);
  });
});

const describeWithStack = process.env.NO_LOCAL_STACK ? describe.skip : describe;

describeWithStack('the built bundle behind the local edge', () => {
  let edge: Edge;

  beforeAll(async () => {
    edge = await startEdge({
      host: '127.0.0.1',
      port: 0,
      originVerifySecret: stack.originVerifySecret,
      handlerModule: relative(join(__dirname, '..', '..'), ENTRY),
      environment: stack.functionEnvironment,
      region: stack.homeRegion,
      accountId: stack.accountId,
      maxSandboxes: 1,
      warmSpares: 0,
    });
  });
  afterAll(() => edge?.close());

  const post = async (body: unknown) => {
    const response = await fetch(edge.provisioningUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...PLACES.tokyo },
      body: JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };

  it('provisions a device that sends no CSR: certificate and key, record provisioned', async () => {
    const thingName = uniqueThingName('bundle-key');
    await addDevice(stack, thingName);
    const answer = await post(v1Body(thingName));
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ status: 'success', region: 'ap-northeast-1' });
    const certificate = new X509Certificate(String(answer.body.certificatePem));
    expect(certificate.checkPrivateKey(createPrivateKey(String(answer.body.PrivateKey)))).toBe(true);
    expect((await registryRecord(thingName))?.prov_status?.S).toBe('provisioned');
  });

  it('provisions a device that sends a CSR (the lazily loaded CSR check), for the CSR key', async () => {
    const thingName = uniqueThingName('bundle-csr');
    await addDevice(stack, thingName);
    const csr = await makeCsr(thingName);
    const answer = await post(v2Body(thingName, { csrPem: csr.pem }));
    expect(answer.status).toBe(200);
    expect(answer.body.PrivateKey).toBeUndefined();
    const certificate = new X509Certificate(String(answer.body.certificatePem));
    expect(certificate.publicKey.export({ type: 'spki', format: 'der' })).toEqual(csr.publicKeySpki);
  });

  it('loads and answers in a plain Node process too (no tsx loader), as Lambda runs it', async () => {
    const thingName = uniqueThingName('bundle-plain');
    await addDevice(stack, thingName);
    const event = buildEvent(
      {
        method: 'POST',
        url: ROUTE_PATH,
        rawHeaders: [
          'content-type',
          'application/json',
          'x-local-viewer-latitude',
          '35.68',
          'x-local-viewer-longitude',
          '139.69',
        ],
        body: Buffer.from(JSON.stringify(v1Body(thingName))),
      },
      {
        accountId: stack.accountId,
        apiId: 'bundle',
        region: stack.homeRegion,
        originVerifySecret: stack.originVerifySecret,
      },
    );
    const script = [
      `const reconciler = await import(${JSON.stringify(pathToFileURL(join(bundleDir('reconciler'), BUNDLE_ENTRY_FILE)).href)});`,
      `const { handler } = await import(${JSON.stringify(pathToFileURL(ENTRY).href)});`,
      `const answer = await handler(${JSON.stringify(event)}, { getRemainingTimeInMillis: () => 10000 });`,
      `process.stdout.write('\\n' + JSON.stringify({ reconciler: typeof reconciler.handler, status: answer.statusCode }) + '\\n');`,
    ].join('\n');
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, ...stack.functionEnvironment, NODE_OPTIONS: '' },
      encoding: 'utf8',
    });
    expect(run.stderr).not.toContain('Error');
    expect(JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '{}')).toEqual({
      reconciler: 'function',
      status: 200,
    });
  });

  it('refuses a CSR whose CN is not the thing name, with the same message as the source', async () => {
    const thingName = uniqueThingName('bundle-csr-cn');
    await addDevice(stack, thingName);
    const csr = await makeCsr(`${thingName}-other`);
    const answer = await post(v2Body(thingName, { csrPem: csr.pem }));
    expect(answer).toEqual({
      status: 400,
      body: { status: 'error', message: `CSR subject CN must be the thing name "${thingName}"` },
    });
  });
});
