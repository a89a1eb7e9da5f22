/**
 * The public edge: CloudFront (adds the CloudFront-Viewer-* geolocation headers and the secret
 * origin header) → API Gateway HTTP API (POST /device-provisioning, /device-status and
 * /device-renew, payload 2.0) → the one provisioning function.
 */
import { Fn, TerraformIterator } from 'cdktf';
import { Construct } from 'constructs';
import type { AwsProvider } from '@cdktf/provider-aws/lib/provider';
import { AcmCertificate } from '@cdktf/provider-aws/lib/acm-certificate';
import { AcmCertificateValidation } from '@cdktf/provider-aws/lib/acm-certificate-validation';
import { Apigatewayv2Api } from '@cdktf/provider-aws/lib/apigatewayv2-api';
import { Apigatewayv2Integration } from '@cdktf/provider-aws/lib/apigatewayv2-integration';
import { Apigatewayv2Route } from '@cdktf/provider-aws/lib/apigatewayv2-route';
import { Apigatewayv2Stage } from '@cdktf/provider-aws/lib/apigatewayv2-stage';
import { CloudfrontDistribution } from '@cdktf/provider-aws/lib/cloudfront-distribution';
import { CloudfrontOriginRequestPolicy } from '@cdktf/provider-aws/lib/cloudfront-origin-request-policy';
import { CloudwatchLogGroup } from '@cdktf/provider-aws/lib/cloudwatch-log-group';
import { LambdaFunction } from '@cdktf/provider-aws/lib/lambda-function';
import { LambdaPermission } from '@cdktf/provider-aws/lib/lambda-permission';
import { Route53Record } from '@cdktf/provider-aws/lib/route53-record';
import { Apigatewayv2DomainName } from '@cdktf/provider-aws/lib/apigatewayv2-domain-name';
import { Apigatewayv2ApiMapping } from '@cdktf/provider-aws/lib/apigatewayv2-api-mapping';
import { Wafv2WebAcl } from '@cdktf/provider-aws/lib/wafv2-web-acl';
import { ORIGIN_VERIFY_HEADER } from '../functions/provisioning/config';
import { PROVISIONING_PATH, RENEW_PATH, STATUS_PATH } from '../functions/provisioning/wire';
import type { DeploymentConfig } from './config';
import { RATE_RULE_METRIC, webAclRules } from './waf-rules';

/**
 * AWS managed cache policy "CachingDisabled": every request reaches the origin. A status answer
 * in particular must never come from a cache: it is what tells a device to renew or move.
 */
export const CACHING_DISABLED_POLICY_ID = '4135ea2d-6df8-44a3-9df3-4b5a84be39ad';

/**
 * Viewer headers forwarded to the API. Never `Host`: execute-api answers 403 to a foreign Host.
 * The CloudFront-Viewer-* values are set by CloudFront (viewer-sent copies are overwritten).
 */
export const FORWARDED_HEADERS = [
  'CloudFront-Viewer-Latitude',
  'CloudFront-Viewer-Longitude',
  'CloudFront-Viewer-Country',
  'CloudFront-Viewer-Address',
  'Content-Type',
] as const;

/** TLS floor with a custom domain. The default *.cloudfront.net certificate forces TLSv1. */
export const CUSTOM_DOMAIN_MINIMUM_TLS = 'TLSv1.2_2021';

/** Every route of the API, all POST, all to the same function (tests/local/edge.ts mirrors them). */
export const API_ROUTE_PATHS = [PROVISIONING_PATH, STATUS_PATH, RENEW_PATH] as const;
export type ApiRoutePath = (typeof API_ROUTE_PATHS)[number];

export const routeKey = (path: ApiRoutePath) => `POST ${path}`;

/**
 * Construct ids of each route and its invoke permission. Provisioning keeps the ids it had
 * before the lifecycle routes existed: a new id would make Terraform replace its route and
 * permission, and devices would meet 404/500 for the moment in between.
 */
const ROUTE_IDS: Readonly<Record<ApiRoutePath, { route: string; permission: string; statementId: string }>> =
  {
    [PROVISIONING_PATH]: { route: 'route', permission: 'invoke', statementId: 'AllowApiGatewayInvoke' },
    [STATUS_PATH]: {
      route: 'route-status',
      permission: 'invoke-status',
      statementId: 'AllowApiGatewayInvokeStatus',
    },
    [RENEW_PATH]: {
      route: 'route-renew',
      permission: 'invoke-renew',
      statementId: 'AllowApiGatewayInvokeRenew',
    },
  };

const ORIGIN_ID = 'provisioning-api';
const STAGE_NAME = '$default';

export interface EdgeProps {
  readonly config: DeploymentConfig;
  readonly provider: AwsProvider;
  /** us-east-1: CloudFront only takes ACM certificates and WAF web ACLs from there. */
  readonly certificateProvider: AwsProvider;
  readonly function: LambdaFunction;
  /** What CloudFront sends in x-origin-verify (the next secret during a rotation's send-next). */
  readonly originVerifySecret: string;
}

