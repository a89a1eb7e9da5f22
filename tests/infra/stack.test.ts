import {
  FUNCTION_ENVIRONMENT,
  IPSTACK_KEY_ENCRYPTION_CONTEXT,
  IPSTACK_KEY_UNSET,
  loadConfig,
  ORIGIN_VERIFY_HEADER,
} from '../../functions/provisioning/config';
import { BUNDLE_ENTRY_FILE } from '../../functions/bundle-layout';
import { IOT_REGION_CATALOGUE } from '../../functions/provisioning/regions';
import { apiThrottle, loadDeploymentConfig } from '../../infra/config';
import { devicePolicyDocument } from '../../infra/device-policy';
import { API_ROUTE_PATHS, CACHING_DISABLED_POLICY_ID } from '../../infra/edge';
import { IOT_UNSCOPABLE_ACTIONS } from '../../infra/function';
import { functionEnvironment } from '../../infra/function-environment';
import { unescapeTerraformTemplate } from '../../infra/terraform-strings';
import { ROUTE_PATHS as LOCAL_EDGE_ROUTE_PATHS } from '../local/edge';
import {
  all,
  behaviourFor,
  byId,
  distributionBehaviours,
  list,
  only,
  statements,
  synthesize,
  TEST_CA_CERTIFICATE,
  TEST_FLEET_PUBLIC_KEY,
} from './synth';

const config = loadDeploymentConfig();
const { json } = synthesize();

describe('registry table', () => {
  const table = byId(json, 'aws_dynamodb_table', 'registry');

  it('keeps the sample key schema, on demand, with PITR, deletion protection, SSE and TTL', () => {
    expect(table).toMatchObject({
      name: config.tableName,
      hash_key: 'thing_name',
      attribute: [{ name: 'thing_name', type: 'S' }],
      billing_mode: 'PAY_PER_REQUEST',
      point_in_time_recovery: { enabled: true },
      deletion_protection_enabled: true,
      server_side_encryption: { enabled: true },
      ttl: { attribute_name: 'expires_at', enabled: true },
      stream_enabled: true,
    });
    expect(table.provider).toBe('aws');
  });

  it('replicates to every enabled IoT region except the home one', () => {
    const replicas = (table.replica as Array<{ region_name: string; point_in_time_recovery: boolean }>).map(
      (replica) => replica.region_name,
    );
    expect(replicas.sort()).toEqual(
      config.iotRegions.filter((region) => region !== config.homeRegion).sort(),
    );
    expect(replicas).not.toContain(config.homeRegion);
  });
});

