/**
 * Issue 15's properties of the synthesized Terraform (findings 2–7): what protects the fleet from
 * a config edit, a stolen credential, a wrong AWS_PROFILE, a silent alarm, a single flooding
 * client and an origin secret rotation. Terraform cannot plan here (no provider registry), so
 * each is pinned on the JSON; the deciding code has its own tests (plan-check, ca-key-policy,
 * rotate-origin-secret).
 */
import { loadDeploymentConfig } from '../../infra/config';
import { DEVICE_ROUTES_PATTERN, IP_REPUTATION_RULE_GROUP, RATE_RULE_METRIC } from '../../infra/waf-rules';
import {
  all,
  byId,
  only,
  synthesize,
  TerraformJson,
  TEST_DEVICE_CA,
  TEST_PREVIOUS_CA_CERTIFICATE,
} from './synth';

const config = loadDeploymentConfig();
const ACCOUNT = '123456789012';
const production = {
  sandbox: false,
  expectedAccountId: ACCOUNT,
  terraformState: { bucket: 'acme-terraform-state', key: 'gdp.tfstate', region: 'us-east-2' },
  caKeyAccess: {
    operatorRoleArns: [`arn:aws:iam::${ACCOUNT}:role/ca-operator`],
    breakGlassRoleArns: [`arn:aws:iam::${ACCOUNT}:role/ca-break-glass`],
  },
  alarms: { ...config.alarms, alarmEmails: ['oncall@example.com', 'ops@example.com'] },
};
const { json } = synthesize(production);
const entries = (synthesized: TerraformJson, type: string) =>
  Object.entries(synthesized.resource[type] ?? {});
const alarmNamed = (synthesized: TerraformJson, suffix: string) => {
  const alarm = all(synthesized, 'aws_cloudwatch_metric_alarm').find(
    (candidate) => candidate.alarm_name === `${config.appName}-${suffix}`,
  );
  if (!alarm) throw new Error(`no alarm ${suffix}`);
  return alarm;
};

describe('finding 2: deploys cannot silently remove a CA', () => {
  it('puts prevent_destroy on every CA registration, the CA key, its alias and the registry table', () => {
    const protectedResources = [
      ...all(json, 'aws_iot_ca_certificate'),
      byId(json, 'aws_kms_key', 'device-ca-key-'),
      byId(json, 'aws_kms_alias', 'device-ca-key-'),
      only(json, 'aws_dynamodb_table'),
    ];
    expect(all(json, 'aws_iot_ca_certificate')).toHaveLength(config.iotRegions.length);
    for (const resource of protectedResources) expect(resource.lifecycle).toEqual({ prevent_destroy: true });
  });

  it('keeps a retired CA key at its address, disabled, once the function signs with the new key', () => {
    const rotated = synthesize(
      {
        ...production,
        caKmsKeyAlias: 'alias/gdp-device-ca-2',
        caRetiredKmsKeyAliases: [config.caKmsKeyAlias],
      },
      {
        ...TEST_DEVICE_CA,
        previous: [{ pem: TEST_PREVIOUS_CA_CERTIFICATE, active: true, source: 'previous.pem' }],
      },
    ).json;
    const caKeys = entries(rotated, 'aws_kms_key').filter(([id]) => id.startsWith('device-ca-key-'));
    const oldId = entries(json, 'aws_kms_key').find(([id]) => id.startsWith('device-ca-key-'))![0];
    expect(caKeys).toHaveLength(2);
    const old = caKeys.find(([id]) => id === oldId);
    expect(old?.[1]).toMatchObject({ is_enabled: false, lifecycle: { prevent_destroy: true } });
    // Disabled only once the function signs with the new key.
    expect(old?.[1].depends_on).toEqual([expect.stringMatching(/^aws_lambda_function\.function_[0-9A-F]+$/)]);
    expect(caKeys.find(([id]) => id !== oldId)?.[1]).toMatchObject({ is_enabled: true });
    // The aliases stay too: the retired one still names the retired key.
    expect(all(rotated, 'aws_kms_alias').map((alias) => alias.name)).toEqual(
      expect.arrayContaining([config.caKmsKeyAlias, 'alias/gdp-device-ca-2']),
    );
  });

  it('leaves a retired key enabled in the bootstrap stack (the running function still signs with it)', () => {
    const bootstrap = synthesize(
      {
        ...production,
        caKmsKeyAlias: 'alias/gdp-device-ca-2',
        caRetiredKmsKeyAliases: [config.caKmsKeyAlias],
      },
      null,
    ).json;
    for (const key of all(bootstrap, 'aws_kms_key')) expect(key.is_enabled).toBe(true);
  });
});