export class Edge extends Construct {
  readonly api: Apigatewayv2Api;
  readonly stage: Apigatewayv2Stage;
  readonly accessLogs: CloudwatchLogGroup;
  readonly webAcl: Wafv2WebAcl;
  readonly rateRuleMetricName = RATE_RULE_METRIC;
  readonly distribution: CloudfrontDistribution;
  /** The custom domain when configured, else the distribution's *.cloudfront.net name. */
  readonly publicDomainName: string;

  constructor(scope: Construct, id: string, props: EdgeProps) {
    super(scope, id);
    const { config, provider } = props;
    const domain = config.customDomain;

    this.api = new Apigatewayv2Api(this, 'api', {
      provider,
      name: config.appName,
      protocolType: 'HTTP',
      description: 'Device provisioning; reached through CloudFront only (x-origin-verify)',
      // With an origin domain of its own, the API answers there only: a direct call to the
      // execute-api name can no longer spend the stage's shared throttle budget.
      disableExecuteApiEndpoint: domain?.originDomainName ? true : undefined,
    });
    const integration = new Apigatewayv2Integration(this, 'integration', {
      provider,
      apiId: this.api.id,
      integrationType: 'AWS_PROXY',
      integrationUri: props.function.invokeArn,
      payloadFormatVersion: '2.0',
    });
    const routes = API_ROUTE_PATHS.map(
      (path) =>
        new Apigatewayv2Route(this, ROUTE_IDS[path].route, {
          provider,
          apiId: this.api.id,
          routeKey: routeKey(path),
          target: `integrations/${integration.id}`,
        }),
    );
    const accessLogs = (this.accessLogs = new CloudwatchLogGroup(this, 'access-logs', {
      provider,
      name: `/aws/apigateway/${config.appName}`,
      retentionInDays: config.function.logRetentionDays,
    }));
    this.stage = new Apigatewayv2Stage(this, 'stage', {
      provider,
      apiId: this.api.id,
      name: STAGE_NAME,
      autoDeploy: true,
      defaultRouteSettings: {
        throttlingRateLimit: config.api.throttleRatePerSecond,
        throttlingBurstLimit: config.api.throttleBurst,
      },
      routeSettings: [
        {
          routeKey: routeKey(STATUS_PATH),
          throttlingRateLimit: config.api.statusThrottleRatePerSecond,
          throttlingBurstLimit: config.api.statusThrottleBurst,
        },
      ],
      // API Gateway refuses route settings for a route key that does not exist yet.
      dependsOn: routes,
      accessLogSettings: {
        destinationArn: accessLogs.arn,
        // No request headers: one of them is the origin secret. sourceIp is the CloudFront edge.
        format: JSON.stringify({
          requestId: '$context.requestId',
          requestTime: '$context.requestTime',
          routeKey: '$context.routeKey',
          status: '$context.status',
          responseLength: '$context.responseLength',
          responseLatency: '$context.responseLatency',
          integrationLatency: '$context.integrationLatency',
          integrationError: '$context.integrationErrorMessage',
          edgeIp: '$context.identity.sourceIp',
        }),
      },
    });
    // One permission per route, not a wildcard: a route added to the API by hand cannot reach
    // the function.
    for (const path of API_ROUTE_PATHS) {
      new LambdaPermission(this, ROUTE_IDS[path].permission, {
        provider,
        statementId: ROUTE_IDS[path].statementId,
        action: 'lambda:InvokeFunction',
        functionName: props.function.functionName,
        principal: 'apigateway.amazonaws.com',
        sourceArn: `${this.api.executionArn}/*/POST${path}`,
      });
    }

    const originRequestPolicy = new CloudfrontOriginRequestPolicy(this, 'origin-request-policy', {
      provider,
      name: `${config.appName}-viewer-location`,
      comment: 'Viewer geolocation headers for the provisioning function; never Host',
      headersConfig: { headerBehavior: 'whitelist', headers: { items: [...FORWARDED_HEADERS] } },
      cookiesConfig: { cookieBehavior: 'none' },
      queryStringsConfig: { queryStringBehavior: 'none' },
    });

    let validatedCertificateArn: string | undefined;
    if (domain) {
      const certificate = new AcmCertificate(this, 'certificate', {
        provider: props.certificateProvider,
        domainName: domain.domainName,
        validationMethod: 'DNS',
        lifecycle: { createBeforeDestroy: true },
      });
      const validationRecords = TerraformIterator.fromComplexList(
        certificate.domainValidationOptions,
        'domain_name',
      );
      const validationRecord = new Route53Record(this, 'certificate-validation-record', {
        provider,
        forEach: validationRecords,
        zoneId: domain.hostedZoneId,
        name: validationRecords.getString('resource_record_name'),
        type: validationRecords.getString('resource_record_type'),
        records: [validationRecords.getString('resource_record_value')],
        ttl: 300,
        allowOverwrite: true,
      });
      validatedCertificateArn = new AcmCertificateValidation(this, 'certificate-validation', {
        provider: props.certificateProvider,
        certificateArn: certificate.arn,
        dependsOn: [validationRecord],
      }).certificateArn;
    }

    const originDomainName = domain?.originDomainName
      ? this.originDomain(props, domain.hostedZoneId, domain.originDomainName)
      : Fn.replace(this.api.apiEndpoint, 'https://', '');

    this.webAcl = new Wafv2WebAcl(this, 'web-acl', {
      provider: props.certificateProvider,
      name: `${config.appName}-edge`,
      description: 'Per-IP rate limit, device routes only, body size, AWS IP reputation list',
      scope: 'CLOUDFRONT',
      defaultAction: { allow: {} },
      ruleJson: JSON.stringify(webAclRules(config)),
      visibilityConfig: {
        cloudwatchMetricsEnabled: true,
        metricName: `${config.appName}-edge`,
        sampledRequestsEnabled: true,
      },
    });

    this.distribution = new CloudfrontDistribution(this, 'distribution', {
      provider,
      webAclId: this.webAcl.arn,
      enabled: true,
      comment: `${config.appName}: global device provisioning`,
      isIpv6Enabled: true,
      httpVersion: 'http2and3',
      priceClass: config.cloudFrontPriceClass,
      aliases: domain ? [domain.domainName] : undefined,
      origin: [
        {
          originId: ORIGIN_ID,
          domainName: originDomainName,
          customOriginConfig: {
            httpPort: 80,
            httpsPort: 443,
            originProtocolPolicy: 'https-only',
            originSslProtocols: ['TLSv1.2'],
            originReadTimeout: 30,
          },
          customHeader: [{ name: ORIGIN_VERIFY_HEADER, value: props.originVerifySecret }],
        },
      ],
      defaultCacheBehavior: {
        targetOriginId: ORIGIN_ID,
        // Reject plain HTTP rather than redirect: a redirected POST loses its body on many clients.
        viewerProtocolPolicy: 'https-only',
        // CloudFront only offers POST as part of the full method set.
        allowedMethods: ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT'],
        cachedMethods: ['GET', 'HEAD'],
        cachePolicyId: CACHING_DISABLED_POLICY_ID,
        originRequestPolicyId: originRequestPolicy.id,
        compress: false,
      },
      restrictions: { geoRestriction: { restrictionType: 'none' } },
      viewerCertificate: validatedCertificateArn
        ? {
            acmCertificateArn: validatedCertificateArn,
            sslSupportMethod: 'sni-only',
            minimumProtocolVersion: CUSTOM_DOMAIN_MINIMUM_TLS,
          }
        : { cloudfrontDefaultCertificate: true },
    });

    if (domain) {
      for (const type of ['A', 'AAAA']) {
        new Route53Record(this, `alias-${type}`, {
          provider,
          zoneId: domain.hostedZoneId,
          name: domain.domainName,
          type,
          alias: {
            name: this.distribution.domainName,
            zoneId: this.distribution.hostedZoneId,
            evaluateTargetHealth: false,
          },
        });
      }
    }
    this.publicDomainName = domain ? domain.domainName : this.distribution.domainName;
  }