describe('providers and IoT policies', () => {
  it('has one aws provider per region: home (default) and each IoT region (alias)', () => {
    const providers = json.provider.aws;
    const regions = providers.map((provider) => provider.region);
    expect(new Set(regions)).toEqual(new Set([config.homeRegion, ...config.iotRegions]));
    expect(regions).toHaveLength(new Set(regions).size);
    expect(providers.filter((provider) => !provider.alias).map((provider) => provider.region)).toEqual([
      config.homeRegion,
    ]);
  });

  it('declares hashicorp/aws so the JSON also works with OpenTofu', () => {
    expect(json.terraform.required_providers.aws?.source).toBe('hashicorp/aws');
  });

  it('creates the device policy, the document the function also uses, in every enabled region', () => {
    const policies = all(json, 'aws_iot_policy');
    const providerRegion = (provider: string) =>
      provider === 'aws' ? config.homeRegion : provider.replace(/^aws\./, '');
    expect(policies.map((policy) => providerRegion(policy.provider as string)).sort()).toEqual(
      [...config.iotRegions].sort(),
    );
    for (const policy of policies) {
      expect(policy.name).toBe(config.iotPolicyName);
      // Escaped for Terraform ($${iot:...}); AWS receives exactly devicePolicyDocument().
      expect(policy.policy).toContain('$${iot:Connection.Thing.ThingName}');
      expect(JSON.parse(unescapeTerraformTemplate(policy.policy as string))).toEqual(devicePolicyDocument());
    }
  });

  it("reads each region's ATS data endpoint and hands it to the function, with the policies already made", () => {
    const endpoints = Object.entries(json.data.aws_iot_endpoint ?? {});
    expect(endpoints.map(([, endpoint]) => endpoint.provider).sort()).toEqual(
      config.iotRegions.map((region) => (region === config.homeRegion ? 'aws' : `aws.${region}`)).sort(),
    );
    for (const [, endpoint] of endpoints) expect(endpoint.endpoint_type).toBe('iot:Data-ATS');
    const fn = byId(json, 'aws_lambda_function', 'function');
    const variables = (fn.environment as { variables: Record<string, string> }).variables;
    // Only the account's prefix travels: the function adds .iot.<region>.amazonaws.com back.
    expect(variables.IOT_ENDPOINTS).toBe(
      config.iotRegions
        .map(
          (region) =>
            `${region}=\${replace(data.aws_iot_endpoint.iot-endpoint-${region}.endpoint_address, ".iot.${region}.amazonaws.com", "")}`,
        )
        .join(','),
    );
    expect(variables.IOT_POLICY_MANAGED).toBe('true');
    for (const region of config.iotRegions)
      expect(fn.depends_on).toContain(`aws_iot_policy.device-policy-${region}`);
  });
});

describe('ipstack key secrecy', () => {
  it('rotates the KMS key and names it with the configured alias', () => {
    expect(byId(json, 'aws_kms_key', 'ipstack-key').enable_key_rotation).toBe(true);
    expect(byId(json, 'aws_kms_alias', 'ipstack-key').name).toBe(config.kmsKeyAlias);
  });

  it('lets the function role decrypt only with the ipstack encryption context (key policy)', () => {
    const keyPolicy = statements(byId(json, 'aws_kms_key', 'ipstack-key').policy);
    const forFunction = keyPolicy.find((statement) =>
      statement.Principal?.AWS?.includes('aws_iam_role.function-role'),
    );
    expect(forFunction).toMatchObject({ Action: 'kms:Decrypt' });
    expect(forFunction?.Condition?.StringEquals).toEqual(
      Object.fromEntries(
        Object.entries(IPSTACK_KEY_ENCRYPTION_CONTEXT).map(([k, v]) => [`kms:EncryptionContext:${k}`, v]),
      ),
    );
  });

  it('creates the ciphertext parameter as a placeholder that Terraform never reads back', () => {
    expect(only(json, 'aws_ssm_parameter')).toMatchObject({
      name: config.ipstackKeyParameter,
      type: 'String',
      value: IPSTACK_KEY_UNSET,
      lifecycle: { ignore_changes: ['value'] },
    });
  });

  it('never puts a plaintext through Terraform (no aws_kms_ciphertext, no kms secrets data source)', () => {
    expect(json.resource.aws_kms_ciphertext).toBeUndefined();
    expect(json.data?.aws_kms_secrets).toBeUndefined();
    expect(json.data?.aws_kms_ciphertext).toBeUndefined();
  });
});