describe('finding 3: the CA key answers to named principals only', () => {
  it('watches Sign, ScheduleKeyDeletion, DisableKey and PutKeyPolicy on the CA key into the alarm topic', () => {
    const rules = entries(json, 'aws_cloudwatch_event_rule').filter(([id]) => id.startsWith('ca-key-watch'));
    expect(rules).toHaveLength(2);
    const events = rules.flatMap(([, rule]) => {
      const pattern = JSON.parse(rule.event_pattern as string) as {
        detail: { eventName: string[]; resources: { ARN: string[] } };
      };
      expect(pattern.detail.resources.ARN).toEqual([expect.stringMatching(/aws_kms_key\.device-ca-key-/)]);
      expect(rule.state).toBe('ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS');
      return pattern.detail.eventName;
    });
    expect(events.sort()).toEqual(['DisableKey', 'PutKeyPolicy', 'ScheduleKeyDeletion', 'Sign']);
    const targets = all(json, 'aws_cloudwatch_event_target');
    expect(targets).toHaveLength(2);
    for (const target of targets) expect(target.arn).toMatch(/aws_sns_topic\.alarms_home-topic/);
  });

  it('names the function role and the configured roles in the key policy', () => {
    const policy = byId(json, 'aws_kms_key', 'device-ca-key-').policy as string;
    expect(policy).toContain(`:role/${config.appName}-function`);
    expect(policy).toContain(production.caKeyAccess.operatorRoleArns[0]);
    expect(policy).toContain(production.caKeyAccess.breakGlassRoleArns[0]);
  });
});

describe('finding 4: team-safe state', () => {
  it('stores state in S3 with its native lock file and requires Terraform 1.10', () => {
    expect(json.terraform.backend).toEqual({
      s3: expect.objectContaining({ bucket: 'acme-terraform-state', encrypt: true, use_lockfile: true }),
    });
    expect(json.terraform.required_version).toBe('>= 1.10.0');
  });

  it('pins expectedAccountId as allowed_account_ids on every provider', () => {
    expect(json.provider.aws.length).toBeGreaterThan(1);
    for (const provider of json.provider.aws) {
      expect((provider as { allowed_account_ids?: string[] }).allowed_account_ids).toEqual([ACCOUNT]);
    }
  });

  it('outputs no secret: no output reads the origin secret', () => {
    for (const [name, output] of Object.entries(json.output)) {
      expect({ name, secret: JSON.stringify(output.value).includes('random_password') }).toEqual({
        name,
        secret: false,
      });
    }
  });
});