  /**
   * The API under its own name (a regional API Gateway custom domain with an ACM certificate in
   * the home region, DNS-validated in the same zone), for CloudFront's origin: the execute-api
   * endpoint is then disabled. Returns the name CloudFront connects to.
   */
  private originDomain(props: EdgeProps, hostedZoneId: string, name: string): string {
    const { provider } = props;
    const certificate = new AcmCertificate(this, 'origin-certificate', {
      provider,
      domainName: name,
      validationMethod: 'DNS',
      lifecycle: { createBeforeDestroy: true },
    });
    const records = TerraformIterator.fromComplexList(certificate.domainValidationOptions, 'domain_name');
    const record = new Route53Record(this, 'origin-certificate-validation-record', {
      provider,
      forEach: records,
      zoneId: hostedZoneId,
      name: records.getString('resource_record_name'),
      type: records.getString('resource_record_type'),
      records: [records.getString('resource_record_value')],
      ttl: 300,
      allowOverwrite: true,
    });
    const validation = new AcmCertificateValidation(this, 'origin-certificate-validation', {
      provider,
      certificateArn: certificate.arn,
      dependsOn: [record],
    });
    const domainName = new Apigatewayv2DomainName(this, 'origin-domain', {
      provider,
      domainName: name,
      domainNameConfiguration: {
        certificateArn: validation.certificateArn,
        endpointType: 'REGIONAL',
        securityPolicy: 'TLS_1_2',
      },
    });
    new Apigatewayv2ApiMapping(this, 'origin-mapping', {
      provider,
      apiId: this.api.id,
      domainName: domainName.id,
      stage: this.stage.id,
    });
    new Route53Record(this, 'origin-alias', {
      provider,
      zoneId: hostedZoneId,
      name,
      type: 'A',
      alias: {
        name: domainName.domainNameConfiguration.targetDomainName,
        zoneId: domainName.domainNameConfiguration.hostedZoneId,
        evaluateTargetHealth: false,
      },
    });
    return domainName.domainName;
  }
}