describe('edge', () => {
  const distribution = only(json, 'aws_cloudfront_distribution') as Record<string, unknown> & {
    default_cache_behavior: Record<string, unknown>;
    origin: Array<
      Record<string, unknown> & {
        custom_origin_config: Record<string, unknown>;
        custom_header: Array<{ name: string; value: string }>;
      }
    >;
    viewer_certificate: Record<string, unknown>;
  };

  it('serves HTTPS only, to the viewer and to the origin', () => {
    expect(distribution.default_cache_behavior.viewer_protocol_policy).toBe('https-only');
    expect(distribution.origin[0]?.custom_origin_config).toMatchObject({
      origin_protocol_policy: 'https-only',
      origin_ssl_protocols: ['TLSv1.2'],
    });
  });

  it('never caches and allows POST', () => {
    expect(distribution.default_cache_behavior.cache_policy_id).toBe(CACHING_DISABLED_POLICY_ID);
    expect(distribution.default_cache_behavior.allowed_methods).toContain('POST');
  });

  it('forwards the viewer geolocation headers by whitelist, and not Host', () => {
    const policy = only(json, 'aws_cloudfront_origin_request_policy') as {
      headers_config: { header_behavior: string; headers: { items: string[] } };
    };
    expect(policy.headers_config.header_behavior).toBe('whitelist');
    const headers = policy.headers_config.headers.items.map((header) => header.toLowerCase());
    expect(headers).toEqual(
      expect.arrayContaining([
        'cloudfront-viewer-latitude',
        'cloudfront-viewer-longitude',
        'cloudfront-viewer-country',
        'cloudfront-viewer-address',
      ]),
    );
    expect(headers).not.toContain('host');
    expect(distribution.default_cache_behavior.origin_request_policy_id).toContain(
      'aws_cloudfront_origin_request_policy.',
    );
  });

  it('sends the origin secret that the function checks', () => {
    const header = distribution.origin[0]?.custom_header.find((h) => h.name === ORIGIN_VERIFY_HEADER);
    const environment = (
      byId(json, 'aws_lambda_function', 'function').environment as { variables: Record<string, string> }
    ).variables;
    expect(header?.value).toMatch(/^\$\{random_password\..+\.result\}$/);
    expect(environment.ORIGIN_VERIFY_SECRET).toBe(header?.value);
    expect(only(json, 'random_password')).toMatchObject({ length: 48, special: false });
  });

  it('routes POST /device-provisioning, /device-status and /device-renew to one integration, payload 2.0', () => {
    const routes = all(json, 'aws_apigatewayv2_route');
    expect(routes.map((route) => route.route_key).sort()).toEqual(
      ['POST /device-provisioning', 'POST /device-renew', 'POST /device-status'].sort(),
    );
    const integration = Object.keys(json.resource.aws_apigatewayv2_integration ?? {});
    expect(integration).toHaveLength(1);
    for (const route of routes)
      expect(route.target).toBe(`integrations/\${aws_apigatewayv2_integration.${integration[0]}.id}`);
    expect(only(json, 'aws_apigatewayv2_integration')).toMatchObject({
      integration_type: 'AWS_PROXY',
      payload_format_version: '2.0',
      integration_uri: expect.stringMatching(/^\$\{aws_lambda_function\.function_.+\.invoke_arn\}$/),
    });
  });

  it('declares the routes the local edge serves (tests/local/edge.ts ROUTE_PATHS)', () => {
    const synthesized = all(json, 'aws_apigatewayv2_route').map((route) =>
      String(route.route_key).replace(/^POST /, ''),
    );
    expect([...LOCAL_EDGE_ROUTE_PATHS].sort()).toEqual([...API_ROUTE_PATHS].sort());
    expect([...LOCAL_EDGE_ROUTE_PATHS].sort()).toEqual(synthesized.sort());
  });

  it('keeps the provisioning route and permission at their addresses (no replacement on upgrade)', () => {
    // A new logical id means destroy and create: devices would meet 404 or 500 in between.
    const routeIds = Object.entries(json.resource.aws_apigatewayv2_route ?? {});
    const permissionIds = Object.entries(json.resource.aws_lambda_permission ?? {});
    expect(routeIds.find(([, route]) => route.route_key === 'POST /device-provisioning')?.[0]).toBe(
      'edge_route_754F58BF',
    );
    expect(
      permissionIds.find(([, permission]) => permission.statement_id === 'AllowApiGatewayInvoke')?.[0],
    ).toBe('edge_invoke_4E3E9879');
  });

  it('lets API Gateway invoke the function for each route and nothing else', () => {
    const permissions = all(json, 'aws_lambda_permission').filter(
      (permission) => permission.principal === 'apigateway.amazonaws.com',
    );
    const api = Object.keys(json.resource.aws_apigatewayv2_api ?? {})[0];
    expect(permissions.map((permission) => permission.source_arn).sort()).toEqual(
      API_ROUTE_PATHS.map((path) => `\${aws_apigatewayv2_api.${api}.execution_arn}/*/POST${path}`).sort(),
    );
    for (const permission of permissions) {
      expect(permission).toMatchObject({
        action: 'lambda:InvokeFunction',
        function_name: expect.stringMatching(/^\$\{aws_lambda_function\.function_.+\.function_name\}$/),
      });
    }
    expect(new Set(permissions.map((permission) => permission.statement_id)).size).toBe(permissions.length);
  });

  it('throttles the stage, and /device-status on its own limits once its route exists', () => {
    const stage = only(json, 'aws_apigatewayv2_stage');
    expect(stage).toMatchObject({
      name: '$default',
      auto_deploy: true,
      default_route_settings: {
        // Sized from the admission budgets (tests/infra/admission.test.ts).
        throttling_rate_limit: apiThrottle(config).ratePerSecond,
        throttling_burst_limit: apiThrottle(config).burst,
      },
      route_settings: [
        {
          route_key: 'POST /device-status',
          throttling_rate_limit: config.api.statusThrottleRatePerSecond,
          throttling_burst_limit: config.api.statusThrottleBurst,
        },
      ],
      access_log_settings: { destination_arn: expect.stringContaining('aws_cloudwatch_log_group.') },
    });
    // API Gateway refuses route settings naming a route key it does not have yet.
    const routes = Object.keys(json.resource.aws_apigatewayv2_route ?? {}).map(
      (id) => `aws_apigatewayv2_route.${id}`,
    );
    expect([...(stage.depends_on as string[])].sort()).toEqual(routes.sort());
  });

  it('takes the status limits from the deployment config', () => {
    const custom = synthesize({
      api: { ...config.api, statusThrottleRatePerSecond: 7, statusThrottleBurst: 11 },
    }).json;
    expect(only(custom, 'aws_apigatewayv2_stage').route_settings).toEqual([
      { route_key: 'POST /device-status', throttling_rate_limit: 7, throttling_burst_limit: 11 },
    ]);
  });

  it('passes POST on every route to the API uncached, with the origin secret', () => {
    const behaviours = distributionBehaviours(distribution);
    for (const path of API_ROUTE_PATHS) {
      const behaviour = behaviourFor(behaviours, path);
      expect(behaviour).toMatchObject({
        viewer_protocol_policy: 'https-only',
        cache_policy_id: CACHING_DISABLED_POLICY_ID,
        origin_request_policy_id: expect.stringContaining('aws_cloudfront_origin_request_policy.'),
      });
      expect(behaviour.allowed_methods).toContain('POST');
      const origin = distribution.origin.find((each) => each.origin_id === behaviour.target_origin_id);
      expect(origin?.domain_name).toContain('aws_apigatewayv2_api.');
      expect(origin?.custom_header.map((header) => header.name)).toContain(ORIGIN_VERIFY_HEADER);
    }
  });

  it('finds the behaviour CloudFront would apply, so an ordered one that caught a route would fail the check above', () => {
    const fallback = {
      target_origin_id: 'api',
      viewer_protocol_policy: 'https-only',
      allowed_methods: ['POST'],
    };
    const readOnly = { ...fallback, path_pattern: 'device-*', allowed_methods: ['GET', 'HEAD'] };
    const behaviours = [readOnly, fallback];
    expect(behaviourFor(behaviours, '/device-status')).toBe(readOnly);
    expect(behaviourFor(behaviours, '/provision')).toBe(fallback);
    const oneCharacter = { ...readOnly, path_pattern: '/device-?enew' };
    expect(behaviourFor([oneCharacter, fallback], '/device-renew')).toBe(oneCharacter);
    expect(behaviourFor([oneCharacter, fallback], '/device-status')).toBe(fallback);
  });

  it('uses the default certificate without a custom domain (CloudFront then allows TLSv1)', () => {
    expect(distribution.viewer_certificate).toEqual({ cloudfront_default_certificate: true });
  });
});