describe('finding 5: alarms reach a person', () => {
  it('always creates an encrypted topic, subscribing every configured address', () => {
    const sandbox = synthesize().json;
    for (const synthesized of [sandbox, json]) {
      for (const topic of all(synthesized, 'aws_sns_topic')) {
        expect(topic.kms_master_key_id).toMatch(/aws_kms_key\.alarms_/);
      }
    }
    expect(all(sandbox, 'aws_sns_topic').length).toBeGreaterThan(0);
    const endpoints = all(json, 'aws_sns_topic_subscription').map((subscription) => subscription.endpoint);
    // Home region and us-east-1 (WAF) each have a topic.
    expect(endpoints.sort()).toEqual([
      'oncall@example.com',
      'oncall@example.com',
      'ops@example.com',
      'ops@example.com',
    ]);
  });

  it('adds configured existing topics to the alarms of their region', () => {
    const existing = `arn:aws:sns:${config.homeRegion}:${ACCOUNT}:oncall`;
    const withTopic = synthesize({
      ...production,
      alarms: { ...production.alarms, alarmTopicArns: [existing] },
    }).json;
    expect(alarmNamed(withTopic, 'api-5xx-rate').alarm_actions).toContain(existing);
    expect(alarmNamed(withTopic, 'waf-blocked').alarm_actions).not.toContain(existing);
  });

  it('raises the reconciler heartbeat when no run completed in an hour, missing data breaching', () => {
    expect(alarmNamed(json, 'reconciler-heartbeat')).toMatchObject({
      metric_name: 'ReconcilerRun',
      namespace: 'GlobalDeviceProvisioning',
      dimensions: { service: `${config.appName}-reconciler` },
      period: 3600,
      statistic: 'Sum',
      comparison_operator: 'LessThanThreshold',
      threshold: 1,
      treat_missing_data: 'breaching',
    });
    expect(alarmNamed(json, 'reconciler-aborted')).toMatchObject({
      metric_name: 'ReconcilerAborted',
      comparison_operator: 'GreaterThanOrEqualToThreshold',
      threshold: 1,
    });
  });

  it('judges 5xx, 4xx and 429 rates over a minimum request count, 2 of 3 periods', () => {
    for (const name of ['api-5xx-rate', 'api-4xx-rate', 'api-429-rate']) {
      const alarm = alarmNamed(json, name);
      expect(alarm).toMatchObject({ evaluation_periods: 3, datapoints_to_alarm: 2 });
      const rate = (alarm.metric_query as Array<{ id: string; expression?: string }>).find(
        (q) => q.id === 'rate',
      );
      expect(rate?.expression).toBe(
        `IF(requests >= ${config.alarms.minimumRequestsForRate}, 100 * FILL(errors, 0) / requests, 0)`,
      );
    }
    const filter = only(json, 'aws_cloudwatch_log_metric_filter');
    expect(filter).toMatchObject({ pattern: '{ $.status = "429" && $.integrationLatency = "-" }' });
  });

  it('alarms on duration near the timeout, a missing ipstack key and a rising v1 share', () => {
    expect(alarmNamed(json, 'duration-near-timeout')).toMatchObject({
      metric_name: 'Duration',
      statistic: 'Maximum',
      threshold: config.function.timeoutSeconds * 1000 * 0.8,
    });
    expect(alarmNamed(json, 'ipstack-key-missing')).toMatchObject({
      metric_name: 'IpstackKeyMissing',
      threshold: 1,
    });
    const v1 = alarmNamed(json, 'v1-signature-share');
    expect(v1).toMatchObject({
      comparison_operator: 'GreaterThanUpperThreshold',
      threshold_metric_id: 'band',
    });
    expect(JSON.stringify(v1.metric_query)).toContain('V1SignatureUsed');
  });
});

