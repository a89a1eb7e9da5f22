/**
 * The local stack's one long-running Node process (started detached by `stack.ts up`):
 * moto (as a child, via moto_launcher.py), the fault-injecting AWS proxy, the ipstack fake, the
 * regional MQTT brokers and the edge with the provisioning handler. It creates what a deployment
 * would (table, KMS key, encrypted ipstack key), then writes .local/stack.json.
 *
 * Lifetimes are tied: moto reads our stdin pipe and exits when we die; we exit when moto dies.
 * `stack.ts down` signals the whole process group.
 *
 * Usage: node --import tsx tests/local/stack-server.ts .local/server-options.json
 */
import { spawn, ChildProcess } from 'node:child_process';
import { appendFileSync, createWriteStream, readFileSync } from 'node:fs';
import path from 'node:path';
import { CreateTableCommand, DynamoDBClient, ResourceInUseException } from '@aws-sdk/client-dynamodb';
import { CreateAliasCommand, CreateKeyCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { CreatePolicyCommand, IoTClient } from '@aws-sdk/client-iot';
import { IPSTACK_KEY_ENCRYPTION_CONTEXT } from '../../functions/provisioning/config';
import { loadDeploymentConfig } from '../../infra/config';
import { functionEnvironment } from '../../infra/function-environment';
import { devicePolicyDocument } from '../../infra/device-policy';
import { startAwsProxy } from './aws-proxy';
import { createDeviceCa } from './device-ca';
import { startEdge } from './edge';
import { startIpstackFake } from './ipstack-fake';
import {
  CA_DIR,
  LocalStack,
  LOGS_DIR,
  mqttEndpointsOf,
  REPO_ROOT,
  STACK_FILE,
  STACK_LOG,
  StackServerOptions,
  writeJsonAtomic,
} from './stack-state';

const HOST = '127.0.0.1';
const ACCOUNT_ID = '123456789012';
const LOCAL_CREDENTIALS = { accessKeyId: 'local', secretAccessKey: 'local' };

interface RegionalBrokers {
  readonly endpoints: Record<string, string>;
  readonly alpnEndpoints: Record<string, string>;
  readonly watchUrl: string;
  close(): Promise<void>;
}

type StartRegionalBrokers = (options: {
  regions: string[];
  host: '127.0.0.1';
  ports: Record<string, number>;
  alpnPorts?: Record<string, number>;
  hosts: Record<string, string>;
  awsEndpoint: string;
  caCertPem: string;
  caKeyPem: string;
  watchPort: number;
  logger?: (line: string) => void;
}) => Promise<RegionalBrokers>;

/**
 * The device policy in every region, as Terraform's aws_iot_policy makes it (infra/stack.ts), so
 * that the function runs with IOT_POLICY_MANAGED like the deployed one and never checks it.
 */
async function createDevicePolicies(awsEndpoint: string, regions: readonly string[], policyName: string) {
  await Promise.all(
    regions.map(async (region) => {
      const iot = new IoTClient({ endpoint: awsEndpoint, region, credentials: LOCAL_CREDENTIALS });
      await iot
        .send(new CreatePolicyCommand({ policyName, policyDocument: JSON.stringify(devicePolicyDocument()) }))
        .catch((error: Error) => {
          if (error.name !== 'ResourceAlreadyExistsException') throw error;
        });
    }),
  );
  progress(`device policy ${policyName} in ${regions.length} regions`);
}

const progress = (line: string) => appendFileSync(STACK_LOG, `${new Date().toISOString()} ${line}\n`);

function fileLogger(name: string): (line: string) => void {
  const stream = createWriteStream(path.join(LOGS_DIR, `${name}.log`), { flags: 'a' });
  return (line) => stream.write(`${new Date().toISOString()} ${line}\n`);
}

function startMoto(options: StackServerOptions, endpoints: Record<string, string>): Promise<ChildProcess> {
  const motoLog = createWriteStream(path.join(LOGS_DIR, 'moto.log'), { flags: 'a' });
  const child = spawn(
    options.pythonCommand,
    [
      path.join(REPO_ROOT, 'tests/local/moto_launcher.py'),
      '--port',
      String(options.ports.moto),
      '--ca-cert',
      options.caCertPath,
      '--ca-key',
      options.caKeyPath,
      '--endpoints',
      JSON.stringify(endpoints),
    ],
    { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  child.stderr?.pipe(motoLog);
  // moto may already be gone when we close its stdin at shutdown.
  child.stdin?.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    let buffered = '';
    let ready = false;
    child.stdout?.on('data', (chunk: Buffer) => {
      motoLog.write(chunk);
      if (ready) return;
      buffered += chunk.toString('utf8');
      if (buffered.includes('MOTO_READY')) {
        ready = true;
        resolve(child);
      }
    });
    child.once('error', (error) =>
      reject(new Error(`cannot start ${options.pythonCommand}: ${error.message}`)),
    );
    child.once('exit', (code, signal) => {
      if (!ready)
        reject(new Error(`moto exited before it was ready (code ${code}, signal ${signal}); see moto.log`));
    });
  });
}

async function bootstrap(
  awsEndpoint: string,
  region: string,
  tableName: string,
  parameterName: string,
  ipstackKey: string,
) {
  const clientConfig = { endpoint: awsEndpoint, region, credentials: LOCAL_CREDENTIALS };
  const dynamodb = new DynamoDBClient(clientConfig);
  try {
    await dynamodb.send(
      new CreateTableCommand({
        TableName: tableName,
        AttributeDefinitions: [{ AttributeName: 'thing_name', AttributeType: 'S' }],
        KeySchema: [{ AttributeName: 'thing_name', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    );
  } catch (error) {
    if (!(error instanceof ResourceInUseException)) throw error;
  }
  progress(`table ${tableName} ready in ${region}`);
  // The admission schedules (infra/admission.ts): one item per IoT region.
  const admissionTable = loadDeploymentConfig().admission.tableName;
  await dynamodb
    .send(
      new CreateTableCommand({
        TableName: admissionTable,
        AttributeDefinitions: [{ AttributeName: 'region', AttributeType: 'S' }],
        KeySchema: [{ AttributeName: 'region', KeyType: 'HASH' }],
        BillingMode: 'PAY_PER_REQUEST',
      }),
    )
    .catch((error: unknown) => {
      if (!(error instanceof ResourceInUseException)) throw error;
    });
  progress(`table ${admissionTable} ready in ${region}`);

  const kms = new KMSClient(clientConfig);
  const key = await kms.send(
    new CreateKeyCommand({
      Description: 'global-device-provisioning local: ipstack access key',
      KeyUsage: 'ENCRYPT_DECRYPT',
    }),
  );
  const kmsKeyId = key.KeyMetadata?.KeyId;
  if (!kmsKeyId) throw new Error('KMS CreateKey returned no key id');
  await kms.send(
    new CreateAliasCommand({ AliasName: 'alias/global-device-provisioning-local', TargetKeyId: kmsKeyId }),
  );
  const encrypted = await kms.send(
    new EncryptCommand({
      KeyId: kmsKeyId,
      Plaintext: Buffer.from(ipstackKey, 'utf8'),
      EncryptionContext: { ...IPSTACK_KEY_ENCRYPTION_CONTEXT },
    }),
  );
  if (!encrypted.CiphertextBlob) throw new Error('KMS Encrypt returned no ciphertext');
  const ssm = new SSMClient(clientConfig);
  await ssm.send(
    new PutParameterCommand({
      Name: parameterName,
      Type: 'String',
      Value: Buffer.from(encrypted.CiphertextBlob).toString('base64'),
      Overwrite: true,
    }),
  );
  progress(`KMS key ${kmsKeyId} and encrypted ipstack key in ${parameterName}`);
  // The symmetric key that seals generated device keys for answer recovery (answer-recovery.ts).
  const sealKey = await kms.send(
    new CreateKeyCommand({
      Description: 'global-device-provisioning local: seals generated device keys (answer recovery)',
      KeyUsage: 'ENCRYPT_DECRYPT',
    }),
  );
  const answerSealKeyId = sealKey.KeyMetadata?.Arn;
  if (!answerSealKeyId) throw new Error('KMS CreateKey returned no seal key ARN');
  progress(`KMS key ${answerSealKeyId} seals generated device keys`);
  return { kmsKeyId, answerSealKeyId };
}

async function loadBrokerModule(): Promise<StartRegionalBrokers | undefined> {
  // The MQTT data plane is another module's job; without it the rest of the stack still runs.
  const modulePath = path.join(__dirname, 'iot-data-plane');
  try {
    const loaded = (await import(modulePath)) as { startRegionalBrokers?: StartRegionalBrokers };
    return loaded.startRegionalBrokers;
  } catch (error) {
    progress(`MQTT brokers unavailable: ${(error as Error).message.split('\n')[0]}`);
    return undefined;
  }
}

async function main(): Promise<void> {
  const optionsFile = process.argv[2];
  if (!optionsFile) throw new Error('usage: stack-server.ts <server-options.json>');
  const options = JSON.parse(readFileSync(optionsFile, 'utf8')) as StackServerOptions;
  const deployment = loadDeploymentConfig();
  const regions = [...deployment.iotRegions];
  const mqttEndpoints = mqttEndpointsOf(options.ports);
  const closers: { name: string; close: () => Promise<void> }[] = [];
  let stopping = false;

  const stop = async (code: number) => {
    if (stopping) return;
    stopping = true;
    progress(`stopping (exit ${code})`);
    for (const { name, close } of closers.reverse()) {
      const started = Date.now();
      await close().catch(() => undefined);
      progress(`stopped ${name} (${Date.now() - started} ms)`);
    }
    process.exit(code);
  };
  process.on('SIGTERM', () => void stop(0));
  process.on('SIGINT', () => void stop(0));
  if (options.ownerPid) {
    const ownerPid = options.ownerPid;
    const ownerWatch = setInterval(() => {
      try {
        process.kill(ownerPid, 0);
      } catch {
        progress(`owner process ${ownerPid} is gone`);
        void stop(0);
      }
    }, 2_000);
    ownerWatch.unref();
  }

  progress(`starting moto on ${HOST}:${options.ports.moto}`);
  const moto = await startMoto(options, mqttEndpoints);
  closers.push({
    name: 'moto',
    close: async () => {
      moto.stdin?.end();
      moto.kill('SIGTERM');
    },
  });
  moto.once('exit', (code) => {
    progress(`moto exited (code ${code}); stopping the stack`);
    void stop(1);
  });
  const motoUrl = `http://${HOST}:${options.ports.moto}`;
  progress(`moto ready at ${motoUrl} (pid ${moto.pid})`);

  const proxy = await startAwsProxy({
    host: HOST,
    port: options.ports.awsProxy,
    target: motoUrl,
    logger: fileLogger('aws-proxy'),
  });
  closers.push({ name: 'AWS proxy', close: proxy.close });
  progress(`AWS proxy ready at ${proxy.url} (faults: ${proxy.faultsUrl})`);

  const ipstack = await startIpstackFake({
    host: HOST,
    port: options.ports.ipstack,
    accessKey: options.ipstackAccessKey,
    fixturesPath: options.fixturesPath,
    logger: fileLogger('ipstack'),
  });
  closers.push({ name: 'ipstack fake', close: ipstack.close });
  progress(`ipstack fake ready at ${ipstack.url}`);

  const { kmsKeyId, answerSealKeyId } = await bootstrap(
    proxy.url,
    deployment.homeRegion,
    deployment.tableName,
    deployment.ipstackKeyParameter,
    options.ipstackAccessKey,
  );

  const deviceCa = await createDeviceCa({
    awsEndpoint: proxy.url,
    homeRegion: deployment.homeRegion,
    regions,
    credentials: LOCAL_CREDENTIALS,
    pemPath: path.join(CA_DIR, 'device-ca.pem'),
  });
  progress(
    `device CA ${deviceCa.certificateId} (KMS key ${deviceCa.kmsKeyArn}) registered in ${regions.length} regions`,
  );

  await createDevicePolicies(proxy.url, regions, deployment.iotPolicyName);

  let mqttRunning = false;
  let mqttAlpnEndpoints: Record<string, string> = {};
  let watchUrl = `http://${HOST}:${options.ports.watch}`;
  const startRegionalBrokers = await loadBrokerModule();
  if (startRegionalBrokers) {
    try {
      const brokers = await startRegionalBrokers({
        regions,
        host: HOST,
        ports: options.ports.mqtt,
        alpnPorts: options.ports.mqttAlpn,
        hosts: options.ports.mqttHosts,
        awsEndpoint: proxy.url,
        caCertPem: readFileSync(options.caCertPath, 'utf8'),
        caKeyPem: readFileSync(options.caKeyPath, 'utf8'),
        watchPort: options.ports.watch,
        logger: fileLogger('mqtt'),
      });
      closers.push({ name: 'MQTT brokers', close: brokers.close });
      watchUrl = brokers.watchUrl;
      mqttAlpnEndpoints = brokers.alpnEndpoints;
      mqttRunning = true;
      progress(`MQTT brokers ready: ${Object.values(brokers.endpoints).join(' ')}`);
    } catch (error) {
      progress(`MQTT brokers failed to start: ${(error as Error).stack ?? String(error)}`);
    }
  }

  const environment: Record<string, string> = {
    ...(functionEnvironment(deployment, {
      fleetPublicKeyPem: readFileSync(options.fleetPublicKeyPath, 'utf8'),
      originVerifySecret: options.originVerifySecret,
      kmsKeyId,
      // What the local DescribeEndpoint answers, and the policies made above: a cold sandbox asks
      // AWS IoT for neither, as in AWS.
      iot: { endpoints: mqttEndpoints, policyManaged: true },
      answerSealKeyId,
    }) as Record<string, string>),
    IPSTACK_URL: ipstack.url,
    IPSTACK_KEY_PARAMETER: deployment.ipstackKeyParameter,
    AWS_ENDPOINT_URL: proxy.url,
    AWS_REGION: deployment.homeRegion,
    AWS_DEFAULT_REGION: deployment.homeRegion,
    AWS_ACCESS_KEY_ID: LOCAL_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: LOCAL_CREDENTIALS.secretAccessKey,
    AWS_EC2_METADATA_DISABLED: 'true',
    // Set here as well as by functionEnvironment(): the function must get exactly the PEM text
    // registered in every region, with newlines escaped like FLEET_PUBLIC_KEY.
    CA_KMS_KEY_ID: deviceCa.kmsKeyArn,
    CA_CERTIFICATE_PEM: deviceCa.pem.replace(/\r?\n/g, '\\n'),
  };
  // The handler reads its configuration once, when its module loads in a sandbox; sandboxes get
  // this environment on top of ours.
  Object.assign(process.env, environment);

  const edge = await startEdge({
    host: HOST,
    port: options.ports.edge,
    originVerifySecret: options.originVerifySecret,
    handlerModule: options.handlerModule,
    environment,
    kills: proxy.killSwitch,
    region: deployment.homeRegion,
    accountId: ACCOUNT_ID,
    functionTimeoutMs: deployment.function.timeoutSeconds * 1000,
    // `up --scale-out` (or LOCAL_EDGE_SCALE_OUT=1): every request runs at once, as Lambda scales out.
    scaleOut: process.env.LOCAL_EDGE_SCALE_OUT === '1',
    logger: fileLogger('edge'),
  });
  closers.push({ name: 'edge', close: edge.close });
  const init = await edge.sandboxes?.firstInit();
  if (init?.ok) {
    progress(`handler ${options.handlerModule} loaded in a sandbox (cold start ${init.coldStartMs} ms)`);
  } else if (init) {
    // Not fatal: the edge answers 500 and tries a fresh sandbox on the next request.
    progress(`WARNING handler ${options.handlerModule} failed to load: ${init.message.split('\n')[0]}`);
  }
  progress(
    `edge ready at ${edge.provisioningUrl}${process.env.LOCAL_EDGE_SCALE_OUT === '1' ? ' (scale-out: no sandbox cap)' : ''}`,
  );

  const stack: LocalStack = {
    provisioningUrl: edge.provisioningUrl,
    statusUrl: edge.statusUrl,
    renewUrl: edge.renewUrl,
    awsEndpoint: proxy.url,
    motoUrl,
    faultsUrl: proxy.faultsUrl,
    homeRegion: deployment.homeRegion,
    tableName: deployment.tableName,
    regions,
    defaultRegion: deployment.defaultRegion,
    iotPolicyName: deployment.iotPolicyName,
    fleetSigningKey: options.fleetSigningKeyPath,
    fleetPublicKey: options.fleetPublicKeyPath,
    ipstackUrl: ipstack.url,
    ipstackFixtures: options.fixturesPath,
    ipstackKeyParameter: deployment.ipstackKeyParameter,
    ipstackAccessKey: options.ipstackAccessKey,
    kmsKeyId,
    originVerifySecret: options.originVerifySecret,
    caCertificate: options.caCertPath,
    deviceCaCertificate: deviceCa.path,
    deviceCaKmsKeyId: deviceCa.kmsKeyArn,
    deviceCaCertificateId: deviceCa.certificateId,
    mqttEndpoints,
    mqttRunning,
    mqttAlpnEndpoints,
    watchUrl,
    handlerModule: options.handlerModule,
    functionEnvironment: environment,
    logs: LOGS_DIR,
    ports: options.ports,
    accountId: ACCOUNT_ID,
    pids: { stackServer: process.pid, moto: moto.pid ?? 0 },
    startedAt: new Date().toISOString(),
  };
  writeJsonAtomic(STACK_FILE, stack, 0o600);
  progress('READY');
}

main().catch((error: unknown) => {
  // One line for `up` to show; the stack trace goes to function.log (our stderr).
  progress(`FAILED: ${(error instanceof Error ? error.message : String(error)).split('\n')[0]}`);
  process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