describe('edge with a custom domain', () => {
  const custom = synthesize({
    customDomain: { domainName: 'provision.example.com', hostedZoneId: 'Z0123456789ABC' },
  }).json;
  const distribution = only(custom, 'aws_cloudfront_distribution') as {
    aliases: string[];
    viewer_certificate: Record<string, unknown>;
  };

  it('floors TLS at 1.2 with an SNI ACM certificate from us-east-1', () => {
    expect(distribution.aliases).toEqual(['provision.example.com']);
    expect(distribution.viewer_certificate).toMatchObject({
      minimum_protocol_version: 'TLSv1.2_2021',
      ssl_support_method: 'sni-only',
    });
    expect(only(custom, 'aws_acm_certificate')).toMatchObject({
      domain_name: 'provision.example.com',
      validation_method: 'DNS',
      provider: 'aws.us-east-1',
    });
    expect(custom.provider.aws.map((provider) => provider.region)).toContain('us-east-1');
  });

  it('publishes the custom domain in the provisioning, status and renew URLs', () => {
    expect(custom.output.provisioning_url?.value).toBe('https://provision.example.com/device-provisioning');
    expect(custom.output.status_url?.value).toBe('https://provision.example.com/device-status');
    expect(custom.output.renew_url?.value).toBe('https://provision.example.com/device-renew');
  });
});