describe('finding 6: no single client can starve the fleet', () => {
  const acl = only(json, 'aws_wafv2_web_acl');
  const rules = JSON.parse(acl.rule_json as string) as Array<Record<string, unknown>>;
  const rule = (name: string) => rules.find((candidate) => candidate.Name === name)!;

  it('attaches a CLOUDFRONT web ACL made in us-east-1 to the distribution', () => {
    expect(acl).toMatchObject({
      scope: 'CLOUDFRONT',
      provider: 'aws.us-east-1',
      default_action: { allow: {} },
    });
    expect(only(json, 'aws_cloudfront_distribution').web_acl_id).toMatch(/aws_wafv2_web_acl\..+\.arn/);
  });

  it('rate-limits each source IP, answering 429', () => {
    expect(rule('per-ip-rate')).toMatchObject({
      Action: { Block: { CustomResponse: { ResponseCode: 429 } } },
      Statement: {
        RateBasedStatement: {
          Limit: config.waf.requestsPerFiveMinutesPerIp,
          EvaluationWindowSec: 300,
          AggregateKeyType: 'IP',
        },
      },
    });
    expect(config.waf.requestsPerFiveMinutesPerIp).toBe(3000);
  });

  it('blocks anything but POST on the three device paths, long bodies, and AWS-listed bad IPs', () => {
    const routes = new RegExp(DEVICE_ROUTES_PATTERN);
    expect(
      ['/device-provisioning', '/device-status', '/device-renew'].every((path) => routes.test(path)),
    ).toBe(true);
    expect(
      ['/', '/device-status/x', '/admin', '/device-provisioning?x'].some((path) => routes.test(path)),
    ).toBe(false);
    expect(JSON.stringify(rule('device-routes-only'))).toContain('"RegexString":"^POST$"');
    expect(rule('body-size')).toMatchObject({
      Statement: {
        SizeConstraintStatement: {
          FieldToMatch: { Body: { OversizeHandling: 'MATCH' } },
          ComparisonOperator: 'GT',
          Size: config.waf.maxBodyBytes,
        },
      },
    });
    expect(rule('aws-ip-reputation')).toMatchObject({
      OverrideAction: { None: {} },
      Statement: { ManagedRuleGroupStatement: { VendorName: 'AWS', Name: IP_REPUTATION_RULE_GROUP } },
    });
  });

  it('alarms in us-east-1 on WAF blocks and on any IP hitting the rate limit', () => {
    expect(alarmNamed(json, 'waf-rate-limited')).toMatchObject({
      provider: 'aws.us-east-1',
      namespace: 'AWS/WAFV2',
      metric_name: 'BlockedRequests',
      dimensions: { Rule: RATE_RULE_METRIC },
    });
    expect(alarmNamed(json, 'waf-blocked').alarm_actions).toEqual([
      expect.stringMatching(/aws_sns_topic\.alarms_edge-topic/),
    ]);
  });

  it('keeps execute-api enabled without an origin domain, and disables it with one', () => {
    expect(only(json, 'aws_apigatewayv2_api').disable_execute_api_endpoint).toBeUndefined();
    const withOrigin = synthesize({
      ...production,
      customDomain: {
        domainName: 'provision.example.com',
        hostedZoneId: 'Z123EXAMPLE',
        originDomainName: 'origin.provision.example.com',
      },
    }).json;
    expect(only(withOrigin, 'aws_apigatewayv2_api').disable_execute_api_endpoint).toBe(true);
    expect(only(withOrigin, 'aws_apigatewayv2_domain_name')).toMatchObject({
      domain_name: 'origin.provision.example.com',
      domain_name_configuration: { endpoint_type: 'REGIONAL', security_policy: 'TLS_1_2' },
    });
    const origin = (
      only(withOrigin, 'aws_cloudfront_distribution').origin as Array<{ domain_name: string }>
    )[0];
    expect(origin?.domain_name).toMatch(/aws_apigatewayv2_domain_name\..+\.domain_name/);
    expect(only(withOrigin, 'aws_apigatewayv2_api_mapping')).toBeDefined();
  });
});

describe('finding 7: the origin secret rotates without an outage', () => {
  const secretsOf = (rotation: 'none' | 'accept-next' | 'send-next', generation = 1) => {
    const synthesized = synthesize({ ...production, originSecret: { generation, rotation } }).json;
    const environment = (
      byId(synthesized, 'aws_lambda_function', 'function_').environment as {
        variables: Record<string, string>;
      }
    ).variables;
    const header = (
      only(synthesized, 'aws_cloudfront_distribution').origin as Array<{
        custom_header: Array<{ name: string; value: string }>;
      }>
    )[0]!.custom_header[0]!.value;
    return {
      passwords: Object.keys(synthesized.resource.random_password ?? {}).map((id) =>
        id.replace(/_[0-9A-F]{8}$/, ''),
      ),
      accepted: [environment.ORIGIN_VERIFY_SECRET, environment.ORIGIN_VERIFY_SECRET_NEXT].filter(Boolean),
      sent: header,
    };
  };
  const generationOf = (reference: string | undefined) =>
    /origin-verify-secret-(\d+)_/.exec(reference ?? '')?.[1] ??
    (reference?.includes('origin-verify-secret_') ? '1' : '?');

  it('accepts both secrets before CloudFront sends the next, and drops the old one only after', () => {
    const steady = secretsOf('none');
    expect(steady.passwords).toEqual(['function_origin-verify-secret']);
    expect(steady.accepted.map(generationOf)).toEqual(['1']);
    expect(generationOf(steady.sent)).toBe('1');

    const acceptNext = secretsOf('accept-next');
    expect(acceptNext.accepted.map(generationOf)).toEqual(['1', '2']);
    expect(generationOf(acceptNext.sent)).toBe('1');

    const sendNext = secretsOf('send-next');
    expect(sendNext.accepted.map(generationOf)).toEqual(['1', '2']);
    expect(generationOf(sendNext.sent)).toBe('2');

    const finished = secretsOf('none', 2);
    expect(finished.passwords).toEqual(['function_origin-verify-secret-2']);
    expect(finished.accepted.map(generationOf)).toEqual(['2']);
    expect(generationOf(finished.sent)).toBe('2');
  });
});
