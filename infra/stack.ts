/**
 * The whole deployment as one Terraform stack:
 *   CloudFront → API Gateway HTTP API → provisioning Lambda (home region)
 *   registry table (home region, replicas in the other IoT regions), KMS key + SSM parameter
 *   for the ipstack key, the device CA (KMS signing key; its certificate registered in every
 *   enabled region), the device IoT policy in every enabled region, the scheduled reconciler,
 *   alarms, the operators' dashboard, outputs.
 *
 * Without a CA certificate (first deploy, or the first step of a CA rotation) it is the
 * bootstrap stack: the CA key and what `make init-ca` needs, nothing else (docs/deploy.md).
 *
 * Import provider resources one file at a time (never the @cdktf/provider-aws barrel: 7 s and
 * 750 MB to load).
 */
import { createPublicKey } from 'node:crypto';
import { dependable, Fn, LocalBackend, S3Backend, TerraformOutput, TerraformStack } from 'cdktf';
import type { Construct } from 'constructs';
import { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { DataAwsCallerIdentity } from '@cdktf/provider-aws/lib/data-aws-caller-identity';
import { DataAwsPartition } from '@cdktf/provider-aws/lib/data-aws-partition';
import { IotPolicy } from '@cdktf/provider-aws/lib/iot-policy';
import { DataAwsIotEndpoint } from '@cdktf/provider-aws/lib/data-aws-iot-endpoint';
import { PROVISIONING_PATH, RENEW_PATH, STATUS_PATH } from '../functions/provisioning/wire';
import { BOOTSTRAP_OUTPUT, DeploymentConfig, stackName } from './config';
import { devicePolicyDocument } from './device-policy';
import { functionRole, ProvisioningFunction } from './function';
import { RegistryTable } from './registry';
import { AdmissionTable } from './admission';
import { IpstackKeyStore } from './secrets';
import { AnswerSealKey } from './answer-seal-key';
import { Edge } from './edge';
import { Alarms } from './alarms';
import { Dashboard } from './dashboard';
import { escapeTerraformTemplate } from './terraform-strings';
import {
  CaCertificateToRegister,
  CaKeyWatch,
  caOperatorPolicy,
  DeviceCaKey,
  DeviceCaRegistrations,
} from './device-ca';
import { Reconciler } from './reconciler';
import { reconcilerServiceName } from './reconciler-environment';
import { parseCaCertificate } from '../functions/provisioning/certificate-authority';
import { iotEndpointSuffix } from '../functions/provisioning/iot-endpoints';

/** Terraform (or OpenTofu) that reads this JSON: use_lockfile needs 1.10. */
export const REQUIRED_TERRAFORM_VERSION = '>= 1.10.0';

export interface DeviceCaFiles {
  /** PEM of the CA certificate made by `make init-ca` for the current key (caCertificateFile). */
  readonly certificatePem: string;
  /** Where it came from, for error messages. */
  readonly source: string;
  /** Certificates of earlier CAs still registered while devices move on (caPreviousCertificates). */
  readonly previous?: ReadonlyArray<{
    readonly pem: string;
    readonly active: boolean;
    readonly source: string;
  }>;
}

export interface ProvisioningStackProps {
  readonly config: DeploymentConfig;
  /** The provisioning package: index.mjs exporting `handler` and its chunks/ (functions/build.ts). */
  readonly bundleDir: string;
  /** PEM text of the fleet's public key (v1 signatures). */
  readonly fleetPublicKeyPem: string;
  /** The reconciler's package, laid out the same way. */
  readonly reconcilerBundleDir: string;
  /** The device CA certificate(s); absent: synthesize the bootstrap stack (CA key only). */
  readonly deviceCa?: DeviceCaFiles;
  /**
   * Where the local state file goes, relative to cdktf.out/stacks/<stack> (where terraform runs).
   * Default: the repository root, so `make clean` (which removes cdktf.out) never deletes state.
   */
  readonly localStatePath?: string;
}

export class ProvisioningStack extends TerraformStack {
  readonly providers: ReadonlyMap<string, AwsProvider>;

  constructor(scope: Construct, props: ProvisioningStackProps) {
    const { config } = props;
    super(scope, stackName(config));
    assertPublicKey(props.fleetPublicKeyPem, config.fleetPublicKeyFile);
    this.configureBackend(config, props.localStatePath);

    const providers = this.createProviders(config);
    // "hashicorp/aws" means the same provider to Terraform and lets OpenTofu use its own registry.
    this.addOverride('terraform.required_providers.aws.source', 'hashicorp/aws');
    // 1.10: the S3 backend's own lock file (use_lockfile). OpenTofu 1.10 reads the same setting.
    this.addOverride('terraform.required_version', REQUIRED_TERRAFORM_VERSION);
    this.providers = providers;
    const home = providers.get(config.homeRegion) as AwsProvider;
    const account = new DataAwsCallerIdentity(this, 'account', { provider: home });
    const partition = new DataAwsPartition(this, 'partition', { provider: home });

    const caKey = new DeviceCaKey(this, {
      config,
      provider: home,
      accountId: account.accountId,
      partition: partition.partition,
    });
    // Earlier CAs' keys stay; disabled once the function signs with the current key (full stack).
    const retiredCaKeys = config.caRetiredKmsKeyAliases.map(
      (alias) =>
        new DeviceCaKey(this, {
          config,
          provider: home,
          accountId: account.accountId,
          partition: partition.partition,
          retiredAlias: alias,
          disabled: props.deviceCa !== undefined,
        }),
    );
    const caOperator = caOperatorPolicy(this, config, home, caKey.key.arn);
    new TerraformOutput(this, 'device_ca_key_alias', { value: caKey.alias.name });
    new TerraformOutput(this, 'device_ca_operator_policy_arn', {
      description: 'Attach to the role operators use for make init-ca',
      value: caOperator.arn,
    });
    if (!props.deviceCa) {
      new TerraformOutput(this, BOOTSTRAP_OUTPUT, {
        description: 'Bootstrap stack: only the CA key exists',
        value: `next: make init-ca, commit ${config.caCertificateFile}, make deploy`,
      });
      return;
    }
    const caCertificates = deviceCaCertificates(props.deviceCa);
    const caCertificatePem = caCertificates[0]!.pem;

    const registry = new RegistryTable(this, 'registry', { config, provider: home });
    const admission = new AdmissionTable(this, 'admission', { config, provider: home });
    const role = functionRole(this, config, home);
    const ipstackKey = new IpstackKeyStore(this, 'ipstack-key', {
      config,
      provider: home,
      accountId: account.accountId,
      partition: partition.partition,
      functionRoleArn: role.arn,
    });
    const answerSealKey = new AnswerSealKey(this, 'answer-seal-key', {
      config,
      provider: home,
      accountId: account.accountId,
      partition: partition.partition,
      functionRoleArn: role.arn,
    });
    const caRegistrations = new DeviceCaRegistrations(this, 'device-ca', {
      config,
      providers,
      certificates: caCertificates,
    }).registrations;
    // Per region, what a cold container would otherwise ask AWS IoT for (DescribeEndpoint,
    // GetPolicy): under a storm, hundreds of fresh containers each would, outside the admission
    // budget. Terraform creates the device policy and reads the endpoint once per deploy instead.
    // Terraform would read ${iot:...} policy variables as its own interpolation: escape them.
    const devicePolicy = escapeTerraformTemplate(JSON.stringify(devicePolicyDocument()));
    const devicePolicies: IotPolicy[] = [];
    const iotEndpoints: Record<string, string> = {};
    for (const region of config.iotRegions) {
      const provider = providers.get(region);
      devicePolicies.push(
        new IotPolicy(this, `device-policy-${region}`, {
          provider,
          name: config.iotPolicyName,
          policy: devicePolicy,
        }),
      );
      const endpoint = new DataAwsIotEndpoint(this, `iot-endpoint-${region}`, {
        provider,
        endpointType: 'iot:Data-ATS',
      });
      // Only the account's prefix travels (IOT_ENDPOINTS is compact: Lambda's 4 KB for all variables).
      iotEndpoints[region] = Fn.replace(endpoint.endpointAddress, iotEndpointSuffix(region), '');
    }
    const fn = new ProvisioningFunction(this, 'function', {
      config,
      provider: home,
      role,
      bundleDir: props.bundleDir,
      fleetPublicKeyPem: props.fleetPublicKeyPem,
      accountId: account.accountId,
      partition: partition.partition,
      tableArn: registry.table.arn,
      admissionTableArn: admission.table.arn,
      kmsKeyArn: ipstackKey.key.arn,
      ipstackKeyParameterArn: ipstackKey.parameter.arn,
      caKeyArn: caKey.key.arn,
      caCertificatePem,
      answerSealKeyArn: answerSealKey.key.arn,
      caRegistrations,
      iotEndpoints,
      devicePolicies,
    });
    // A retired key is disabled only after the function has moved to the current key.
    for (const retired of retiredCaKeys) retired.key.dependsOn = [dependable(fn.function)];
    const reconciler = new Reconciler(this, 'reconciler', {
      config,
      provider: home,
      bundleDir: props.reconcilerBundleDir,
      accountId: account.accountId,
      partition: partition.partition,
      tableArn: registry.table.arn,
      caCertificatePem,
      caRegistrations,
    });

    const edge = new Edge(this, 'edge', {
      config,
      provider: home,
      certificateProvider: providers.get('us-east-1') as AwsProvider,
      function: fn.function,
      originVerifySecret: fn.originVerifySecret,
    });
    const alarms = new Alarms(this, 'alarms', {
      config,
      provider: home,
      edgeProvider: providers.get('us-east-1') as AwsProvider,
      accountId: account.accountId,
      apiId: edge.api.id,
      stageName: edge.stage.name,
      accessLogGroupName: edge.accessLogs.name,
      webAclName: edge.webAcl.name,
      rateRuleMetricName: edge.rateRuleMetricName,
      functionName: fn.function.functionName,
      reconcilerFunctionName: reconciler.function.functionName,
      reconcilerServiceName: reconcilerServiceName(config),
    });
    new CaKeyWatch(this, 'ca-key-watch', {
      config,
      provider: home,
      keyArns: [caKey.key.arn, ...retiredCaKeys.map((retired) => retired.key.arn)],
      accountId: account.accountId,
      partition: partition.partition,
      topicArn: alarms.topic.arn,
    });
    new Dashboard(this, 'dashboard', {
      config,
      provider: home,
      functionName: fn.function.functionName,
      reconcilerServiceName: reconcilerServiceName(config),
    });

    new TerraformOutput(this, 'provisioning_url', {
      description: 'The one URL devices POST to on first boot',
      value: `https://${edge.publicDomainName}${PROVISIONING_PATH}`,
    });
    new TerraformOutput(this, 'status_url', {
      description: 'Provisioned devices POST here to learn whether to renew, move or re-provision',
      value: `https://${edge.publicDomainName}${STATUS_PATH}`,
    });
    new TerraformOutput(this, 'renew_url', {
      description: 'Provisioned devices POST here for a new certificate when status says renew',
      value: `https://${edge.publicDomainName}${RENEW_PATH}`,
    });
    new TerraformOutput(this, 'table_name', { value: registry.table.name });
    new TerraformOutput(this, 'kms_key_alias', { value: ipstackKey.alias.name });
    new TerraformOutput(this, 'ipstack_key_parameter', { value: ipstackKey.parameter.name });
    new TerraformOutput(this, 'ipstack_key_rotator_policy_arn', {
      description: 'Attach to the role security engineers use for make rotate-ipstack-key',
      value: ipstackKey.rotatorPolicy.arn,
    });
    new TerraformOutput(this, 'function_name', { value: fn.function.functionName });
    new TerraformOutput(this, 'cloudfront_domain_name', { value: edge.distribution.domainName });
    new TerraformOutput(this, 'reconciler_function_name', { value: reconciler.function.functionName });
    new TerraformOutput(this, 'device_ca_certificate_id', { value: caCertificates[0]!.id });
    new TerraformOutput(this, 'home_region', { value: config.homeRegion });
    new TerraformOutput(this, 'iot_regions', { value: config.iotRegions });
  }

  private configureBackend(config: DeploymentConfig, localStatePath: string | undefined): void {
    const state = config.terraformState;
    if (!state) {
      new LocalBackend(this, { path: localStatePath ?? `../../../terraform.${stackName(config)}.tfstate` });
      return;
    }
    new S3Backend(this, {
      bucket: state.bucket,
      key: state.key,
      region: state.region,
      encrypt: true,
      dynamodbTable: state.dynamodbTable,
    });
    // Terraform ≥ 1.10 locks with a lock object in the bucket; no lock table needed.
    if (!state.dynamodbTable) this.addOverride('terraform.backend.s3.use_lockfile', true);
  }

  /**
   * One AWS provider per region: home (the default provider), every IoT region, us-east-1 for
   * CloudFront's WAF web ACL and ACM certificate. Each refuses any account but expectedAccountId,
   * so the wrong AWS_PROFILE cannot plan a second deployment into another account.
   */
  private createProviders(config: DeploymentConfig): Map<string, AwsProvider> {
    const regions = new Set([config.homeRegion, ...config.iotRegions, 'us-east-1']);
    const providers = new Map<string, AwsProvider>();
    for (const region of regions) {
      providers.set(
        region,
        new AwsProvider(this, `aws-${region}`, {
          region,
          alias: region === config.homeRegion ? undefined : region,
          defaultTags: [{ tags: { Application: config.appName, ManagedBy: 'cdktf' } }],
          allowedAccountIds: config.expectedAccountId ? [config.expectedAccountId] : undefined,
        }),
      );
    }
    return providers;
  }
}

/** Parses every CA certificate (current first); throws naming the file that is wrong. */
function deviceCaCertificates(files: DeviceCaFiles): CaCertificateToRegister[] {
  const parse = (pem: string, source: string, active: boolean): CaCertificateToRegister => {
    let certificate;
    try {
      certificate = parseCaCertificate(pem);
    } catch (error) {
      throw new Error(`CA certificate ${source} is not one PEM certificate: ${(error as Error).message}`, {
        cause: error,
      });
    }
    if (certificate.notAfter.getTime() <= Date.now()) {
      throw new Error(`CA certificate ${source} expired on ${certificate.notAfter.toISOString()}`);
    }
    return { id: certificate.id, pem: certificate.pem, active };
  };
  const all = [
    parse(files.certificatePem, files.source, true),
    ...(files.previous ?? []).map((previous) => parse(previous.pem, previous.source, previous.active)),
  ];
  if (new Set(all.map((certificate) => certificate.id)).size !== all.length) {
    throw new Error('the same CA certificate is listed twice (caCertificateFile, caPreviousCertificates)');
  }
  return all;
}

function assertPublicKey(pem: string, source: string): void {
  try {
    createPublicKey(pem);
  } catch (error) {
    throw new Error(`fleet public key (${source}) is not a PEM public key: ${(error as Error).message}`, {
      cause: error,
    });
  }
}