describe('function', () => {
  const fn = byId(json, 'aws_lambda_function', 'function');
  const environment = (fn.environment as { variables: Record<string, string> }).variables;

  it('runs the bundle on Node.js 22, arm64, with the configured size and limits', () => {
    expect(fn).toMatchObject({
      runtime: 'nodejs22.x',
      architectures: ['arm64'],
      handler: 'index.handler',
      memory_size: config.function.memoryMb,
      timeout: config.function.timeoutSeconds,
      reserved_concurrent_executions: config.function.reservedConcurrency ?? -1,
    });
    expect(fn.filename).toMatch(/^assets\/.+\.zip$/);
  });

  it('names the ES module entry of the package in its handler setting (index.handler → index.mjs)', () => {
    expect(`${String(fn.handler).split('.')[0]}.mjs`).toBe(BUNDLE_ENTRY_FILE);
  });

  it('keeps its logs for the configured retention', () => {
    const groups = all(json, 'aws_cloudwatch_log_group');
    expect(groups.find((group) => group.name === `/aws/lambda/${config.appName}`)?.retention_in_days).toBe(
      config.function.logRetentionDays,
    );
  });

  it('sets only variables the function reads, and every required one', () => {
    const known = Object.keys(FUNCTION_ENVIRONMENT);
    for (const name of Object.keys(environment)) expect(known).toContain(name);
    const required = Object.entries(FUNCTION_ENVIRONMENT)
      .filter(([, need]) => need === 'required')
      .map(([name]) => name);
    for (const name of required) expect(environment[name]).toBeTruthy();
  });

  it('sets exactly the environment functionEnvironment() describes (the set the local stack shares)', () => {
    const expected = functionEnvironment(config, {
      fleetPublicKeyPem: 'x',
      originVerifySecret: 'y',
      kmsKeyId: 'z',
      ca: { kmsKeyId: 'k', certificatePem: 'c' },
      iot: { endpoints: { 'us-east-2': 'e' }, policyManaged: true },
      answerSealKeyId: 'a',
    });
    expect(Object.keys(environment).sort()).toEqual(Object.keys(expected).sort());
    expect(environment.IOT_REGIONS).toBe(config.iotRegions.join(','));
    expect(environment.REGISTRY_REGION).toBe(config.homeRegion);
  });

  it('gives the function the CA key ARN, the CA certificate on one line and the certificate settings', () => {
    expect(environment.CA_KMS_KEY_ID).toMatch(/^\$\{aws_kms_key\.device-ca-key-[0-9a-f]{8}_key_.+\.arn\}$/);
    expect(environment.CA_CERTIFICATE_PEM).toBe(TEST_CA_CERTIFICATE.trim().replace(/\n/g, '\\n'));
    expect(environment).toMatchObject({
      CERTIFICATE_VALIDITY_DAYS: String(config.certificates.validityDays),
      GENERATED_KEY_TYPE: config.certificates.generatedKeyType,
      REISSUE_LIMIT: String(config.certificates.reissueLimit),
      LEASE_SECONDS: String(config.leaseSeconds),
    });
  });

  it("fits Lambda's 4 KB environment limit once Terraform fills in the references, every region enabled", () => {
    const everyRegion = IOT_REGION_CATALOGUE.filter((site) => !site.optIn).map((site) => site.region);
    expect(everyRegion.length).toBeGreaterThanOrEqual(config.iotRegions.length);
    const synthesized = synthesize({ iotRegions: everyRegion }).json;
    const variables = (
      byId(synthesized, 'aws_lambda_function', 'function').environment as {
        variables: Record<string, string>;
      }
    ).variables;
    // Each reference at its longest plausible value. An ATS endpoint's prefix is 14 characters
    // and "-ats" (a1b2c3d4e5f6g7-ats.iot.<region>.amazonaws.com); replace() keeps only that.
    const estimates: ReadonlyArray<readonly [RegExp, string]> = [
      [/^replace\(data\.aws_iot_endpoint\./, `${'x'.repeat(14)}-ats`],
      [/^random_password\..+\.result$/, 'a'.repeat(48)],
      [
        /^aws_kms_key\..+\.arn$/,
        'arn:aws:kms:ap-southeast-2:123456789012:key/00000000-0000-0000-0000-000000000000',
      ],
    ];
    const resolve = (value: string) =>
      value.replace(/\$\{([^}]*)\}/g, (_token, expression: string) => {
        const estimate = estimates.find(([pattern]) => pattern.test(expression));
        if (!estimate) throw new Error(`no length estimate for the reference \${${expression}}`);
        return estimate[1];
      });
    const bytes = Object.entries(variables).reduce(
      (total, [name, value]) => total + Buffer.byteLength(name) + Buffer.byteLength(resolve(value)),
      0,
    );
    expect(bytes).toBeLessThan(4096);
  });

  it('gives the function the lifecycle settings of deployment.json, which it reads as such', () => {
    const resolved = functionEnvironment(config, {
      fleetPublicKeyPem: TEST_FLEET_PUBLIC_KEY,
      originVerifySecret: 'a'.repeat(48),
      kmsKeyId: 'arn:aws:kms:us-east-2:123456789012:key/00000000-0000-0000-0000-000000000000',
      ca: {
        kmsKeyId: 'arn:aws:kms:us-east-2:123456789012:key/11111111-1111-1111-1111-111111111111',
        certificatePem: TEST_CA_CERTIFICATE,
      },
    });
    expect(environment).toMatchObject({
      RENEW_AT_PERCENT: String(config.certificates.renewAtPercent),
      RENEW_GRACE_SECONDS: String(config.certificates.renewGraceSeconds),
      RENEW_MIN_INTERVAL_SECONDS: String(config.certificates.renewMinIntervalSeconds),
      STATUS_MIN_INTERVAL_SECONDS: String(config.certificates.statusMinIntervalSeconds),
    });
    expect(loadConfig(resolved).lifecycle).toEqual({
      renewAtPercent: config.certificates.renewAtPercent,
      renewGraceSeconds: config.certificates.renewGraceSeconds,
      renewMinIntervalSeconds: config.certificates.renewMinIntervalSeconds,
      statusMinIntervalSeconds: config.certificates.statusMinIntervalSeconds,
    });
  });

  it('passes an environment the function accepts at cold start', () => {
    const resolved = functionEnvironment(config, {
      fleetPublicKeyPem: TEST_FLEET_PUBLIC_KEY,
      originVerifySecret: 'a'.repeat(48),
      kmsKeyId: 'arn:aws:kms:us-east-2:123456789012:key/00000000-0000-0000-0000-000000000000',
      ca: {
        kmsKeyId: 'arn:aws:kms:us-east-2:123456789012:key/11111111-1111-1111-1111-111111111111',
        certificatePem: TEST_CA_CERTIFICATE,
      },
      // As Terraform resolves them: each region's prefix alone.
      iot: {
        endpoints: Object.fromEntries(config.iotRegions.map((region) => [region, 'a1b2c3d4e5f6g7-ats'])),
        policyManaged: true,
      },
    });
    const loaded = loadConfig(resolved);
    expect(loaded.regions.map((site) => site.region)).toEqual(config.iotRegions);
    expect(loaded.ipstack?.keyParameter).toBe(config.ipstackKeyParameter);
    expect(loaded.ipstack?.keyCacheSeconds).toBe(config.ipstackKeyCacheSeconds);
    expect(loaded.iotPolicyManaged).toBe(true);
    expect(loaded.iotEndpoints[config.homeRegion]).toBe(
      `a1b2c3d4e5f6g7-ats.iot.${config.homeRegion}.amazonaws.com`,
    );
  });
});

describe('function IAM', () => {
  const policy = statements(byId(json, 'aws_iam_role_policy', 'function').policy);
  const byAction = (action: string) => policy.filter((statement) => list(statement.Action).includes(action));

  it('uses "*" only for the IoT actions AWS cannot scope, limited to the enabled regions', () => {
    const unscoped = policy.filter((statement) => list(statement.Resource).includes('*'));
    expect(unscoped).toHaveLength(1);
    expect(list(unscoped[0]!.Action).sort()).toEqual([...IOT_UNSCOPABLE_ACTIONS].sort());
    expect(unscoped[0]!.Condition).toEqual({ StringEquals: { 'aws:RequestedRegion': config.iotRegions } });
    for (const statement of policy) {
      for (const resource of list(statement.Resource))
        expect(resource === '*' || !resource.startsWith('*')).toBe(true);
      for (const action of list(statement.Action)) expect(action).not.toMatch(/\*/);
    }
  });

  it('scopes IoT resources to things, certificates and the one policy in the enabled regions', () => {
    const iotResources = policy
      .filter((statement) => list(statement.Action).some((action) => action.startsWith('iot:')))
      .flatMap((statement) => list(statement.Resource))
      .filter((resource) => resource !== '*');
    const regionOf = (arn: string) => arn.split(':')[3];
    expect(new Set(iotResources.map(regionOf))).toEqual(new Set(config.iotRegions));
    for (const arn of iotResources) {
      expect(arn).toMatch(new RegExp(`:(thing/\\*|cert/\\*|policy/${config.iotPolicyName})$`));
    }
    for (const action of [
      'iot:CreateThing',
      'iot:AttachThingPrincipal',
      'iot:UpdateCertificate',
      'iot:AttachPolicy',
    ]) {
      expect(byAction(action).length).toBeGreaterThan(0);
    }
    // The stack makes the policy and reads the endpoints: the function never needs to.
    for (const action of ['iot:GetPolicy', 'iot:CreatePolicy', 'iot:DescribeEndpoint'])
      expect(byAction(action)).toEqual([]);
  });

  it('limits DynamoDB to item actions on the table, KMS to decrypt with the context, SSM to the parameter', () => {
    const dynamo = policy.filter((statement) =>
      list(statement.Action).some((action) => action.startsWith('dynamodb:')),
    );
    // The registry and the admission schedules (tests/infra/admission.test.ts).
    expect(dynamo.map((statement) => statement.Sid).sort()).toEqual(['Admission', 'Registry']);
    for (const statement of dynamo) {
      expect(statement.Resource).toMatch(/^\$\{aws_dynamodb_table\..+\.arn\}$/);
      expect(list(statement.Action).sort()).toEqual(['dynamodb:GetItem', 'dynamodb:UpdateItem']);
    }
    const [decrypt] = byAction('kms:Decrypt');
    expect(decrypt!.Resource).toMatch(/^\$\{aws_kms_key\..+\.arn\}$/);
    expect(Object.keys(decrypt!.Condition!.StringEquals!)).toEqual(
      Object.keys(IPSTACK_KEY_ENCRYPTION_CONTEXT).map((key) => `kms:EncryptionContext:${key}`),
    );
    expect(byAction('ssm:GetParameter')[0]!.Resource).toMatch(/^\$\{aws_ssm_parameter\..+\.arn\}$/);
  });

  it('gives rotate operators a policy scoped to the key and the parameter', () => {
    const rotator = statements(byId(json, 'aws_iam_policy', 'ipstack-key').policy);
    for (const statement of rotator) expect(list(statement.Resource)).not.toContain('*');
  });
});

describe('operations', () => {
  const alarms = all(json, 'aws_cloudwatch_metric_alarm');
  const metricNames = alarms.flatMap((alarm) => [
    alarm.metric_name,
    ...(
      (alarm.metric_query as Array<{ metric?: { metric_name: string; namespace: string } }> | undefined) ?? []
    ).map((query) => query.metric?.metric_name),
  ]);

  it('alarms on 5xx rate, throttles, ipstack failures, Lambda errors, unfinished undo and reconciler findings', () => {
    expect(alarms.length).toBeGreaterThanOrEqual(8);
    expect(metricNames).toEqual(
      expect.arrayContaining([
        '5xx',
        'Count',
        'Throttled',
        'Throttles',
        'IpstackFailure',
        'Errors',
        'RollbackIncomplete',
        'ReconcilerFixed',
        'ReconcilerFailed',
      ]),
    );
    const ipstack = alarms.find((alarm) => alarm.metric_name === 'IpstackFailure');
    expect(ipstack).toMatchObject({
      namespace: config.metricsNamespace,
      dimensions: { service: config.appName },
      threshold: config.alarms.ipstackFailuresPerFiveMinutes,
    });
  });

  it('notifies the alarm topic, and subscribes the configured e-mail address to it', () => {
    expect(json.resource.aws_sns_topic).toBeDefined();
    const withEmail = synthesize({ alarms: { ...config.alarms, alarmEmail: 'oncall@example.com' } }).json;
    const subscriptions = all(withEmail, 'aws_sns_topic_subscription');
    expect(subscriptions.length).toBeGreaterThan(0);
    for (const subscription of subscriptions) {
      expect(subscription).toMatchObject({ protocol: 'email', endpoint: 'oncall@example.com' });
    }
    for (const alarm of all(withEmail, 'aws_cloudwatch_metric_alarm')) {
      expect(alarm.alarm_actions).toEqual([expect.stringContaining('aws_sns_topic.')]);
    }
  });

  it('outputs the provisioning, status and renew URLs, the table name and the key alias', () => {
    for (const [output, path] of [
      ['provisioning_url', '/device-provisioning'],
      ['status_url', '/device-status'],
      ['renew_url', '/device-renew'],
    ] as const) {
      expect(json.output[output]?.value).toMatch(
        new RegExp(`^https://\\$\\{aws_cloudfront_distribution\\..+\\.domain_name\\}${path}$`),
      );
    }
    expect(json.output.table_name?.value).toContain('aws_dynamodb_table.');
    expect(json.output.kms_key_alias?.value).toContain('aws_kms_alias.');
  });

  it('keeps local state outside cdktf.out, which make clean deletes', () => {
    expect(json.terraform.backend).toEqual({
      local: { path: `../../../terraform.${config.appName}.tfstate` },
    });
  });
});
